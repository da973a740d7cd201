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

mod measure;
mod report;
mod tracker;
mod workload;

use measure::*;
use report::print_table;
use tracker::*;
use workload::*;

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
