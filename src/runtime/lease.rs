//! Leader election on a `coordination.k8s.io/v1` Lease, so that several replicas can run and only
//! one writes.
//!
//! Like client-go's elector, a candidate never compares the holder's `renewTime` with its own clock
//! (clocks differ between nodes): it considers the lease expired when it has itself watched the
//! record stay unchanged for the lease duration. Every write carries the resourceVersion it was
//! computed from, so two candidates can never both believe they acquired it.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{Api, Client, api::ObjectMeta};
use tokio::sync::watch;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub(crate) struct LeaseConfig {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) identity: String,
    /// How long a silent holder keeps the lease.
    pub(crate) duration: Duration,
    /// The leader steps down if it cannot renew for this long (less than `duration`).
    pub(crate) renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub(crate) retry_period: Duration,
}

impl LeaseConfig {
    pub(crate) fn new(namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration,
            renew_deadline: duration * 2 / 3,
            retry_period: (duration / 6).max(Duration::from_millis(500)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "the operator may not {verb} Lease {namespace}/{name}: {message}; grant it the leases Role in deploy/"
    )]
    Forbidden {
        verb: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
}

pub(crate) struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The record last seen (holder, renewTime, resourceVersion) and when it last changed.
    observed: Option<(String, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn record_key(lease: &Lease) -> String {
    let spec = lease.spec.as_ref();
    format!(
        "{:?}/{:?}/{:?}",
        spec.and_then(|s| s.holder_identity.as_ref()),
        spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        spec.and_then(|s| s.lease_transitions)
    )
}

impl Elector {
    pub(crate) fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    fn spec(&self, transitions: i32, acquire_time: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs().max(1) as i32),
            acquire_time: acquire_time.or_else(|| Some(now())),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn forbidden(&self, verb: &'static str, e: &kube::Error) -> Option<LeaseError> {
        match e {
            kube::Error::Api(s) if s.code == 403 => Some(LeaseError::Forbidden {
                verb,
                namespace: self.config.namespace.clone(),
                name: self.config.name.clone(),
                message: s.message.clone(),
            }),
            _ => None,
        }
    }

    /// One attempt to acquire or renew. `Ok(true)` while we hold the lease.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let lease = match self.api.get_opt(&self.config.name).await {
            Ok(lease) => lease,
            Err(e) => {
                if let Some(f) = self.forbidden("get", &e) {
                    return Err(f);
                }
                debug!(error = %e, "reading the lease failed");
                return Ok(false);
            }
        };
        let Some(lease) = lease else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&crate::writes::post_params(), &lease).await {
                Ok(created) => {
                    self.observed = Some((record_key(&created), Instant::now()));
                    Ok(true)
                }
                Err(e) => self.forbidden("create", &e).map_or(Ok(false), Err),
            };
        };

        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let key = record_key(&lease);
        match &self.observed {
            Some((seen, _)) if *seen == key => {}
            _ => self.observed = Some((key, Instant::now())),
        }
        let ours = holder == self.config.identity;
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= duration);
        if !ours && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquire_time = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut updated = lease.clone();
        updated.spec = Some(self.spec(transitions, acquire_time));
        // `replace` sends the resourceVersion we read: a concurrent candidate's write makes ours fail.
        match self
            .api
            .replace(&self.config.name, &crate::writes::post_params(), &updated)
            .await
        {
            Ok(written) => {
                self.observed = Some((record_key(&written), Instant::now()));
                if !ours {
                    info!(previous = %holder, "took over the lease");
                }
                Ok(true)
            }
            Err(e) => self.forbidden("update", &e).map_or(Ok(false), Err),
        }
    }

    /// Waits until this replica holds the lease, or until `shutdown` fires (then `Ok(false)`).
    pub(crate) async fn acquire(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, LeaseError> {
        info!(lease = %self.config.name, identity = %self.config.identity, "waiting for leadership");
        loop {
            // A hanging attempt is abandoned after the renew deadline and retried.
            let attempt = tokio::select! {
                attempt = tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()) => attempt,
                _ = shutdown.wait_for(|stop| *stop) => return Ok(false),
            };
            if attempt.unwrap_or(Ok(false))? {
                info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                return Ok(true);
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => {}
                _ = shutdown.wait_for(|stop| *stop) => return Ok(false),
            }
        }
    }

    /// Renews until a renewal has failed for the renew deadline (leadership lost: returns) or
    /// `shutdown` fires (returns after releasing the lease).
    pub(crate) async fn hold(&mut self, shutdown: &mut watch::Receiver<bool>) -> Held {
        let mut last_renewed = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => {}
                _ = shutdown.wait_for(|stop| *stop) => return Held::ShutDown,
            }
            // An attempt may hang (etcd stalled behind a reachable API server): it gets only the
            // time left before the renew deadline, so that the controller stops before any other
            // candidate can consider the lease expired.
            let left = self
                .config
                .renew_deadline
                .saturating_sub(last_renewed.elapsed());
            let attempt = tokio::select! {
                attempt = tokio::time::timeout(left, self.try_acquire_or_renew()) => attempt,
                _ = shutdown.wait_for(|stop| *stop) => return Held::ShutDown,
            };
            match attempt {
                Ok(Ok(true)) => last_renewed = Instant::now(),
                Ok(Ok(false) | Err(_)) if last_renewed.elapsed() < self.config.renew_deadline => {
                    warn!("renewing the lease failed; retrying");
                }
                _ => return Held::Lost,
            }
        }
    }

    /// Gives the lease up at once so that another replica takes over without waiting for expiry.
    pub(crate) async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.config.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.config.name, &crate::writes::post_params(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.config.name, "released the lease"),
            Err(e) => warn!(error = %e, "releasing the lease failed; it expires on its own"),
        }
    }
}

/// How holding the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    ShutDown,
    Lost,
}
