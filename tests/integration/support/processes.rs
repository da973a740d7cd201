//! Processes of a test's own: an operator reconciling only its credentials, a private control
//! plane, the programs tests run (helm, kubectl), and reading what they print.

use super::*;

/// Label that hands a RegistryCredential to an operator a test started (the shared operator
/// ignores it).
pub const INSTANCE_LABEL: &str = "regcred.dev/test-instance";

pub async fn create_credential_for(
    client: &Client,
    instance: &str,
    name: &str,
    spec: serde_json::Value,
) {
    let api: Api<RegistryCredential> = Api::all(client.clone());
    let mut rc = RegistryCredential::new(name, spec_from(spec));
    rc.metadata.labels = Some(labels(&[(INSTANCE_LABEL, instance)]));
    api.create(&PostParams::default(), &rc)
        .await
        .unwrap_or_else(|e| panic!("creating RegistryCredential {name}: {e}"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An operator process of a test's own, reconciling only credentials labelled with its instance.
pub struct Operator {
    child: tokio::process::Child,
    pub identity: String,
    pub metrics_url: String,
    pub log: PathBuf,
}

impl Operator {
    #[allow(
        clippy::unused_async,
        reason = "callers await it like the other starters"
    )]
    pub async fn start(
        kubeconfig: &std::path::Path,
        instance: &str,
        identity: &str,
        extra: &[&str],
    ) -> Operator {
        let log_dir =
            std::env::var_os("REGCRED_TEST_LOG_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let log = log_dir.join(format!("operator-{identity}.log"));
        let metrics_port = free_port();
        let selector = format!("{INSTANCE_LABEL}={instance}");
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let mut args = vec![
            "run",
            "--namespace",
            SOURCE_NS,
            "--source-namespaces",
            SOURCE_NS,
            "--selector",
            &selector,
            "--identity",
            identity,
            "--metrics-addr",
            &metrics_addr,
            "--health-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new(operator_binary())
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "trace")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("starting the operator");
        Operator {
            child,
            identity: identity.into(),
            metrics_url: format!("http://{metrics_addr}/metrics"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Panics (with the end of its log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("polling the operator") {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "operator {} exited ({status}); last log lines:\n{}",
                self.identity,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the process to exit; returns success and its log.
    pub async fn wait_exit(&mut self, timeout: Duration) -> (bool, String) {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("operator {} did not exit within {timeout:?}", self.identity)
            })
            .unwrap();
        (
            status.success(),
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        )
    }

    pub async fn metrics(&self) -> Option<String> {
        scrape(&self.metrics_url).await
    }
}

/// GET a Prometheus endpoint (plain HTTP on loopback).
pub async fn scrape(url: &str) -> Option<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", "--max-time", "2", url])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of one sample line (`name{labels} value`) whose prefix is `series`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Writes a kubeconfig that authenticates with a TokenRequest token of `namespace/name`.
pub async fn kubeconfig_for_service_account(
    admin: &Client,
    namespace: &str,
    name: &str,
    path: &std::path::Path,
) {
    let kubeconfig = kubeconfig_as(admin, namespace, name).await;
    std::fs::write(path, serde_yaml_ng::to_string(&kubeconfig).expect("yaml"))
        .expect("writing kubeconfig");
}

/// A control plane of a test's own (for faults that would disturb the shared one), with
/// `deploy/` applied, without a node. Stopped when dropped.
pub struct PrivateCluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

fn run_checked(cmd: &mut std::process::Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateCluster {
    pub async fn start(prefix: &str) -> PrivateCluster {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/private-clusters")
            .join(unique(prefix));
        let kubeconfig = dir.join("kubeconfig");
        let cluster = PrivateCluster { dir, kubeconfig };
        let dir = cluster.dir.clone();
        let kubeconfig = cluster.kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            run_checked(
                // No node: one kubelet on the machine per `make test` is enough, and these
                // clusters exist for control-plane faults.
                std::process::Command::new(cluster_script())
                    .arg("up")
                    .arg(&dir)
                    .env("NODE", "0"),
                "starting a private cluster",
            );
            run_checked(
                std::process::Command::new("kubectl")
                    .args(["apply", "-k"])
                    .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy"))
                    .env("KUBECONFIG", &kubeconfig),
                "kubectl apply -k deploy/",
            );
            run_checked(
                std::process::Command::new("kubectl")
                    .args([
                        "wait",
                        "--for=condition=Established",
                        "crd/registrycredentials.regcred.dev",
                        "--timeout=60s",
                    ])
                    .env("KUBECONFIG", &kubeconfig),
                "waiting for the CRD",
            );
        })
        .await
        .unwrap();
        cluster
    }

    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }

    /// PID of a control-plane process (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn pid(&self, component: &str) -> u32 {
        let file = self.dir.join("pids").join(format!("{component}.pid"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .expect("pid")
    }

    pub fn signal(&self, component: &str, signal: &str) {
        let pid = self.pid(component).to_string();
        run_checked(
            std::process::Command::new("kill").args([&format!("-{signal}"), &pid]),
            &format!("kill -{signal} {component}"),
        );
    }

    /// Stops kube-apiserver and starts it again on the same port; returns once it is ready.
    pub async fn restart_apiserver(&self) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            run_checked(
                std::process::Command::new(cluster_script())
                    .arg("restart-apiserver")
                    .arg(&dir),
                "restarting kube-apiserver",
            );
        })
        .await
        .unwrap();
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Resume a paused etcd first, or its TERM would wait for the grace period.
        let _ = std::fs::read_to_string(self.dir.join("pids/etcd.pid")).map(|pid| {
            std::process::Command::new("kill")
                .args(["-CONT", pid.trim()])
                .status()
        });
        let _ = std::process::Command::new(cluster_script())
            .arg("down")
            .arg(&self.dir)
            .output();
        // Kept after a failure, for its logs.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The Helm chart's directory.
pub fn chart_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/regcred-operator").to_string()
}

/// Runs a program against the test cluster (its `KUBECONFIG`), feeding it `stdin`; returns
/// (success, stdout, stderr).
pub async fn run_program(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is not available: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_program`] that must succeed; returns its stdout.
pub async fn run_ok(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (success, out, err) = run_program(program, args, stdin).await;
    assert!(success, "{program} {args:?}: {err}");
    out
}

/// The documents of a multi-document YAML stream, empty ones left out.
pub fn yaml_documents(yaml: &str) -> Vec<serde_yaml_ng::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}
