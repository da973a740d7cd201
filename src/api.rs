//! The `regcred.dev/v1alpha1` `RegistryCredential` API.
//!
//! Doc comments on the spec and status types are user documentation: they become the CRD's
//! descriptions and so the output of `kubectl explain registrycredential.spec`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every resource this operator defines, and the prefix of its labels and annotations.
pub const GROUP: &str = "regcred.dev";
/// Label on every Secret the operator manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`]; also the field manager and event reporter name.
pub const MANAGER: &str = "regcred-operator";
/// Label naming the RegistryCredential a managed Secret belongs to.
pub const CREDENTIAL_LABEL: &str = "regcred.dev/credential";
/// Namespace annotation: `"true"` keeps every RegistryCredential out of the namespace.
pub const EXCLUDE_ANNOTATION: &str = "regcred.dev/exclude";
/// ServiceAccount annotation listing the `imagePullSecrets` entries this operator added, so that it
/// only ever removes what it added.
pub const PULL_SECRETS_ANNOTATION: &str = "regcred.dev/image-pull-secrets";
/// Finalizer on RegistryCredentials (never on namespaces): cleanup runs before the object goes.
pub const FINALIZER: &str = "regcred.dev/cleanup";

/// A registry credential kept in sync, as a `kubernetes.io/dockerconfigjson` Secret, in every
/// selected namespace, and listed in the `imagePullSecrets` of the selected ServiceAccounts there.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "regcred.dev",
    version = "v1alpha1",
    kind = "RegistryCredential",
    plural = "registrycredentials",
    shortname = "regcred",
    status = "RegistryCredentialStatus",
    doc = "A registry credential fanned out as kubernetes.io/dockerconfigjson Secrets into the selected namespaces and referenced from their ServiceAccounts' imagePullSecrets.",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: it is used as a label value"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Synced", type_ = "string", json_path = ".status.synced"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredentialSpec {
    /// Where the credential comes from: exactly one of `secretRef`, `registries` or `ecr`.
    pub source: CredentialSource,

    /// Name of the Secret created in each target namespace. Defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 253 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretName must be a valid Secret name: lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit"))]
    pub secret_name: Option<String>,

    /// Namespaces whose labels match this selector are targets. A namespace is a target if it
    /// matches the selector OR is listed in `namespaces`; with neither given, every namespace is
    /// a target. `excludeNamespaces` and the namespace annotation `regcred.dev/exclude: "true"`
    /// always win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespaces targeted by name (in addition to those matching `namespaceSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,

    /// Namespaces never targeted: names or shell-style globs (`kube-*`, `team-?`). Always wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_namespaces: Option<Vec<String>>,

    /// ServiceAccounts, in each target namespace, whose `imagePullSecrets` list the Secret.
    /// Default `[default]`; `["*"]` means every ServiceAccount of the namespace; `[]` means
    /// Secrets only.
    #[serde(default = "default_service_accounts")]
    pub service_accounts: Vec<String>,

    /// What to do when a Secret of the same name exists in a target namespace and is not
    /// managed by this RegistryCredential. `Skip` (default) leaves it and its namespace untouched
    /// and reports a `Conflict`; `Adopt` takes it over (labels, ownerReference, content) if it is
    /// a registry-credential Secret.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,

    /// What happens to the copies when this RegistryCredential is deleted. `Delete` (default)
    /// removes the copies and the ServiceAccount entries; `Orphan` leaves them in place and
    /// working, only removing the operator's markings.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// When true, the operator makes no writes for this RegistryCredential; status still
    /// reports what would be targeted.
    #[serde(default)]
    pub suspend: bool,

    /// Opt-in: periodically ask each registry (`/v2/`) whether it still accepts the credentials,
    /// and report the answer as the `CredentialsValid` condition (with an Event when it changes),
    /// so that expired credentials are noticed before pods fail to pull. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verification>,

    /// Pods that failed to pull before the credential reached their namespace keep failing: their
    /// `imagePullSecrets` were fixed at admission. For pods in target namespaces that use a
    /// selected ServiceAccount, whose pull of an image this credential covers failed
    /// (`ErrImagePull` / `ImagePullBackOff`), and whose spec lacks the Secret while their
    /// ServiceAccount now lists it: `Off` (default) does nothing; `Report` emits an Event on the
    /// pod and counts it in `status.podsAwaitingRecovery`; `Evict` evicts those controlled by a
    /// ReplicaSet, StatefulSet, DaemonSet or Job through the Eviction API (PodDisruptionBudgets
    /// respected, never forced; at most `--max-evictions-per-minute` per credential) so that their
    /// controller recreates them with the Secret, and only reports bare pods.
    #[serde(default)]
    pub pod_recovery: PodRecovery,
}

/// What to do with pods that failed to pull before the credential reached them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PodRecovery {
    /// Nothing; no pod is watched.
    #[default]
    Off,
    /// An Event on each such pod, and a count in status.
    Report,
    /// Evict those a controller recreates; report the others.
    Evict,
}

/// How credentials are verified against their registries.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Seconds between checks (at least 10; default 3600). A change of the source is checked at once.
    #[serde(default = "default_verify_interval")]
    #[schemars(with = "i32", range(min = 10))]
    pub interval_seconds: u32,
    /// Extra CA certificates (PEM) to trust, for registries with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

fn default_verify_interval() -> u32 {
    3600
}

fn default_service_accounts() -> Vec<String> {
    vec!["default".to_string()]
}

/// The source of the credential. Exactly one of `secretRef`, `registries` or `ecr`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.secretRef) ? 1 : 0) + (has(self.registries) ? 1 : 0) + (has(self.ecr) ? 1 : 0) == 1").message("exactly one of source.secretRef, source.registries or source.ecr must be set"))]
pub struct CredentialSource {
    /// An existing Secret in one of the operator's allowed source namespaces, of type
    /// `kubernetes.io/dockerconfigjson`, legacy `kubernetes.io/dockercfg`, or `Opaque` with a
    /// `.dockerconfigjson` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,

    /// Build the config from registry logins, as `kubectl create secret docker-registry` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub registries: Option<Vec<RegistryLogin>>,

    /// Mint Amazon ECR authorization tokens (valid 12 hours) with `GetAuthorizationToken` and
    /// refresh them before they expire: one entry per registry, user name `AWS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr: Option<EcrSource>,
}

/// Amazon ECR: where to mint tokens and with which AWS credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct EcrSource {
    /// AWS region of the registries, e.g. `us-east-1`.
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$")
    )]
    pub region: String,

    /// 12-digit AWS account ids of the registries; default: the account of the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10), inner(regex(pattern = r"^[0-9]{12}$")))]
    pub registry_ids: Option<Vec<String>>,

    /// Endpoint of the ECR API instead of `https://api.ecr.<region>.amazonaws.com`, e.g. a VPC
    /// endpoint. `https://`, or `http://` to a loopback address only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub endpoint: Option<String>,

    /// The AWS credentials that mint the tokens: exactly one of `secretRef` or `webIdentity`.
    pub credentials: AwsCredentialSource,
}

/// AWS credentials: exactly one of `secretRef` or `webIdentity`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.webIdentity)").message("exactly one of source.ecr.credentials.secretRef or source.ecr.credentials.webIdentity must be set"))]
pub struct AwsCredentialSource {
    /// A Secret in an allowed source namespace with the keys `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,

    /// Assume an IAM role with a token of the operator's own ServiceAccount (TokenRequest), through
    /// STS `AssumeRoleWithWebIdentity` (IAM roles for service accounts, outside AWS too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<WebIdentity>,
}

/// An IAM role assumed with a ServiceAccount token of the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct WebIdentity {
    /// ARN of the role, e.g. `arn:aws:iam::123456789012:role/puller`.
    #[schemars(
        length(min = 20, max = 2048),
        regex(pattern = r"^arn:[a-z-]+:iam::[0-9]{12}:role/.+$")
    )]
    pub role_arn: String,

    /// Audience of the ServiceAccount token, as configured on the IAM OIDC provider. Default
    /// `sts.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub audience: Option<String>,

    /// Endpoint of STS instead of `https://sts.<region>.amazonaws.com`. `https://`, or `http://`
    /// to a loopback address only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub sts_endpoint: Option<String>,
}

/// A reference to a Secret by namespace and name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Namespace of the Secret; must be one of the operator's allowed source namespaces.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One registry login; the password is read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryLogin {
    /// Registry server: `host[:port][/path]`; `https://index.docker.io/v1/` form accepted.
    #[schemars(length(min = 1))]
    pub server: String,
    /// User name for the registry.
    #[schemars(length(min = 1))]
    pub username: String,
    /// The Secret key holding the password or token, in an allowed source namespace.
    pub password_secret_ref: SecretKeyReference,
    /// Optional e-mail address, stored as `kubectl create secret docker-registry` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A key of a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Namespace of the Secret; must be one of the operator's allowed source namespaces.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// What to do with a same-name Secret that this RegistryCredential does not manage.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Leave it and its namespace untouched; report a Conflict.
    #[default]
    Skip,
    /// Take it over if it is a registry-credential Secret.
    Adopt,
}

/// What happens to the copies when the RegistryCredential is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Delete the copies and remove the ServiceAccount entries.
    #[default]
    Delete,
    /// Keep copies and entries working; remove only the operator's labels and ownerReferences.
    Orphan,
}

/// Observed state, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredentialStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus-compatible conditions: `Ready`, plus `Reconciling` or `Stalled` where they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the Secret in each target namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Number of namespaces selected.
    #[serde(default)]
    #[schemars(with = "i32")]
    pub target_namespaces: u32,
    /// Number of target namespaces whose Secret and ServiceAccounts are in sync.
    #[serde(default)]
    #[schemars(with = "i32")]
    pub synced_namespaces: u32,
    /// Number of ServiceAccounts listing the Secret in their `imagePullSecrets`.
    #[serde(default)]
    #[schemars(with = "i32")]
    pub patched_service_accounts: u32,
    /// `synced/targeted` namespaces, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<String>,
    /// resourceVersion(s) of the source Secret(s) last propagated; changes only on rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_source_version: Option<String>,
    /// With `source.ecr`: when the token in the copies expires (RFC 3339). Changes only when a
    /// new token is minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_expires_at: Option<String>,
    /// Up to 10 namespaces with a problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<NamespaceFailure>,
    /// With `podRecovery` on: pods that failed to pull and would pull if recreated, not recovered
    /// yet (bare pods, evictions refused by a PodDisruptionBudget or held by the rate limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(with = "i32")]
    pub pods_awaiting_recovery: u32,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A problem in one target namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceFailure {
    /// The namespace.
    pub namespace: String,
    /// A PascalCase reason, e.g. `Conflict`.
    pub reason: String,
    /// What is wrong, for people.
    pub message: String,
}

impl RegistryCredential {
    /// The Secret name in target namespaces: `spec.secretName`, else `metadata.name`.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// The CRD as YAML, as installed from `crds/registrycredential.yaml`.
pub fn crd_yaml() -> String {
    let mut crd = serde_json::to_value(RegistryCredential::crd()).expect("a CRD always serializes");
    unwrap_descriptions(&mut crd);
    quote_yaml11_words(&serde_yaml_ng::to_string(&crd).expect("a CRD always serializes"))
}

/// Strings that YAML 1.1 reads as booleans (`Off`, `yes`, …) quoted. the YAML writer emits YAML 1.2,
/// where they are plain strings, but kubectl and Helm read manifests as YAML 1.1: an enum value
/// `Off` would reach the API server as `false`. (Real booleans are always written `true`/`false`,
/// and the strings "true"/"false" are already quoted.)
fn quote_yaml11_words(yaml: &str) -> String {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let value_at = if let Some(rest) = body.trim_start().strip_prefix("- ") {
            Some(body.len() - rest.len())
        } else {
            body.find(": ").map(|i| i + 2)
        };
        match value_at {
            Some(at) if WORDS.contains(&&body[at..]) => {
                out.push_str(&body[..at]);
                out.push('\'');
                out.push_str(&body[at..]);
                out.push('\'');
                out.push_str(&line[body.len()..]);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Doc comments are wrapped at 100 columns in the source; `kubectl explain` wraps on its own, so
/// single line breaks become spaces (blank lines still separate paragraphs).
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    // schemars writes integer bounds as floats (`10.0`); YAML tools disagree on
                    // how to render those, so keep them integers.
                    serde_json::Value::Number(n)
                        if (key == "minimum" || key == "maximum")
                            && n.as_f64().is_some_and(|f| f.fract() == 0.0) =>
                    {
                        *v = serde_json::Value::from(n.as_f64().unwrap_or_default() as i64);
                    }
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|p| p.replace('\n', " "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_boolean_words_are_quoted() {
        assert_eq!(
            quote_yaml11_words(
                "default: Off\nenum:\n- Off\n- Report\n- 'on'\nx: true\nname: Offset\n"
            ),
            "default: 'Off'\nenum:\n- 'Off'\n- Report\n- 'on'\nx: true\nname: Offset\n"
        );
        let crd = crd_yaml();
        assert!(crd.contains("default: 'Off'"), "podRecovery's default");
        // Read as YAML 1.1 would read it, every enum value stays a string.
        assert!(
            !crd.lines()
                .any(|l| l.trim() == "- Off" || l.trim() == "default: Off")
        );
    }

    #[test]
    fn committed_crds_match_the_rust_types() {
        for (path, committed) in [
            (
                "crds/registrycredential.yaml",
                include_str!("../crds/registrycredential.yaml"),
            ),
            (
                "deploy/helm/regcred-operator/crds/registrycredential.yaml",
                include_str!("../deploy/helm/regcred-operator/crds/registrycredential.yaml"),
            ),
        ] {
            assert!(
                committed == crd_yaml(),
                "{path} is out of date: run `make crd`"
            );
        }
    }

    #[test]
    fn crd_names_and_scope() {
        let crd = RegistryCredential::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(
            crd.spec.names.short_names,
            Some(vec!["regcred".to_string()])
        );
        assert_eq!(crd.spec.names.categories, None, "not in `kubectl get all`");
        let yaml = crd_yaml();
        assert!(yaml.contains("(has(self.secretRef) ? 1 : 0) + (has(self.registries) ? 1 : 0)"));
        assert!(
            !yaml.contains("uint32"),
            "Kubernetes knows int32/int64 only"
        );
    }
}
