//! The Grafana dashboard and the Prometheus alerts in deploy/monitoring/ parse, and reference only
//! metrics the operator exports (read from the suite's operator's /metrics).

use std::collections::BTreeSet;

use crate::support::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Sample names the operator exports, from the `# TYPE` lines (so that families without a
/// series yet count as well): counters as `_total`, histograms as `_bucket`, `_sum`, `_count`.
async fn exported() -> BTreeSet<String> {
    let url = std::env::var("REGCRED_TEST_METRICS_URL").expect("REGCRED_TEST_METRICS_URL");
    let Some(text) = scrape(&url).await else {
        return BTreeSet::new();
    };
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

/// Every `regcred_…` metric name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("regcred_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.push(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

fn exprs_of_dashboard(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition" | "query", serde_json::Value::String(s)) => {
                        out.push(s.clone());
                    }
                    _ => exprs_of_dashboard(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs_of_dashboard(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_use_only_exported_metrics() {
    // A metric family shows in /metrics once it has a series: a credential with a failing
    // namespace (a same-name Secret of someone else's), verification (against a registry that
    // refuses connections) and pod recovery give every family a series, except the evictions
    // counter, which needs an evicted pod.
    let client = admin().await;
    let key = unique("monitoring");
    let name = unique("monitoring");
    namespace(&client, "monitoring", &[(&key, "yes")]).await;
    let taken = namespace(&client, "monitoring", &[(&key, "yes")]).await;
    put_secret(
        &client,
        &secret_object(&taken, &name, "Opaque", &[("a", b"b")]),
    )
    .await;
    let source = unique("src");
    let config = docker_config("127.0.0.1:1", "robot", &password());
    put_secret(
        &client,
        &secret_object(
            SOURCE_NS,
            &source,
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", config.as_bytes())],
        ),
    )
    .await;
    create_credential(
        &client,
        &name,
        serde_json::json!({
            "source": {"secretRef": {"namespace": SOURCE_NS, "name": source}},
            "namespaceSelector": {"matchLabels": {key.clone(): "yes"}},
            "verify": {"intervalSeconds": 3600},
            "podRecovery": "Report",
        }),
    )
    .await;
    wait_ready_reason(&client, &name, "Conflict").await;

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).expect("JSON");
    assert_eq!(dashboard["uid"], "regcred-operator");
    let mut exprs = Vec::new();
    exprs_of_dashboard(&dashboard["panels"], &mut exprs);
    exprs_of_dashboard(&dashboard["templating"], &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");

    let rule: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("deploy/monitoring/prometheusrule.yaml")).expect("YAML");
    assert_eq!(rule["kind"], "PrometheusRule");
    let rules = rule["spec"]["groups"][0]["rules"].as_sequence().unwrap();
    let alert = |name: &str| {
        rules
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("alert {name}"))
    };
    assert_eq!(alert("RegistryCredentialNotReady")["for"], "10m");
    assert!(
        alert("RegistryCredentialRejected")["expr"]
            .as_str()
            .unwrap()
            .contains("regcred_credential_verified")
    );
    for r in rules {
        exprs.push(r["expr"].as_str().expect("expr").to_string());
    }

    let mut used = BTreeSet::new();
    for expr in &exprs {
        used.extend(metric_names(expr));
    }
    // A counter with no series yet is not listed: known to exist, from the operator's source.
    used.remove("regcred_pods_recovered_total");
    assert!(include_str!("../../src/runtime/metrics.rs").contains("\"pods_recovered\""));
    assert!(used.len() >= 8, "{used:?}");
    wait_for(
        "every metric the dashboard and the alerts use in the operator's /metrics",
        TIMEOUT,
        || async {
            let exported = exported().await;
            let unknown: Vec<String> = used.difference(&exported).cloned().collect();
            if unknown.is_empty() {
                Ok(())
            } else {
                Err(format!("not exported: {unknown:?}; exported: {exported:?}"))
            }
        },
    )
    .await;
    delete_credential(&client, &name).await;
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            "sum by (le) (rate(regcred_reconcile_duration_seconds_bucket[5m])) / xregcred_no"
        ),
        ["regcred_reconcile_duration_seconds_bucket"]
    );
}
