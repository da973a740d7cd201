//! The workload: the objects the driver creates, the fan-out through a RegistryCredential, and the
//! floor client doing the same writes by hand.

use super::*;

pub(crate) fn config_with(password: &str) -> Vec<u8> {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("bench:{password}"));
    json!({"auths": {"registry.bench.example": {"username": "bench", "password": password, "auth": auth}}})
        .to_string()
        .into_bytes()
}

pub(crate) fn secret(ns: &str, name: &str, data: &[u8], labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some([(".dockerconfigjson".to_string(), ByteString(data.to_vec()))].into()),
        ..Default::default()
    }
}

/// Runs `task` on every item, `limit` at a time; panics naming `what` on the first error.
pub(crate) async fn concurrently<T, Fut>(
    items: impl IntoIterator<Item = T>,
    limit: usize,
    what: &str,
    task: impl FnMut(T) -> Fut,
) where
    Fut: Future<Output = Result<(), kube::Error>>,
{
    stream::iter(items)
        .map(task)
        .buffer_unordered(limit)
        .try_collect::<Vec<()>>()
        .await
        .expect(what);
}

/// A Namespace, labelled `bench-set=<set>` if a set is given.
pub(crate) fn namespace_object(name: &str, set: Option<&str>) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: set.map(|set| [("bench-set".to_string(), set.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Creates `n` namespaces labelled `bench-set=<set>` and waits for their `default` ServiceAccounts.
pub(crate) async fn namespaces(
    admin: &Client,
    tracker: &Tracker,
    set: &str,
    n: usize,
) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{set}-{i:05}")).collect();
    let api: Api<Namespace> = Api::all(admin.clone());
    concurrently(names.clone(), 32, "creating namespaces", |name| {
        let api = api.clone();
        async move {
            let ns = namespace_object(&name, Some(set));
            api.create(&PostParams::default(), &ns).await.map(|_| ())
        }
    })
    .await;
    tracker
        .wait_all(&names, "default ServiceAccounts", |s| s.sa_appeared)
        .await;
    names
}

pub(crate) fn credential(set: &str, source: &str) -> RegistryCredential {
    let spec: RegistryCredentialSpec = serde_json::from_value(json!({
        "source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
        "secretName": SECRET_NAME,
        "namespaceSelector": {"matchLabels": {"bench-set": set}},
    }))
    .unwrap();
    RegistryCredential::new(set, spec)
}

/// Time from creating a RegistryCredential over `namespaces` to every copy and entry observed.
pub(crate) async fn fan_out(
    admin: &Client,
    tracker: &Tracker,
    set: &str,
    names: &[String],
    password: &str,
) -> (Duration, Window) {
    let source = format!("src-{set}");
    // A repeated fan-out (the pairs) finds its source from the first one.
    match Api::<Secret>::namespaced(admin.clone(), SOURCE_NS)
        .create(
            &PostParams::default(),
            &secret(SOURCE_NS, &source, &config_with(password), &[]),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("source: {e}"),
    }
    let window = Window::start();
    let t0 = Instant::now();
    Api::<RegistryCredential>::all(admin.clone())
        .create(&PostParams::default(), &credential(set, &source))
        .await
        .expect("credential");
    let secrets = tracker
        .wait_copies(names, "copies", &config_with(password))
        .await;
    let listed = tracker
        .wait_all(names, "ServiceAccount entries", |s| s.sa_listed)
        .await;
    (secrets.max(listed) - t0, window.end())
}

/// Deletes the credential `set` and waits until the operator has taken its copies and entries out
/// of `names` and the credential is gone.
pub(crate) async fn remove_credential(
    admin: &Client,
    tracker: &Tracker,
    set: &str,
    names: &[String],
) {
    let api = Api::<RegistryCredential>::all(admin.clone());
    api.delete(set, &Default::default())
        .await
        .expect("deleting the credential");
    tracker.wait_cleared(names, "the operator's teardown").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while api.get_opt(set).await.expect("credential").is_some() {
        assert!(
            Instant::now() < deadline,
            "credential {set} was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Undoes a floor fan-out: deletes the floor's Secrets and empties the ServiceAccounts' lists.
pub(crate) async fn floor_teardown(
    floor: &Client,
    tracker: &Tracker,
    names: &[String],
    concurrency: usize,
) {
    concurrently(names.to_vec(), concurrency, "floor teardown", |ns| {
        let client = floor.clone();
        async move {
            Api::<Secret>::namespaced(client.clone(), &ns)
                .delete(SECRET_NAME, &Default::default())
                .await?;
            Api::<ServiceAccount>::namespaced(client, &ns)
                .patch(
                    "default",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"imagePullSecrets": null})),
                )
                .await
                .map(|_| ())
        }
    })
    .await;
    tracker.wait_cleared(names, "the floor's teardown").await;
}

/// What the floor client does per namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloorStep {
    /// One Secret create and one ServiceAccount patch.
    FanOut,
    /// One Secret patch (the copies exist).
    Rotation,
}

/// The floor: a minimal client making exactly the writes of `step` per namespace, with
/// `concurrency` namespaces in flight. Returns the time until the watches have seen all of them.
pub(crate) async fn floor_pass(
    floor: &Client,
    tracker: &Tracker,
    names: &[String],
    password: &str,
    concurrency: usize,
    step: FloorStep,
) -> Duration {
    let data = config_with(password);
    let t0 = Instant::now();
    concurrently(names.to_vec(), concurrency, "floor writes", |ns| {
        let (client, data) = (floor.clone(), data.clone());
        async move {
            let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
            if step == FloorStep::Rotation {
                let patch = json!({"data": {".dockerconfigjson": ByteString(data)}});
                return secrets
                    .patch(SECRET_NAME, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ());
            }
            secrets
                .create(
                    &PostParams::default(),
                    &secret(&ns, SECRET_NAME, &data, &[("bench-floor", "true")]),
                )
                .await?;
            Api::<ServiceAccount>::namespaced(client, &ns)
                .patch(
                    "default",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"imagePullSecrets": [{"name": SECRET_NAME}]})),
                )
                .await
                .map(|_| ())
        }
    })
    .await;
    let secrets = tracker.wait_copies(names, "floor copies", &data).await;
    if step == FloorStep::Rotation {
        return secrets - t0;
    }
    let listed = tracker
        .wait_all(names, "floor entries", |s| s.sa_listed)
        .await;
    secrets.max(listed) - t0
}

/// Creates `count` namespaces of the `fan` set at 20 a second and waits until each default
/// ServiceAccount lists our Secret. Returns the latencies from the ServiceAccount's appearance
/// (ms, sorted) and the operator's CPU seconds per namespace meanwhile.
pub(crate) async fn onboard_namespaces(
    admin: &Client,
    tracker: &Tracker,
    pid: &str,
    prefix: &str,
    count: usize,
) -> (Vec<f64>, f64) {
    let api: Api<Namespace> = Api::all(admin.clone());
    let mut onboarded = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let cpu0 = cpu_seconds(pid);
    for i in 0..count {
        ticker.tick().await;
        let name = format!("{prefix}-{i:05}");
        api.create(
            &PostParams::default(),
            &namespace_object(&name, Some("fan")),
        )
        .await
        .expect("namespace");
        onboarded.push(name);
    }
    tracker
        .wait_all(&onboarded, "onboarding", |s| s.sa_listed)
        .await;
    let cpu = (cpu_seconds(pid) - cpu0) / count.max(1) as f64;
    let mut latencies: Vec<f64> = onboarded
        .iter()
        .map(|ns| {
            let s = tracker.get(ns);
            s.sa_listed
                .unwrap()
                .saturating_duration_since(s.sa_appeared.unwrap())
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    (latencies, cpu)
}

/// Adds ServiceAccounts named `extra` to every namespace of `names`.
pub(crate) async fn extra_service_accounts(admin: &Client, names: &[String], extra: &[&str]) {
    let creates = names
        .iter()
        .flat_map(|ns| extra.iter().map(move |sa| (ns.clone(), (*sa).to_string())));
    concurrently(creates, 32, "creating ServiceAccounts", |(ns, name)| {
        let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
        async move {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &sa).await.map(|_| ())
        }
    })
    .await;
}
