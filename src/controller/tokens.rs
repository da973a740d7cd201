//! Minted registry tokens (`source.ecr`): one per RegistryCredential, minted again when less than
//! half of its lifetime remains, and at once when the spec or the AWS credentials change.
//!
//! [`Tokens::resolve`] turns the spec into a [`ResolvedSource`] like any other source, so fan-out,
//! ServiceAccounts, rotation, status and doctor treat a minted token like a copied password. The
//! tokens live in memory only (and in the copies): a restarted operator mints once more.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::ServiceAccount,
    },
    jiff::Timestamp,
};
use kube::{Api, ResourceExt};
use tracing::{debug, info};

use crate::{
    api::{EcrSource, RegistryCredential},
    controller::cache::Caches,
    controller::error::api_message,
    controller::resolve::{ResolvedSource, SourceError},
    controller::settings::Settings,
    dockerconfig::DockerConfig,
    remote::ecr::{self, Aws, AwsCredentials, Minted},
    runtime::metrics::{CredentialLabels, Metrics, MintLabels},
};

/// Retries of a failed mint: 5 s, 10 s, 20 s, ... up to 5 minutes.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Lifetime of the ServiceAccount token exchanged with STS (the API server's minimum).
const WEB_IDENTITY_TOKEN_SECONDS: i64 = 600;
/// A failing refresh with less than this left gets a Warning Event.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(3600);

/// What minting reads and reports to: the API (TokenRequests of our own ServiceAccount), the
/// settings, the source caches and the metrics. Not the whole controller context.
pub(crate) struct Env<'a> {
    pub(crate) client: &'a kube::Client,
    pub(crate) settings: &'a Settings,
    pub(crate) caches: &'a Caches,
    pub(crate) metrics: &'a Metrics,
}

/// The minted token of each credential.
pub(crate) struct Tokens {
    aws: Result<Aws, String>,
    entries: Mutex<HashMap<String, Entry>>,
    failing: Mutex<HashMap<String, Failing>>,
}

struct Entry {
    /// The spec and credentials version the token was minted from.
    fingerprint: String,
    resolved: ResolvedSource,
    expires_at: Timestamp,
    refresh_at: Instant,
    skewed: bool,
}

/// A credential whose last mint failed.
struct Failing {
    /// What the failed mint was made from: a change retries at once.
    fingerprint: String,
    /// Consecutive failures.
    count: u32,
    retry_at: Instant,
    message: String,
    /// The expiry a Warning Event was published for.
    warned: Option<Timestamp>,
}

/// A token ready to fan out.
pub(crate) struct Fresh {
    pub(crate) resolved: ResolvedSource,
    pub(crate) expires_at: Timestamp,
    /// When to mint again.
    pub(crate) refresh_in: Duration,
    /// The endpoint gave an expiry not in the future: refreshed every `--min-token-refresh-seconds`.
    pub(crate) skewed: bool,
}

/// Why no token could be had. The copies keep what they have.
pub(crate) struct Failed {
    /// `TokenRefreshFailed`, or the source reason of a configuration problem.
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// A person must act (bad reference or credentials Secret); else the operator retries.
    pub(crate) configuration: bool,
    pub(crate) retry_in: Duration,
    /// Set when less than [`EXPIRY_WARNING`] remains of the token in the copies and no Event
    /// was published for it yet.
    pub(crate) expiring: Option<String>,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            aws: Aws::new(Duration::from_secs(15)),
            entries: Mutex::default(),
            failing: Mutex::default(),
        }
    }
}

/// `2026-12-03T21:25:00Z`.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Tokens {
    /// The token in memory, whatever its age (for a suspended credential: no mint).
    pub(crate) fn cached(&self, credential: &str) -> Option<ResolvedSource> {
        self.entries
            .lock()
            .expect("tokens lock")
            .get(credential)
            .map(|e| e.resolved.clone())
    }

    pub(crate) fn forget(&self, credential: &str) {
        self.entries.lock().expect("tokens lock").remove(credential);
    }

    /// The token for `rc`: the one in memory while it is fresh and minted from the same spec and
    /// credentials, else a new one.
    pub(crate) async fn resolve(
        &self,
        ctx: &Env<'_>,
        rc: &RegistryCredential,
        spec: &EcrSource,
    ) -> Result<Fresh, Failed> {
        let name = rc.name_any();
        let min = ctx.settings.min_token_refresh;
        // Configuration first: a problem a person must fix, whatever the token in memory.
        let (credentials, credentials_version) = match self.credentials_input(ctx, spec) {
            Ok(c) => c,
            Err(e) => {
                return Err(Failed {
                    reason: e.reason(),
                    message: format!("{e}{}", self.keeps(rc, &name)),
                    configuration: true,
                    retry_in: Duration::from_secs(300),
                    expiring: None,
                });
            }
        };
        let fingerprint = format!(
            "{}|{credentials_version}",
            serde_json::to_string(spec).unwrap_or_default()
        );
        {
            let entries = self.entries.lock().expect("tokens lock");
            if let Some(e) = entries.get(&name)
                && e.fingerprint == fingerprint
                && Instant::now() < e.refresh_at
            {
                return Ok(Fresh {
                    resolved: e.resolved.clone(),
                    expires_at: e.expires_at,
                    refresh_in: e.refresh_at.saturating_duration_since(Instant::now()),
                    skewed: e.skewed,
                });
            }
        }
        // A failed mint is retried on its schedule, not on every pass (a status write is one).
        if let Some(f) = self.failing.lock().expect("tokens lock").get(&name)
            && f.fingerprint == fingerprint
            && Instant::now() < f.retry_at
        {
            return Err(Failed {
                reason: "TokenRefreshFailed",
                message: f.message.clone(),
                configuration: false,
                retry_in: f.retry_at.saturating_duration_since(Instant::now()),
                expiring: None,
            });
        }
        let mint_labels = |result| MintLabels {
            credential: name.clone(),
            result,
        };
        match self.mint(ctx, rc, spec, credentials).await {
            Ok(minted) => {
                ctx.metrics
                    .token_mints
                    .get_or_create(&mint_labels("success"))
                    .inc();
                let config = DockerConfig::from_logins(&minted.logins()).map_err(|e| Failed {
                    reason: "TokenRefreshFailed",
                    message: format!("the minted tokens do not make a registry config: {e}"),
                    configuration: false,
                    retry_in: MAX_RETRY,
                    expiring: None,
                })?;
                let (refresh_in, skewed) =
                    ecr::refresh_delay(Timestamp::now(), minted.expires_at, min);
                let resolved = ResolvedSource {
                    data: config.to_json(),
                    version: rfc3339(minted.expires_at),
                    registries: config.registries().map(str::to_string).collect(),
                };
                ctx.metrics
                    .credential_expiry
                    .get_or_create(&CredentialLabels {
                        credential: name.clone(),
                    })
                    .set(minted.expires_at.as_second());
                info!(
                    credential = %name,
                    registries = ?resolved.registries,
                    expires_at = %rfc3339(minted.expires_at),
                    refresh_in_seconds = refresh_in.as_secs(),
                    "minted registry tokens"
                );
                self.failing.lock().expect("tokens lock").remove(&name);
                self.entries.lock().expect("tokens lock").insert(
                    name,
                    Entry {
                        fingerprint,
                        resolved: resolved.clone(),
                        expires_at: minted.expires_at,
                        refresh_at: Instant::now() + refresh_in,
                        skewed,
                    },
                );
                Ok(Fresh {
                    resolved,
                    expires_at: minted.expires_at,
                    refresh_in,
                    skewed,
                })
            }
            Err(problem) => {
                ctx.metrics
                    .token_mints
                    .get_or_create(&mint_labels("error"))
                    .inc();
                debug!(credential = %name, error = %problem, "minting failed");
                let expires_at = self
                    .entries
                    .lock()
                    .expect("tokens lock")
                    .get(&name)
                    .map(|e| e.expires_at)
                    .or_else(|| stored_expiry(rc));
                let message = format!(
                    "could not mint a new token: {problem}{}",
                    self.keeps(rc, &name)
                );
                let mut failing = self.failing.lock().expect("tokens lock");
                let previous = failing
                    .remove(&name)
                    .filter(|f| f.fingerprint == fingerprint);
                let count = previous.as_ref().map_or(1, |f| f.count.saturating_add(1));
                let retry_in =
                    (FIRST_RETRY * 2u32.saturating_pow(count.min(10) - 1)).min(MAX_RETRY);
                let soon = expires_at.filter(|at| {
                    at.as_second() - Timestamp::now().as_second() < EXPIRY_WARNING.as_secs() as i64
                });
                let warned = previous.and_then(|f| f.warned);
                let expiring = soon.filter(|at| warned != Some(*at)).map(expiry_text);
                failing.insert(
                    name,
                    Failing {
                        fingerprint,
                        count,
                        retry_at: Instant::now() + retry_in,
                        message: message.clone(),
                        warned: soon.or(warned),
                    },
                );
                Err(Failed {
                    reason: "TokenRefreshFailed",
                    message,
                    configuration: false,
                    retry_in,
                    expiring,
                })
            }
        }
    }

    /// What the copies keep, for a message: the expiry of the token in them.
    fn keeps(&self, rc: &RegistryCredential, name: &str) -> String {
        let at = self
            .entries
            .lock()
            .expect("tokens lock")
            .get(name)
            .map(|e| e.expires_at)
            .or_else(|| stored_expiry(rc));
        match at {
            Some(at) => format!("; the copies keep the current token, {}", expiry_text(at)),
            None => String::new(),
        }
    }

    /// The AWS credentials from the Secret (and its resourceVersion), or `None` for web identity;
    /// problems are source errors, like those of any other source.
    #[allow(
        clippy::unused_self,
        reason = "one of the token cache's steps, beside those that use it"
    )]
    fn credentials_input(
        &self,
        ctx: &Env<'_>,
        spec: &EcrSource,
    ) -> Result<(Option<AwsCredentials>, String), SourceError> {
        let invalid = |problem: String| SourceError::Invalid {
            namespace: "spec".into(),
            name: "source.ecr".into(),
            problem,
        };
        ecr::check_region(&spec.region).map_err(invalid)?;
        if let Some(url) = &spec.endpoint {
            ecr::check_endpoint("endpoint", url).map_err(invalid)?;
        }
        match (&spec.credentials.secret_ref, &spec.credentials.web_identity) {
            (Some(r), None) => {
                let allowed = &ctx.settings.source_namespaces;
                if !allowed.contains(&r.namespace) {
                    return Err(SourceError::NamespaceNotAllowed {
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        allowed: allowed.join(", "),
                    });
                }
                let secret = ctx
                    .caches
                    .source_secret(&r.namespace, &r.name)
                    .ok_or_else(|| SourceError::NotFound {
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                    })?;
                let credentials = ecr::credentials_from_secret(&secret).map_err(|problem| {
                    SourceError::Invalid {
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        problem,
                    }
                })?;
                Ok((
                    Some(credentials),
                    secret.metadata.resource_version.clone().unwrap_or_default(),
                ))
            }
            (None, Some(w)) => {
                if let Some(url) = &w.sts_endpoint {
                    ecr::check_endpoint("webIdentity.stsEndpoint", url).map_err(invalid)?;
                }
                Ok((None, String::new()))
            }
            _ => Err(invalid(
                "exactly one of credentials.secretRef or credentials.webIdentity must be set"
                    .into(),
            )),
        }
    }

    async fn mint(
        &self,
        ctx: &Env<'_>,
        rc: &RegistryCredential,
        spec: &EcrSource,
        credentials: Option<AwsCredentials>,
    ) -> Result<Minted, String> {
        let aws = self.aws.as_ref().map_err(|e| format!("TLS setup: {e}"))?;
        let credentials = match (credentials, &spec.credentials.web_identity) {
            (Some(c), _) => c,
            (None, Some(w)) => {
                let token = self
                    .service_account_token(ctx, w.audience.as_deref())
                    .await?;
                let sts = w
                    .sts_endpoint
                    .clone()
                    .unwrap_or_else(|| ecr::default_sts_endpoint(&spec.region));
                let sts = ecr::check_endpoint("webIdentity.stsEndpoint", &sts)?;
                let session: String = format!("regcred-{}", rc.name_any())
                    .chars()
                    .take(64)
                    .collect();
                aws.assume_role_with_web_identity(&sts, &w.role_arn, &session, &token)
                    .await
                    .map_err(|e| e.to_string())?
            }
            (None, None) => return Err("no AWS credentials configured".into()),
        };
        let endpoint = spec
            .endpoint
            .clone()
            .unwrap_or_else(|| ecr::default_ecr_endpoint(&spec.region));
        let endpoint = ecr::check_endpoint("endpoint", &endpoint)?;
        aws.get_authorization_token(
            &endpoint,
            &spec.region,
            spec.registry_ids.as_deref().unwrap_or_default(),
            &credentials,
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// A short-lived token of the operator's own ServiceAccount for `audience` (TokenRequest).
    async fn service_account_token(
        &self,
        ctx: &Env<'_>,
        audience: Option<&str>,
    ) -> Result<String, String> {
        let (ns, sa) = (&ctx.settings.namespace, &ctx.settings.service_account);
        let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.unwrap_or(ecr::DEFAULT_AUDIENCE).to_string()]),
                expiration_seconds: Some(WEB_IDENTITY_TOKEN_SECONDS),
                bound_object_ref: None,
            }),
            ..Default::default()
        };
        let answer = api
            .create_token_request(sa, &crate::writes::post_params(), &request)
            .await
            .map_err(|e| {
                format!(
                    "requesting a token of ServiceAccount {ns}/{sa}: {}",
                    api_message(&e)
                )
            })?;
        answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                format!("the token request of ServiceAccount {ns}/{sa} returned no token")
            })
    }
}

/// The expiry last written to status (after a restart, the only one known).
fn stored_expiry(rc: &RegistryCredential) -> Option<Timestamp> {
    rc.status
        .as_ref()
        .and_then(|s| s.credential_expires_at.as_deref())
        .and_then(|t| t.parse().ok())
}

/// `which expires at 2026-12-03T21:25:00Z` or `which expired at ...`: no countdown, so that a
/// status with it stays the same from pass to pass.
pub(crate) fn expiry_text(at: Timestamp) -> String {
    if at <= Timestamp::now() {
        format!("which expired at {}", rfc3339(at))
    } else {
        format!("which expires at {}", rfc3339(at))
    }
}
