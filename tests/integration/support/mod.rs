//! Test support: the cluster that `make test` started, unique names, waits, restricted clients.
//!
//! Every test isolates itself with uniquely named namespaces, Secrets and RegistryCredentials, and
//! a unique namespace label for its selector, so that the whole suite shares one cluster and one
//! operator process.

#![allow(dead_code)]

mod processes;
// The object builders the unit tests use, compiled into this crate too.
#[path = "../../../src/testing.rs"]
mod objects;

pub use objects::*;
pub use processes::*;

use std::{
    collections::BTreeMap,
    fmt::Debug,
    future::Future,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, Pod, Secret, ServiceAccount},
    events::v1::Event,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use regcred_operator::api::{RegistryCredential, RegistryCredentialSpec};
use serde_json::json;

/// Generous bound for convergence; the operator normally needs well under a second.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Source namespace the test operator is allowed to read.
pub const SOURCE_NS: &str = "regcred-system";
/// Marker inside every test password: the suite checks it never appears in logs, status or Events.
pub const SECRET_MARKER: &str = "TOPSECRET";

fn env_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) => PathBuf::from(v),
        None => panic!(
            "{var} is not set: the integration tests need the local control plane. Run them with `make test` \
             (or `make integration`), which starts the cluster and the operator and sets {var}."
        ),
    }
}

/// Kubeconfig of the test cluster's admin.
pub fn kubeconfig_path() -> PathBuf {
    env_path("REGCRED_TEST_KUBECONFIG")
}

/// Path of the operator binary under test.
pub fn operator_binary() -> PathBuf {
    env_path("REGCRED_TEST_OPERATOR_BIN")
}

/// The cluster control script, to start a pristine cluster.
pub fn cluster_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/cluster.sh")
}

pub async fn client_from(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    Client::try_from(config).expect("client")
}

/// An admin client for the test cluster.
pub async fn admin() -> Client {
    client_from(&kubeconfig_path()).await
}

/// A name no other test (or earlier run) uses: `prefix-<pid-ish>-<counter>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = std::process::id() % 100_000;
    format!("{prefix}-{salt}-{n}")
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming what was awaited and
/// what was last seen.
pub async fn wait_for<T, D: Debug, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, D>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        assert!(
            start.elapsed() <= timeout,
            "timed out after {timeout:?} waiting for {what}; last observed: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Asserts that `check` stays true for `period` (for "nothing happens" assertions).
pub async fn stays<D: Debug, F, Fut>(what: &str, period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), D>>,
{
    let start = Instant::now();
    while start.elapsed() < period {
        if let Err(seen) = check().await {
            panic!(
                "expected {what} to hold for {period:?}, but after {:?}: {seen:?}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn ensure_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// Creates a namespace with labels and waits for its `default` ServiceAccount.
pub async fn namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = unique(prefix);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(self::labels(labels)),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(
        &format!("default ServiceAccount in {name}"),
        TIMEOUT,
        || async {
            match sas.get_opt("default").await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("absent".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    name
}

pub async fn label_namespace(client: &Client, name: &str, key: &str, value: Option<&str>) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("labelling namespace {name}: {e}"));
}

/// A test password carrying [`SECRET_MARKER`].
pub fn password() -> String {
    unique(&format!("{SECRET_MARKER}-pw"))
}

/// The `.dockerconfigjson` `kubectl create secret docker-registry` makes.
pub fn docker_config(server: &str, user: &str, password: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    json!({"auths": {server: {"username": user, "password": password, "auth": auth}}}).to_string()
}

/// A `kubernetes.io/dockerconfigjson` Secret holding `config` (as [`docker_config`] makes).
pub fn pull_secret_object(ns: &str, name: &str, config: &str) -> Secret {
    secret_object(
        ns,
        name,
        "kubernetes.io/dockerconfigjson",
        &[(".dockerconfigjson", config.as_bytes())],
    )
}

/// Creates or replaces Secret `name` in [`SOURCE_NS`]: a source, or a Secret a source reads.
pub async fn put_source_secret(
    client: &Client,
    name: &str,
    type_: &str,
    data: &[(&str, &[u8])],
) -> Secret {
    put_secret(client, &secret_object(SOURCE_NS, name, type_, data)).await
}

/// Creates or replaces the password Secret `name` (key `password`) of a `registries` source.
pub async fn put_password_secret(client: &Client, name: &str, password: &str) -> Secret {
    put_source_secret(client, name, "Opaque", &[("password", password.as_bytes())]).await
}

/// Creates or replaces a Secret (server-side apply as the test, forced).
pub async fn put_secret(client: &Client, secret: &Secret) -> Secret {
    let ns = secret.metadata.namespace.clone().expect("namespace");
    let name = secret.metadata.name.clone().expect("name");
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut body = secret.clone();
    body.metadata.managed_fields = None;
    api.patch(
        &name,
        &PatchParams::apply("regcred-tests").force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap_or_else(|e| panic!("writing Secret {ns}/{name}: {e}"))
}

/// A valid dockerconfigjson source Secret in [`SOURCE_NS`]; returns its name and password.
pub async fn source_secret(client: &Client) -> (String, String) {
    ensure_namespace(client, SOURCE_NS).await;
    let name = unique("src");
    let pw = rotate(client, &name).await;
    (name, pw)
}

pub fn spec_from(value: serde_json::Value) -> RegistryCredentialSpec {
    serde_json::from_value(value).expect("valid spec")
}

/// The spec of a credential that copies Secret `source` (in the source namespace) into the
/// namespaces labelled `key=yes`.
pub fn labelled_spec(source: &str, key: &str) -> serde_json::Value {
    json!({
        "source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
        "namespaceSelector": {"matchLabels": {key: "yes"}},
    })
}

pub async fn create_credential(
    client: &Client,
    name: &str,
    spec: serde_json::Value,
) -> RegistryCredential {
    let api: Api<RegistryCredential> = Api::all(client.clone());
    let rc = RegistryCredential::new(name, spec_from(spec));
    api.create(&PostParams::default(), &rc)
        .await
        .unwrap_or_else(|e| panic!("creating RegistryCredential {name}: {e}"))
}

pub async fn patch_spec(client: &Client, name: &str, spec: serde_json::Value) {
    let api: Api<RegistryCredential> = Api::all(client.clone());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": spec })),
    )
    .await
    .unwrap_or_else(|e| panic!("patching RegistryCredential {name}: {e}"));
}

pub async fn credential(client: &Client, name: &str) -> RegistryCredential {
    Api::<RegistryCredential>::all(client.clone())
        .get(name)
        .await
        .expect("RegistryCredential")
}

/// The Ready condition as `(status, reason, message)`.
pub fn ready(rc: &RegistryCredential) -> Option<(String, String, String)> {
    let status = rc.status.as_ref()?;
    if status.observed_generation != rc.metadata.generation {
        return None;
    }
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the credential's Ready condition (for its current generation) has `reason`.
pub async fn wait_ready_reason(client: &Client, name: &str, reason: &str) -> RegistryCredential {
    wait_for(
        &format!("RegistryCredential {name} Ready reason {reason}"),
        TIMEOUT,
        || async {
            let rc = credential(client, name).await;
            match ready(&rc) {
                Some((_, r, _)) if r == reason => Ok(rc),
                other => Err(other),
            }
        },
    )
    .await
}

pub async fn wait_synced(client: &Client, name: &str) -> RegistryCredential {
    let rc = wait_ready_reason(client, name, "Synced").await;
    assert_eq!(ready(&rc).unwrap().0, "True");
    rc
}

/// Waits for `Synced` with a status for which `check` holds: a Synced status from before the last
/// change can still be the stored one for a moment after that change took effect.
pub async fn wait_synced_with(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&regcred_operator::api::RegistryCredentialStatus) -> bool,
) -> RegistryCredential {
    wait_for(&format!("{name} Synced with {what}"), TIMEOUT, || async {
        let rc = credential(client, name).await;
        let synced =
            ready(&rc).is_some_and(|(status, reason, _)| status == "True" && reason == "Synced");
        match rc.status.as_ref() {
            Some(s) if synced && check(s) => Ok(rc),
            other => Err(other.cloned()),
        }
    })
    .await
}

/// Waits until the credential's status counts `want` pods awaiting recovery.
pub async fn wait_awaiting(client: &Client, name: &str, want: u32) {
    wait_for(&format!("podsAwaitingRecovery {want}"), TIMEOUT, || async {
        let got = credential(client, name)
            .await
            .status
            .map(|s| s.pods_awaiting_recovery);
        if got == Some(want) { Ok(()) } else { Err(got) }
    })
    .await;
}

pub async fn get_secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("reading Secret")
}

pub async fn get_sa(client: &Client, ns: &str, name: &str) -> Option<ServiceAccount> {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("reading ServiceAccount")
}

pub fn pull_secret_names(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

pub fn secret_config(secret: &Secret) -> serde_json::Value {
    let bytes = &secret.data.as_ref().expect("data")[".dockerconfigjson"].0;
    serde_json::from_slice(bytes).expect("json")
}

/// Waits until `ns` has Secret `name` with `password` in it and `sa` lists it.
pub async fn wait_copy(client: &Client, ns: &str, name: &str, password: &str) -> Secret {
    wait_for(
        &format!("Secret {ns}/{name} with the current password"),
        TIMEOUT,
        || async {
            match get_secret(client, ns, name).await {
                Some(s)
                    if String::from_utf8_lossy(
                        &s.data.as_ref().unwrap()[".dockerconfigjson"].0,
                    )
                    .contains(password) =>
                {
                    Ok(s)
                }
                Some(_) => Err("present, other content"),
                None => Err("absent"),
            }
        },
    )
    .await
}

pub async fn wait_sa_lists(client: &Client, ns: &str, sa: &str, secret: &str) -> ServiceAccount {
    wait_for(
        &format!("ServiceAccount {ns}/{sa} listing {secret}"),
        TIMEOUT,
        || async {
            match get_sa(client, ns, sa).await {
                Some(s) if pull_secret_names(&s).contains(&secret.to_string()) => Ok(s),
                other => Err(other.map(|s| pull_secret_names(&s))),
            }
        },
    )
    .await
}

/// Waits until the API server's ServiceAccount admission plugin gives `secret` to a new pod of
/// `sa`, shown by a dry-run pod create. The plugin reads the ServiceAccount from the API server's
/// informer cache, which trails a write by moments: a pod created right after the ServiceAccount
/// lists the copy can still be admitted without it. The cache only moves forward, so every pod
/// created after this returns gets the copy.
pub async fn wait_admission_lists(client: &Client, ns: &str, sa: &str, secret: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let probe: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": unique("admission-probe")},
        "spec": {
            "serviceAccountName": sa,
            "containers": [{"name": "app", "image": "registry.example.com/probe:1"}],
        },
    }))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for(
        &format!("admission giving {secret} to a new pod of {ns}/{sa}"),
        TIMEOUT,
        || async {
            let admitted = pods
                .create(&dry_run, &probe)
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = admitted
                .spec
                .iter()
                .flat_map(|s| s.image_pull_secrets.iter().flatten())
                .map(|r| r.name.clone())
                .collect();
            if names.iter().any(|n| n == secret) {
                Ok(())
            } else {
                Err(format!("admitted with {names:?}"))
            }
        },
    )
    .await;
}

pub async fn wait_secret_gone(client: &Client, ns: &str, name: &str) {
    wait_for(
        &format!("Secret {ns}/{name} to be deleted"),
        TIMEOUT,
        || async {
            match get_secret(client, ns, name).await {
                None => Ok(()),
                Some(s) => Err(s.labels().clone()),
            }
        },
    )
    .await;
}

pub async fn delete_credential(client: &Client, name: &str) {
    let api: Api<RegistryCredential> = Api::all(client.clone());
    api.delete(name, &DeleteParams::default())
        .await
        .expect("deleting RegistryCredential");
    wait_for(
        &format!("RegistryCredential {name} to be gone"),
        TIMEOUT,
        || async {
            match api.get_opt(name).await.expect("reading") {
                None => Ok(()),
                Some(rc) => Err(rc.metadata.finalizers),
            }
        },
    )
    .await;
}

/// Events about a RegistryCredential (cluster-scoped objects' Events live in `default`).
pub async fn events_for(client: &Client, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("RegistryCredential") && r.name.as_deref() == Some(name)
            })
        })
        .collect()
}

pub async fn wait_event(client: &Client, name: &str, reason: &str) -> Event {
    wait_for(
        &format!("an Event {reason} about RegistryCredential {name}"),
        TIMEOUT,
        || async {
            let events = events_for(client, name).await;
            let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.clone()).collect();
            events
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
                .ok_or(reasons)
        },
    )
    .await
}

/// Asserts that no credential material shows in the credential's status or Events.
pub async fn assert_nothing_leaked(client: &Client, name: &str, passwords: &[&str]) {
    use base64::Engine;
    let rc = credential(client, name).await;
    let status = serde_json::to_string(&rc.status).unwrap();
    let events = serde_json::to_string(&events_for(client, name).await).unwrap();
    for pw in passwords {
        let b64 = base64::engine::general_purpose::STANDARD.encode(pw);
        for text in [&status, &events] {
            assert!(!text.contains(pw), "password of {name} leaked: {text}");
            assert!(
                !text.contains(&b64),
                "base64 password of {name} leaked: {text}"
            );
        }
    }
    assert!(
        !status.contains(SECRET_MARKER) && !events.contains(SECRET_MARKER),
        "marker leaked: {status} {events}"
    );
}

/// A TokenRequest token of the ServiceAccount `namespace/name`.
pub async fn service_account_token(admin: &Client, namespace: &str, name: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(7200),
            bound_object_ref: None,
        }),
        ..Default::default()
    };
    sas.create_subresource::<TokenRequest, TokenRequest>(
        "token",
        name,
        &PostParams::default(),
        &req,
    )
    .await
    .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"))
    .status
    .and_then(|s| s.token)
    .expect("token")
}

/// The admin kubeconfig with its users authenticating as `namespace/name` instead.
async fn kubeconfig_as(admin: &Client, namespace: &str, name: &str) -> Kubeconfig {
    let token = service_account_token(admin, namespace, name).await;
    let mut kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.clone().into()),
            ..Default::default()
        });
    }
    kubeconfig
}

/// A client that authenticates as `namespace/name` with a TokenRequest token.
pub async fn client_as_service_account(admin: &Client, namespace: &str, name: &str) -> Client {
    let kubeconfig = kubeconfig_as(admin, namespace, name).await;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A credential selecting `n` fresh namespaces through a unique label, from a fresh source Secret.
pub struct Setup {
    pub name: String,
    pub key: String,
    pub namespaces: Vec<String>,
    pub source: String,
    pub password: String,
}

/// Creates the namespaces, the source and the credential (with `extra` merged into its spec), and
/// waits for `Synced` unless `extra` makes that impossible (then call the waits yourself).
pub async fn setup(client: &Client, prefix: &str, n: usize, extra: serde_json::Value) -> Setup {
    let key = unique(prefix);
    let mut namespaces = Vec::new();
    for _ in 0..n {
        namespaces.push(namespace(client, prefix, &[(&key, "yes")]).await);
    }
    let (source, password) = source_secret(client).await;
    let name = unique(prefix);
    let mut spec = json!({
        "source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
        "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    create_credential(client, &name, spec).await;
    Setup {
        name,
        key,
        namespaces,
        source,
        password,
    }
}

/// [`setup`] over one namespace, then waits for `Synced` and the copy; returns the setup, the
/// namespace and the copy.
pub async fn synced_with_copy(
    client: &Client,
    prefix: &str,
    extra: serde_json::Value,
) -> (Setup, String, Secret) {
    let s = setup(client, prefix, 1, extra).await;
    wait_synced(client, &s.name).await;
    let ns = s.namespaces[0].clone();
    // Synced can come before the operator's cache holds the new namespace (0/0 in sync).
    let copy = wait_for("the copy", TIMEOUT, || async {
        get_secret(client, &ns, &s.name).await.ok_or("absent")
    })
    .await;
    (s, ns, copy)
}

/// Writes the source Secret `name` in [`SOURCE_NS`] with a new password; returns the password.
pub async fn rotate(client: &Client, name: &str) -> String {
    let pw = password();
    let config = docker_config("registry.example.com", "robot", &pw);
    put_secret(client, &pull_secret_object(SOURCE_NS, name, &config)).await;
    pw
}

/// Creates a ServiceAccount.
pub async fn create_service_account(client: &Client, ns: &str, name: &str) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap_or_else(|e| panic!("creating ServiceAccount {ns}/{name}: {e}"));
}

/// A `registries` source for `robot` at `server`, its password in a fresh Secret (key `password`)
/// in [`SOURCE_NS`].
pub async fn login_source(client: &Client, server: &str, password: &str) -> serde_json::Value {
    ensure_namespace(client, SOURCE_NS).await;
    let token = unique("token");
    put_password_secret(client, &token, password).await;
    json!({"registries": [{"server": server, "username": "robot",
        "passwordSecretRef": {"namespace": SOURCE_NS, "name": token, "key": "password"}}]})
}

/// Creates `n` namespaces carrying `labels`, many at a time, and waits for all their `default`
/// ServiceAccounts.
pub async fn namespaces(
    client: &Client,
    prefix: &str,
    n: usize,
    labels: &[(&str, &str)],
) -> Vec<String> {
    use futures::{StreamExt, stream};
    let api: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = (0..n).map(|_| unique(prefix)).collect();
    let labels = self::labels(labels);
    stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            async move {
                api.create(&PostParams::default(), &ns)
                    .await
                    .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    wait_default_service_accounts(client, &names).await;
    names
}

/// Waits until every namespace in `names` has its `default` ServiceAccount.
pub async fn wait_default_service_accounts(client: &Client, names: &[String]) {
    let sas: Api<ServiceAccount> = Api::all(client.clone());
    let wanted: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
    wait_for(
        &format!("the default ServiceAccount in {} namespaces", names.len()),
        TIMEOUT * 2,
        || async {
            let list = sas
                .list(&ListParams::default().fields("metadata.name=default"))
                .await
                .map_err(|e| e.to_string())?;
            let have = list
                .items
                .iter()
                .filter(|sa| wanted.contains(sa.namespace().unwrap_or_default().as_str()))
                .count();
            if have == wanted.len() {
                Ok(())
            } else {
                Err(format!("{have} of {}", wanted.len()))
            }
        },
    )
    .await;
}

/// The copies of credential `name` in the whole cluster, by namespace.
pub async fn copies_of(client: &Client, name: &str) -> BTreeMap<String, Secret> {
    let api: Api<Secret> = Api::all(client.clone());
    let selector = format!("{}={name}", regcred_operator::api::CREDENTIAL_LABEL);
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("listing copies")
        .items
        .into_iter()
        .map(|s| (s.namespace().unwrap_or_default(), s))
        .collect()
}

/// Whether a copy carries `password` (in its `.dockerconfigjson`).
pub fn copy_has(secret: &Secret, password: &str) -> bool {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .is_some_and(|v| String::from_utf8_lossy(&v.0).contains(password))
}

/// The `default` ServiceAccounts of the cluster, by namespace.
pub async fn default_service_accounts(client: &Client) -> BTreeMap<String, ServiceAccount> {
    Api::<ServiceAccount>::all(client.clone())
        .list(&ListParams::default().fields("metadata.name=default"))
        .await
        .expect("listing ServiceAccounts")
        .items
        .into_iter()
        .map(|sa| (sa.namespace().unwrap_or_default(), sa))
        .collect()
}

/// No write and no hot loop: the copy keeps its resourceVersion, and the credential settles (its
/// resourceVersion stays the same for 2 s) within a few seconds of reporting.
pub async fn assert_copy_untouched_and_quiet(client: &Client, name: &str, ns: &str, copy: &Secret) {
    let start = std::time::Instant::now();
    let mut last = credential(client, name).await.resource_version();
    let mut since = std::time::Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        let now = get_secret(client, ns, name)
            .await
            .and_then(|s| s.metadata.resource_version);
        assert_eq!(now, copy.metadata.resource_version, "the copy was written");
        let rc = credential(client, name).await;
        if rc.resource_version() != last {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the credential keeps being written: {:?}",
                rc.status
            );
            last = rc.resource_version();
            since = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for Ready=False with `reason` and a message containing `expected`.
pub async fn wait_problem(
    client: &Client,
    name: &str,
    case: &str,
    reason: &str,
    expected: &str,
) -> RegistryCredential {
    wait_for(&format!("{reason} for {case}"), TIMEOUT, || async {
        let rc = credential(client, name).await;
        match ready(&rc) {
            Some((status, r, message)) if r == reason && message.contains(expected) => {
                assert_eq!(status, "False", "{case}");
                Ok(rc)
            }
            other => Err(other),
        }
    })
    .await
}

/// The codes of the problems in a `doctor -o json` report, image by image.
pub fn problem_codes(report: &serde_json::Value) -> Vec<String> {
    report["images"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["problems"].as_array().cloned().unwrap_or_default())
        .map(|p| p["code"].as_str().expect("a problem code").to_string())
        .collect()
}

/// Whether a `doctor -o json` report names the problem `code`.
pub fn has_problem(report: &serde_json::Value, code: &str) -> bool {
    problem_codes(report).iter().any(|c| c == code)
}

/// The `imagePullSecrets` a pod lists (as admission left them).
pub fn pod_pull_secret_names(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .into_iter()
        .flatten()
        .map(|r| r.name)
        .collect()
}
