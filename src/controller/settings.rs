//! The operator's settings, from its command line.

use std::time::Duration;

/// Operator settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The operator's own namespace.
    pub namespace: String,
    /// Namespaces that sources may be read from.
    pub source_namespaces: Vec<String>,
    /// Concurrent namespace writes within one reconcile.
    pub write_concurrency: usize,
    /// Label selector: only RegistryCredentials matching it are reconciled by this instance.
    pub credential_selector: Option<String>,
    /// Evictions per minute per credential with `podRecovery: Evict`.
    pub max_evictions_per_minute: u32,
    /// `spec.verify`: refuse Bearer token realms on another host than the registry.
    pub forbid_cross_host_realms: bool,
    /// The operator's own ServiceAccount (in `namespace`): `source.ecr.credentials.webIdentity`
    /// exchanges tokens of it.
    pub service_account: String,
    /// `source.ecr`: never mint again sooner than this after a success.
    pub min_token_refresh: Duration,
}
