//! ServiceAccount `imagePullSecrets`: our entry exactly once, foreign entries never lost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::support::*;

async fn set_entries(client: &Client, ns: &str, sa: &str, names: &[&str]) {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .patch(
            sa,
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()})),
        )
        .await
        .unwrap();
}

async fn wait_entries(client: &Client, ns: &str, sa: &str, expected: &[&str]) {
    wait_for(
        &format!("{ns}/{sa} imagePullSecrets == {expected:?}"),
        TIMEOUT,
        || async {
            let names = pull_secret_names(&get_sa(client, ns, sa).await.unwrap());
            if names == expected {
                Ok(())
            } else {
                Err(names)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn removed_entry_is_restored_after_foreign_ones() {
    let client = admin().await;
    let s = setup(&client, "sa-drift", 1, json!({})).await;
    let ns = &s.namespaces[0];
    wait_synced(&client, &s.name).await;
    set_entries(&client, ns, "default", &["z-first", "a-second"]).await; // drops ours
    wait_entries(&client, ns, "default", &["z-first", "a-second", &s.name]).await;
}

#[tokio::test]
async fn foreign_entries_survive_a_concurrent_writer() {
    let client = admin().await;
    let key = unique("sa-race");
    let ns = namespace(&client, "sa-race", &[(&key, "yes")]).await;
    set_entries(&client, &ns, "default", &["foreign-a", "foreign-b"]).await;

    // Another tool adds and removes its own entries, read-modify-write with resourceVersion
    // preconditions, while the operator adds, renames and removes its entry.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (client, ns, stop) = (client.clone(), ns.clone(), stop.clone());
        async move {
            let api: Api<ServiceAccount> = Api::namespaced(client, &ns);
            let mut mine: Vec<String> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let sa = api.get("default").await.unwrap();
                let mut list = sa.image_pull_secrets.clone().unwrap_or_default();
                let (add, name) = if mine.len() < 3 || i % 2 == 0 {
                    (true, format!("writer-{i}"))
                } else {
                    (false, mine[0].clone())
                };
                if add {
                    list.push(LocalObjectReference { name: name.clone() });
                } else {
                    list.retain(|r| r.name != name);
                }
                let patch = json!({"metadata": {"resourceVersion": sa.metadata.resource_version}, "imagePullSecrets": list});
                match api
                    .patch("default", &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => {
                        if add {
                            mine.push(name);
                        } else {
                            mine.retain(|n| *n != name);
                        }
                        i += 1;
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => panic!("writer: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            mine
        }
    });

    let (src, _) = source_secret(&client).await;
    let name = unique("sa-race");
    create_credential(
        &client,
        &name,
        json!({"source": {"secretRef": {"namespace": SOURCE_NS, "name": src}}, "namespaceSelector": {"matchLabels": {key.clone(): "yes"}}}),
    )
    .await;
    wait_sa_lists(&client, &ns, "default", &name).await;
    patch_spec(&client, &name, json!({"secretName": "renamed-pull"})).await;
    wait_sa_lists(&client, &ns, "default", "renamed-pull").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let writers = writer.await.unwrap();
    wait_synced(&client, &name).await;

    let names = pull_secret_names(&get_sa(&client, &ns, "default").await.unwrap());
    assert_eq!(
        &names[..2],
        ["foreign-a", "foreign-b"],
        "foreign entries keep their place: {names:?}"
    );
    for w in &writers {
        assert!(
            names.contains(w),
            "the other writer's entry {w} was lost: {names:?}"
        );
    }
    assert_eq!(
        names.iter().filter(|n| *n == "renamed-pull").count(),
        1,
        "ours exactly once: {names:?}"
    );
    assert!(!names.contains(&name), "the old entry is gone: {names:?}");
    assert_eq!(
        names.len(),
        2 + writers.len() + 1,
        "nothing else: {names:?}"
    );
}

#[tokio::test]
async fn wildcard_patches_service_accounts_created_later() {
    let client = admin().await;
    let s = setup(&client, "sa-star", 1, json!({"serviceAccounts": ["*"]})).await;
    let ns = &s.namespaces[0];
    wait_synced(&client, &s.name).await;
    create_service_account(&client, ns, "builder").await;
    wait_sa_lists(&client, ns, "builder", &s.name).await;
    wait_sa_lists(&client, ns, "default", &s.name).await;
    // The status of the pass that patched "builder" follows its write: wait for it, not for
    // any Synced status (the one from before "builder" existed says 1).
    wait_synced_with(&client, &s.name, "patchedServiceAccounts 2", |s| {
        s.patched_service_accounts == 2
    })
    .await;
}

#[tokio::test]
async fn changing_service_accounts_moves_our_entries() {
    let client = admin().await;
    let s = setup(&client, "sa-move", 1, json!({})).await;
    let ns = &s.namespaces[0];
    create_service_account(&client, ns, "builder").await;
    set_entries(&client, ns, "builder", &["keep-me"]).await;
    wait_sa_lists(&client, ns, "default", &s.name).await;

    patch_spec(&client, &s.name, json!({"serviceAccounts": ["builder"]})).await;
    wait_entries(&client, ns, "builder", &["keep-me", &s.name]).await;
    wait_entries(&client, ns, "default", &[]).await;

    patch_spec(&client, &s.name, json!({"serviceAccounts": []})).await;
    wait_entries(&client, ns, "builder", &["keep-me"]).await;
    wait_synced_with(&client, &s.name, "no patched ServiceAccount", |s| {
        s.patched_service_accounts == 0
    })
    .await;
    assert!(
        get_secret(&client, ns, &s.name).await.is_some(),
        "[] still copies the Secret"
    );
}
