//! What a failed pull's event message says went wrong, in the runtime's and registries' words.

use std::fmt;

use serde::Serialize;

/// Whether the message has a registry's `denied: ...` error (not a local
/// `permission denied: ...`).
fn registry_denied(m: &str) -> bool {
    m.match_indices("denied: ")
        .any(|(i, _)| !m[..i].ends_with("permission "))
}

/// What a failed pull's event message (reasons `Failed`, `ErrImagePull`,
/// `ImagePullBackOff`) says went wrong.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PullFailure {
    /// The registry refused the request for lack of (valid) credentials.
    AuthRefused,
    /// The repository, tag, digest or platform does not exist.
    NotFound,
    /// The node could not connect to the registry.
    Unreachable,
    /// The registry's host name did not resolve.
    Dns,
    /// TLS failed (untrusted or wrong certificate, or a plain-HTTP registry).
    Tls,
    /// The pull or a connection timed out.
    Timeout,
    /// The registry is rate-limiting pulls.
    RateLimited,
    /// Anything else.
    Other,
}

impl PullFailure {
    /// Every kind of failure, in declaration order.
    pub const ALL: [PullFailure; 8] = [
        Self::AuthRefused,
        Self::NotFound,
        Self::Unreachable,
        Self::Dns,
        Self::Tls,
        Self::Timeout,
        Self::RateLimited,
        Self::Other,
    ];

    /// A one-line hint at the fix.
    pub(crate) fn fix(self) -> &'static str {
        match self {
            PullFailure::AuthRefused => {
                "Check that a pull secret key matches the image (see the key evaluation) and that its credentials are current and may pull this repository; registries also answer this way for a repository that does not exist."
            }
            PullFailure::NotFound => {
                "Check the repository name, tag or digest for typos, and that the image was pushed for this node's platform."
            }
            PullFailure::Unreachable => {
                "Check the registry host and port, and firewalls, proxies and network policies between the node and the registry."
            }
            PullFailure::Dns => {
                "Check the spelling of the registry host and that the node's DNS resolves it."
            }
            PullFailure::Tls => {
                "Make the node trust the registry's certificate (CA in the container runtime's registry configuration, e.g. containerd hosts.toml or CRI-O registries.conf), or configure the registry as plain HTTP if it has no TLS."
            }
            PullFailure::Timeout => {
                "Check connectivity and proxies between the node and the registry, and whether the registry is overloaded; retry."
            }
            PullFailure::RateLimited => {
                "Authenticate pulls to this registry (a matching pull secret raises Docker Hub's limit), use a mirror or pull-through cache, or wait for the limit to reset."
            }
            PullFailure::Other => {
                "Read the full event message; an ImagePullBackOff event only repeats an earlier Failed event, which has the cause."
            }
        }
    }
}

impl fmt::Display for PullFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullFailure::AuthRefused => "authentication refused",
            PullFailure::NotFound => "image not found",
            PullFailure::Unreachable => "registry unreachable",
            PullFailure::Dns => "registry host name does not resolve",
            PullFailure::Tls => "TLS failure",
            PullFailure::Timeout => "timeout",
            PullFailure::RateLimited => "rate limited",
            PullFailure::Other => "other failure",
        })
    }
}

/// Classifies the message of a pull-failure event from the kubelet with
/// containerd, CRI-O or Docker. The checks run from the most to the least
/// specific: rate limits, DNS, TLS, authentication, missing images, timeouts,
/// connection failures. The message may name the image, so a repository
/// called, say, `unauthorized-app` can mislead the classification.
pub(crate) fn classify_pull_message(msg: &str) -> PullFailure {
    let m = msg.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));

    if any(&["toomanyrequests", "too many requests", "pull rate limit"]) {
        return PullFailure::RateLimited;
    }
    if any(&[
        "no such host",
        "server misbehaving",
        "temporary failure in name resolution",
        "name or service not known",
        "no address associated with hostname",
        "dial tcp: lookup ",
    ]) {
        return PullFailure::Dns;
    }
    if any(&["tls handshake timeout"]) {
        return PullFailure::Timeout;
    }
    if any(&[
        "x509:",
        "tls:",
        "certificate signed by unknown authority",
        "server gave http response to https client",
        "first record does not look like a tls handshake",
    ]) {
        return PullFailure::Tls;
    }
    if any(&[
        "pull access denied",
        "unauthorized",
        "authorization failed",
        "authentication required",
        "no basic auth credentials",
        "requested access to the resource is denied",
        "access denied",
        "incorrect username or password",
        "invalid username/password",
        "insufficient_scope",
        "forbidden",
        "code = unauthenticated",
        "code = permissiondenied",
    ]) || registry_denied(&m)
    {
        return PullFailure::AuthRefused;
    }
    if any(&[
        "manifest unknown",
        "not found",
        "name unknown",
        "code = notfound",
        "repository does not exist",
        "no match for platform",
    ]) {
        return PullFailure::NotFound;
    }
    if any(&[
        "context deadline exceeded",
        "deadlineexceeded",
        "i/o timeout",
        "timeout exceeded",
        "timed out",
    ]) {
        return PullFailure::Timeout;
    }
    if any(&[
        "connection refused",
        "actively refused",
        "no route to host",
        "network is unreachable",
        "connection reset by peer",
        "proxyconnect",
        "dial tcp",
        ": eof",
    ]) {
        return PullFailure::Unreachable;
    }
    PullFailure::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- Pull failure classification -------------------------------------------

    #[test]
    fn classifies_real_messages() {
        use PullFailure::*;
        let cases = [
            // containerd, Docker Hub, private or missing repository
            (
                "Failed to pull image \"docker.io/acme/private:1\": failed to pull and unpack image \"docker.io/acme/private:1\": failed to resolve reference \"docker.io/acme/private:1\": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed",
                AuthRefused,
            ),
            // dockershim
            (
                "Failed to pull image \"rmeuser-auth:latest\": rpc error: code = Unknown desc = Error response from daemon: pull access denied for rmeuser-auth, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
                AuthRefused,
            ),
            (
                "failed to resolve reference \"proxy.replicated.com/proxy/gitpod/busybox:1\": failed to authorize: failed to fetch oauth token: unexpected status: 401 Unauthorized",
                AuthRefused,
            ),
            (
                "failed to resolve reference \"registry.app.example.net/team/app:v1\": pulling from host registry.app.example.net failed with status code [manifests v1]: 401 Unauthorized",
                AuthRefused,
            ),
            (
                "rpc error: code = Unknown desc = Error response from daemon: Get https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/v2/app/manifests/latest: no basic auth credentials",
                AuthRefused,
            ),
            (
                "failed to resolve reference \"123456789012.dkr.ecr.ap-southeast-2.amazonaws.com/k8s/pause@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097\": pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials",
                AuthRefused,
            ),
            (
                "failed to resolve reference \"ghcr.io/acme/app:latest\": unexpected status from HEAD request to https://ghcr.io/v2/acme/app/manifests/latest: 403 Forbidden",
                AuthRefused,
            ),
            // CRI-O
            (
                "rpc error: code = Unknown desc = Error reading manifest sha256:ba919b34aa7c7c7135f4474791defb6240ff1af2491b876c25ba960af81c5267 in quay.io/acme/bundle: unauthorized: access to the requested resource is not authorized",
                AuthRefused,
            ),
            (
                "initializing source docker://quay.io/acme/app:latest: reading manifest latest in quay.io/acme/app: unauthorized: access to the requested resource is not authorized",
                AuthRefused,
            ),
            (
                "failed to authorize: failed to fetch oauth token: unexpected status from GET request to https://auth.docker.io/token?scope=repository%3Afsfe%2Freuse%3Apull&service=registry.docker.io: 401 Unauthorized: incorrect username or password",
                AuthRefused,
            ),
            // not found
            (
                "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/salesforce/salesforcedx:latest\": failed to resolve reference \"docker.io/salesforce/salesforcedx:latest\": docker.io/salesforce/salesforcedx:latest: not found",
                NotFound,
            ),
            (
                "rpc error: code = Unknown desc = Error reading manifest latest in registry.example.com/image: manifest unknown: manifest unknown",
                NotFound,
            ),
            (
                "failed to pull and unpack image \"docker.io/library/nginx:1.25\": no match for platform in manifest: not found",
                NotFound,
            ),
            // DNS
            (
                "rpc error: code = Unknown desc = Error response from daemon: Get https://registry-1.docker.io/v2/: dial tcp: lookup registry-1.docker.io on 127.0.0.53:53: server misbehaving",
                Dns,
            ),
            (
                "failed to do request: Head \"https://ghcr.io/v2/siderolabs/kubelet/manifests/v1.30.0\": dial tcp: lookup ghcr.io on 8.8.8.8:53: read udp 10.128.152.4:41986->8.8.8.8:53: i/o timeout",
                Dns,
            ),
            (
                "failed to do request: Head \"https://registry.internal/v2/app/manifests/1\": dial tcp: lookup registry.internal on 10.96.0.10:53: no such host",
                Dns,
            ),
            (
                "v2 ping attempt failed with error: Get https://gcr.io/v2/: dial tcp: lookup gcr.io: Temporary failure in name resolution",
                Dns,
            ),
            // TLS
            (
                "failed to resolve reference \"registry.k8s.io/coredns/coredns:v1.11.1\": failed to do request: Head \"https://registry.k8s.io/v2/coredns/coredns/manifests/v1.11.1\": tls: failed to verify certificate: x509: certificate signed by unknown authority",
                Tls,
            ),
            (
                "failed to do request: Head https://registry.example.com/v2/core/portal/manifests/1: x509: certificate signed by unknown authority",
                Tls,
            ),
            (
                "failed to do request: Head \"https://registry:5000/v2/hello-app/manifests/1.0\": http: server gave HTTP response to HTTPS client",
                Tls,
            ),
            (
                "pinging container registry registry.example.com: Get \"https://registry.example.com/v2/\": tls: failed to verify certificate: x509: certificate is valid for ingress.local, not registry.example.com",
                Tls,
            ),
            // unreachable
            (
                "Error response from daemon: Get https://registry-1.docker.io/v2/: dial tcp 52.44.30.97:443: getsockopt: connection refused",
                Unreachable,
            ),
            (
                "failed to do request: Head \"https://registry.example.com/v2/app/manifests/1\": dial tcp 10.0.0.5:443: connect: connection refused",
                Unreachable,
            ),
            (
                "failed to do request: Head \"https://10.0.0.9:5000/v2/app/manifests/1\": dial tcp 10.0.0.9:5000: connect: no route to host",
                Unreachable,
            ),
            (
                "failed to resolve reference \"docker.io/acme/app:latest\": failed to authorize: failed to fetch anonymous token: Get \"https://auth.docker.io/token?scope=repository%3Aacme%2Fapp%3Apull&service=registry.docker.io\": EOF",
                Unreachable,
            ),
            // timeouts
            (
                "Failed to pull image \"nginx\": rpc error: code = 4 desc = context deadline exceeded",
                Timeout,
            ),
            (
                "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
                Timeout,
            ),
            (
                "failed to do request: Head \"https://registry.k8s.io/v2/kube-proxy/manifests/v1.28.2\": dial tcp 34.96.108.209:443: connect: connection timed out",
                Timeout,
            ),
            (
                "Error response from daemon: Get https://gcr.io/v2/: net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)",
                Timeout,
            ),
            (
                "failed to do request: Head \"https://quay.io/v2/a/b/manifests/1\": dial tcp 3.4.5.6:443: i/o timeout",
                Timeout,
            ),
            (
                "Get \"https://registry.example.com/v2/\": net/http: TLS handshake timeout",
                Timeout,
            ),
            // rate limits
            (
                "failed to copy: httpReadSeeker: failed open: unexpected status code https://registry-1.docker.io/v2/library/rust/manifests/sha256:de6e081a4e9c10e70731071cec6f629892da1bbaa24b478a96bdc59060674117: 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
                RateLimited,
            ),
            (
                "reading manifest 1.13 in docker.io/library/nginx: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
                RateLimited,
            ),
            (
                "failed to resolve reference \"docker.io/library/nginx:latest\": unexpected status from HEAD request to https://registry-1.docker.io/v2/library/nginx/manifests/latest: 429 Too Many Requests",
                RateLimited,
            ),
            // nothing to go on
            ("Back-off pulling image \"nginx:1.25\"", Other),
            ("Error: ErrImagePull", Other),
            ("Error: ImagePullBackOff", Other),
            (
                "failed to extract layer sha256:401abc: mkdir /var/lib/containerd/tmp: permission denied",
                Other,
            ),
            (
                "failed to pull and unpack image \"quay.io/a/b:1\": failed to prepare extraction snapshot: permission denied: unknown",
                Other,
            ),
            (
                "reading manifest 1.0 in docker.io/acme/app: denied: requested access to the resource is denied",
                AuthRefused,
            ),
        ];
        for (msg, expected) in cases {
            assert_eq!(classify_pull_message(msg), expected, "{msg}");
        }
    }

    /// What a kubelet v1.36 with containerd v2.4 really reports (Events and container statuses,
    /// recorded on the node of the local cluster against Debian's docker-registry 2.8).
    #[test]
    fn classifies_real_containerd_2_messages() {
        use PullFailure::*;
        let cases = [
            // no credentials (an unselected namespace, a missing pull secret): the Failed Event,
            // the ErrImagePull status and the ImagePullBackOff status
            (
                r#"Failed to pull image "127.0.0.1:35583/node-tests/unselected-10371-36:1": failed to pull and unpack image "127.0.0.1:35583/node-tests/unselected-10371-36:1": failed to resolve image: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials"#,
                AuthRefused,
            ),
            (
                r#"failed to pull and unpack image "127.0.0.1:35583/node-tests/unselected-10371-36:1": failed to resolve image: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials"#,
                AuthRefused,
            ),
            (
                r#"Back-off pulling image "127.0.0.1:35583/node-tests/missing-10371-3:1": ErrImagePull: failed to pull and unpack image "127.0.0.1:35583/node-tests/missing-10371-3:1": failed to resolve image: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials"#,
                AuthRefused,
            ),
            // a wrong password
            (
                r#"Failed to pull image "127.0.0.1:44977/node-tests/wrong-1:1": failed to pull and unpack image "127.0.0.1:44977/node-tests/wrong-1:1": failed to resolve image: unexpected status from HEAD request to https://127.0.0.1:44977/v2/node-tests/wrong-1/manifests/1: 401 Unauthorized"#,
                AuthRefused,
            ),
            // valid credentials, no such tag or repository
            (
                r#"rpc error: code = NotFound desc = failed to pull and unpack image "127.0.0.1:48425/regcred/sleeper:nope": failed to resolve image: 127.0.0.1:48425/regcred/sleeper:nope: not found"#,
                NotFound,
            ),
            // nothing listening
            (
                r#"failed to pull and unpack image "127.0.0.1:1/x:1": failed to resolve image: failed to do request: Head "https://127.0.0.1:1/v2/x/manifests/1": dial tcp 127.0.0.1:1: connect: connection refused"#,
                Unreachable,
            ),
        ];
        for (msg, expected) in cases {
            assert_eq!(classify_pull_message(msg), expected, "{msg}");
        }
    }

    #[test]
    fn every_failure_has_a_fix() {
        for f in PullFailure::ALL {
            assert!(!f.fix().is_empty());
            assert!(!f.fix().contains('\n'));
            assert!(!f.to_string().is_empty());
        }
    }
}
