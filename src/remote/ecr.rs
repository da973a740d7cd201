//! Amazon ECR as a source: AWS credentials (from a Secret, or an IAM role assumed with a token of
//! the operator's own ServiceAccount through STS `AssumeRoleWithWebIdentity`), then
//! `GetAuthorizationToken`, which answers with one 12-hour token per registry.
//!
//! Only the network ends live here (SigV4-signed ECR JSON protocol, the STS query protocol over
//! the operator's hyper client); when to refresh is [`refresh_delay`], pure. Nothing here prints a
//! secret: credential types have redacting `Debug`, AWS error messages are stripped of anything
//! sent, and request bodies are never handed to the signer (it gets their hash), so its trace
//! logs cannot show them.

use std::{fmt, sync::Arc, time::Duration};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri, body::Bytes};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};

use crate::dockerconfig::RegistryLogin;

/// Secret keys of AWS credentials, as the AWS CLI's environment variables name them.
pub(crate) const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub(crate) const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub(crate) const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// Audience of the ServiceAccount token when `webIdentity.audience` is not set.
pub(crate) const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";

/// AWS credentials. `Debug` shows the access key id only.
#[derive(Clone)]
pub(crate) struct AwsCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl AwsCredentials {
    /// The secret parts, to be removed from anything an AWS endpoint answers.
    fn secrets(&self) -> Vec<&str> {
        let mut secrets = vec![self.secret_access_key.as_str()];
        secrets.extend(self.session_token.as_deref());
        secrets
    }
}

/// Tokens minted by `GetAuthorizationToken`, one login per registry. `Debug` shows the
/// registries and the expiry only.
#[derive(Clone, PartialEq)]
pub(crate) struct Minted {
    /// `(registry host, token)`, sorted by host.
    pub(crate) tokens: Vec<(String, String)>,
    /// The earliest expiry of the tokens.
    pub(crate) expires_at: Timestamp,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field(
                "registries",
                &self.tokens.iter().map(|(h, _)| h).collect::<Vec<_>>(),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Minted {
    /// The logins of the docker config: user `AWS`, the token as password (and so `auth` =
    /// base64 of `AWS:<token>`, as `kubectl create secret docker-registry` writes it).
    pub(crate) fn logins(&self) -> Vec<RegistryLogin> {
        self.tokens
            .iter()
            .map(|(host, token)| RegistryLogin {
                server: host.clone(),
                username: "AWS".into(),
                password: token.clone(),
                email: None,
            })
            .collect()
    }
}

/// A failed AWS call. Messages never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AwsError {
    #[error("{0}")]
    Endpoint(String),
    #[error("{service} at {endpoint} is unreachable: {detail}")]
    Unreachable {
        service: &'static str,
        endpoint: String,
        detail: String,
    },
    #[error("{service} {action} was refused (HTTP {status}): {code}: {message}")]
    Refused {
        service: &'static str,
        action: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{service} {action}: unexpected answer: {detail}")]
    Unexpected {
        service: &'static str,
        action: &'static str,
        detail: String,
    },
}

/// The default ECR API endpoint of a region.
pub(crate) fn default_ecr_endpoint(region: &str) -> String {
    format!("https://api.ecr.{region}.amazonaws.com")
}

/// The regional STS endpoint.
pub(crate) fn default_sts_endpoint(region: &str) -> String {
    format!("https://sts.{region}.amazonaws.com")
}

/// A region name usable in a host name.
pub(crate) fn check_region(region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region.len() <= 32
        && region.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "region {region:?} is not an AWS region name (like us-east-1)"
        ))
    }
}

/// An endpoint override: `https://host[:port]`, or `http://` to a loopback address only (the
/// answer carries the token), without path, query or user info.
pub(crate) fn check_endpoint(field: &str, url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("{field} {url:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare == "localhost"
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "{field} {url:?}: plain http is allowed to a loopback address only; use https"
                ));
            }
        }
        _ => return Err(format!("{field} {url:?} must start with https://")),
    }
    if host.is_empty()
        || uri.authority().is_some_and(|a| a.as_str().contains('@'))
        || uri.query().is_some()
        || !matches!(uri.path(), "" | "/")
    {
        return Err(format!(
            "{field} {url:?} must be scheme://host[:port] without path, query or user"
        ));
    }
    Ok(uri)
}

/// Reads AWS credentials from a Secret; problems name the keys, never the values.
pub(crate) fn credentials_from_secret(secret: &Secret) -> Result<AwsCredentials, String> {
    let data = secret.data.as_ref();
    let text = |key: &str| -> Result<Option<String>, String> {
        match data.and_then(|d| d.get(key)) {
            None => Ok(None),
            Some(bytes) => {
                let t = std::str::from_utf8(&bytes.0)
                    .map_err(|_| format!("key {key} is not UTF-8 text"))?
                    .trim();
                if t.is_empty() {
                    Err(format!("key {key} is empty"))
                } else {
                    Ok(Some(t.to_string()))
                }
            }
        }
    };
    let found = || {
        let keys: Vec<&str> = data
            .into_iter()
            .flat_map(|d| d.keys())
            .map(String::as_str)
            .collect();
        if keys.is_empty() {
            "no keys".to_string()
        } else {
            format!("keys [{}]", keys.join(", "))
        }
    };
    let (Some(access_key_id), Some(secret_access_key)) =
        (text(ACCESS_KEY_ID)?, text(SECRET_ACCESS_KEY)?)
    else {
        return Err(format!(
            "expected keys {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY} (and optionally {SESSION_TOKEN}), found {}",
            found()
        ));
    };
    Ok(AwsCredentials {
        access_key_id,
        secret_access_key,
        session_token: text(SESSION_TOKEN)?,
    })
}

/// How long to wait before minting again, and whether the expiry was unusable: half the
/// lifetime the token has left at `now` (refresh when less than half remains), at least `min`. An
/// expiry not in the future (a skewed clock, or an endpoint that says so) gives `min`: never a hot
/// loop.
pub(crate) fn refresh_delay(
    now: Timestamp,
    expires_at: Timestamp,
    min: Duration,
) -> (Duration, bool) {
    let left = expires_at.as_second().saturating_sub(now.as_second());
    if left <= 0 {
        return (min, true);
    }
    (Duration::from_secs((left as u64) / 2).max(min), false)
}

/// Removes the secrets from `text` and keeps it short and on one line.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "<redacted>");
    }
    let mut out: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > 300 {
        let mut cut = 300;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A client of the two AWS APIs the ECR source uses.
#[derive(Clone)]
pub(crate) struct Aws {
    client: Client<Https, Full<Bytes>>,
    timeout: Duration,
}

impl Aws {
    pub(crate) fn new(timeout: Duration) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
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

    async fn send(
        &self,
        service: &'static str,
        endpoint: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), AwsError> {
        let unreachable = |detail: String| AwsError::Unreachable {
            service,
            endpoint: endpoint.to_string(),
            detail,
        };
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| {
                use std::error::Error as _;
                let mut detail = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    detail = format!("{detail}: {s}");
                    source = s.source();
                }
                unreachable(detail)
            })?;
        let status = response.status().as_u16();
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not complete".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if body.len() > 1 << 20 {
            return Err(unreachable("an answer of more than 1 MiB".into()));
        }
        Ok((status, body))
    }

    /// `ecr:GetAuthorizationToken` for `registry_ids` (empty: the caller's account).
    pub(crate) async fn get_authorization_token(
        &self,
        endpoint: &Uri,
        region: &str,
        registry_ids: &[String],
        credentials: &AwsCredentials,
    ) -> Result<Minted, AwsError> {
        const ACTION: &str = "GetAuthorizationToken";
        let unexpected = |detail: String| AwsError::Unexpected {
            service: "ECR",
            action: ACTION,
            detail,
        };
        let body = if registry_ids.is_empty() {
            "{}".to_string()
        } else {
            serde_json::json!({ "registryIds": registry_ids }).to_string()
        };
        let url = format!("{}/", endpoint.to_string().trim_end_matches('/'));
        let host = endpoint
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let target = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
        let content_type = "application/x-amz-json-1.1";
        let headers = [
            ("host", host.as_str()),
            ("content-type", content_type),
            ("x-amz-target", target),
        ];
        let signed = sign_request(
            "POST",
            &url,
            &headers,
            body.as_bytes(),
            region,
            "ecr",
            credentials,
        )
        .map_err(AwsError::Endpoint)?;
        let mut request = Request::post(&url);
        for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
            request = request.header(*k, *v);
        }
        for (k, v) in &signed {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AwsError::Endpoint(format!("ECR endpoint {url}: {e}")))?;
        let (status, answer) = self.send("ECR", &url, request).await?;
        let secrets = credentials.secrets();
        if !(200..300).contains(&status) {
            let (code, message) = json_error(&answer);
            return Err(AwsError::Refused {
                service: "ECR",
                action: ACTION,
                status,
                code: scrub(&code, &secrets),
                message: scrub(&message, &secrets),
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| unexpected(format!("not JSON ({e})")))?;
        let data = value
            .get("authorizationData")
            .and_then(|d| d.as_array())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| unexpected("no authorizationData".into()))?;
        let mut tokens = Vec::new();
        let mut expires_at: Option<Timestamp> = None;
        for entry in data {
            let encoded = entry
                .get("authorizationToken")
                .and_then(|t| t.as_str())
                .ok_or_else(|| unexpected("an entry without authorizationToken".into()))?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| {
                    unexpected("an authorizationToken that is not base64 text".into())
                })?;
            let Some(("AWS", token)) = decoded.split_once(':') else {
                return Err(unexpected(
                    "an authorizationToken that is not AWS:<token>".into(),
                ));
            };
            let proxy = entry
                .get("proxyEndpoint")
                .and_then(|p| p.as_str())
                .ok_or_else(|| unexpected("an entry without proxyEndpoint".into()))?;
            let registry = proxy
                .parse::<Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
                .filter(|a| !a.is_empty() && !a.contains('@'))
                .ok_or_else(|| unexpected(format!("proxyEndpoint {proxy:?} has no host")))?;
            let at = entry
                .get("expiresAt")
                .and_then(parse_time)
                .ok_or_else(|| unexpected("an entry without a readable expiresAt".into()))?;
            expires_at = Some(expires_at.map_or(at, |e| e.min(at)));
            tokens.push((registry, token.to_string()));
        }
        tokens.sort();
        tokens.dedup_by(|a, b| a.0 == b.0);
        Ok(Minted {
            tokens,
            expires_at: expires_at.expect("at least one entry"),
        })
    }

    /// `sts:AssumeRoleWithWebIdentity` (unsigned: the web identity token is the credential).
    pub(crate) async fn assume_role_with_web_identity(
        &self,
        endpoint: &Uri,
        role_arn: &str,
        session_name: &str,
        web_identity_token: &str,
    ) -> Result<AwsCredentials, AwsError> {
        const ACTION: &str = "AssumeRoleWithWebIdentity";
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", ACTION)
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", role_arn)
            .append_pair("RoleSessionName", session_name)
            .append_pair("DurationSeconds", "900")
            .append_pair("WebIdentityToken", web_identity_token)
            .finish();
        let url = format!("{}/", endpoint.to_string().trim_end_matches('/'));
        let request = Request::post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AwsError::Endpoint(format!("STS endpoint {url}: {e}")))?;
        let (status, answer) = self.send("STS", &url, request).await?;
        let text = String::from_utf8_lossy(&answer);
        let secrets = [web_identity_token];
        if !(200..300).contains(&status) {
            return Err(AwsError::Refused {
                service: "STS",
                action: ACTION,
                status,
                code: scrub(&xml_text(&text, "Code").unwrap_or_default(), &secrets),
                message: scrub(&xml_text(&text, "Message").unwrap_or_default(), &secrets),
            });
        }
        let field = |name: &str| {
            xml_text(&text, name).ok_or_else(|| AwsError::Unexpected {
                service: "STS",
                action: ACTION,
                detail: format!("no {name} in the answer"),
            })
        };
        Ok(AwsCredentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        })
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) for a request. The
/// signer gets the body's hash, never the body.
fn sign_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    region: &str,
    service: &str,
    credentials: &AwsCredentials,
) -> Result<Vec<(String, String)>, String> {
    let identity = Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
        None,
        "regcred-operator",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing: {e}"))?
        .into();
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Precomputed(hash),
    )
    .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// `(code, message)` of an AWS JSON-protocol error (or of the XML one that authentication
/// failures come as from some endpoints).
fn json_error(body: &[u8]) -> (String, String) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        let text = String::from_utf8_lossy(body);
        return (
            xml_text(&text, "Code").unwrap_or_else(|| "UnknownError".into()),
            xml_text(&text, "Message").unwrap_or_else(|| "no message".into()),
        );
    };
    let code = value.get("__type").and_then(|t| t.as_str()).map_or_else(
        || "UnknownError".into(),
        |t| t.rsplit('#').next().unwrap_or(t).to_string(),
    );
    let message = value
        .get("message")
        .or_else(|| value.get("Message"))
        .and_then(|m| m.as_str())
        .unwrap_or("no message")
        .to_string();
    (code, message)
}

/// The text of the first `<name>` element (the query protocol's XML has no attributes on these).
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let raw = xml[start..end].trim();
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// An AWS JSON-protocol timestamp: epoch seconds (possibly fractional), or RFC 3339 text.
fn parse_time(value: &serde_json::Value) -> Option<Timestamp> {
    match value {
        serde_json::Value::Number(n) => Timestamp::from_second(n.as_f64()? as i64).ok(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "TOPSECRET-key".into(),
            session_token: Some("TOPSECRET-session".into()),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("AKIDEXAMPLE") && !shown.contains("TOPSECRET"),
            "{shown}"
        );
        let m = Minted {
            tokens: vec![(
                "1.dkr.ecr.us-east-1.amazonaws.com".into(),
                "TOPSECRET".into(),
            )],
            expires_at: Timestamp::UNIX_EPOCH,
        };
        assert!(!format!("{m:?}").contains("TOPSECRET"));
    }

    #[test]
    fn credentials_from_secret_names_keys_only() {
        let c = credentials_from_secret(&secret(&[
            (ACCESS_KEY_ID, "AKID\n"),
            (SECRET_ACCESS_KEY, "TOPSECRET"),
        ]))
        .unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.session_token, None);
        let err = credentials_from_secret(&secret(&[
            ("aws_access_key_id", "AKID"),
            ("aws_secret_access_key", "TOPSECRET"),
        ]))
        .unwrap_err();
        assert!(
            err.contains("found keys [aws_access_key_id, aws_secret_access_key]")
                && !err.contains("TOPSECRET"),
            "{err}"
        );
        let err =
            credentials_from_secret(&secret(&[(ACCESS_KEY_ID, "A"), (SECRET_ACCESS_KEY, " ")]))
                .unwrap_err();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is empty"), "{err}");
    }

    #[test]
    fn refresh_at_half_the_remaining_lifetime_never_below_the_minimum() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let min = Duration::from_secs(60);
        let in_12h = Timestamp::from_second(1_000_000 + 12 * 3600).unwrap();
        assert_eq!(
            refresh_delay(now, in_12h, min),
            (Duration::from_secs(6 * 3600), false)
        );
        let soon = Timestamp::from_second(1_000_010).unwrap();
        assert_eq!(refresh_delay(now, soon, min), (min, false));
        let past = Timestamp::from_second(500_000).unwrap();
        assert_eq!(refresh_delay(now, past, min), (min, true));
    }

    #[test]
    fn endpoints_are_https_or_loopback_http() {
        assert!(check_endpoint("endpoint", "https://api.ecr.eu-west-1.amazonaws.com").is_ok());
        assert!(check_endpoint("endpoint", "http://127.0.0.1:5000").is_ok());
        assert!(check_endpoint("endpoint", "http://[::1]:5000/").is_ok());
        for bad in [
            "http://10.0.0.1:5000",
            "ftp://x",
            "https://user:pw@host",
            "https://host/path",
            "https://host?x=1",
            "not a url",
        ] {
            assert!(check_endpoint("endpoint", bad).is_err(), "{bad}");
        }
        assert!(check_region("us-east-1").is_ok());
        for bad in ["", "US-EAST-1", "us..east", "us-east-1.evil.com", "-x"] {
            assert!(check_region(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn aws_errors_are_read_and_scrubbed() {
        let (code, message) = json_error(
            br#"{"__type":"com.amazonaws#UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
        );
        assert_eq!(code, "UnrecognizedClientException");
        assert!(message.starts_with("The security token"));
        let (code, _) = json_error(
            b"<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>m</Message></Error></Errors></ErrorResponse>",
        );
        assert_eq!(code, "InvalidClientTokenId");
        assert_eq!(
            scrub("bad key TOPSECRET-x\nmore", &["TOPSECRET-x"]),
            "bad key <redacted> more"
        );
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>a &amp; b</Message></Error></ErrorResponse>";
        assert_eq!(xml_text(xml, "Code").unwrap(), "InvalidIdentityToken");
        assert_eq!(xml_text(xml, "Message").unwrap(), "a & b");
    }

    #[test]
    fn timestamps_in_both_forms() {
        assert_eq!(
            parse_time(&serde_json::json!(1.420_070_4E9)).unwrap(),
            Timestamp::from_second(1_420_070_400).unwrap()
        );
        assert_eq!(
            parse_time(&serde_json::json!("2015-01-01T00:00:00Z")).unwrap(),
            Timestamp::from_second(1_420_070_400).unwrap()
        );
    }

    #[test]
    fn signing_adds_sigv4_headers() {
        let creds = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "TOPSECRET".into(),
            session_token: Some("session".into()),
        };
        let headers = sign_request(
            "POST",
            "https://api.ecr.us-east-1.amazonaws.com/",
            &[("host", "api.ecr.us-east-1.amazonaws.com")],
            b"{}",
            "us-east-1",
            "ecr",
            &creds,
        )
        .unwrap();
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/us-east-1/ecr/aws4_request"),
            "{auth}"
        );
        assert!(headers.iter().any(|(k, _)| k == "x-amz-security-token"));
    }
}
