//! Asking a registry whether credentials work: `GET /v2/`, following the registry's challenge
//! (`Basic`, or `Bearer` with a token exchange at the realm it names), as a pull would.
//!
//! Outcomes are classified for people (authenticated, refused, unreachable, DNS, TLS, timeout);
//! nothing here ever prints the credentials or the token.

use std::{sync::Arc, time::Duration};

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
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Authenticated | Outcome::Anonymous)
    }

    /// Stable PascalCase reason (conditions, Events).
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Authenticated => "Authenticated",
            Outcome::Anonymous => "Anonymous",
            Outcome::Refused(_) => "Refused",
            Outcome::Unreachable(_) => "Unreachable",
            Outcome::Dns(_) => "DNSFailure",
            Outcome::Tls(_) => "TLSError",
            Outcome::Timeout => "Timeout",
            Outcome::Unexpected(_) => "UnexpectedResponse",
        }
    }

    pub fn describe(&self, registry: &str) -> String {
        match self {
            Outcome::Authenticated => format!("{registry} accepted the credentials"),
            Outcome::Anonymous => format!("{registry} asked for no credentials"),
            Outcome::Refused(why) => format!("{registry} refused the credentials ({why})"),
            Outcome::Unreachable(why) => format!("{registry} is unreachable: {why}"),
            Outcome::Dns(why) => format!("{registry} could not be resolved: {why}"),
            Outcome::Tls(why) => format!("TLS with {registry} failed: {why}"),
            Outcome::Timeout => format!("{registry} did not answer in time"),
            Outcome::Unexpected(why) => format!("{registry} answered unexpectedly: {why}"),
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
    timeout: Duration,
}

impl Checker {
    pub fn new(extra_ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, CheckerError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert); // skip system certificates rustls cannot use
        }
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
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    /// Checks `registry` (`host[:port]`, as the kubelet reads the key) with `credentials`.
    pub async fn check(&self, registry: &str, credentials: &Credentials) -> Outcome {
        self.check_base(&format!("https://{registry}"), credentials)
            .await
    }

    /// Checks the registry at `base` (`scheme://host[:port]`).
    pub async fn check_base(&self, base: &str, credentials: &Credentials) -> Outcome {
        match tokio::time::timeout(self.timeout, self.check_inner(base, credentials)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Timeout,
        }
    }

    async fn check_inner(&self, base: &str, credentials: &Credentials) -> Outcome {
        let url = format!("{base}/v2/");
        let (status, challenge, _) = match self.get(&url, None).await {
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
                let (status, _, body) = match self.get(&token_url, Some(&basic)).await {
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
        match self.get(&url, Some(&authorization)).await {
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

    async fn get(
        &self,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, Option<String>, Bytes), Outcome> {
        let mut req = Request::get(url);
        if let Some(auth) = authorization {
            req = req.header(AUTHORIZATION, auth);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| Outcome::Unexpected(format!("invalid URL: {e}")))?;
        let resp = self.client.request(req).await.map_err(|e| classify(&e))?;
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
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok((status, challenge, body))
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
pub fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
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
        assert_eq!(
            checker.check_base(&base, &creds("right")).await,
            Outcome::Authenticated
        );
        assert!(
            matches!(checker.check_base(&base, &creds("wrong")).await, Outcome::Refused(why) if why.contains("token service"))
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
            checker.check(&format!("127.0.0.1:{port}"), &creds).await,
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
}
