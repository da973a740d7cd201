//! `regcred-operator doctor`: why a pod cannot pull its image, walking the checklist people walk by
//! hand — which pull secrets the pod really has, whether they exist in its namespace, whether they
//! are well-formed, whether any entry matches the image by the kubelet's rules, what the pull
//! events and the pod's container statuses say, whether a RegistryCredential for the registry
//! leaves the namespace out, whether the kubelet refused an image already on its node, and
//! (optionally) whether the registry accepts the credentials.
//!
//! Never prints credential material: Secrets are reported by name, type, registries and problems.

//!
//! Three steps: [`gather`] reads everything once (the only I/O besides the registry checks),
//! [`analysis`] decides (pure, unit-tested), [`render`] writes the report for people.

mod analysis;
mod gather;
pub mod pull_events;
mod render;

use kube::Client;
use pull_events::PullFailure;
use serde::Serialize;

pub use render::render_text;

use crate::remote::registry::{Checker, Outcome};

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

/// Runs the diagnosis: reads, decides, asks the registry (with a checker) whether the matching
/// credentials work, and concludes.
pub async fn diagnose(
    client: &Client,
    namespace: &str,
    subject: &Subject,
    checker: Option<&Checker>,
) -> Result<Report, DoctorError> {
    let mut facts = gather::gather(client, namespace, subject).await?;
    let mut draft = analysis::analyse(&facts)?;
    // The RegistryCredentials matter only to an image nothing matches: read them then.
    if draft.unmatched {
        facts.credentials = gather::credentials(client, namespace).await;
        if !facts.credentials.is_empty() {
            draft = analysis::analyse(&facts)?;
        }
    }
    if let Some(checker) = checker {
        let checks = std::mem::take(&mut draft.checks);
        for wanted in &checks {
            let checked = match &wanted.credentials {
                Some(credentials) => Some(checker.check(&wanted.registry, credentials).await),
                None => None,
            };
            analysis::record_check(&mut draft, wanted, checked);
        }
    }
    Ok(analysis::conclude(facts, draft))
}
