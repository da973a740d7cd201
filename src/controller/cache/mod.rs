//! What the controller knows of the cluster between passes: the watch caches, [`index`]es over
//! them kept up to date by the same watch events, and [`overlay`], our own recent writes laid
//! over them until the watches catch up.

pub(crate) mod index;
pub(crate) mod overlay;
pub(crate) mod pod;
pub(crate) mod slim;
pub(crate) mod store;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::runtime::reflector;

use crate::api::RegistryCredential;
use index::Index;
use slim::{CachedNamespace, CachedSecret, CachedServiceAccount};
use store::Store;

/// The watch caches the controller reads instead of the API.
#[derive(Clone)]
pub(crate) struct Caches {
    /// kube's controller keeps this one.
    pub(crate) credentials: reflector::Store<RegistryCredential>,
    pub(crate) namespaces: Store<CachedNamespace>,
    pub(crate) service_accounts: Store<CachedServiceAccount>,
    /// Only Secrets labelled `app.kubernetes.io/managed-by: regcred-operator`.
    pub(crate) secrets: Store<CachedSecret>,
    /// All Secrets of each allowed source namespace.
    pub(crate) sources: BTreeMap<String, Store<Secret>>,
    /// ServiceAccounts by the credentials whose entries their annotation records.
    pub(crate) sas_by_credential: Arc<Index<ServiceAccount>>,
    /// Our Secrets by the credential of their label.
    pub(crate) secrets_by_credential: Arc<Index<Secret>>,
    /// Becomes true once every store above holds its initial list.
    pub(crate) ready: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Waits until every cache holds a complete initial list. Acting on a partial cache would
    /// look like "namespace gone" and prune copies that must stay.
    pub(crate) async fn wait_until_ready(&self) {
        // A closed channel means the process is shutting down; nothing to wait for then.
        let _ = self.ready.clone().wait_for(|ready| *ready).await;
    }

    /// Awaits the stores themselves. Called by one task, which then sets [`Caches::ready`]. The
    /// credentials store is left out: kube's store wakes only its most recent waiter, and kube's
    /// controller already waits on it and starts no reconcile before it is ready.
    pub(crate) async fn stores_ready(&self) {
        self.namespaces.wait_until_ready().await;
        self.service_accounts.wait_until_ready().await;
        self.secrets.wait_until_ready().await;
        for store in self.sources.values() {
            store.wait_until_ready().await;
        }
    }

    pub(crate) fn source_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.sources.get(namespace)?.get(namespace, name)
    }
}
