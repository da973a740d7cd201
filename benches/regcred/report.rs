//! The table printed at the end of a run.

pub(crate) fn print_table(r: &serde_json::Value) {
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
