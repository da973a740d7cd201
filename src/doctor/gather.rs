//! Everything the doctor reads from the cluster: up front the pod (or the ServiceAccount a new
//! pod would use), its pull secrets, its pull Events and the node's images; the
//! RegistryCredentials ([`credentials`]) only when an image has no matching entry. What the caller
//! may not read is left out, never guessed.

use k8s_openapi::api::core::v1::{Event, Node, Pod, Secret, ServiceAccount};
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::{DoctorError, Subject};
use crate::{api::CREDENTIAL_LABEL, api::RegistryCredential, dockerconfig};

/// A pull secret as found: the Secret itself, or the namespaces where one of that name exists.
pub(crate) enum Found {
    Secret(Box<Secret>),
    Missing { elsewhere: Vec<String> },
}

/// A RegistryCredential as far as the doctor needs it.
pub(crate) struct CredentialFacts {
    pub(crate) name: String,
    /// The name of its copies.
    pub(crate) secret_name: String,
    /// The registry keys of its source, when readable.
    pub(crate) registries: Vec<String>,
    /// Whether the namespace holds its copy.
    pub(crate) copy_here: bool,
}

/// What the cluster says, for [`analysis`].
pub(crate) struct Facts {
    pub(crate) namespace: String,
    pub(crate) subject: Subject,
    pub(crate) pod: Option<Pod>,
    pub(crate) service_account: String,
    pub(crate) sa: Option<ServiceAccount>,
    /// The pull secrets the kubelet uses, in order.
    pub(crate) secrets: Vec<(String, Found)>,
    /// The pod's pull-related Warning Events: (reason, message), oldest first.
    pub(crate) events: Vec<(String, String)>,
    /// The images the pod's node reports it holds.
    pub(crate) node_images: Vec<String>,
    /// Empty until [`credentials`] has read them.
    pub(crate) credentials: Vec<CredentialFacts>,
}

pub(crate) fn names(
    refs: Option<&Vec<k8s_openapi::api::core::v1::LocalObjectReference>>,
) -> Vec<String> {
    refs.into_iter().flatten().map(|r| r.name.clone()).collect()
}

/// Where the kubelet's pull secrets come from, and which they are. Admission copies the
/// ServiceAccount's list into a pod only when the pod is created, and only if the pod names none
/// itself: the pod's own list is what the kubelet uses.
pub(crate) fn pull_secrets(
    pod: Option<&Pod>,
    sa: Option<&ServiceAccount>,
) -> (&'static str, Vec<String>) {
    match pod {
        Some(pod) => (
            "pod",
            names(
                pod.spec
                    .as_ref()
                    .and_then(|s| s.image_pull_secrets.as_ref()),
            ),
        ),
        None => (
            "serviceAccount",
            names(sa.and_then(|sa| sa.image_pull_secrets.as_ref())),
        ),
    }
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> DoctorError {
    let what = what.into();
    move |source| DoctorError::Api {
        what,
        source: Box::new(source),
    }
}

pub(crate) async fn gather(
    client: &Client,
    namespace: &str,
    subject: &Subject,
) -> Result<Facts, DoctorError> {
    let (pod, service_account) = match subject {
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
        .get_opt(&service_account)
        .await
        .map_err(api_err(format!(
            "ServiceAccount {namespace}/{service_account}"
        )))?;
    if sa.is_none() && pod.is_none() {
        return Err(DoctorError::ServiceAccountNotFound {
            namespace: namespace.into(),
            name: service_account,
        });
    }
    let (_, names) = pull_secrets(pod.as_ref(), sa.as_ref());
    let mut secrets = Vec::new();
    for name in names {
        let found = find_secret(client, namespace, &name).await?;
        secrets.push((name, found));
    }
    let events = match &pod {
        Some(pod) => pull_events(client, namespace, &pod.name_any()).await?,
        None => Vec::new(),
    };
    let node = pod
        .as_ref()
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.node_name.clone());
    let node_images = match &node {
        Some(node) => node_images(client, node).await,
        None => Vec::new(),
    };
    Ok(Facts {
        namespace: namespace.into(),
        subject: subject.clone(),
        pod,
        service_account,
        sa,
        secrets,
        events,
        node_images,
        credentials: Vec::new(),
    })
}

async fn find_secret(client: &Client, namespace: &str, name: &str) -> Result<Found, DoctorError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = api
        .get_opt(name)
        .await
        .map_err(api_err(format!("Secret {namespace}/{name}")))?
    {
        return Ok(Found::Secret(Box::new(secret)));
    }
    // The classic mistake: the Secret exists, but in another namespace. Reading other namespaces
    // may be forbidden to the caller; then we just cannot tell.
    let all: Api<Secret> = Api::all(client.clone());
    let elsewhere = match all
        .list_metadata(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
    {
        Ok(list) => list
            .items
            .iter()
            .filter_map(ResourceExt::namespace)
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(Found::Missing { elsewhere })
}

/// The pull-related Warning Events of a pod.
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

/// The RegistryCredentials, their registries and whether `namespace` has their copy, read a few
/// at a time. Reading them (or their sources) may be forbidden to the caller; then they are left
/// out.
pub(crate) async fn credentials(client: &Client, namespace: &str) -> Vec<CredentialFacts> {
    use futures::StreamExt as _;
    let Ok(credentials) = Api::<RegistryCredential>::all(client.clone())
        .list(&ListParams::default())
        .await
    else {
        return Vec::new();
    };
    futures::stream::iter(credentials.items)
        .map(|rc| credential_facts(client, namespace, rc))
        .buffered(8)
        .collect()
        .await
}

async fn credential_facts(
    client: &Client,
    namespace: &str,
    rc: RegistryCredential,
) -> CredentialFacts {
    let registries: Vec<String> = match (&rc.spec.source.registries, &rc.spec.source.secret_ref) {
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
    let secret_name = rc.secret_name();
    let copy_here = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_metadata_opt(&secret_name)
        .await
        .ok()
        .flatten()
        .is_some_and(|s| s.labels().get(CREDENTIAL_LABEL) == Some(&rc.name_any()));
    CredentialFacts {
        name: rc.name_any(),
        secret_name,
        registries,
        copy_here,
    }
}
