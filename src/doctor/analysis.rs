//! The doctor's checklist as pure decisions over what [`gather`](super::gather) read: which pull
//! secrets the kubelet uses, what is wrong with each, which entry it matches for each image and
//! why others do not, what the pull failures say, and the verdict. No I/O: every rule here is
//! unit-tested on hand-made objects.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::{
    DoctorError, EntryReport, EventReport, ImageReport, Problem, RegistryReport, Report,
    SecretReport, Subject,
    gather::{Facts, Found, names, pull_secrets},
    pull_events::{self, PullFailure},
    render::truncate,
};
use crate::{
    api::{CREDENTIAL_LABEL, MANAGED_BY_LABEL, MANAGER},
    dockerconfig::{self, Credentials, DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_TYPE, DockerConfig},
    kubelet::{self, ImageRef, Verdict},
    remote::registry::{Checked, Outcome},
};

/// A pull secret, judged the way the kubelet would use it.
pub(crate) struct Loaded {
    pub(crate) report: SecretReport,
    pub(crate) config: Option<DockerConfig>,
}

/// A registry check the analysis asks for: the first matching entry of an image.
pub(crate) struct CheckWanted {
    /// Index into the draft's images.
    pub(crate) image: usize,
    pub(crate) secret: String,
    pub(crate) registry: String,
    /// `None`: the entry holds a token, not a user name and password.
    pub(crate) credentials: Option<Credentials>,
}

/// The analysis before registry checks: problems of the pod as a whole, per-image reports, the
/// checks to make.
pub(crate) struct Draft {
    pub(crate) from: &'static str,
    pub(crate) pull_secrets: Vec<String>,
    pub(crate) sa_secrets: Vec<String>,
    pub(crate) general: Vec<Problem>,
    pub(crate) secrets: Vec<Loaded>,
    pub(crate) images: Vec<ImageReport>,
    pub(crate) checks: Vec<CheckWanted>,
    /// Some image has no matching entry: the RegistryCredentials may tell why
    /// ([`Facts::credentials`] are read only then).
    pub(crate) unmatched: bool,
}

pub(crate) fn problem(code: &'static str, message: String, fix: impl Into<String>) -> Problem {
    Problem {
        code,
        message,
        fix: fix.into(),
    }
}

/// Judges one pull secret as found.
pub(crate) fn judge_secret(name: &str, found: &Found) -> Loaded {
    let mut report = SecretReport {
        name: name.into(),
        present: false,
        found_in_namespaces: Vec::new(),
        r#type: None,
        invalid: None,
        registries: Vec::new(),
        managed_by: None,
    };
    let secret = match found {
        Found::Missing { elsewhere } => {
            report.found_in_namespaces.clone_from(elsewhere);
            return Loaded {
                report,
                config: None,
            };
        }
        Found::Secret(secret) => secret,
    };
    report.present = true;
    let type_ = secret.type_.clone().unwrap_or_else(|| "Opaque".into());
    report.r#type = Some(type_.clone());
    let labels = secret.labels();
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER) {
        report.managed_by = labels.get(CREDENTIAL_LABEL).cloned();
    }
    // The kubelet reads only these two types; an Opaque Secret is ignored even with the right key.
    let parsed = dockerconfig::kubelet_config(secret).unwrap_or_else(|| {
        Err(format!(
            "type {type_}: the kubelet only uses {DOCKER_CONFIG_JSON_TYPE} (or legacy {DOCKERCFG_TYPE}) Secrets as pull secrets"
        ))
    });
    match parsed {
        Ok(config) => {
            report.registries = config.registries().map(str::to_string).collect();
            Loaded {
                report,
                config: Some(config),
            }
        }
        Err(problem) => {
            report.invalid = Some(problem);
            Loaded {
                report,
                config: None,
            }
        }
    }
}

/// Pull failures the kubelet reports in the pod's container statuses, per container: the waiting
/// reason and its message, which carries the runtime's error.
pub(crate) fn status_pull_failures(pod: &Pod) -> Vec<(String, String, String)> {
    kubelet::pull_waits(pod)
        .into_iter()
        .filter_map(|w| Some((w.container.into(), w.reason.into(), w.message?.into())))
        .collect()
}

fn secret_problems(namespace: &str, loaded: &[Loaded], general: &mut Vec<Problem>) {
    for l in loaded {
        let r = &l.report;
        if !r.present && !r.found_in_namespaces.is_empty() {
            general.push(problem(
                "SecretInOtherNamespace",
                format!(
                    "pull secret {} does not exist in namespace {namespace}; a Secret of that name exists in: {}",
                    r.name,
                    r.found_in_namespaces.join(", ")
                ),
                format!(
                    "pull secrets must be in the pod's own namespace: copy it to {namespace}, or let a RegistryCredential select {namespace}"
                ),
            ));
        } else if !r.present {
            general.push(problem(
                "SecretMissing",
                format!("pull secret {} does not exist in namespace {namespace}", r.name),
                format!("create it (`kubectl -n {namespace} create secret docker-registry {} ...`) or let a RegistryCredential select {namespace}", r.name),
            ));
        } else if let Some(invalid) = &r.invalid {
            let code = if r
                .r#type
                .as_deref()
                .is_some_and(|t| t != DOCKER_CONFIG_JSON_TYPE && t != DOCKERCFG_TYPE)
            {
                "WrongSecretType"
            } else {
                "MalformedSecret"
            };
            general.push(problem(
                code,
                format!("pull secret {}: {invalid}", r.name),
                "recreate it with `kubectl create secret docker-registry` (type kubernetes.io/dockerconfigjson)",
            ));
        }
    }
}

/// The analysis of everything but the registry checks.
pub(crate) fn analyse(facts: &Facts) -> Result<Draft, DoctorError> {
    let namespace = facts.namespace.as_str();
    let pod = facts.pod.as_ref();
    let sa_secrets = names(
        facts
            .sa
            .as_ref()
            .and_then(|sa| sa.image_pull_secrets.as_ref()),
    );
    let (from, pull_secrets) = pull_secrets(pod, facts.sa.as_ref());
    let mut general = Vec::new();
    if let Some(pod) = pod
        && pull_secrets.is_empty()
        && !sa_secrets.is_empty()
    {
        general.push(problem(
            "PodCreatedBeforeServiceAccountPatch",
            format!(
                "pod {} has no imagePullSecrets, but its ServiceAccount {} now lists {}: they are copied into pods only when a pod is created",
                pod.name_any(),
                facts.service_account,
                sa_secrets.join(", ")
            ),
            format!(
                "recreate the pod (e.g. `kubectl -n {namespace} rollout restart` its Deployment), or set \
                 `spec.podRecovery: Evict` on the RegistryCredential so that such pods are recreated for you"
            ),
        ));
    }
    let loaded: Vec<Loaded> = facts
        .secrets
        .iter()
        .map(|(name, found)| judge_secret(name, found))
        .collect();
    secret_problems(namespace, &loaded, &mut general);

    let containers: Vec<(Option<String>, String)> = match (pod, &facts.subject) {
        (Some(pod), _) => pod
            .spec
            .iter()
            .flat_map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .chain(s.containers.iter())
            })
            .map(|c| (Some(c.name.clone()), c.image.clone().unwrap_or_default()))
            .collect(),
        (None, Subject::Image { image, .. }) => vec![(None, image.clone())],
        (None, Subject::Pod(_)) => unreachable!("a pod subject has a pod"),
    };
    let status_failures = pod.map(status_pull_failures).unwrap_or_default();
    let node = pod
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.node_name.clone());

    let mut images = Vec::new();
    let mut checks = Vec::new();
    let mut unmatched = false;
    for (container, image) in containers {
        let image_ref = ImageRef::parse(&image).map_err(|e| DoctorError::InvalidImage {
            image: image.clone(),
            reason: e.to_string(),
        })?;
        let mut report = ImageReport {
            container: container.clone(),
            image: image.clone(),
            normalized: image_ref.normalized(),
            entries: Vec::new(),
            events: Vec::new(),
            registry_checks: Vec::new(),
            problems: Vec::new(),
        };
        let first_match = match_entries(&loaded, &image_ref, &mut report);
        if first_match.is_none() {
            unmatched = true;
            leaving_out(facts, &image_ref, &mut report);
        }
        let from_status = status_failures
            .iter()
            .filter(|(c, _, _)| container.as_deref() == Some(c.as_str()))
            .map(|(_, reason, message)| (reason.clone(), message.clone()));
        let pull_failures = facts
            .events
            .iter()
            .filter(|(_, message)| {
                message.contains(&image) || message.contains(&image_ref.normalized())
            })
            .cloned()
            .chain(from_status);
        for (reason, message) in pull_failures {
            let message = truncate(&message, 400);
            if report.events.iter().any(|e| e.message == message) {
                continue;
            }
            let classification = pull_events::classify_pull_message(&message);
            report.events.push(EventReport {
                reason,
                message,
                classification,
            });
        }
        // The container status is read after the Events: it holds the kubelet's latest failure.
        if let Some(last) = report.events.last() {
            report.problems.push(problem(
                "PullFailed",
                format!(
                    "the last pull failed: {} ({})",
                    last.classification, last.reason
                ),
                last.classification.fix(),
            ));
            let present = facts
                .node_images
                .iter()
                .any(|n| *n == image || *n == image_ref.normalized());
            if present && last.classification == PullFailure::AuthRefused {
                report.problems.push(problem(
                    "CachedImageNeedsCredentials",
                    format!(
                        "{image} is already on node {}, but the kubelet does not let this pod use it: with ensure-secret-pulled-images (KEP-2535, KubeletEnsureSecretPulledImages, on by default since Kubernetes 1.35) an image pulled with credentials is re-verified against each new pod's own pull credentials, and the registry refused this pod's",
                        node.as_deref().unwrap_or_default()
                    ),
                    "give the pod pull credentials the registry accepts (a RegistryCredential selecting its namespace); the node's KubeletConfiguration imagePullCredentialsVerificationPolicy sets when cached images are re-verified",
                ));
            }
        }
        if let Some((secret, kubelet_key, raw_key)) = first_match {
            let config = loaded
                .iter()
                .find(|l| l.report.name == secret)
                .and_then(|l| l.config.as_ref());
            let host = kubelet_key.split('/').next().unwrap_or(&kubelet_key);
            // Checks go to the registry the image is pulled from.
            let registry = if host.contains('*') {
                image_ref.registry.clone()
            } else {
                host.to_string()
            };
            checks.push(CheckWanted {
                image: images.len(),
                secret,
                registry,
                credentials: config.and_then(|c| c.credentials(&raw_key)),
            });
        }
        images.push(report);
    }
    Ok(Draft {
        from,
        pull_secrets,
        sa_secrets,
        general,
        secrets: loaded,
        images,
        checks,
        unmatched,
    })
}

/// Evaluates every entry of every pull secret against the image; reports the entries and, when
/// none matches, a problem naming the near misses. Returns the first match: (secret, kubelet
/// key, key as written).
fn match_entries(
    loaded: &[Loaded],
    image_ref: &ImageRef,
    report: &mut ImageReport,
) -> Option<(String, String, String)> {
    let mut first_match = None;
    for l in loaded {
        let Some(config) = &l.config else { continue };
        for e in kubelet::evaluate(config.registries(), image_ref) {
            if e.verdict.is_match() && first_match.is_none() {
                let raw = config.registries().nth(e.position).unwrap_or_default();
                first_match = Some((
                    l.report.name.clone(),
                    e.kubelet_key.clone().unwrap_or_default(),
                    raw.to_string(),
                ));
            }
            report.entries.push(EntryReport {
                secret: l.report.name.clone(),
                key: e.key.clone(),
                matches: e.verdict.is_match(),
                why_not: match &e.verdict {
                    Verdict::Match => None,
                    Verdict::Miss(reason) => Some(reason.to_string()),
                },
                near_miss: kubelet::is_near_miss(&e),
                via_docker_hub_fallback: e.via_docker_hub_fallback,
            });
        }
    }
    let any_config = loaded.iter().any(|l| l.config.is_some());
    if any_config && first_match.is_none() {
        let near: Vec<String> = report
            .entries
            .iter()
            .filter(|e| e.near_miss)
            .map(|e| format!("{} ({})", e.key, e.why_not.clone().unwrap_or_default()))
            .collect();
        let detail = if near.is_empty() {
            String::new()
        } else {
            format!("; near misses: {}", near.join("; "))
        };
        report.problems.push(problem(
            "NoMatchingEntry",
            format!(
                "no pull-secret entry matches {} by the kubelet's rules{detail}",
                image_ref.matching_path()
            ),
            format!(
                "add an entry for {} (host, port and path prefix must match exactly; `*` matches one DNS label)",
                image_ref.registry.clone()
            ),
        ));
    }
    first_match
}

/// RegistryCredentials that hold credentials for the image but have no copy in the namespace.
fn leaving_out(facts: &Facts, image_ref: &ImageRef, report: &mut ImageReport) {
    let namespace = &facts.namespace;
    for rc in &facts.credentials {
        let matches = kubelet::evaluate(rc.registries.iter().map(String::as_str), image_ref)
            .iter()
            .any(|e| e.verdict.is_match());
        if !matches || rc.copy_here {
            continue;
        }
        report.problems.push(problem(
            "NamespaceNotSelected",
            format!(
                "RegistryCredential {} holds credentials for {} but does not select namespace {namespace}: there is no copy {} here",
                rc.name, image_ref.registry, rc.secret_name
            ),
            format!(
                "label namespace {namespace} to match the namespaceSelector of RegistryCredential {} (or list it in spec.namespaces), then recreate the pod",
                rc.name
            ),
        ));
    }
}

/// Adds the answer of a registry to its image's report; `None`: the entry could not be checked
/// (it holds a token).
pub(crate) fn record_check(draft: &mut Draft, wanted: &CheckWanted, checked: Option<Checked>) {
    let image = &mut draft.images[wanted.image];
    let Some(checked) = checked else {
        image.registry_checks.push(RegistryReport {
            secret: wanted.secret.clone(),
            registry: wanted.registry.clone(),
            outcome: Outcome::Unexpected(
                "the entry holds a token, not a user name and password: not checked".into(),
            ),
            other_host_realm: None,
        });
        return;
    };
    let outcome = checked.outcome.clone();
    if !outcome.ok() {
        let (code, fix) = match outcome {
            Outcome::Refused(_) => (
                "RegistryRefused",
                "rotate the credentials in the source of the pull secret",
            ),
            Outcome::Tls(_) => (
                "RegistryTLS",
                "trust the registry's CA (containerd/CRI-O registry config on the nodes; --ca-file here)",
            ),
            Outcome::RealmRefused(_) => (
                "RegistryRealmRefused",
                "the registry's Bearer challenge points somewhere credentials must not go: check that this is the registry you mean (nothing was sent there)",
            ),
            _ => (
                "RegistryUnreachable",
                "check the registry address and the network path from the nodes",
            ),
        };
        image
            .problems
            .push(problem(code, checked.describe(&wanted.registry), fix));
    }
    image.registry_checks.push(RegistryReport {
        secret: wanted.secret.clone(),
        registry: wanted.registry.clone(),
        outcome,
        other_host_realm: checked.other_host_realm,
    });
}

/// The report: the first problem is the verdict and its fix.
pub(crate) fn conclude(facts: Facts, draft: Draft) -> Report {
    let Draft {
        from,
        pull_secrets,
        sa_secrets,
        general,
        secrets,
        mut images,
        ..
    } = draft;
    let first = general
        .first()
        .or_else(|| images.iter().find_map(|i| i.problems.first()))
        .cloned();
    let ok = first.is_none();
    let verdict = match &first {
        None if pull_secrets.is_empty() => {
            "no pull secrets: the images are pulled anonymously, which works for public images only"
                .to_string()
        }
        None => {
            "the pull should work: every image has a matching, well-formed pull secret".to_string()
        }
        Some(p) => p.message.clone(),
    };
    // General problems are reported once, on the report, by folding them into the first image.
    if let Some(image) = images.first_mut() {
        let mut all = general;
        all.append(&mut image.problems);
        image.problems = all;
    }
    Report {
        namespace: facts.namespace,
        pod: facts.pod.map(|p| p.name_any()),
        service_account: facts.service_account,
        pull_secrets_from: from,
        pull_secrets,
        service_account_pull_secrets: sa_secrets,
        secrets: secrets.into_iter().map(|l| l.report).collect(),
        images,
        ok,
        verdict,
        fix: first.map(|p| p.fix),
    }
}

#[cfg(test)]
mod tests;
