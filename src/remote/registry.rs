//! Asking a registry whether credentials work: `GET /v2/`, following the registry's challenge
//! (`Basic`, or `Bearer` with a token exchange at the realm it names), as a pull would.
//!
//! Outcomes are classified for people (authenticated, refused, unreachable, DNS, TLS, timeout);
//! nothing here ever prints the credentials or the token.
//!
//! A Bearer challenge names where the credentials are to be sent, so a hostile or compromised
//! registry could name any address. Before anything is sent to a token realm it is vetted
//! ([`judge_realm`]): https only (plain http to loopback only), never a link-local or cloud
//! metadata address, never a private or loopback address for a registry that is not on one
//! itself (every resolved address counts); a realm on another host than the registry is allowed
//! but named, unless cross-host realms are forbidden. The token request connects only to the
//! addresses that were vetted ([`Pinned`]).

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::Engine;
use http_body_util::{BodyExt, Empty};
use hyper::{
    Request, StatusCode,
    body::Bytes,
    header::{AUTHORIZATION, WWW_AUTHENTICATE},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;

use crate::dockerconfig::Credentials;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;
/// A connector that reaches only the addresses a realm was vetted with.
type PinnedHttps = hyper_rustls::HttpsConnector<HttpConnector<Pinned>>;

/// A resolver answering with the addresses vetted for a token realm, whatever DNS says now: the
/// credentials go where the check looked, not where a second lookup (DNS rebinding) points.
#[derive(Clone)]
struct Pinned(Arc<Vec<IpAddr>>);

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Pinned {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        // Port 0: the connector puts the URL's port in.
        let addresses: Vec<_> = self
            .0
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, 0))
            .collect();
        std::future::ready(Ok(addresses.into_iter()))
    }
}

/// How a registry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "camelCase")]
pub enum Outcome {
    /// The registry accepted the credentials.
    Authenticated,
    /// The registry (or its token service) refused them.
    Refused(String),
    /// No authentication was asked for: the registry is open.
    Anonymous,
    Unreachable(String),
    Dns(String),
    Tls(String),
    Timeout,
    Unexpected(String),
    /// The registry's Bearer challenge named a token realm that credentials may not go to;
    /// nothing was sent there.
    RealmRefused(String),
}

impl Outcome {
    pub(crate) fn ok(&self) -> bool {
        matches!(self, Outcome::Authenticated | Outcome::Anonymous)
    }

    /// Stable PascalCase reason (conditions, Events).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Outcome::Authenticated => "Authenticated",
            Outcome::Anonymous => "Anonymous",
            Outcome::Refused(_) => "Refused",
            Outcome::Unreachable(_) => "Unreachable",
            Outcome::Dns(_) => "DNSFailure",
            Outcome::Tls(_) => "TLSError",
            Outcome::Timeout => "Timeout",
            Outcome::Unexpected(_) => "UnexpectedResponse",
            Outcome::RealmRefused(_) => "RealmRefused",
        }
    }

    pub(crate) fn describe(&self, registry: &str) -> String {
        match self {
            Outcome::Authenticated => format!("{registry} accepted the credentials"),
            Outcome::Anonymous => format!("{registry} asked for no credentials"),
            Outcome::Refused(why) => format!("{registry} refused the credentials ({why})"),
            Outcome::Unreachable(why) => format!("{registry} is unreachable: {why}"),
            Outcome::Dns(why) => format!("{registry} could not be resolved: {why}"),
            Outcome::Tls(why) => format!("TLS with {registry} failed: {why}"),
            Outcome::Timeout => format!("{registry} did not answer in time"),
            Outcome::Unexpected(why) => format!("{registry} answered unexpectedly: {why}"),
            Outcome::RealmRefused(why) => {
                format!("{registry}: credentials not sent to its token service: {why}")
            }
        }
    }
}

/// The outcome of a check, and the token realm's origin when it is on another host than the
/// registry (Docker Hub's `auth.docker.io`, GitLab's own host): whoever reads the result should
/// know where the credentials went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    pub(crate) outcome: Outcome,
    pub(crate) other_host_realm: Option<String>,
}

impl Checked {
    /// [`Outcome::describe`], naming a token realm on another host.
    pub(crate) fn describe(&self, registry: &str) -> String {
        let text = self.outcome.describe(registry);
        match &self.other_host_realm {
            Some(realm) => format!("{text} (token service on another host: {realm})"),
            None => text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    #[error("cannot read the CA bundle: {0}")]
    Ca(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// An HTTPS client trusting the system roots plus an optional PEM bundle.
#[derive(Clone)]
pub struct Checker {
    client: Client<Https, Empty<Bytes>>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    forbid_cross_host_realms: bool,
}

/// The system's trusted roots, read from disk once per process (a blocking read of some hundred
/// files: the first caller pays it, every later checker copies the store).
fn native_roots() -> &'static rustls::RootCertStore {
    static ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert); // skip system certificates rustls cannot use
        }
        roots
    })
}

impl Checker {
    /// Blocking on the first call (it reads the system's roots): build checkers off the async
    /// workers.
    pub fn new(extra_ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, CheckerError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = native_roots().clone();
        if let Some(pem) = extra_ca_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| CheckerError::Ca(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| CheckerError::Ca(e.to_string()))?;
                added += 1;
            }
            if added == 0 {
                return Err(CheckerError::Ca("no PEM certificate found".into()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CheckerError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            tls: Arc::new(tls),
            timeout,
            forbid_cross_host_realms: false,
        })
    }

    /// Refuses token realms on another host than the registry.
    pub fn forbid_cross_host_realms(mut self, forbid: bool) -> Self {
        self.forbid_cross_host_realms = forbid;
        self
    }

    /// Checks `registry` (`host[:port]`, as the kubelet reads the key) with `credentials`.
    pub(crate) async fn check(&self, registry: &str, credentials: &Credentials) -> Checked {
        self.check_base(&format!("https://{registry}"), credentials)
            .await
    }

    /// Checks the registry at `base` (`scheme://host[:port]`).
    pub(crate) async fn check_base(&self, base: &str, credentials: &Credentials) -> Checked {
        let mut other_host_realm = None;
        let outcome = match tokio::time::timeout(
            self.timeout,
            self.check_inner(base, credentials, &mut other_host_realm),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Timeout,
        };
        Checked {
            outcome,
            other_host_realm,
        }
    }

    async fn check_inner(
        &self,
        base: &str,
        credentials: &Credentials,
        other_host_realm: &mut Option<String>,
    ) -> Outcome {
        let url = format!("{base}/v2/");
        let (status, challenge, _) = match get(&self.client, &url, None).await {
            Ok(r) => r,
            Err(o) => return o,
        };
        if status.is_success() {
            return Outcome::Anonymous;
        }
        if status != StatusCode::UNAUTHORIZED {
            return Outcome::Unexpected(format!("GET /v2/ answered {status}"));
        }
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", credentials.username, credentials.password))
        );
        let Some(challenge) = challenge else {
            return Outcome::Unexpected("401 without a WWW-Authenticate challenge".into());
        };
        let (scheme, params) = parse_challenge(&challenge);
        let authorization = match scheme.to_ascii_lowercase().as_str() {
            "basic" => basic,
            "bearer" => {
                let Some(realm) = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                else {
                    return Outcome::Unexpected("Bearer challenge without a realm".into());
                };
                let pinned = match self.vet_realm(base, &realm).await {
                    Ok((other_host, addresses)) => {
                        *other_host_realm = other_host;
                        self.pinned_client(addresses)
                    }
                    Err(refused) => return refused,
                };
                let query: Vec<String> = params
                    .iter()
                    .filter(|(k, _)| k == "service" || k == "scope")
                    .map(|(k, v)| format!("{k}={}", encode_query(v)))
                    .collect();
                let sep = if realm.contains('?') { '&' } else { '?' };
                let token_url = if query.is_empty() {
                    realm
                } else {
                    format!("{realm}{sep}{}", query.join("&"))
                };
                let (status, _, body) = match get(&pinned, &token_url, Some(&basic)).await {
                    Ok(r) => r,
                    Err(o) => return o,
                };
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Outcome::Refused(format!("token service answered {status}"));
                }
                if !status.is_success() {
                    return Outcome::Unexpected(format!("token service answered {status}"));
                }
                let token = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.get("token")
                            .or_else(|| v.get("access_token"))
                            .and_then(|t| t.as_str())
                            .map(str::to_string)
                    });
                match token {
                    Some(token) => format!("Bearer {token}"),
                    None => return Outcome::Unexpected("token service returned no token".into()),
                }
            }
            other => {
                return Outcome::Unexpected(format!("unsupported authentication scheme {other:?}"));
            }
        };
        match get(&self.client, &url, Some(&authorization)).await {
            Ok((status, _, _)) if status.is_success() => Outcome::Authenticated,
            Ok((status, _, _))
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
            {
                Outcome::Refused(format!("GET /v2/ answered {status}"))
            }
            Ok((status, _, _)) => Outcome::Unexpected(format!("GET /v2/ answered {status}")),
            Err(o) => o,
        }
    }

    /// A client whose connections reach only `addresses` (see [`Pinned`]).
    fn pinned_client(&self, addresses: Vec<IpAddr>) -> Client<PinnedHttps, Empty<Bytes>> {
        let mut http = HttpConnector::new_with_resolver(Pinned(Arc::new(addresses)));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new()).build(https)
    }
}

async fn get<C>(
    client: &Client<C, Empty<Bytes>>,
    url: &str,
    authorization: Option<&str>,
) -> Result<(StatusCode, Option<String>, Bytes), Outcome>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut req = Request::get(url);
    if let Some(auth) = authorization {
        req = req.header(AUTHORIZATION, auth);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| Outcome::Unexpected(format!("invalid URL: {e}")))?;
    let resp = client.request(req).await.map_err(|e| classify(&e))?;
    let status = resp.status();
    let challenge = resp
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    Ok((status, challenge, body))
}

/// Where a token realm is, as far as [`judge_realm`] needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RealmTarget<'a> {
    /// `https`, `http`, anything else as given.
    pub(crate) scheme: &'a str,
    /// Every address the realm's host resolves to.
    pub(crate) addresses: &'a [IpAddr],
    /// Every address the registry's host resolves to.
    pub(crate) registry_addresses: &'a [IpAddr],
}

/// Decides whether credentials may go to a token realm; the refusal says why, naming addresses
/// and never the realm's path or query.
pub(crate) fn judge_realm(target: &RealmTarget<'_>) -> Result<(), String> {
    if let Some(ip) = target
        .addresses
        .iter()
        .find(|ip| is_link_local_or_metadata(**ip))
    {
        return Err(format!(
            "it resolves to {ip}, a link-local or cloud metadata address"
        ));
    }
    match target.scheme {
        "https" => {}
        "http" => {
            if let Some(ip) = target.addresses.iter().find(|ip| !is_loopback(**ip)) {
                return Err(format!(
                    "it is plain http to {ip}: credentials go to a token service only over https \
                     (plain http only to loopback)"
                ));
            }
        }
        other => return Err(format!("its scheme {other:?} is not https")),
    }
    let registry_private = !target.registry_addresses.is_empty()
        && target.registry_addresses.iter().all(|ip| is_private(*ip));
    if !registry_private && let Some(ip) = target.addresses.iter().find(|ip| is_private(**ip)) {
        return Err(format!(
            "it resolves to {ip}, a private or loopback address, while the registry is not on one"
        ));
    }
    Ok(())
}

/// An IPv4-mapped IPv6 address as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// 169.254.0.0/16 (cloud metadata at 169.254.169.254), fe80::/10, and AWS's IPv6 metadata
/// address fd00:ec2::254.
pub(crate) fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// Loopback, or the unspecified address (which reaches the local host).
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    ip.is_loopback() || ip.is_unspecified()
}

/// Loopback, RFC 1918, shared (100.64.0.0/10), link-local and unique-local addresses.
pub(crate) fn is_private(ip: IpAddr) -> bool {
    if is_loopback(ip) || is_link_local_or_metadata(ip) {
        return true;
    }
    match canonical(ip) {
        IpAddr::V4(v4) => {
            v4.is_private() || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Scheme, host (without brackets) and port of an absolute URL; refuses user information.
fn origin_of(url: &str) -> Result<(String, String, u16), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| "it is not an absolute URL".to_string())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err("it is not an absolute URL".into());
    };
    if authority.as_str().contains('@') {
        return Err("it carries user information".into());
    }
    let scheme = scheme.to_ascii_lowercase();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    Ok((scheme, host, port))
}

async fn resolve(host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} could not be resolved: {e}"))?
        .map(|a| a.ip())
        .collect();
    if addresses.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Ok(addresses)
}

impl Checker {
    /// Vets the realm a registry at `base` named: its origin when it is on another host, and the
    /// addresses the token request may connect to.
    async fn vet_realm(
        &self,
        base: &str,
        realm: &str,
    ) -> Result<(Option<String>, Vec<IpAddr>), Outcome> {
        let refuse = |origin: &str, why: String| {
            Outcome::RealmRefused(format!("the token realm {origin} is refused: {why}"))
        };
        let (scheme, host, port) = origin_of(realm)
            .map_err(|why| Outcome::RealmRefused(format!("the token realm is refused: {why}")))?;
        let shown = if host.contains(':') {
            format!("{scheme}://[{host}]:{port}")
        } else {
            format!("{scheme}://{host}:{port}")
        };
        let (_, registry_host, registry_port) = origin_of(base)
            .map_err(|why| Outcome::Unexpected(format!("registry address: {why}")))?;
        let addresses = resolve(&host, port)
            .await
            .map_err(|why| refuse(&shown, why))?;
        let registry_addresses = resolve(&registry_host, registry_port)
            .await
            .unwrap_or_default();
        judge_realm(&RealmTarget {
            scheme: &scheme,
            addresses: &addresses,
            registry_addresses: &registry_addresses,
        })
        .map_err(|why| refuse(&shown, why))?;
        if host == registry_host {
            return Ok((None, addresses));
        }
        if self.forbid_cross_host_realms {
            return Err(refuse(
                &shown,
                format!(
                    "it is on another host than the registry ({registry_host}), and cross-host \
                     token realms are forbidden"
                ),
            ));
        }
        Ok((Some(shown), addresses))
    }
}

fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b':'
            | b'/'
            | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `Bearer realm="https://auth.example/token",service="registry",scope="..."` → scheme, params.
pub(crate) fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.push((key, value.to_string()));
        rest = remaining.trim_start_matches([',', ' ']);
    }
    (scheme.to_string(), params)
}

/// Classifies a connection failure by walking the error chain.
fn classify(e: &hyper_util::client::legacy::Error) -> Outcome {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        chain.push(err.to_string());
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && inner.downcast_ref::<rustls::Error>().is_some()
        {
            return Outcome::Tls(inner.to_string());
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Outcome::Tls(tls.to_string());
        }
        source = err.source();
    }
    let text = chain.join(": ");
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        Outcome::Tls(text)
    } else if lower.contains("dns")
        || lower.contains("lookup")
        || lower.contains("name or service not known")
    {
        Outcome::Dns(text)
    } else {
        Outcome::Unreachable(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            [
                (
                    "realm".to_string(),
                    "https://auth.example.com/token".to_string()
                ),
                ("service".to_string(), "registry.example.com".to_string()),
                ("scope".to_string(), "repository:a/b:pull".to_string()),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (scheme.as_str(), params[0].1.as_str()),
            ("Basic", "Registry Realm")
        );
    }

    #[test]
    fn outcome_messages_name_the_registry_only() {
        let o = Outcome::Refused("GET /v2/ answered 401 Unauthorized".into());
        assert_eq!(o.reason(), "Refused");
        assert!(o.describe("r.io").starts_with("r.io refused"));
        assert!(!o.ok());
        assert!(Outcome::Authenticated.ok());
        let o =
            Outcome::RealmRefused("the token realm http://169.254.169.254:80 is refused".into());
        assert_eq!(o.reason(), "RealmRefused");
        assert!(!o.ok());
    }

    /// A registry that answers with a Bearer challenge and a token service that trades Basic
    /// credentials for a token, over real sockets: the exchange a pull makes on Docker Hub, GHCR
    /// or Harbor.
    async fn token_registry() -> String {
        use axum::{Router, extract::Query, http::HeaderMap, response::IntoResponse, routing::get};
        use std::collections::HashMap;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let realm = format!("http://{addr}/token");
        let app = Router::new()
            .route(
                "/v2/",
                get(move |headers: HeaderMap| {
                    let realm = realm.clone();
                    async move {
                        if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer good-token") {
                            return (StatusCode::OK, HeaderMap::new(), "{}").into_response();
                        }
                        let mut h = HeaderMap::new();
                        let challenge = format!(r#"Bearer realm="{realm}",service="test-registry",scope="registry:catalog:*""#);
                        h.insert("www-authenticate", challenge.parse().unwrap());
                        (StatusCode::UNAUTHORIZED, h, "").into_response()
                    }
                }),
            )
            .route(
                "/token",
                get(|headers: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("robot:right"));
                    let ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
                        && q.get("service").map(String::as_str) == Some("test-registry")
                        && q.get("scope").map(String::as_str) == Some("registry:catalog:*");
                    if ok {
                        (StatusCode::OK, r#"{"token":"good-token"}"#).into_response()
                    } else {
                        (StatusCode::UNAUTHORIZED, "").into_response()
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn bearer_token_exchange_authenticates_and_refuses() {
        let base = token_registry().await;
        let checker = Checker::new(None, Duration::from_secs(5)).unwrap();
        let creds = |pw: &str| Credentials {
            username: "robot".into(),
            password: pw.into(),
        };
        let ok = checker.check_base(&base, &creds("right")).await;
        assert_eq!(ok.outcome, Outcome::Authenticated);
        assert_eq!(
            ok.other_host_realm, None,
            "the realm is on the registry's host"
        );
        assert!(
            matches!(checker.check_base(&base, &creds("wrong")).await.outcome, Outcome::Refused(why) if why.contains("token service"))
        );
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let checker = Checker::new(None, Duration::from_secs(5)).unwrap();
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        assert!(matches!(
            checker
                .check(&format!("127.0.0.1:{port}"), &creds)
                .await
                .outcome,
            Outcome::Unreachable(_)
        ));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode_query("repository:a/b:pull push"),
            "repository:a/b:pull%20push"
        );
    }

    /// A hostile registry: `/v2/` answers 401 with a Bearer challenge naming `realm`.
    async fn hostile_registry(realm: String) -> String {
        use axum::{Router, http::HeaderMap, response::IntoResponse, routing::get};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/v2/",
            get(move || {
                let realm = realm.clone();
                async move {
                    let mut h = HeaderMap::new();
                    let challenge = format!(r#"Bearer realm="{realm}",service="x""#);
                    h.insert("www-authenticate", challenge.parse().unwrap());
                    (StatusCode::UNAUTHORIZED, h, "").into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// A token service that records every request reaching it, and refuses them all.
    async fn recording_listener() -> (
        std::net::SocketAddr,
        Arc<std::sync::Mutex<Vec<Option<String>>>>,
    ) {
        use axum::{Router, http::HeaderMap, routing::get};
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = seen.clone();
        let app = Router::new().fallback(get(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                record.lock().unwrap().push(auth);
                StatusCode::UNAUTHORIZED
            }
        }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, seen)
    }

    fn robot() -> Credentials {
        Credentials {
            username: "robot".into(),
            password: "TOPSECRET-pw".into(),
        }
    }

    #[tokio::test]
    async fn realms_at_metadata_link_local_or_with_user_information_get_nothing() {
        let checker = Checker::new(None, Duration::from_secs(5)).unwrap();
        for (realm, why) in [
            (
                "http://169.254.169.254/latest/meta-data/",
                "link-local or cloud metadata",
            ),
            (
                "https://169.254.170.2/v2/credentials",
                "link-local or cloud metadata",
            ),
            (
                "https://[fd00:ec2::254]/token",
                "link-local or cloud metadata",
            ),
            (
                "https://[::ffff:169.254.169.254]/token",
                "link-local or cloud metadata",
            ),
            ("https://[fe80::1]/token", "link-local or cloud metadata"),
            ("ftp://127.0.0.1/token", "not https"),
            ("/token", "not an absolute URL"),
            ("http://robot@127.0.0.1:1/token", "user information"),
        ] {
            let base = hostile_registry(realm.into()).await;
            let checked = checker.check_base(&base, &robot()).await;
            let Outcome::RealmRefused(message) = &checked.outcome else {
                panic!("{realm}: {checked:?}");
            };
            assert!(message.contains(why), "{realm}: {message}");
            let text = checked.describe("r.io");
            assert!(
                text.contains("credentials not sent")
                    && !text.contains("TOPSECRET")
                    && !text.contains("meta-data"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_cross_host_realm_is_named_or_forbidden() {
        let (addr, seen) = recording_listener().await;
        // The registry is 127.0.0.1, the realm `localhost`: another host name, the same machine.
        let base = hostile_registry(format!("http://localhost:{}/token", addr.port())).await;
        let allowed = Checker::new(None, Duration::from_secs(5)).unwrap();
        let checked = allowed.check_base(&base, &robot()).await;
        assert!(
            matches!(checked.outcome, Outcome::Refused(_)),
            "{checked:?}"
        );
        let realm = format!("http://localhost:{}", addr.port());
        assert_eq!(checked.other_host_realm.as_deref(), Some(realm.as_str()));
        assert!(checked.describe("127.0.0.1").contains(&realm));
        assert_eq!(seen.lock().unwrap().len(), 1, "the token service was asked");
        assert!(
            seen.lock().unwrap()[0]
                .as_deref()
                .unwrap_or("")
                .starts_with("Basic ")
        );

        seen.lock().unwrap().clear();
        let forbidding = Checker::new(None, Duration::from_secs(5))
            .unwrap()
            .forbid_cross_host_realms(true);
        let checked = forbidding.check_base(&base, &robot()).await;
        let Outcome::RealmRefused(message) = &checked.outcome else {
            panic!("{checked:?}");
        };
        assert!(
            message.contains("another host") && message.contains(&realm),
            "{message}"
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "nothing reached the realm: {seen:?}"
        );
    }

    /// The token request connects to the addresses that were vetted, not to whatever a second
    /// lookup of the name would give (DNS rebinding): here the name resolves to nothing at all.
    #[tokio::test]
    async fn the_token_request_goes_to_the_vetted_addresses_only() {
        let (addr, seen) = recording_listener().await;
        let checker = Checker::new(None, Duration::from_secs(5)).unwrap();
        let pinned = checker.pinned_client(vec![addr.ip()]);
        let url = format!("http://rebound.invalid:{}/token", addr.port());
        let (status, _, _) = get(&pinned, &url, Some("Basic eA==")).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [Some("Basic eA==".to_string())]
        );
        // The ordinary client resolves the name, and fails.
        assert!(matches!(
            get(&checker.client, &url, None).await,
            Err(Outcome::Dns(_) | Outcome::Unreachable(_))
        ));
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn realm_rules() {
        let judge = |scheme: &str, realm: &[&str], registry: &[&str]| {
            judge_realm(&RealmTarget {
                scheme,
                addresses: &ips(realm),
                registry_addresses: &ips(registry),
            })
        };
        // https to a public address from a public registry (Docker Hub's auth.docker.io).
        assert_eq!(judge("https", &["34.1.2.3"], &["54.1.2.3"]), Ok(()));
        // A private registry may use a private or loopback token service.
        assert_eq!(judge("https", &["10.0.0.5"], &["10.0.0.4"]), Ok(()));
        assert_eq!(judge("http", &["127.0.0.1"], &["127.0.0.1"]), Ok(()));
        assert_eq!(judge("http", &["::1"], &["127.0.0.1"]), Ok(()));
        // Plain http only to loopback.
        assert!(
            judge("http", &["10.0.0.5"], &["10.0.0.4"])
                .unwrap_err()
                .contains("over https")
        );
        assert!(judge("http", &["34.1.2.3"], &["54.1.2.3"]).is_err());
        assert!(judge("http", &["127.0.0.1", "34.1.2.3"], &["127.0.0.1"]).is_err());
        // A public registry may not point into the private network, not even with one address.
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "0.0.0.0",
            "fd12::1",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            let e = judge("https", &["34.1.2.3", private], &["54.1.2.3"]).unwrap_err();
            assert!(e.contains("private or loopback"), "{private}: {e}");
        }
        // A registry with one public address is not private.
        assert!(judge("https", &["10.0.0.5"], &["10.0.0.4", "54.1.2.3"]).is_err());
        // Metadata and link-local addresses never, whatever the registry.
        for metadata in [
            "169.254.169.254",
            "169.254.0.1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
        ] {
            let e = judge("https", &[metadata], &["169.254.1.1"]).unwrap_err();
            assert!(e.contains("metadata"), "{metadata}: {e}");
        }
        assert!(judge("file", &["127.0.0.1"], &["127.0.0.1"]).is_err());
    }
}
