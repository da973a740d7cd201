//! The doctor's report for people (the JSON form is the report itself).

use super::Report;

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// The report for people.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let subject = r.pod.as_ref().map_or_else(
        || format!("namespace {}", r.namespace),
        |p| format!("pod {}/{p}", r.namespace),
    );
    let _ = writeln!(out, "{subject} (ServiceAccount {})", r.service_account);
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(
        out,
        "  pull secrets in effect ({}): {}",
        r.pull_secrets_from,
        list(&r.pull_secrets)
    );
    if r.pull_secrets_from == "pod" {
        let _ = writeln!(
            out,
            "  ServiceAccount lists now: {}",
            list(&r.service_account_pull_secrets)
        );
    }
    for s in &r.secrets {
        let state = if !s.present {
            if s.found_in_namespaces.is_empty() {
                "MISSING".to_string()
            } else {
                format!(
                    "MISSING here, exists in {}",
                    s.found_in_namespaces.join(", ")
                )
            }
        } else if let Some(why) = &s.invalid {
            format!("INVALID: {why}")
        } else {
            format!(
                "{}, registries: {}",
                s.r#type.as_deref().unwrap_or("?"),
                s.registries.join(", ")
            )
        };
        let managed = s
            .managed_by
            .as_ref()
            .map(|m| format!(" [RegistryCredential {m}]"))
            .unwrap_or_default();
        let _ = writeln!(out, "  secret {}: {state}{managed}", s.name);
    }
    for i in &r.images {
        let container = i
            .container
            .as_ref()
            .map(|c| format!("container {c}: "))
            .unwrap_or_default();
        let _ = writeln!(out, "\n  {container}{} -> {}", i.image, i.normalized);
        for e in &i.entries {
            let mark = if e.matches {
                "match"
            } else if e.near_miss {
                "near miss"
            } else {
                "no match"
            };
            let why = e
                .why_not
                .as_ref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            let fallback = if e.via_docker_hub_fallback {
                " (Docker Hub fallback)"
            } else {
                ""
            };
            let _ = writeln!(out, "    {mark:9} {} in {}{why}{fallback}", e.key, e.secret);
        }
        for e in &i.events {
            let _ = writeln!(
                out,
                "    event {}: {} — {}",
                e.reason, e.classification, e.message
            );
        }
        for c in &i.registry_checks {
            let _ = writeln!(
                out,
                "    registry check: {}",
                crate::remote::registry::Checked {
                    outcome: c.outcome.clone(),
                    other_host_realm: c.other_host_realm.clone(),
                }
                .describe(&c.registry)
            );
        }
        for p in &i.problems {
            let _ = writeln!(out, "    PROBLEM {}: {}", p.code, p.message);
        }
    }
    let _ = writeln!(
        out,
        "\n{} {}",
        if r.ok { "OK:" } else { "FAIL:" },
        r.verdict
    );
    if let Some(fix) = &r.fix {
        let _ = writeln!(out, "fix: {fix}");
    }
    out
}
