//! Prometheus metrics. Labels are credential names and stable reasons, never values.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScopeLabels {
    pub(crate) credential: String,
    /// `namespaces` (the namespaces events marked) or `full` (every target).
    pub(crate) scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CredentialLabels {
    pub(crate) credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WriteLabels {
    pub(crate) resource: &'static str,
    pub(crate) verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) credential: String,
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MintLabels {
    pub(crate) credential: String,
    pub(crate) result: &'static str,
}

pub struct Metrics {
    pub(crate) registry: Registry,
    /// `source.ecr`: when the token in the copies expires (Unix seconds).
    pub(crate) credential_expiry: Family<CredentialLabels, Gauge>,
    /// `source.ecr`: tokens minted (or attempts that failed), per credential.
    pub(crate) token_mints: Family<MintLabels, Counter>,
    pub(crate) reconciles: Family<ResultLabels, Counter>,
    /// Sync passes per credential by what they looked at.
    pub(crate) passes: Family<ScopeLabels, Counter>,
    pub(crate) reconcile_duration: Histogram,
    pub(crate) targeted: Family<CredentialLabels, Gauge>,
    pub(crate) synced: Family<CredentialLabels, Gauge>,
    pub(crate) failures: Family<FailureLabels, Gauge>,
    /// Seconds from a new ServiceAccount appearing in the watch to it listing the credential.
    pub(crate) onboarding: Histogram,
    pub(crate) writes: Family<WriteLabels, Counter>,
    /// 1 while this replica holds the leader lease (or runs without leader election).
    pub(crate) leader: Gauge,
    /// 1 while a credential's Ready condition is True, 0 otherwise.
    pub(crate) ready: Family<CredentialLabels, Gauge>,
    /// With verification on: 1 while every registry accepts the credentials, 0 otherwise.
    pub(crate) verified: Family<CredentialLabels, Gauge>,
    /// Pods evicted by `podRecovery: Evict` so that their controller recreates them.
    pub(crate) pods_recovered: Family<CredentialLabels, Counter>,
    /// Pods that failed to pull and would pull if recreated, not recovered yet.
    pub(crate) pods_awaiting_recovery: Family<CredentialLabels, Gauge>,
    /// 1 while the pod watch of podRecovery runs.
    pub(crate) pod_watch: Gauge,
    /// NamespaceFailure reasons currently exported per credential, so that resolved ones are removed.
    failure_reasons: Mutex<HashMap<String, Vec<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("regcred");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of RegistryCredentials by result",
            reconciles.clone(),
        );
        let passes = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "sync_passes",
            "Sync passes by scope: the namespaces that changed, or every target",
            passes.clone(),
        );
        let reconcile_duration =
            Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a RegistryCredential reconcile",
            reconcile_duration.clone(),
        );
        let targeted = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "namespaces_targeted",
            "Namespaces a RegistryCredential targets",
            targeted.clone(),
        );
        let synced = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "namespaces_synced",
            "Target namespaces in sync",
            synced.clone(),
        );
        let failures = Family::<FailureLabels, Gauge>::default();
        registry.register(
            "namespace_failures",
            "Target namespaces failing, by reason",
            failures.clone(),
        );
        let onboarding = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]);
        registry.register(
            "serviceaccount_onboarding_seconds",
            "Time from a new ServiceAccount appearing to it listing the pull secret",
            onboarding.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Write requests the operator made, by resource and verb",
            writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        let ready = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_ready",
            "1 while the RegistryCredential's Ready condition is True",
            ready.clone(),
        );
        let verified = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_verified",
            "1 while the registries accept the credentials (CredentialsValid), 0 while one refuses; only with spec.verify",
            verified.clone(),
        );
        let pods_recovered = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "pods_recovered",
            "Pods evicted so that their controller recreates them with the pull secret",
            pods_recovered.clone(),
        );
        let pods_awaiting_recovery = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "pods_awaiting_recovery",
            "Pods that failed to pull and would pull if recreated, not recovered yet",
            pods_awaiting_recovery.clone(),
        );
        let pod_watch = Gauge::default();
        registry.register(
            "pod_watch_active",
            "1 while pods are watched (some RegistryCredential has podRecovery on)",
            pod_watch.clone(),
        );
        let credential_expiry = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When the minted registry token in the copies expires (Unix time)",
            credential_expiry.clone(),
        );
        let token_mints = Family::<MintLabels, Counter>::default();
        registry.register(
            "token_mints",
            "Registry tokens minted, by result (success, error)",
            token_mints.clone(),
        );
        Self {
            registry,
            credential_expiry,
            token_mints,
            ready,
            verified,
            pod_watch,
            pods_recovered,
            pods_awaiting_recovery,
            reconciles,
            passes,
            reconcile_duration,
            targeted,
            synced,
            failures,
            onboarding,
            writes,
            leader,
            failure_reasons: Mutex::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn observe_reconcile(&self, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn set_counts(
        &self,
        credential: &str,
        targeted: u32,
        synced: u32,
        failures: &[(String, u32)],
    ) {
        let labels = CredentialLabels {
            credential: credential.into(),
        };
        self.targeted.get_or_create(&labels).set(targeted.into());
        self.synced.get_or_create(&labels).set(synced.into());
        self.clear_failures(credential);
        let mut reasons = self.failure_reasons.lock().expect("metrics lock");
        reasons.insert(
            credential.into(),
            failures.iter().map(|(r, _)| r.clone()).collect(),
        );
        for (reason, n) in failures {
            self.failures
                .get_or_create(&FailureLabels {
                    credential: credential.into(),
                    reason: reason.clone(),
                })
                .set((*n).into());
        }
    }

    /// Drops the series of a deleted credential.
    pub(crate) fn forget(&self, credential: &str) {
        let labels = CredentialLabels {
            credential: credential.into(),
        };
        self.targeted.remove(&labels);
        self.synced.remove(&labels);
        self.ready.remove(&labels);
        self.verified.remove(&labels);
        self.pods_awaiting_recovery.remove(&labels);
        self.credential_expiry.remove(&labels);
        for result in ["success", "error"] {
            self.token_mints.remove(&MintLabels {
                credential: credential.into(),
                result,
            });
        }
        for scope in ["full", "namespaces"] {
            self.passes.remove(&ScopeLabels {
                credential: credential.into(),
                scope,
            });
        }
        self.clear_failures(credential);
    }

    fn clear_failures(&self, credential: &str) {
        let old = self
            .failure_reasons
            .lock()
            .expect("metrics lock")
            .remove(credential);
        for reason in old.into_iter().flatten() {
            self.failures.remove(&FailureLabels {
                credential: credential.into(),
                reason,
            });
        }
    }

    pub(crate) fn set_ready(&self, credential: &str, ready: bool) {
        self.ready
            .get_or_create(&CredentialLabels {
                credential: credential.into(),
            })
            .set(ready.into());
    }

    /// `None`: verification is off, no series.
    pub(crate) fn set_verified(&self, credential: &str, valid: Option<bool>) {
        let labels = CredentialLabels {
            credential: credential.into(),
        };
        match valid {
            Some(valid) => {
                self.verified.get_or_create(&labels).set(valid.into());
            }
            None => {
                self.verified.remove(&labels);
            }
        }
    }

    pub(crate) fn pass(&self, credential: &str, full: bool) {
        let scope = if full { "full" } else { "namespaces" };
        self.passes
            .get_or_create(&ScopeLabels {
                credential: credential.into(),
                scope,
            })
            .inc();
    }

    pub(crate) fn write(&self, resource: &'static str, verb: &'static str) {
        self.writes
            .get_or_create(&WriteLabels { resource, verb })
            .inc();
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_and_verification_series_follow_the_credential() {
        let m = Metrics::default();
        m.set_ready("acme", false);
        m.set_verified("acme", Some(false));
        let text = m.encode();
        assert!(
            text.contains("regcred_credential_ready{credential=\"acme\"} 0"),
            "{text}"
        );
        assert!(text.contains("regcred_credential_verified{credential=\"acme\"} 0"));
        m.set_ready("acme", true);
        m.set_verified("acme", None);
        let text = m.encode();
        assert!(text.contains("regcred_credential_ready{credential=\"acme\"} 1"));
        assert!(!text.contains("regcred_credential_verified{"));
        m.forget("acme");
        assert!(!m.encode().contains("credential=\"acme\""));
    }
}
