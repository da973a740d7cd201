//! The product's promise on a real node: a kubelet and containerd pull a private image with the
//! operator's copy and ServiceAccount patch, and fail without them; rotation reaches new pods;
//! `doctor` explains the kubelet's real failures.
//!
//! The cluster of `make test` has one node (`cluster.sh`) and a private registry beside it, described
//! by `<cluster dir>/registry.env`. There is no scheduler: the pods here name the node. Each test
//! pushes images under names of its own, so that what one test leaves on the node never decides
//! another test's pull.

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};

use crate::{registry_fixture::TestRegistry, support::*};

/// Pulls and container starts on a busy two-core machine are slow; failures retry with back-off.
const POD_TIMEOUT: Duration = Duration::from_secs(180);

/// The local cluster's node and registry, from `<cluster dir>/registry.env`.
struct LocalNode {
    registry: String,
    username: String,
    password: String,
    ca: PathBuf,
    image: String,
    hosts_dir: PathBuf,
    node: String,
}

fn cluster_dir() -> PathBuf {
    match std::env::var_os("REGCRED_TEST_CLUSTER_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!(
            "REGCRED_TEST_CLUSTER_DIR is not set: the node tests need the local cluster with its node. \
             Run them with `make test` (or tests/run-integration.sh)."
        ),
    }
}

/// Parses the `KEY='value'` lines `cluster.sh up` writes.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.to_string(), v.replace("'\\''", "'"))
        })
        .collect()
}

impl LocalNode {
    /// An admin client and the node, checked to be Ready: what every test here starts from.
    async fn with_admin() -> (Client, LocalNode) {
        let client = admin().await;
        let node = LocalNode::get(&client).await;
        (client, node)
    }

    async fn get(client: &Client) -> LocalNode {
        let file = cluster_dir().join("registry.env");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: the cluster has no node and registry (was it started with NODE=0?)",
                file.display()
            )
        });
        let env = parse_env(&text);
        let var = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{} has no {k}", file.display()))
        };
        let node = LocalNode {
            registry: var("REGISTRY"),
            username: var("REGISTRY_USERNAME"),
            password: var("REGISTRY_PASSWORD"),
            ca: var("REGISTRY_CA").into(),
            image: var("IMAGE"),
            hosts_dir: var("REGISTRY_HOSTS_DIR").into(),
            node: var("NODE"),
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let n = nodes.get_opt(&node.node).await.unwrap().unwrap_or_else(|| {
            panic!(
                "node {} is not registered: the kubelet of the test cluster is not running (see its log in the cluster's logs/kubelet.log)",
                node.node
            )
        });
        let ready = n
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "node {} is not Ready", node.node);
        node
    }

    /// Pushes an image of its own (the cluster's image with a label of its own, so that no other
    /// test's image shares its ID on the node) to a repository of its own in the shared registry.
    fn own_image(&self, prefix: &str) -> String {
        let name = unique(prefix);
        let target = format!("{}/node-tests/{name}:1", self.registry);
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(&self.ca, certs.join("ca.crt")).unwrap();
        let auth = docker_config(&self.registry, &self.username, &self.password);
        push_distinct_image(dir.path(), &name, &target, &auth, &certs);
        target
    }
}

/// An OCI layout under `dir` holding the cluster's image with the label `regcred.dev/test=<name>`:
/// its own config, so its own image ID. The kubelet reports at most five names per image ID in the
/// node's status, and tracks pulls per image ID.
fn distinct_image(dir: &std::path::Path, name: &str) -> String {
    let layout = dir.join("oci");
    let layout = layout.to_str().unwrap();
    let cluster_layout = cluster_dir().join("node/images/oci");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci:{}:sleeper", cluster_layout.display()),
        &format!("oci:{layout}:image"),
    ]);
    let out = Command::new("umoci")
        .args(["config", "--image", &format!("{layout}:image")])
        .arg(format!("--config.label=regcred.dev/test={name}"))
        .output()
        .expect("umoci (Debian package umoci)");
    assert!(
        out.status.success(),
        "umoci config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("oci:{layout}:image")
}

/// Pushes [`distinct_image`] `name` (built under `dir`) to `target`, with the `auth` config (as
/// [`docker_config`] makes) and the CA certificates in `cert_dir`.
fn push_distinct_image(
    dir: &std::path::Path,
    name: &str,
    target: &str,
    auth: &str,
    cert_dir: &std::path::Path,
) {
    let auth_file = dir.join("auth.json");
    std::fs::write(&auth_file, auth).unwrap();
    let layout = distinct_image(dir, name);
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-authfile",
        auth_file.to_str().unwrap(),
        "--dest-cert-dir",
        cert_dir.to_str().unwrap(),
        &layout,
        &format!("docker://{target}"),
    ]);
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `registries` source for `user` at `server`; returns it and the name of its password Secret.
async fn registry_source(
    client: &Client,
    server: &str,
    user: &str,
    password: &str,
) -> (Value, String) {
    ensure_namespace(client, SOURCE_NS).await;
    let token = unique("node-pw");
    put_password_secret(client, &token, password).await;
    (
        json!({"registries": [{"server": server, "username": user,
            "passwordSecretRef": {"namespace": SOURCE_NS, "name": token, "key": "password"}}]}),
        token,
    )
}

/// A credential with a `registries` source for the node's registry (its user, `password`) over
/// one fresh namespace.
async fn node_credential(client: &Client, node: &LocalNode, prefix: &str, password: &str) -> Setup {
    let (source, _) = registry_source(client, &node.registry, &node.username, password).await;
    setup(client, prefix, 1, json!({ "source": source })).await
}

/// [`node_credential`], then waits for `Synced`, for the namespace's `default` ServiceAccount
/// to list the copy and for admission to give it to new pods.
async fn synced_node_credential(
    client: &Client,
    node: &LocalNode,
    prefix: &str,
    password: &str,
) -> Setup {
    let s = node_credential(client, node, prefix, password).await;
    wait_synced(client, &s.name).await;
    wait_sa_lists(client, &s.namespaces[0], "default", &s.name).await;
    wait_admission_lists(client, &s.namespaces[0], "default", &s.name).await;
    s
}

/// A pod on the node running `image`, with no imagePullSecrets of its own unless given.
async fn run_pod(
    client: &Client,
    node: &LocalNode,
    ns: &str,
    name: &str,
    image: &str,
    secrets: &[&str],
) -> Pod {
    let mut spec = json!({
        "nodeName": node.node,
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "app", "image": image}],
    });
    if !secrets.is_empty() {
        spec["imagePullSecrets"] = secrets.iter().map(|s| json!({"name": s})).collect();
    }
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {ns}/{name}: {e}"))
}

fn container_state(pod: &Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "no status".into();
    };
    let cs = status.container_statuses.iter().flatten().next();
    match cs.and_then(|c| c.state.as_ref()) {
        Some(s) if s.running.is_some() => "Running".into(),
        Some(s) => match (&s.waiting, &s.terminated) {
            (Some(w), _) => format!(
                "Waiting {}: {}",
                w.reason.clone().unwrap_or_default(),
                w.message.clone().unwrap_or_default()
            ),
            (_, Some(t)) => format!("Terminated {}", t.reason.clone().unwrap_or_default()),
            _ => "unknown".into(),
        },
        None => format!(
            "phase {} without container status",
            status.phase.clone().unwrap_or_default()
        ),
    }
}

async fn wait_running(client: &Client, ns: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("pod {ns}/{name} Running"), POD_TIMEOUT, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        match (phase.as_deref(), container_state(&pod).as_str()) {
            (Some("Running"), "Running") => Ok(pod),
            (_, state) => Err(state.to_string()),
        }
    })
    .await
}

/// Waits until the kubelet reports the pull as failed (ErrImagePull or ImagePullBackOff).
async fn wait_pull_fails(client: &Client, ns: &str, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("pod {ns}/{name} failing to pull"),
        POD_TIMEOUT,
        || async {
            let pod = pods.get(name).await.map_err(|e| e.to_string())?;
            let state = container_state(&pod);
            if state.starts_with("Waiting ErrImagePull")
                || state.starts_with("Waiting ImagePullBackOff")
            {
                Ok(state)
            } else {
                Err(state)
            }
        },
    )
    .await
}

/// `regcred-operator doctor pod/<name> -n <ns> -o json` and its text form.
async fn doctor(ns: &str, name: &str) -> (i32, Value, String) {
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(operator_binary())
            .args(&args)
            .env("KUBECONFIG", kubeconfig_path())
            .output()
            .await
            .unwrap()
    };
    let pod = format!("pod/{name}");
    let out = run(vec![
        "doctor".into(),
        pod.clone(),
        "-n".into(),
        ns.into(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "doctor: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let text = run(vec!["doctor".into(), pod, "-n".into(), ns.into()]).await;
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&text.stdout).to_string(),
    )
}

fn classifications(report: &Value) -> Vec<String> {
    report["images"][0]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["classification"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until doctor's report on a failing pod carries the kubelet's real failure, classified.
async fn wait_doctor_sees(ns: &str, name: &str, classification: &str) -> (Value, String) {
    wait_for(
        &format!("doctor classifying the pull failure of {ns}/{name} as {classification}"),
        POD_TIMEOUT,
        || async {
            let (code, report, text) = doctor(ns, name).await;
            if code == 1 && classifications(&report).iter().any(|c| c == classification) {
                Ok((report, text))
            } else {
                Err(report)
            }
        },
    )
    .await
}

/// Waits for the pull of pod `name` to fail and for doctor to classify the failure as
/// `authRefused`; returns the pod's state, doctor's report and its text.
async fn wait_pull_refused(client: &Client, ns: &str, name: &str) -> (String, Value, String) {
    let state = wait_pull_fails(client, ns, name).await;
    let (report, text) = wait_doctor_sees(ns, name, "authRefused").await;
    (state, report, text)
}

#[tokio::test]
async fn pod_pulls_the_private_image_only_through_the_operators_copy() {
    let (client, node) = LocalNode::with_admin().await;
    let s = synced_node_credential(&client, &node, "node-pull", &node.password).await;
    let selected = &s.namespaces[0];
    let unselected = namespace(&client, "node-unselected", &[]).await;

    let image = node.own_image("pull");
    let created = run_pod(&client, &node, selected, "app", &image, &[]).await;
    assert_eq!(
        pod_pull_secret_names(&created),
        vec![s.name.clone()],
        "admission copied the ServiceAccount's list"
    );
    wait_running(&client, selected, "app").await;
    // The image registry.env names runs the same way.
    run_pod(&client, &node, selected, "cluster-image", &node.image, &[]).await;
    wait_running(&client, selected, "cluster-image").await;

    // The same registry, an image never pulled on the node, from a namespace the credential does
    // not select: refused.
    let other = node.own_image("unselected");
    run_pod(&client, &node, &unselected, "app", &other, &[]).await;
    let (state, report, text) = wait_pull_refused(&client, &unselected, "app").await;
    assert!(
        !state.contains(&node.password),
        "the pod status carries no credentials"
    );
    assert!(has_problem(&report, "PullFailed"), "{report}");
    assert!(
        has_problem(&report, "NamespaceNotSelected"),
        "doctor names the credential that does not select the namespace: {report}"
    );
    assert!(text.contains(&s.name), "{text}");
    assert!(!text.contains(&node.password) && !report.to_string().contains(&node.password));
}

#[tokio::test]
async fn wrong_password_is_refused_by_the_registry_and_doctor_says_so() {
    let (client, node) = LocalNode::with_admin().await;
    let wrong = password();
    let s = synced_node_credential(&client, &node, "node-wrong", &wrong).await;
    let ns = &s.namespaces[0];

    let image = node.own_image("wrong");
    run_pod(&client, &node, ns, "app", &image, &[]).await;
    let (_, report, text) = wait_pull_refused(&client, ns, "app").await;
    let messages = report["images"][0]["events"].to_string();
    assert!(
        messages.contains("401 Unauthorized"),
        "containerd's own words are kept: {messages}"
    );
    assert!(text.contains("authentication refused"), "{text}");
    assert!(!text.contains(&wrong) && !report.to_string().contains(&wrong));
    assert_nothing_leaked(&client, &s.name, &[&wrong]).await;
}

#[tokio::test]
async fn missing_pull_secret_fails_the_pull_and_doctor_names_it() {
    let (client, node) = LocalNode::with_admin().await;
    let ns = namespace(&client, "node-missing", &[]).await;
    let image = node.own_image("missing");
    run_pod(&client, &node, &ns, "app", &image, &["not-there"]).await;
    let (_, report, _) = wait_pull_refused(&client, &ns, "app").await;
    assert!(has_problem(&report, "SecretMissing"), "{report}");
    assert_eq!(
        report["images"][0]["problems"][0]["code"], "SecretMissing",
        "the cause comes first: {report}"
    );
}

#[tokio::test]
async fn secret_in_another_namespace_fails_the_pull_and_doctor_names_the_namespace() {
    let (client, node) = LocalNode::with_admin().await;
    let home = namespace(&client, "node-home", &[]).await;
    let ns = namespace(&client, "node-elsewhere", &[]).await;
    let name = unique("pull");
    let config = docker_config(&node.registry, &node.username, &node.password);
    put_secret(&client, &pull_secret_object(&home, &name, &config)).await;
    let image = node.own_image("elsewhere");
    run_pod(&client, &node, &ns, "app", &image, &[&name]).await;
    let (_, report, _) = wait_pull_refused(&client, &ns, "app").await;
    assert!(has_problem(&report, "SecretInOtherNamespace"), "{report}");
    assert_eq!(report["secrets"][0]["foundInNamespaces"], json!([home]));
}

/// Waits until the node reports `image` among its images (the kubelet refreshes that list
/// periodically).
async fn wait_image_on_node(client: &Client, node: &LocalNode, image: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(
        &format!("node {} listing {image}", node.node),
        POD_TIMEOUT,
        || async {
            let n = nodes.get(&node.node).await.map_err(|e| e.to_string())?;
            let names: Vec<String> = n
                .status
                .and_then(|s| s.images)
                .into_iter()
                .flatten()
                .flat_map(|i| i.names.unwrap_or_default())
                .collect();
            if names.iter().any(|n| n == image) {
                Ok(())
            } else {
                Err(format!("{} images listed", names.len()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn image_already_on_the_node_is_refused_to_a_pod_without_valid_credentials() {
    let (client, node) = LocalNode::with_admin().await;
    let s = synced_node_credential(&client, &node, "node-cached", &node.password).await;
    let selected = &s.namespaces[0];
    let image = node.own_image("cached");
    run_pod(&client, &node, selected, "first", &image, &[]).await;
    wait_running(&client, selected, "first").await;
    wait_image_on_node(&client, &node, &image).await;

    // Same image, same node, no credentials: the kubelet re-verifies (KEP-2535) and the
    // registry refuses, although the image is right there.
    let unselected = namespace(&client, "node-cached-other", &[]).await;
    run_pod(&client, &node, &unselected, "second", &image, &[]).await;
    let (_, report, text) = wait_pull_refused(&client, &unselected, "second").await;
    assert!(
        has_problem(&report, "CachedImageNeedsCredentials"),
        "{report}"
    );
    assert!(
        text.contains("KEP-2535") && text.contains(&node.node),
        "{text}"
    );
}

/// Removes a registry's hosts.toml from the node's containerd config when dropped.
struct Trusted(PathBuf);

impl Trusted {
    fn new(node: &LocalNode, registry: &TestRegistry) -> Trusted {
        let dir = node.hosts_dir.join(registry.addr());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"https://{addr}\"\n\n[host.\"https://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n",
                addr = registry.addr(),
                ca = registry.ca_file().display()
            ),
        )
        .unwrap();
        Trusted(dir)
    }
}

impl Drop for Trusted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pushes an image of its own into a registry of the test's own.
fn push_to(registry: &TestRegistry, password: &str, target: &str) {
    let dir = tempfile::tempdir().unwrap();
    let auth = docker_config(&registry.addr(), "robot", password);
    let name = unique("rotate");
    push_distinct_image(dir.path(), &name, target, &auth, &registry.cert_dir());
}

#[tokio::test]
async fn after_a_rotation_new_pods_pull_and_running_pods_are_untouched() {
    let (client, node) = LocalNode::with_admin().await;
    let old = password();
    let mut registry = TestRegistry::start("robot", &old);
    let _trusted = Trusted::new(&node, &registry);
    let before = format!("{}/team/app:before", registry.addr());
    push_to(&registry, &old, &before);

    let (source, token) = registry_source(&client, &registry.addr(), "robot", &old).await;
    let s = setup(&client, "node-rotate", 1, json!({ "source": source })).await;
    wait_synced(&client, &s.name).await;
    let ns = &s.namespaces[0];
    wait_sa_lists(&client, ns, "default", &s.name).await;
    wait_admission_lists(&client, ns, "default", &s.name).await;
    run_pod(&client, &node, ns, "old", &before, &[]).await;
    let running = wait_running(&client, ns, "old").await;
    let started = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .and_then(|c| c.into_iter().next())
            .map(|c| (c.container_id, c.restart_count))
    };
    let old_container = started(&running);

    // The registry changes the password, and so does the source.
    let new = password();
    registry.set_password("robot", &new);
    put_password_secret(&client, &token, &new).await;
    wait_copy(&client, ns, &s.name, &new).await;

    // A new image, and the image the old pod runs: both pull with the rotated copy (the second
    // one is on the node already, and the kubelet re-verifies it with the new credentials).
    let after = format!("{}/team/app:after", registry.addr());
    push_to(&registry, &new, &after);
    run_pod(&client, &node, ns, "new", &after, &[]).await;
    run_pod(&client, &node, ns, "again", &before, &[]).await;
    wait_running(&client, ns, "new").await;
    wait_running(&client, ns, "again").await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let still = pods.get("old").await.unwrap();
    assert_eq!(container_state(&still), "Running");
    assert_eq!(
        started(&still),
        old_container,
        "the old pod's container was neither restarted nor replaced"
    );
    assert_nothing_leaked(&client, &s.name, &[&old, &new]).await;
}

/// `podRecovery: Evict` on the node: a Deployment created before its namespace was selected fails
/// to pull; once the credential reaches the namespace its pod is evicted, the ReplicaSet makes a
/// new one that gets the copy from the ServiceAccount, and it runs. A bare pod failing the same way
/// is reported and stays.
#[tokio::test]
async fn a_deployment_that_failed_before_the_credential_came_recovers_and_a_bare_pod_is_reported() {
    let (client, node) = LocalNode::with_admin().await;
    let key = unique("node-rec");
    let ns = namespace(&client, "node-rec", &[]).await;
    let image = node.own_image("recover");
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"nodeName": node.node, "terminationGracePeriodSeconds": 2,
                                       "containers": [{"name": "app", "image": image}]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("creating the Deployment");
    run_pod(&client, &node, &ns, "bare", &image, &[]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let first = wait_for("the Deployment's pod", POD_TIMEOUT, || async {
        web_pods(&pods)
            .await?
            .into_iter()
            .next()
            .map(|p| p.metadata.name.unwrap_or_default())
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    wait_pull_fails(&client, &ns, &first).await;
    wait_pull_fails(&client, &ns, "bare").await;

    let (source, _) =
        registry_source(&client, &node.registry, &node.username, &node.password).await;
    let name = unique("node-rec");
    create_credential(
        &client,
        &name,
        json!({"source": source, "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
               "podRecovery": "Evict"}),
    )
    .await;
    label_namespace(&client, &ns, &key, Some("yes")).await;
    let running = wait_for(
        "a new pod of the Deployment Running",
        POD_TIMEOUT,
        || async {
            web_pods(&pods)
                .await?
                .into_iter()
                .find(|p| {
                    p.metadata.name.as_deref() != Some(&first) && container_state(p) == "Running"
                })
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    assert_eq!(
        pod_pull_secret_names(&running),
        [name.as_str()],
        "the new pod got the copy at admission"
    );
    let bare = pods.get("bare").await.expect("the bare pod stays");
    assert!(
        bare.metadata.deletion_timestamp.is_none(),
        "a bare pod is never evicted"
    );
    wait_for("the bare pod reported", TIMEOUT, || async {
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        events
            .items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("RecreateToPull")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bare")
            })
            .map(|_| ())
            .ok_or_else(|| "no Event yet".to_string())
    })
    .await;
    // The bare pod.
    wait_awaiting(&client, &name, 1).await;
}

/// The pods of the Deployment `web`.
async fn web_pods(pods: &Api<Pod>) -> Result<Vec<Pod>, String> {
    pods.list(&kube::api::ListParams::default().labels("app=web"))
        .await
        .map(|list| list.items)
        .map_err(|e| e.to_string())
}

/// A pod that lists a pull secret of its own (for another registry) gets no entries from its
/// ServiceAccount; the admission policy appends the operator's copy, and the pod pulls and runs.
#[tokio::test]
async fn a_pod_with_pull_secrets_of_its_own_gets_ours_at_admission_and_runs() {
    let (client, node) = LocalNode::with_admin().await;
    let s = node_credential(&client, &node, "node-inject", &node.password).await;
    let ns = &s.namespaces[0];
    wait_copy_exists(&client, ns, &s.name).await;
    wait_sa_lists(&client, ns, "default", &s.name).await;
    let image = node.own_image("inject");
    // The API server loads a new policy within moments of its creation: retry until it acts.
    let pod = wait_for("the copy injected at admission", TIMEOUT, || async {
        let name = unique("own");
        let pod = run_pod(&client, &node, ns, &name, &image, &["other-registry"]).await;
        let listed = pod_pull_secret_names(&pod);
        if listed.len() == 2 {
            Ok((name, listed))
        } else {
            Err(listed)
        }
    })
    .await;
    assert_eq!(pod.1, ["other-registry", s.name.as_str()]);
    wait_running(&client, ns, &pod.0).await;
}

async fn wait_copy_exists(client: &Client, ns: &str, name: &str) {
    wait_for(&format!("Secret {ns}/{name}"), TIMEOUT, || async {
        get_secret(client, ns, name)
            .await
            .map(|_| ())
            .ok_or("absent")
    })
    .await;
}
