//! Asking the registries whether a credential works, without holding up a pass.

use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::{
    api::RegistryCredential, controller::context::Context, controller::resolve::ResolvedSource,
    controller::status::CredentialsCondition, dockerconfig::DockerConfig, kubelet::RegistryKey,
    remote::registry::Checker,
};

/// Asks each registry of the config whether it accepts the credentials, when verification is on
/// and due (interval elapsed, or the source changed).
pub(super) async fn verification(
    ctx: &Context,
    rc: &RegistryCredential,
    resolved: &ResolvedSource,
) -> CredentialsCondition {
    let Some(verify) = &rc.spec.verify else {
        return CredentialsCondition::Off;
    };
    let name = rc.name_any();
    let interval = Duration::from_secs(verify.interval_seconds.max(10).into());
    let due = match ctx
        .verifications
        .lock()
        .expect("verifications lock")
        .get(&name)
    {
        Some((at, version)) => at.elapsed() >= interval || *version != resolved.version,
        None => true,
    };
    if !due {
        return CredentialsCondition::Keep;
    }
    let set = |valid: bool, reason: &str, message: String| CredentialsCondition::Set {
        valid,
        reason: reason.into(),
        message,
    };
    let checker = match Checker::new(
        verify.ca_bundle.as_deref().map(str::as_bytes),
        Duration::from_secs(10),
    ) {
        Ok(c) => c.forbid_cross_host_realms(ctx.settings.forbid_cross_host_realms),
        Err(e) => {
            return set(
                false,
                "InvalidCABundle",
                format!("spec.verify.caBundle: {e}"),
            );
        }
    };
    let Ok(config) = DockerConfig::from_dockerconfigjson(&resolved.data) else {
        return set(
            false,
            "InvalidSource",
            "the source config could not be read".into(),
        );
    };
    // All registries at once: an unreachable one costs its timeout once, not once per registry.
    let mut checks = Vec::new();
    for key in config.registries() {
        let Ok(parsed) = RegistryKey::parse(key) else {
            continue;
        };
        let host = match parsed.port() {
            Some(port) => format!("{}:{port}", parsed.host()),
            None => parsed.host().to_string(),
        };
        // A wildcard key names no single registry; token-only entries have nothing to send.
        let (false, Some(credentials)) = (host.contains('*'), config.credentials(key)) else {
            continue;
        };
        let checker = &checker;
        checks.push(async move {
            let outcome = checker.check(&host, &credentials).await;
            (host, outcome)
        });
    }
    let outcomes = futures::future::join_all(checks).await;
    let failure = outcomes
        .iter()
        .find(|(_, checked)| !checked.outcome.ok())
        .map(|(host, checked)| (checked.outcome.reason(), checked.describe(host)));
    // A token service on another host than its registry is named: that is where the
    // credentials went.
    let checked: Vec<String> = outcomes
        .into_iter()
        .map(|(host, checked)| match checked.other_host_realm {
            Some(realm) => format!("{host} (token service on another host: {realm})"),
            None => host,
        })
        .collect();
    ctx.verifications
        .lock()
        .expect("verifications lock")
        .insert(name, (Instant::now(), resolved.version.clone()));
    match failure {
        Some((reason, message)) => set(false, reason, message),
        None if checked.is_empty() => set(
            true,
            "NotChecked",
            "no entry with a user name and password to check".into(),
        ),
        None => set(
            true,
            "Authenticated",
            format!("accepted by {}", checked.join(", ")),
        ),
    }
}
