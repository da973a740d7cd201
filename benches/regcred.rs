//! The regcred-operator benchmark driver (run it with `make bench`, which sets up the cluster, the
//! audit log and the operator process and passes their locations in the environment).
//!
//! Everything is observed through watches from this process, so the operator and the floor client
//! are timed the same way; request counts come from the API server's audit log.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Pod, Secret, ServiceAccount},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use regcred_operator::api::{RegistryCredential, RegistryCredentialSpec};
use serde_json::json;
use tokio::sync::Notify;

const SECRET_NAME: &str = "bench-pull";
const SOURCE_NS: &str = "regcred-system";

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the benchmark with `make bench`"))
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client(path: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.read_timeout = Some(Duration::from_secs(300));
    Client::try_from(config).expect("client")
}

/// What the watches have seen, per namespace.
#[derive(Default, Clone)]
struct NsSeen {
    /// When `default` first appeared.
    sa_appeared: Option<Instant>,
    /// When `default` first listed [`SECRET_NAME`].
    sa_listed: Option<Instant>,
    /// The copy's `.dockerconfigjson` and when it last changed.
    secret: Option<(Vec<u8>, Instant)>,
}

#[derive(Default)]
struct Tracker {
    seen: Mutex<HashMap<String, NsSeen>>,
    changed: Notify,
}

impl Tracker {
    fn on_sa(&self, sa: &ServiceAccount) {
        if sa.name_any() != "default" {
            return;
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap();
        let entry = seen.entry(sa.namespace().unwrap_or_default()).or_default();
        entry.sa_appeared.get_or_insert(now);
        if sa
            .image_pull_secrets
            .iter()
            .flatten()
            .any(|r| r.name == SECRET_NAME)
        {
            entry.sa_listed.get_or_insert(now);
        } else {
            // Taken out again (a teardown between fan-out pairs).
            entry.sa_listed = None;
        }
        drop(seen);
        self.changed.notify_waiters();
    }

    fn on_secret(&self, s: &Secret) {
        if s.name_any() != SECRET_NAME {
            return;
        }
        let data = s
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
            .map(|b| b.0.clone())
            .unwrap_or_default();
        let mut seen = self.seen.lock().unwrap();
        let entry = seen.entry(s.namespace().unwrap_or_default()).or_default();
        if entry.secret.as_ref().is_none_or(|(old, _)| *old != data) {
            entry.secret = Some((data, Instant::now()));
        }
        drop(seen);
        self.changed.notify_waiters();
    }

    fn on_secret_deleted(&self, s: &Secret) {
        if s.name_any() != SECRET_NAME {
            return;
        }
        if let Some(entry) = self
            .seen
            .lock()
            .unwrap()
            .get_mut(&s.namespace().unwrap_or_default())
        {
            entry.secret = None;
        }
        self.changed.notify_waiters();
    }

    /// Waits until no namespace of `namespaces` holds a copy or lists it any more.
    async fn wait_cleared(&self, namespaces: &[String], what: &str) {
        self.wait_all(namespaces, what, |s| {
            (s.secret.is_none() && s.sa_listed.is_none()).then(Instant::now)
        })
        .await;
    }

    /// Waits until `done` holds for every namespace; returns the latest time `at` gives among them.
    async fn wait_all(
        &self,
        namespaces: &[String],
        what: &str,
        done: impl Fn(&NsSeen) -> Option<Instant>,
    ) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let notified = self.changed.notified();
            {
                let seen = self.seen.lock().unwrap();
                let times: Vec<Option<Instant>> = namespaces
                    .iter()
                    .map(|ns| seen.get(ns).and_then(&done))
                    .collect();
                if times.iter().all(Option::is_some) {
                    return times
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or_else(Instant::now);
                }
                if Instant::now() > deadline {
                    let missing = times.iter().filter(|t| t.is_none()).count();
                    panic!(
                        "timed out waiting for {what}: {missing} of {} namespaces missing",
                        namespaces.len()
                    );
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
    }

    /// Waits until every namespace's copy holds `want`; returns the latest time one changed.
    async fn wait_copies(&self, namespaces: &[String], what: &str, want: &[u8]) -> Instant {
        self.wait_all(namespaces, what, |s| {
            s.secret
                .as_ref()
                .filter(|(d, _)| d.as_slice() == want)
                .map(|(_, at)| *at)
        })
        .await
    }

    fn get(&self, ns: &str) -> NsSeen {
        self.seen
            .lock()
            .unwrap()
            .get(ns)
            .cloned()
            .unwrap_or_default()
    }
}

fn watch_into(client: &Client, tracker: Arc<Tracker>) {
    let sas = watcher(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields("metadata.name=default"),
    )
    .default_backoff()
    .applied_objects();
    let t = tracker.clone();
    tokio::spawn(async move {
        let mut sas = std::pin::pin!(sas);
        while let Some(sa) = sas.next().await {
            if let Ok(sa) = sa {
                t.on_sa(&sa);
            }
        }
    });
    let secrets = watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={SECRET_NAME}")),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut secrets = std::pin::pin!(secrets);
        while let Some(event) = secrets.next().await {
            match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    tracker.on_secret(&s);
                }
                Ok(watcher::Event::Delete(s)) => tracker.on_secret_deleted(&s),
                _ => {}
            }
        }
    });
}

fn config_with(password: &str) -> Vec<u8> {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("bench:{password}"));
    json!({"auths": {"registry.bench.example": {"username": "bench", "password": password, "auth": auth}}})
        .to_string()
        .into_bytes()
}

fn secret(ns: &str, name: &str, data: &[u8], labels: &[(&str, &str)]) -> Secret {
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
async fn concurrently<T, Fut>(
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
fn namespace_object(name: &str, set: Option<&str>) -> Namespace {
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
async fn namespaces(admin: &Client, tracker: &Tracker, set: &str, n: usize) -> Vec<String> {
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

fn credential(set: &str, source: &str) -> RegistryCredential {
    let spec: RegistryCredentialSpec = serde_json::from_value(json!({
        "source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
        "secretName": SECRET_NAME,
        "namespaceSelector": {"matchLabels": {"bench-set": set}},
    }))
    .unwrap();
    RegistryCredential::new(set, spec)
}

/// Time from creating a RegistryCredential over `namespaces` to every copy and entry observed.
async fn fan_out(
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
async fn remove_credential(admin: &Client, tracker: &Tracker, set: &str, names: &[String]) {
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
async fn floor_teardown(floor: &Client, tracker: &Tracker, names: &[String], concurrency: usize) {
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

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        f64::midpoint(xs[mid - 1], xs[mid])
    } else {
        xs[mid]
    }
}

/// What the floor client does per namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FloorStep {
    /// One Secret create and one ServiceAccount patch.
    FanOut,
    /// One Secret patch (the copies exist).
    Rotation,
}

/// The floor: a minimal client making exactly the writes of `step` per namespace, with
/// `concurrency` namespaces in flight. Returns the time until the watches have seen all of them.
async fn floor_pass(
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

/// A wall-clock window, for picking requests out of the audit log.
#[derive(Clone, Copy)]
struct Window {
    from: SystemTime,
    to: SystemTime,
}

impl Window {
    fn start() -> Self {
        Window {
            from: SystemTime::now(),
            to: SystemTime::now(),
        }
    }
    fn end(mut self) -> Self {
        self.to = SystemTime::now();
        self
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Requests {
    reads: usize,
    writes: usize,
    lease_writes: usize,
    /// When the first and the last write of a Secret or ServiceAccount arrived, after the
    /// window's start.
    first_write: Option<Duration>,
    last_write: Option<Duration>,
}

impl Requests {
    fn write_ms(at: Option<Duration>) -> serde_json::Value {
        json!(at.map(|d| d.as_secs_f64() * 1000.0))
    }
}

fn audit_requests(path: &str, user: &str, window: Window) -> Requests {
    let text = std::fs::read_to_string(path).expect("audit log");
    let (from, to) = (
        Timestamp::try_from(window.from).unwrap(),
        Timestamp::try_from(window.to).unwrap(),
    );
    let mut r = Requests::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["user"]["username"] != user {
            continue;
        }
        let Some(at) = event["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if at < from || at > to {
            continue;
        }
        match event["verb"].as_str().unwrap_or_default() {
            "get" | "list" | "watch" => r.reads += 1,
            "create" | "update" | "patch" | "delete" | "deletecollection" => {
                if event["objectRef"]["resource"] == "leases" {
                    r.lease_writes += 1;
                } else {
                    r.writes += 1;
                }
                if ["secrets", "serviceaccounts"]
                    .contains(&event["objectRef"]["resource"].as_str().unwrap_or_default())
                {
                    let after = Duration::try_from(at.duration_since(from)).unwrap_or_default();
                    r.first_write = Some(r.first_write.map_or(after, |f| f.min(after)));
                    r.last_write = Some(r.last_write.map_or(after, |l| l.max(after)));
                }
            }
            _ => {}
        }
    }
    r
}

fn proc_status(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("operator process");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("operator process");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

/// Creates `count` namespaces of the `fan` set at 20 a second and waits until each default
/// ServiceAccount lists our Secret. Returns the latencies from the ServiceAccount's appearance
/// (ms, sorted) and the operator's CPU seconds per namespace meanwhile.
async fn onboard_namespaces(
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
async fn extra_service_accounts(admin: &Client, names: &[String], extra: &[&str]) {
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn settle(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

/// The operator's sync passes so far, summed over credentials: (full, over some namespaces).
fn sync_passes(url: &str) -> (f64, f64) {
    let out = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "2", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut passes = (0.0, 0.0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("regcred_sync_passes_total{"))
    {
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if line.contains("scope=\"full\"") {
            passes.0 += value;
        } else {
            passes.1 += value;
        }
    }
    passes
}

/// Waits until the operator is idle (under 2% of a CPU for two seconds in a row, at most a
/// minute), so that a CPU measurement that follows counts only its own work, not the tail of the
/// events before it.
async fn settle_until_idle(pid: &str) {
    let started = Instant::now();
    let mut quiet = 0;
    while quiet < 2 && started.elapsed() < Duration::from_secs(60) {
        let before = cpu_seconds(pid);
        settle(1).await;
        quiet = if cpu_seconds(pid) - before < 0.02 {
            quiet + 1
        } else {
            0
        };
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_num("N", 1000);
    let n_scale = env_num("N_SCALE", 3000);
    let unrelated = env_num("UNRELATED", 2000);
    let pods = env_num("PODS", 2000);
    let idle_seconds = env_num("IDLE_SECONDS", 60) as u64;
    let onboard = env_num("ONBOARD", 200);
    let rotation_pairs = env_num("ROTATION_PAIRS", 3).max(1);
    let fanout_pairs = env_num("FANOUT_PAIRS", 3).max(1);
    let admin = client(&env("BENCH_ADMIN_KUBECONFIG")).await;
    let floor = client(&env("BENCH_FLOOR_KUBECONFIG")).await;
    let pid = env("BENCH_OPERATOR_PID");
    let metrics = env("BENCH_METRICS_URL");
    let audit = env("BENCH_AUDIT_LOG");
    let operator_user = env("BENCH_OPERATOR_USER");
    let out = PathBuf::from(env("BENCH_OUT"));
    let tracker = Arc::new(Tracker::default());
    watch_into(&admin, tracker.clone());
    settle(2).await;
    let mut results = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        eprintln!("[bench] {k} = {v}");
        results.insert(k.into(), v);
    };
    put("n", json!(n));

    // Floor first, while no RegistryCredential exists: the operator has nothing to do meanwhile.
    // Pick the floor's concurrency on a calibration set, then run it at N.
    let calibration = n.clamp(20, 200);
    let mut best = (usize::MAX, Duration::MAX);
    for (i, c) in [8usize, 16, 32, 64, 128].into_iter().enumerate() {
        let names = namespaces(&admin, &tracker, &format!("cal{i}"), calibration).await;
        let took = floor_pass(&floor, &tracker, &names, "floor-cal", c, FloorStep::FanOut).await;
        eprintln!("[bench] floor calibration: concurrency {c}: {took:?} for {calibration}");
        if took < best.1 {
            best = (c, took);
        }
    }
    let floor_c = best.0;
    put("floor_concurrency", json!(floor_c));
    let floor_names = namespaces(&admin, &tracker, "floor", n).await;
    let names = namespaces(&admin, &tracker, "fan", n).await;
    let floor_user = env("BENCH_FLOOR_USER");

    // 1. Fan-out, in pairs: the floor's fan-out over its N namespaces, then the operator's over
    // its own, FANOUT_PAIRS times; between pairs both are undone (the credential deleted and its
    // teardown waited for, the floor's Secrets deleted and its entries taken out). The floor runs
    // while no RegistryCredential exists, so the operator has nothing to do meanwhile. The ratio
    // is the median of the pairs' ratios, as for rotation.
    let mut fanouts = Vec::new();
    let mut floor_fanouts = Vec::new();
    let mut fanout_ratios = Vec::new();
    let mut rotation_floor = Duration::ZERO;
    let mut fanout_window = None;
    let mut fanout_cpu = 0.0;
    for pair in 0..fanout_pairs {
        if pair > 0 {
            // Past the end of the last pair's request window (it runs a second beyond the fan-out).
            settle(2).await;
            remove_credential(&admin, &tracker, "fan", &names).await;
            floor_teardown(&floor, &tracker, &floor_names, floor_c).await;
        }
        settle_until_idle(&pid).await;
        let floor_window = Window::start();
        let floor_took = floor_pass(
            &floor,
            &tracker,
            &floor_names,
            "floor-pw-1",
            floor_c,
            FloorStep::FanOut,
        )
        .await;
        if pair == 0 {
            // The first floor rotation, also before any credential exists.
            rotation_floor = floor_pass(
                &floor,
                &tracker,
                &floor_names,
                "floor-pw-2",
                floor_c,
                FloorStep::Rotation,
            )
            .await;
            // Read after the rotation: the audit log is written in batches up to a second late.
            let floor_requests = audit_requests(
                &audit,
                &floor_user,
                Window {
                    from: floor_window.from,
                    to: floor_window.from + floor_took,
                },
            );
            put(
                "fanout_floor_last_write_ms",
                Requests::write_ms(floor_requests.last_write),
            );
        }
        settle_until_idle(&pid).await;
        settle(2).await;
        let cpu_before = cpu_seconds(&pid);
        let (took, window) = fan_out(&admin, &tracker, "fan", &names, "pw-1").await;
        if pair == 0 {
            fanout_cpu = cpu_seconds(&pid) - cpu_before;
            fanout_window = Some(window);
        }
        eprintln!("[bench] fan-out pair {pair}: operator {took:?}, floor {floor_took:?}");
        fanouts.push(took.as_secs_f64());
        floor_fanouts.push(floor_took.as_secs_f64());
        fanout_ratios.push(took.as_secs_f64() / floor_took.as_secs_f64());
    }
    let fanout = median(&fanouts);
    put("fanout_s", json!(fanout));
    put("fanout_floor_s", json!(median(&floor_fanouts)));
    put("fanout_pairs_s", json!([fanouts, floor_fanouts]));
    put("fanout_ratios", json!(fanout_ratios));
    put("fanout_ratio", json!(median(&fanout_ratios)));
    put("fanout_cpu_s", json!(fanout_cpu));
    // 5. Requests per namespace during the first fan-out.
    settle(3).await; // audit batches flush within a second
    let window = fanout_window.expect("at least one fan-out");
    let during = audit_requests(
        &audit,
        &operator_user,
        Window {
            from: window.from,
            to: window.to + Duration::from_secs(1),
        },
    );
    put(
        "writes_per_namespace",
        json!(during.writes as f64 / n as f64),
    );
    put("reads_per_namespace", json!(during.reads as f64 / n as f64));
    put("fanout_reads_total", json!(during.reads));
    put("fanout_writes_total", json!(during.writes));
    // When the writes began and ended, from the credential's creation: the rest of the
    // fan-out is the watches delivering the last of them.
    put(
        "fanout_first_write_ms",
        Requests::write_ms(during.first_write),
    );
    put(
        "fanout_last_write_ms",
        Requests::write_ms(during.last_write),
    );
    // 6. Memory at N.
    put("peak_rss_mib", json!(proc_status(&pid, "VmHWM:")));

    // 3. Rotation, in pairs: the operator's rotation of the copies, then the floor's of its own,
    // ROTATION_PAIRS times (the first floor rotation ran above, before any credential existed).
    // The ratio is the median of the pairs' ratios: two cores shared with other work make a
    // single pair move by a third between runs.
    let mut ratios = Vec::new();
    let mut rotations = Vec::new();
    let mut floor_rotations = vec![rotation_floor.as_secs_f64()];
    let mut rotation_window = None;
    let mut rotation_cpu = 0.0;
    for pair in 0..rotation_pairs {
        settle(2).await;
        let password = format!("pw-{}", pair + 2);
        let window = Window::start();
        let cpu_before = cpu_seconds(&pid);
        let t0 = Instant::now();
        Api::<Secret>::namespaced(admin.clone(), SOURCE_NS)
            .patch(
                "src-fan",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"data": {".dockerconfigjson": ByteString(config_with(&password))}}),
                ),
            )
            .await
            .expect("rotating");
        let rotated = tracker
            .wait_copies(&names, "rotation", &config_with(&password))
            .await;
        let rotation = (rotated - t0).as_secs_f64();
        if pair == 0 {
            rotation_window = Some(window.end());
            rotation_cpu = cpu_seconds(&pid) - cpu_before;
        }
        rotations.push(rotation);
        if pair > 0 {
            settle(2).await;
            let floor = floor_pass(
                &floor,
                &tracker,
                &floor_names,
                &format!("floor-pw-{}", pair + 2),
                floor_c,
                FloorStep::Rotation,
            )
            .await;
            floor_rotations.push(floor.as_secs_f64());
        }
        ratios.push(rotation / floor_rotations[pair]);
    }
    put("rotation_s", json!(median(&rotations)));
    put("rotation_floor_s", json!(median(&floor_rotations)));
    put("rotation_pairs_s", json!([rotations, floor_rotations]));
    put("rotation_ratios", json!(ratios));
    put("rotation_ratio", json!(median(&ratios)));
    put("rotation_cpu_s", json!(rotation_cpu));

    // 4. Idle cost.
    settle(5).await;
    let rotation_window = rotation_window.expect("at least one rotation");
    let rotation_requests = audit_requests(&audit, &operator_user, rotation_window);
    put(
        "rotation_first_write_ms",
        Requests::write_ms(rotation_requests.first_write),
    );
    put(
        "rotation_last_write_ms",
        Requests::write_ms(rotation_requests.last_write),
    );
    let cpu0 = cpu_seconds(&pid);
    let idle = Window::start();
    settle(idle_seconds).await;
    let idle = idle.end();
    let cpu1 = cpu_seconds(&pid);
    settle(3).await;
    let idle_requests = audit_requests(&audit, &operator_user, idle);
    put("idle_seconds", json!(idle_seconds));
    put("idle_writes", json!(idle_requests.writes));
    put("idle_lease_writes", json!(idle_requests.lease_writes));
    put("idle_reads", json!(idle_requests.reads));
    put("idle_cpu_s", json!(cpu1 - cpu0));

    // 2. Onboarding latency (from the moment the namespace's default ServiceAccount appears to the
    // moment it lists our Secret): new namespaces at a steady rate while the credential is active.
    settle_until_idle(&pid).await;
    let before = sync_passes(&metrics);
    let (latencies, onboard_cpu) =
        onboard_namespaces(&admin, &tracker, &pid, "fan-new", onboard).await;
    let after = sync_passes(&metrics);
    put("onboard_full_passes", json!(after.0 - before.0));
    put("onboard_namespace_passes", json!(after.1 - before.1));
    put("onboard_cpu_ms_per_namespace", json!(onboard_cpu * 1000.0));
    let api: Api<Namespace> = Api::all(admin.clone());
    put("onboarding_p50_ms", json!(percentile(&latencies, 50.0)));
    put("onboarding_p95_ms", json!(percentile(&latencies, 95.0)));
    put("onboarding_p99_ms", json!(percentile(&latencies, 99.0)));
    put(
        "onboarding_max_ms",
        json!(latencies.last().copied().unwrap_or(f64::NAN)),
    );

    // 6. Unrelated Secrets must not be cached.
    settle(3).await;
    let rss_before = proc_status(&pid, "VmRSS:");
    let bulk = "bench-unrelated";
    api.create(&PostParams::default(), &namespace_object(bulk, None))
        .await
        .expect("namespace");
    let payload = ByteString((0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect());
    concurrently(0..unrelated, 8, "unrelated Secrets", |i| {
        let (client, payload) = (admin.clone(), payload.clone());
        async move {
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(format!("blob-{i:05}")),
                    ..Default::default()
                },
                data: Some([("blob".to_string(), payload)].into()),
                ..Default::default()
            };
            Api::<Secret>::namespaced(client, bulk)
                .create(&PostParams::default(), &s)
                .await
                .map(|_| ())
        }
    })
    .await;
    settle(5).await;
    let rss_after = proc_status(&pid, "VmRSS:");
    put("unrelated_secrets", json!(unrelated));
    put("unrelated_rss_delta_mib", json!(rss_after - rss_before));
    put("rss_after_unrelated_mib", json!(rss_after));

    // 8. Pods cost nothing while podRecovery is off everywhere (no pod watch), and little with it
    //    on: only Pending pods are watched, and of each only what recovery reads is kept.
    if pods > 0 {
        let pods_ns = "bench-pods";
        api.create(&PostParams::default(), &namespace_object(pods_ns, None))
            .await
            .expect("namespace");
        settle(3).await;
        let rss_before = proc_status(&pid, "VmRSS:");
        let note = "x".repeat(4096);
        concurrently(0..pods, 8, "pods", |i| {
            let (client, note) = (admin.clone(), note.clone());
            async move {
                // Bound to a node no kubelet serves: Pending for good, like a pod waiting to pull.
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i:05}"), "annotations": {"note": note},
                                 "labels": {"app": "bench"}},
                    "spec": {"nodeName": "bench-no-kubelet", "containers": [{
                        "name": "app", "image": "registry.example.com/bench/app:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}
                }))
                .unwrap();
                Api::<Pod>::namespaced(client, pods_ns)
                    .create(&PostParams::default(), &pod)
                    .await
                    .map(|_| ())
            }
        })
        .await;
        settle(5).await;
        let rss_off = proc_status(&pid, "VmRSS:");
        Api::<RegistryCredential>::all(admin.clone())
            .patch(
                "fan",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"podRecovery": "Report"}})),
            )
            .await
            .expect("turning podRecovery on");
        settle(10).await;
        let rss_on = proc_status(&pid, "VmRSS:");
        put("pods", json!(pods));
        put("pods_rss_delta_off_mib", json!(rss_off - rss_before));
        put("pods_rss_delta_on_mib", json!(rss_on - rss_before));
        put(
            "pods_rss_per_1000_on_mib",
            json!((rss_on - rss_before) * 1000.0 / pods as f64),
        );
        // Back to the default for what follows (with podRecovery on, every pass covers every
        // target, pods and all).
        Api::<RegistryCredential>::all(admin.clone())
            .patch(
                "fan",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"podRecovery": "Off"}})),
            )
            .await
            .expect("turning podRecovery off");
        settle(3).await;
    }

    // 7. Scaling: per-namespace fan-out cost at N_SCALE vs N.
    if n_scale > 0 {
        // The peak so far, to tell the scale run's own peak from the earlier scenarios'.
        put(
            "peak_rss_before_scale_mib",
            json!(proc_status(&pid, "VmHWM:")),
        );
        let big = namespaces(&admin, &tracker, "scale", n_scale).await;
        settle(2).await;
        let (took, _) = fan_out(&admin, &tracker, "scale", &big, "pw-scale").await;
        put("n_scale", json!(n_scale));
        put("fanout_scale_s", json!(took.as_secs_f64()));
        let ratio = (took.as_secs_f64() / n_scale as f64) / (fanout / n as f64);
        put("scaling_ratio", json!(ratio));
        // The cost of one event in the big cluster: 3 ServiceAccounts in each namespace, then the
        // same onboarding as at N, operator CPU per onboarded namespace compared.
        extra_service_accounts(&admin, &big, &["builder", "deployer"]).await;
        settle(5).await;
        settle_until_idle(&pid).await;
        let before = sync_passes(&metrics);
        let (_, scale_cpu) = onboard_namespaces(&admin, &tracker, &pid, "fan-late", onboard).await;
        let after = sync_passes(&metrics);
        put("onboard_scale_full_passes", json!(after.0 - before.0));
        put("onboard_scale_namespace_passes", json!(after.1 - before.1));
        put(
            "onboard_cpu_ms_per_namespace_scale",
            json!(scale_cpu * 1000.0),
        );
        put("event_cost_ratio", json!(scale_cpu / onboard_cpu));
        put("peak_rss_scale_mib", json!(proc_status(&pid, "VmHWM:")));
        // What stays once the fan-out and the onboarding are over (the peak includes their work).
        settle(10).await;
        put("rss_scale_settled_mib", json!(proc_status(&pid, "VmRSS:")));
    }

    std::fs::create_dir_all(&out).unwrap();
    let results = serde_json::Value::Object(results);
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    print_table(&results);
}

fn print_table(r: &serde_json::Value) {
    let f = |k: &str| {
        r[k].as_f64()
            .map_or_else(|| "-".into(), |v| format!("{v:.2}"))
    };
    let rows = [
        (
            "fan-out, N namespaces",
            format!("{} s", f("fanout_s")),
            format!(
                "floor {} s, median ratio of the pairs {}",
                f("fanout_floor_s"),
                f("fanout_ratio")
            ),
            "≤ 1.15x floor",
        ),
        (
            "onboarding p50 / p95 / p99 / max",
            format!(
                "{} / {} / {} / {} ms",
                f("onboarding_p50_ms"),
                f("onboarding_p95_ms"),
                f("onboarding_p99_ms"),
                f("onboarding_max_ms")
            ),
            String::new(),
            "p99 < 1000 ms",
        ),
        (
            "rotation, N copies",
            format!("{} s", f("rotation_s")),
            format!(
                "floor {} s, median ratio of the pairs {}",
                f("rotation_floor_s"),
                f("rotation_ratio")
            ),
            "≤ 1.25x floor",
        ),
        (
            "idle writes",
            f("idle_writes"),
            format!(
                "+ {} lease renewals, {} CPU s in {} s",
                f("idle_lease_writes"),
                f("idle_cpu_s"),
                f("idle_seconds")
            ),
            "0",
        ),
        (
            "requests per namespace",
            format!(
                "{} writes, {} reads",
                f("writes_per_namespace"),
                f("reads_per_namespace")
            ),
            String::new(),
            "≤ 2 writes + O(1) reads",
        ),
        (
            "peak RSS at N",
            format!("{} MiB", f("peak_rss_mib")),
            format!(
                "+{} MiB with unrelated Secrets",
                f("unrelated_rss_delta_mib")
            ),
            "< 64 MiB; < 5 MiB",
        ),
        (
            "Pending pods, podRecovery off / on",
            format!(
                "+{} / +{} MiB",
                f("pods_rss_delta_off_mib"),
                f("pods_rss_delta_on_mib")
            ),
            format!("{} pods with 4 KiB annotations", r["pods"]),
            "off: no watch",
        ),
        (
            "scaling N_SCALE vs N",
            f("scaling_ratio"),
            format!("{} s at {}", f("fanout_scale_s"), r["n_scale"]),
            "≤ 1.1",
        ),
        (
            "event cost N_SCALE vs N",
            f("event_cost_ratio"),
            format!(
                "{} / {} ms CPU per onboarded namespace",
                f("onboard_cpu_ms_per_namespace_scale"),
                f("onboard_cpu_ms_per_namespace")
            ),
            "≤ 1.2",
        ),
        (
            "peak RSS at N_SCALE",
            format!("{} MiB", f("peak_rss_scale_mib")),
            format!(
                "3 ServiceAccounts per namespace; {} MiB once settled, {} MiB before",
                f("rss_scale_settled_mib"),
                f("peak_rss_before_scale_mib")
            ),
            "< 80 MiB",
        ),
    ];
    println!("\nregcred-operator benchmark (N = {})\n", r["n"]);
    println!("| scenario | result | detail | target |\n| --- | --- | --- | --- |");
    for (name, result, detail, target) in rows {
        println!("| {name} | {result} | {detail} | {target} |");
    }
    println!("\nresults: target/bench/results.json");
}
