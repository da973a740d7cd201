//! Faults injected into real processes: the operator SIGKILLed mid-fan-out, kube-apiserver
//! restarted, etcd paused, a namespace storm during rotations, and another writer on the same
//! ServiceAccounts. Each test ends with everything converged and nothing lost.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{LocalObjectReference, Namespace, ServiceAccount};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use regcred_operator::api::PULL_SECRETS_ANNOTATION;
use serde_json::json;

use crate::support::*;

const BULK_TIMEOUT: Duration = Duration::from_secs(180);

fn spec(source: &str, key: &str) -> serde_json::Value {
    json!({
        "source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
        "namespaceSelector": {"matchLabels": {key: "yes"}},
    })
}

/// Waits until each of `namespaces` has a copy of `name` carrying `password`, and its `default`
/// ServiceAccount lists it exactly once, next to exactly one of each `foreign` entry.
async fn wait_converged(
    client: &Client,
    name: &str,
    namespaces: &[String],
    password: &str,
    foreign: &[&str],
) {
    wait_for(
        &format!("{} namespaces converged on {name}", namespaces.len()),
        BULK_TIMEOUT,
        || async {
            let copies = copies_of(client, name).await;
            let sas = default_service_accounts(client).await;
            let mut behind = Vec::new();
            for ns in namespaces {
                if !copies.get(ns).is_some_and(|s| copy_has(s, password)) {
                    behind.push(format!("{ns}: copy missing or stale"));
                    continue;
                }
                let listed = sas.get(ns).map(pull_secret_names).unwrap_or_default();
                let count = |n: &str| listed.iter().filter(|l| *l == n).count();
                if count(name) != 1 || foreign.iter().any(|f| count(f) != 1) {
                    behind.push(format!("{ns}: default lists {listed:?}"));
                }
            }
            if behind.is_empty() {
                Ok(())
            } else {
                let n = behind.len();
                behind.truncate(3);
                Err(format!("{n} behind, e.g. {behind:?}"))
            }
        },
    )
    .await;
}

/// Gives each namespace's `default` ServiceAccount an entry of another tool's.
async fn add_foreign_entry(client: &Client, namespaces: &[String], entry: &str) {
    stream::iter(namespaces.to_vec())
        .map(|ns| {
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
            async move {
                api.patch(
                    "default",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"imagePullSecrets": [{"name": entry}]})),
                )
                .await
                .unwrap_or_else(|e| panic!("patching {ns}/default: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn sigkill_mid_fanout_then_restart_converges_without_duplicates_or_losses() {
    let client = admin().await;
    let instance = unique("kill");
    let lease = unique("lease-kill");
    let key = unique("kill");
    let namespaces = namespaces(&client, "kill", 300, &[(&key, "yes")]).await;
    add_foreign_entry(&client, &namespaces, "other-tool-pull").await;
    let (source, _) = source_secret(&client).await;
    let name = unique("kill");

    // Few writes in flight, so that the fan-out takes long enough to be interrupted.
    let config = kubeconfig_path();
    let args = [
        "--lease-name",
        lease.as_str(),
        "--lease-duration",
        "4",
        "--write-concurrency",
        "2",
    ];
    let mut first = Operator::start(&config, &instance, &format!("{instance}-a"), &args).await;
    create_credential_for(&client, &instance, &name, spec(&source, &key)).await;
    wait_for("the fan-out to be under way", TIMEOUT, || async {
        let n = copies_of(&client, &name).await.len();
        if n >= 20 { Ok(()) } else { Err(n) }
    })
    .await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10)).await;
    let at_kill = copies_of(&client, &name).await.len();
    assert!(
        at_kill < namespaces.len(),
        "the fan-out finished before the SIGKILL ({at_kill} copies): the test proves nothing"
    );
    eprintln!(
        "SIGKILL with {at_kill} of {} copies written",
        namespaces.len()
    );

    // While no operator runs, the source rotates; a new process (another identity, as a
    // rescheduled pod) takes over the lease and converges on the new content.
    let password = rotate(&client, &source).await;
    let mut second = Operator::start(&config, &instance, &format!("{instance}-b"), &args).await;
    wait_converged(&client, &name, &namespaces, &password, &["other-tool-pull"]).await;
    let rc = wait_synced(&client, &name).await;
    let status = rc.status.expect("status");
    assert_eq!(
        (status.target_namespaces, status.synced_namespaces),
        (300, 300)
    );
    // Our bookkeeping on each ServiceAccount names our entry only, never the other tool's.
    for (ns, sa) in default_service_accounts(&client).await {
        if !namespaces.contains(&ns) {
            continue;
        }
        let recorded = sa
            .annotations()
            .get(PULL_SECRETS_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        assert!(
            recorded.contains(&name) && !recorded.contains("other-tool-pull"),
            "{ns}: {recorded}"
        );
    }
    second.assert_running();
    assert_nothing_leaked(&client, &name, &[&password]).await;
}

#[tokio::test]
async fn namespace_storm_during_two_rotations_ends_with_the_latest_content_everywhere() {
    let client = admin().await;
    let key = unique("storm");
    let (source, _) = source_secret(&client).await;
    let name = unique("storm");
    create_credential(&client, &name, spec(&source, &key)).await;

    let storm = tokio::spawn({
        let client = client.clone();
        let key = key.clone();
        async move { namespaces(&client, "storm", 500, &[(&key, "yes")]).await }
    });
    let labelled = || async {
        let selector = format!("{key}=yes");
        Api::<Namespace>::all(client.clone())
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items.len())
            .map_err(|e| e.to_string())
    };
    let mut password = String::new();
    for at in [100, 300] {
        wait_for(
            &format!("{at} namespaces created"),
            BULK_TIMEOUT,
            || async {
                match labelled().await {
                    Ok(n) if n >= at => Ok(()),
                    other => Err(other),
                }
            },
        )
        .await;
        password = rotate(&client, &source).await;
    }
    let namespaces = storm.await.expect("namespace storm");
    wait_converged(&client, &name, &namespaces, &password, &[]).await;
    let rc = wait_synced(&client, &name).await;
    let status = rc.status.expect("status");
    assert_eq!(
        (status.target_namespaces, status.synced_namespaces),
        (500, 500)
    );
    assert_nothing_leaked(&client, &name, &[&password]).await;
}

/// What the other writer saw go wrong.
#[derive(Default, Debug)]
struct Losses {
    theirs: Vec<String>,
    ours: Vec<String>,
    writes: usize,
    conflicts: usize,
}

/// Another controller that keeps its own `imagePullSecrets` entries on `targets` for `period`:
/// read, check that nothing it wrote (and none of `ours`) vanished, add or remove one of its own,
/// update with the resourceVersion it read. Returns its final entries per ServiceAccount.
async fn other_writer(
    client: Client,
    targets: Vec<(String, String)>,
    ours: String,
    period: Duration,
    losses: Arc<tokio::sync::Mutex<Losses>>,
) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut mine: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let start = Instant::now();
    let mut tick = 0usize;
    while start.elapsed() < period {
        for (ns, sa_name) in &targets {
            tick += 1;
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
            let entries = mine.entry((ns.clone(), sa_name.clone())).or_default();
            loop {
                let mut sa = api.get(sa_name).await.expect("reading a ServiceAccount");
                let listed: BTreeSet<String> = pull_secret_names(&sa).into_iter().collect();
                let mut l = losses.lock().await;
                for e in entries.iter() {
                    if !listed.contains(e) {
                        l.theirs.push(format!("{ns}/{sa_name}: {e}"));
                    }
                }
                if !listed.contains(&ours) {
                    l.ours
                        .push(format!("{ns}/{sa_name} at {:?}", start.elapsed()));
                }
                drop(l);
                let mut next = entries.clone();
                if next.len() >= 3 || (tick.is_multiple_of(3) && !next.is_empty()) {
                    let first = next.iter().next().cloned().unwrap();
                    next.remove(&first);
                } else {
                    next.insert(format!("other-{tick}"));
                }
                // Keep every entry that is not ours to manage, in place; append our additions.
                let mut list: Vec<LocalObjectReference> = sa
                    .image_pull_secrets
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| !entries.contains(&r.name) || next.contains(&r.name))
                    .collect();
                for e in &next {
                    if !list.iter().any(|r| &r.name == e) {
                        list.push(LocalObjectReference { name: e.clone() });
                    }
                }
                sa.image_pull_secrets = Some(list);
                match api.replace(sa_name, &PostParams::default(), &sa).await {
                    Ok(_) => {
                        losses.lock().await.writes += 1;
                        *entries = next;
                        break;
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        losses.lock().await.conflicts += 1;
                    }
                    Err(e) => panic!("the other writer's update of {ns}/{sa_name}: {e}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mine
}

#[tokio::test]
async fn another_writer_on_the_same_service_accounts_loses_nothing_and_neither_do_we() {
    let client = admin().await;
    let key = unique("writer");
    let namespaces = namespaces(&client, "writer", 4, &[(&key, "yes")]).await;
    let mut targets = Vec::new();
    for ns in &namespaces {
        create_service_account(&client, ns, "builder").await;
        targets.push((ns.clone(), "default".to_string()));
        targets.push((ns.clone(), "builder".to_string()));
    }
    // A keeps its entry on every ServiceAccount throughout; B's entry comes and goes.
    let (source, _) = source_secret(&client).await;
    let a = unique("writer-a");
    let b = unique("writer-b");
    let mut spec_a = spec(&source, &key);
    spec_a["serviceAccounts"] = json!(["*"]);
    create_credential(&client, &a, spec_a.clone()).await;
    create_credential(&client, &b, spec_a).await;
    wait_synced(&client, &a).await;
    wait_synced(&client, &b).await;

    let period = Duration::from_secs(60);
    let losses = Arc::new(tokio::sync::Mutex::new(Losses::default()));
    let writer = tokio::spawn(other_writer(
        client.clone(),
        targets.clone(),
        a.clone(),
        period,
        losses.clone(),
    ));
    let done = Arc::new(AtomicBool::new(false));
    let toggles = tokio::spawn({
        let client = client.clone();
        let b = b.clone();
        let done = done.clone();
        async move {
            let mut n = 0u32;
            while !done.load(Ordering::Relaxed) {
                let sas = if n.is_multiple_of(2) {
                    json!([])
                } else {
                    json!(["*"])
                };
                patch_spec(&client, &b, json!({"serviceAccounts": sas})).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            // End with B's entries wanted.
            patch_spec(&client, &b, json!({"serviceAccounts": ["*"]})).await;
            n
        }
    });
    let theirs = writer.await.expect("other writer");
    done.store(true, Ordering::Relaxed);
    let toggled = toggles.await.expect("toggles");
    let losses = losses.lock().await;
    eprintln!(
        "other writer: {} writes, {} conflicts; B toggled {toggled} times",
        losses.writes, losses.conflicts
    );
    assert!(
        losses.theirs.is_empty(),
        "the other writer's entries vanished: {:?}",
        losses.theirs
    );
    assert!(
        losses.ours.is_empty(),
        "credential A's entry vanished: {:?}",
        losses.ours
    );
    assert!(
        toggled >= 20 && losses.writes >= 100,
        "too little contention"
    );

    // Quiet again: every ServiceAccount lists exactly the other writer's entries plus A's and B's.
    for (ns, sa) in &targets {
        let mine = theirs
            .get(&(ns.clone(), sa.clone()))
            .cloned()
            .unwrap_or_default();
        let mut want: Vec<String> = mine.into_iter().collect();
        want.push(a.clone());
        want.push(b.clone());
        want.sort();
        wait_for(
            &format!("{ns}/{sa} listing exactly {want:?}"),
            TIMEOUT,
            || async {
                let mut listed = pull_secret_names(&get_sa(&client, ns, sa).await.unwrap());
                listed.sort();
                if listed == want { Ok(()) } else { Err(listed) }
            },
        )
        .await;
    }
    wait_synced(&client, &b).await;
}

#[tokio::test]
async fn operator_rides_out_an_apiserver_restart_and_an_etcd_pause_without_restarting() {
    let cluster = PrivateCluster::start("faults").await;
    let client = cluster.client().await;
    let instance = unique("cp");
    let lease = unique("lease-cp");
    // Leader election on, with the default 15 s lease and 10 s renew deadline.
    let mut operator = Operator::start(
        &cluster.kubeconfig,
        &instance,
        &format!("{instance}-a"),
        &["--lease-name", lease.as_str()],
    )
    .await;
    let key = unique("cp");
    let mut namespaces = namespaces(&client, "cp", 3, &[(&key, "yes")]).await;
    let (source, password) = source_secret(&client).await;
    let name = unique("cp");
    create_credential_for(&client, &instance, &name, spec(&source, &key)).await;
    wait_converged(&client, &name, &namespaces, &password, &[]).await;

    // kube-apiserver stops and starts again: watches and the lease reconnect.
    cluster.restart_apiserver().await;
    let password = rotate(&client, &source).await;
    namespaces.extend(self::namespaces(&client, "cp", 2, &[(&key, "yes")]).await);
    wait_converged(&client, &name, &namespaces, &password, &[]).await;
    wait_synced(&client, &name).await;
    operator.assert_running();

    // etcd stalls for 10 s behind a running API server: the lease cannot be renewed in time, so
    // the controller stops, and takes the lease again once etcd answers.
    cluster.signal("etcd", "STOP");
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.signal("etcd", "CONT");
    let password = rotate(&client, &source).await;
    namespaces.extend(self::namespaces(&client, "cp", 2, &[(&key, "yes")]).await);
    wait_converged(&client, &name, &namespaces, &password, &[]).await;
    wait_synced(&client, &name).await;
    operator.assert_running();
    let metrics = operator.metrics().await.expect("metrics served");
    assert_eq!(sample(&metrics, "regcred_leader"), Some(1.0), "{metrics}");
    assert_nothing_leaked(&client, &name, &[&password]).await;
}
