//! A `Pending` pod as the pod watch decodes it: only what pod recovery reads (identity,
//! controller reference, ServiceAccount, `imagePullSecrets`, each container's image and waiting
//! reason). Everything else (the spec's containers, env and volumes, annotations, labels,
//! managedFields, pull messages) is skipped while the list or the watch event is decoded, never
//! allocated. A pod is the largest object the operator lists, and a list page is decoded whole.

use std::borrow::Cow;

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, LocalObjectReference, Pod, PodSpec,
        PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use serde::{Deserialize, Deserializer};

/// A pod with only the fields recovery reads; the rest is `None` or empty.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PendingPod(Pod);

impl PendingPod {
    pub(crate) fn pod(&self) -> &Pod {
        &self.0
    }

    pub(crate) fn into_pod(self) -> Pod {
        self.0
    }
}

impl kube::Resource for PendingPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        Pod::kind(&())
    }
    fn group((): &()) -> Cow<'_, str> {
        Pod::group(&())
    }
    fn version((): &()) -> Cow<'_, str> {
        Pod::version(&())
    }
    fn plural((): &()) -> Cow<'_, str> {
        Pod::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

impl<'de> Deserialize<'de> for PendingPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WirePod::deserialize(deserializer)?;
        Ok(PendingPod(wire.into()))
    }
}

// The wire form: serde skips every field not named here without allocating it.

#[derive(Deserialize, Default)]
#[serde(default)]
struct WirePod {
    metadata: WireMeta,
    spec: WireSpec,
    status: WireStatus,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<Time>,
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireSpec {
    service_account_name: Option<String>,
    image_pull_secrets: Option<Vec<WireName>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireName {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireStatus {
    phase: Option<String>,
    container_statuses: Option<Vec<WireContainerStatus>>,
    init_container_statuses: Option<Vec<WireContainerStatus>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireContainerStatus {
    name: String,
    image: String,
    state: Option<WireState>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireState {
    waiting: Option<WireWaiting>,
}

/// A waiting state: its reason only (the runtime's message can be long, and recovery does not
/// read it).
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireWaiting {
    reason: Option<String>,
}

fn statuses(list: Option<Vec<WireContainerStatus>>) -> Option<Vec<ContainerStatus>> {
    list.map(|l| {
        l.into_iter()
            .map(|c| ContainerStatus {
                name: c.name,
                image: c.image,
                state: c.state.and_then(|s| s.waiting).map(|w| ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: w.reason,
                        message: None,
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            })
            .collect()
    })
}

impl From<WirePod> for Pod {
    fn from(wire: WirePod) -> Self {
        let WirePod {
            metadata,
            spec,
            status,
        } = wire;
        Pod {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                uid: metadata.uid,
                resource_version: metadata.resource_version,
                deletion_timestamp: metadata.deletion_timestamp,
                // Only the controller's reference is read.
                owner_references: metadata.owner_references.map(|refs| {
                    refs.into_iter()
                        .filter(|r| r.controller == Some(true))
                        .collect()
                }),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: spec.service_account_name,
                image_pull_secrets: spec.image_pull_secrets.map(|l| {
                    l.into_iter()
                        .map(|r| LocalObjectReference { name: r.name })
                        .collect()
                }),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: status.phase,
                container_statuses: statuses(status.container_statuses),
                init_container_statuses: statuses(status.init_container_statuses),
                ..PodStatus::default()
            }),
        }
    }
}
