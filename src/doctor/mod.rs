//! `regcred-operator doctor`: why a pod cannot pull its image, walking the checklist people walk by
//! hand — which pull secrets the pod really has, whether they exist in its namespace, whether they
//! are well-formed, whether any entry matches the image by the kubelet's rules, what the pull
//! events and the pod's container statuses say, whether a RegistryCredential for the registry
//! leaves the namespace out, whether the kubelet refused an image already on its node, and
//! (optionally) whether the registry accepts the credentials.
//!
//! Never prints credential material: Secrets are reported by name, type, registries and problems.

pub mod pull_events;

use k8s_openapi::api::core::v1::{Event, Node, Pod, Secret, ServiceAccount};
use kube::{Api, Client, ResourceExt, api::ListParams};
use pull_events::PullFailure;
use serde::Serialize;

use crate::{
    api::{CREDENTIAL_LABEL, MANAGED_BY_LABEL, MANAGER, RegistryCredential},
    dockerconfig::DockerConfig,
    dockerconfig::{self, DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_TYPE},
    kubelet::{self, ImageRef, Verdict},
    remote::registry::{Checker, Outcome},
};

/// What to diagnose.
#[derive(Debug, Clone)]
pub enum Subject {
    Pod(String),
    /// An image before anything is deployed, as a new pod of this ServiceAccount would pull it.
    Image {
        image: String,
        service_account: String,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Stable PascalCase code.
    pub code: &'static str,
    pub message: String,
    pub fix: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretReport {
    pub name: String,
    pub present: bool,
    /// When missing: namespaces where a Secret of this name exists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub found_in_namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// What is wrong with its type or format, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// Registry keys it holds.
    pub registries: Vec<String>,
    /// The RegistryCredential that manages it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryReport {
    pub secret: String,
    pub key: String,
    pub matches: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
    pub near_miss: bool,
    pub via_docker_hub_fallback: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReport {
    pub reason: String,
    pub message: String,
    pub classification: PullFailure,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryReport {
    pub secret: String,
    pub registry: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The registry's token service, when it is on another host: the credentials went there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_host_realm: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub image: String,
    pub normalized: String,
    pub entries: Vec<EntryReport>,
    pub events: Vec<EventReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry_checks: Vec<RegistryReport>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub service_account: String,
    /// `pod` (the pod's own imagePullSecrets) or `serviceAccount` (what a new pod would get).
    pub pull_secrets_from: &'static str,
    pub pull_secrets: Vec<String>,
    /// Pull secrets the ServiceAccount lists now.
    pub service_account_pull_secrets: Vec<String>,
    pub secrets: Vec<SecretReport>,
    pub images: Vec<ImageReport>,
    pub ok: bool,
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("pod {namespace}/{name} not found")]
    PodNotFound { namespace: String, name: String },
    #[error("ServiceAccount {namespace}/{name} not found")]
    ServiceAccountNotFound { namespace: String, name: String },
    #[error("invalid image reference {image:?}: {reason}")]
    InvalidImage { image: String, reason: String },
    #[error("reading {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> DoctorError {
    let what = what.into();
    move |source| DoctorError::Api {
        what,
        source: Box::new(source),
    }
}

struct Loaded {
    report: SecretReport,
    config: Option<DockerConfig>,
}

/// Reads one pull secret and judges it the way the kubelet would use it.
async fn load_secret(client: &Client, namespace: &str, name: &str) -> Result<Loaded, DoctorError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut report = SecretReport {
        name: name.into(),
        present: false,
        found_in_namespaces: Vec::new(),
        r#type: None,
        invalid: None,
        registries: Vec::new(),
        managed_by: None,
    };
    let Some(secret) = api
        .get_opt(name)
        .await
        .map_err(api_err(format!("Secret {namespace}/{name}")))?
    else {
        // The classic mistake: the Secret exists, but in another namespace. Reading other
        // namespaces may be forbidden to the caller; then we just cannot tell.
        let all: Api<Secret> = Api::all(client.clone());
        if let Ok(list) = all
            .list_metadata(&ListParams::default().fields(&format!("metadata.name={name}")))
            .await
        {
            report.found_in_namespaces = list
                .items
                .iter()
                .filter_map(kube::ResourceExt::namespace)
                .collect();
        }
        return Ok(Loaded {
            report,
            config: None,
        });
    };
    report.present = true;
    let type_ = secret.type_.clone().unwrap_or_else(|| "Opaque".into());
    report.r#type = Some(type_.clone());
    let labels = secret.labels();
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER) {
        report.managed_by = labels.get(CREDENTIAL_LABEL).cloned();
    }
    // The kubelet reads only these two types; an Opaque Secret is ignored even with the right key.
    let parsed = dockerconfig::kubelet_config(&secret).unwrap_or_else(|| {
        Err(format!(
            "type {type_}: the kubelet only uses {DOCKER_CONFIG_JSON_TYPE} (or legacy {DOCKERCFG_TYPE}) Secrets as pull secrets"
        ))
    });
    match parsed {
        Ok(config) => {
            report.registries = config.registries().map(str::to_string).collect();
            Ok(Loaded {
                report,
                config: Some(config),
            })
        }
        Err(problem) => {
            report.invalid = Some(problem);
            Ok(Loaded {
                report,
                config: None,
            })
        }
    }
}

fn problem(code: &'static str, message: String, fix: impl Into<String>) -> Problem {
    Problem {
        code,
        message,
        fix: fix.into(),
    }
}

/// The pull-related Events of a pod, classified, newest last.
async fn pull_events(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<Vec<(String, String)>, DoctorError> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let fields = format!("involvedObject.kind=Pod,involvedObject.name={pod}");
    let events = api
        .list(&ListParams::default().fields(&fields))
        .await
        .map_err(api_err("pod Events"))?;
    let mut out: Vec<_> = events
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| {
            matches!(
                e.reason.as_deref(),
                Some("Failed" | "ErrImagePull" | "ImagePullBackOff" | "BackOff" | "InspectFailed")
            )
        })
        .filter_map(|e| Some((e.reason?, e.message?)))
        .collect();
    out.dedup();
    Ok(out)
}

/// Pull failures the kubelet reports in the pod's container statuses, per container: the waiting
/// reason (`ErrImagePull`, `ImagePullBackOff`) and its message, which carries the runtime's error.
fn status_pull_failures(pod: &Pod) -> Vec<(String, String, String)> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.clone()?;
            let message = waiting.message.clone().filter(|m| !m.is_empty())?;
            matches!(reason.as_str(), "ErrImagePull" | "ImagePullBackOff")
                .then(|| (c.name.clone(), reason, message))
        })
        .collect()
}

/// The images a node reports it holds (tags and digests), or nothing when it cannot be read.
async fn node_images(client: &Client, node: &str) -> Vec<String> {
    match Api::<Node>::all(client.clone()).get_opt(node).await {
        Ok(Some(n)) => n
            .status
            .and_then(|s| s.images)
            .into_iter()
            .flatten()
            .flat_map(|i| i.names.unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    }
}

/// RegistryCredentials with an entry that matches the image by the kubelet's rules but no copy in
/// `namespace`: (credential, secret name). Reading them (or their sources) may be forbidden to the
/// caller; then we just cannot tell.
async fn credentials_leaving_out(
    client: &Client,
    namespace: &str,
    image: &ImageRef,
) -> Vec<(String, String)> {
    let Ok(credentials) = Api::<RegistryCredential>::all(client.clone())
        .list(&ListParams::default())
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rc in credentials.items {
        let registries: Vec<String> = match (&rc.spec.source.registries, &rc.spec.source.secret_ref)
        {
            (Some(logins), _) => logins.iter().map(|l| l.server.clone()).collect(),
            (None, Some(r)) => match Api::<Secret>::namespaced(client.clone(), &r.namespace)
                .get_opt(&r.name)
                .await
            {
                Ok(Some(secret)) => dockerconfig::config_from_secret(&secret)
                    .map(|c| c.registries().map(str::to_string).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            },
            (None, None) => Vec::new(),
        };
        let matches = kubelet::evaluate(registries.iter().map(String::as_str), image)
            .iter()
            .any(|e| e.verdict.is_match());
        if !matches {
            continue;
        }
        let secret_name = rc.secret_name();
        let copy_here = Api::<Secret>::namespaced(client.clone(), namespace)
            .get_metadata_opt(&secret_name)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.labels().get(CREDENTIAL_LABEL) == Some(&rc.name_any()));
        if !copy_here {
            out.push((rc.name_any(), secret_name));
        }
    }
    out
}

/// Runs the diagnosis.
pub async fn diagnose(
    client: &Client,
    namespace: &str,
    subject: &Subject,
    checker: Option<&Checker>,
) -> Result<Report, DoctorError> {
    let (pod, service_account_name) = match subject {
        Subject::Pod(name) => {
            let pod = Api::<Pod>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(api_err(format!("pod {namespace}/{name}")))?
                .ok_or_else(|| DoctorError::PodNotFound {
                    namespace: namespace.into(),
                    name: name.clone(),
                })?;
            let sa = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            (Some(pod), sa)
        }
        Subject::Image {
            service_account, ..
        } => (None, service_account.clone()),
    };
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .get_opt(&service_account_name)
        .await
        .map_err(api_err(format!(
            "ServiceAccount {namespace}/{service_account_name}"
        )))?;
    if sa.is_none() && pod.is_none() {
        return Err(DoctorError::ServiceAccountNotFound {
            namespace: namespace.into(),
            name: service_account_name,
        });
    }
    let sa_secrets: Vec<String> = sa
        .iter()
        .flat_map(|sa| {
            sa.image_pull_secrets
                .iter()
                .flatten()
                .map(|r| r.name.clone())
        })
        .collect();

    // Admission copies the ServiceAccount's list into a pod only when the pod is created, and
    // only if the pod names none itself: the pod's own list is what the kubelet uses.
    let (from, pull_secrets): (&'static str, Vec<String>) = match &pod {
        Some(pod) => (
            "pod",
            pod.spec
                .iter()
                .flat_map(|s| {
                    s.image_pull_secrets
                        .iter()
                        .flatten()
                        .map(|r| r.name.clone())
                })
                .collect(),
        ),
        None => ("serviceAccount", sa_secrets.clone()),
    };
    let mut general = Vec::new();
    if let Some(pod) = &pod
        && pull_secrets.is_empty()
        && !sa_secrets.is_empty()
    {
        general.push(problem(
            "PodCreatedBeforeServiceAccountPatch",
            format!(
                "pod {} has no imagePullSecrets, but its ServiceAccount {service_account_name} now lists {}: they are copied into pods only when a pod is created",
                pod.name_any(),
                sa_secrets.join(", ")
            ),
            format!(
                "recreate the pod (e.g. `kubectl -n {namespace} rollout restart` its Deployment), or set \
                 `spec.podRecovery: Evict` on the RegistryCredential so that such pods are recreated for you"
            ),
        ));
    }

    let mut loaded = Vec::new();
    for name in &pull_secrets {
        loaded.push(load_secret(client, namespace, name).await?);
    }
    for l in &loaded {
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

    let containers: Vec<(Option<String>, String)> = match (&pod, subject) {
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
    let events = match &pod {
        Some(pod) => pull_events(client, namespace, &pod.name_any()).await?,
        None => Vec::new(),
    };
    let status_failures = pod.as_ref().map(status_pull_failures).unwrap_or_default();
    let node = pod
        .as_ref()
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.node_name.clone());
    let on_node = match &node {
        Some(node) => node_images(client, node).await,
        None => Vec::new(),
    };

    let mut images = Vec::new();
    for (container, image) in containers {
        let from_status: Vec<(String, String)> = status_failures
            .iter()
            .filter(|(c, _, _)| container.as_deref() == Some(c.as_str()))
            .map(|(_, reason, message)| (reason.clone(), message.clone()))
            .collect();
        let image_ref = ImageRef::parse(&image).map_err(|e| DoctorError::InvalidImage {
            image: image.clone(),
            reason: e.to_string(),
        })?;
        let mut report = ImageReport {
            container,
            image: image.clone(),
            normalized: image_ref.normalized(),
            entries: Vec::new(),
            events: Vec::new(),
            registry_checks: Vec::new(),
            problems: Vec::new(),
        };
        let mut first_match: Option<(String, String, String)> = None; // secret, kubelet key, key
        for l in &loaded {
            let Some(config) = &l.config else { continue };
            for e in kubelet::evaluate(config.registries(), &image_ref) {
                let near = kubelet::is_near_miss(&e);
                if e.verdict.is_match() && first_match.is_none() {
                    let raw = config
                        .registries()
                        .nth(e.position)
                        .unwrap_or_default()
                        .to_string();
                    first_match = Some((
                        l.report.name.clone(),
                        e.kubelet_key.clone().unwrap_or_default(),
                        raw,
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
                    near_miss: near,
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
                format!("no pull-secret entry matches {} by the kubelet's rules{detail}", image_ref.matching_path()),
                format!(
                    "add an entry for {} (host, port and path prefix must match exactly; `*` matches one DNS label)",
                    image_ref.registry.clone()
                ),
            ));
        }
        if first_match.is_none() {
            for (credential, secret) in credentials_leaving_out(client, namespace, &image_ref).await
            {
                report.problems.push(problem(
                    "NamespaceNotSelected",
                    format!(
                        "RegistryCredential {credential} holds credentials for {} but does not select namespace {namespace}: there is no copy {secret} here",
                        image_ref.registry
                    ),
                    format!(
                        "label namespace {namespace} to match the namespaceSelector of RegistryCredential {credential} (or list it in spec.namespaces), then recreate the pod"
                    ),
                ));
            }
        }
        let pull_failures = events
            .iter()
            .filter(|(_, message)| {
                message.contains(&image) || message.contains(&image_ref.normalized())
            })
            .chain(from_status.iter());
        for (reason, message) in pull_failures {
            let message = truncate(message, 400);
            if report.events.iter().any(|e| e.message == message) {
                continue;
            }
            let classification = pull_events::classify_pull_message(&message);
            report.events.push(EventReport {
                reason: reason.clone(),
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
            let present = on_node
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
        if let (Some(checker), Some((secret, kubelet_key, raw_key))) = (checker, &first_match) {
            let config = loaded
                .iter()
                .find(|l| l.report.name == *secret)
                .and_then(|l| l.config.as_ref());
            let host = kubelet_key
                .split('/')
                .next()
                .unwrap_or(kubelet_key)
                .to_string();
            // Checks go to the registry the image is pulled from.
            let registry = if host.contains('*') {
                image_ref.registry.clone()
            } else {
                host
            };
            match config.and_then(|c| c.credentials(raw_key)) {
                Some(credentials) => {
                    let checked = checker.check(&registry, &credentials).await;
                    let outcome = checked.outcome.clone();
                    if !outcome.ok() {
                        report.problems.push(problem(
                            match outcome {
                                Outcome::Refused(_) => "RegistryRefused",
                                Outcome::Tls(_) => "RegistryTLS",
                                Outcome::RealmRefused(_) => "RegistryRealmRefused",
                                _ => "RegistryUnreachable",
                            },
                            checked.describe(&registry),
                            match outcome {
                                Outcome::Refused(_) => "rotate the credentials in the source of the pull secret".to_string(),
                                Outcome::Tls(_) => "trust the registry's CA (containerd/CRI-O registry config on the nodes; --ca-file here)".to_string(),
                                Outcome::RealmRefused(_) => "the registry's Bearer challenge points somewhere credentials must not go: check that this is the registry you mean (nothing was sent there)".to_string(),
                                _ => "check the registry address and the network path from the nodes".to_string(),
                            },
                        ));
                    }
                    report.registry_checks.push(RegistryReport {
                        secret: secret.clone(),
                        registry,
                        outcome,
                        other_host_realm: checked.other_host_realm,
                    });
                }
                None => report.registry_checks.push(RegistryReport {
                    secret: secret.clone(),
                    registry,
                    outcome: Outcome::Unexpected(
                        "the entry holds a token, not a user name and password: not checked".into(),
                    ),
                    other_host_realm: None,
                }),
            }
        }
        images.push(report);
    }

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
    Ok(Report {
        namespace: namespace.into(),
        pod: pod.map(|p| p.name_any()),
        service_account: service_account_name,
        pull_secrets_from: from,
        pull_secrets,
        service_account_pull_secrets: sa_secrets,
        secrets: loaded.into_iter().map(|l| l.report).collect(),
        images,
        ok,
        verdict,
        fix: first.map(|p| p.fix),
    })
}

fn truncate(s: &str, max: usize) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_failures_are_read_from_waiting_container_statuses() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app"},
            "status": {
                "initContainerStatuses": [{"name": "init", "image": "a", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"a\": ErrImagePull: 401 Unauthorized"}}}],
                "containerStatuses": [
                    {"name": "app", "image": "b", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "ErrImagePull", "message": "failed to pull and unpack image \"b\": not found"}}},
                    {"name": "crashing", "image": "c", "imageID": "", "ready": false, "restartCount": 3,
                     "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}}},
                    {"name": "starting", "image": "d", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "ErrImagePull"}}},
                    {"name": "running", "image": "e", "imageID": "", "ready": true, "restartCount": 0,
                     "state": {"running": {}}}
                ]
            }
        }))
        .unwrap();
        let failures = status_pull_failures(&pod);
        assert_eq!(
            failures
                .iter()
                .map(|(c, r, _)| (c.as_str(), r.as_str()))
                .collect::<Vec<_>>(),
            vec![("init", "ImagePullBackOff"), ("app", "ErrImagePull")]
        );
        assert_eq!(
            pull_events::classify_pull_message(&failures[0].2),
            PullFailure::AuthRefused
        );
    }
}
