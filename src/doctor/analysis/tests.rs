//! The doctor's checklist, one behaviour a test, on hand-made objects.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{Pod, Secret, ServiceAccount},
};
use serde_json::json;

use super::*;
use crate::doctor::gather::CredentialFacts;
use crate::testing::service_account;

const NS: &str = "shop";
const IMAGE: &str = "registry.example.com/team/app:1.0";

fn pod(image: &str, pull_secrets: &[&str]) -> Pod {
    let refs: Vec<_> = pull_secrets.iter().map(|n| json!({ "name": n })).collect();
    serde_json::from_value(json!({
        "metadata": { "name": "app", "namespace": NS },
        "spec": {
            "nodeName": "node-1",
            "imagePullSecrets": refs,
            "containers": [{ "name": "app", "image": image }]
        }
    }))
    .unwrap()
}

fn sa(pull_secrets: &[&str]) -> ServiceAccount {
    service_account(NS, "default", pull_secrets)
}

fn secret(type_: &str, key: &str, value: &str) -> Found {
    Found::Secret(Box::new(Secret {
        type_: Some(type_.into()),
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }))
}

/// A pull secret as `kubectl create secret docker-registry` writes it, for `server`.
fn pull_secret(server: &str) -> Found {
    let config = json!({ "auths": { server: { "username": "u", "password": "TOPSECRET-doctor", "auth": "dTpUT1BTRUNSRVQtZG9jdG9y" } } });
    secret(
        DOCKER_CONFIG_JSON_TYPE,
        ".dockerconfigjson",
        &config.to_string(),
    )
}

fn facts(pod: Option<Pod>, sa: Option<ServiceAccount>, secrets: Vec<(&str, Found)>) -> Facts {
    let subject = match &pod {
        Some(_) => Subject::Pod("app".into()),
        None => Subject::Image {
            image: IMAGE.into(),
            service_account: "default".into(),
        },
    };
    Facts {
        namespace: NS.into(),
        subject,
        pod,
        service_account: "default".into(),
        sa,
        secrets: secrets
            .into_iter()
            .map(|(n, f)| (n.to_string(), f))
            .collect(),
        events: Vec::new(),
        node_images: Vec::new(),
        credentials: Vec::new(),
    }
}

fn report(facts: Facts) -> Report {
    let draft = analyse(&facts).unwrap();
    conclude(facts, draft)
}

fn codes(r: &Report) -> Vec<&'static str> {
    r.images
        .iter()
        .flat_map(|i| i.problems.iter().map(|p| p.code))
        .collect()
}

#[test]
fn a_matching_well_formed_pull_secret_passes() {
    let r = report(facts(
        Some(pod(IMAGE, &["regcred"])),
        Some(sa(&["regcred"])),
        vec![("regcred", pull_secret("registry.example.com"))],
    ));
    assert!(r.ok, "{:?}", codes(&r));
    assert!(r.verdict.starts_with("the pull should work"));
    assert_eq!(r.pull_secrets_from, "pod");
    assert!(r.images[0].entries[0].matches);
}

#[test]
fn no_pull_secrets_means_an_anonymous_pull() {
    let r = report(facts(Some(pod("nginx", &[])), Some(sa(&[])), vec![]));
    assert!(r.ok);
    assert!(r.verdict.contains("pulled anonymously"), "{}", r.verdict);
}

#[test]
fn a_missing_secret_and_one_in_another_namespace_are_told_apart() {
    let r = report(facts(
        Some(pod(IMAGE, &["gone", "elsewhere"])),
        None,
        vec![
            ("gone", Found::Missing { elsewhere: vec![] }),
            (
                "elsewhere",
                Found::Missing {
                    elsewhere: vec!["regcred-system".into()],
                },
            ),
        ],
    ));
    assert_eq!(codes(&r), ["SecretMissing", "SecretInOtherNamespace"]);
    assert!(!r.ok);
    assert!(
        r.fix
            .unwrap()
            .contains("create secret docker-registry gone")
    );
}

#[test]
fn an_opaque_secret_is_the_wrong_type_and_bad_json_is_malformed() {
    let r = report(facts(
        Some(pod(IMAGE, &["opaque", "broken"])),
        None,
        vec![
            ("opaque", secret("Opaque", ".dockerconfigjson", "{}")),
            (
                "broken",
                secret(DOCKER_CONFIG_JSON_TYPE, ".dockerconfigjson", "{not json"),
            ),
        ],
    ));
    assert_eq!(codes(&r)[..2], ["WrongSecretType", "MalformedSecret"]);
    assert!(r.secrets[0].invalid.as_ref().unwrap().contains("only uses"));
}

#[test]
fn a_pod_created_before_its_service_account_was_patched_is_named() {
    let r = report(facts(
        Some(pod("nginx", &[])),
        Some(sa(&["regcred"])),
        vec![],
    ));
    assert_eq!(codes(&r), ["PodCreatedBeforeServiceAccountPatch"]);
    assert!(r.fix.unwrap().contains("podRecovery"));
}

#[test]
fn an_image_subject_uses_the_service_accounts_list() {
    let r = report(facts(
        None,
        Some(sa(&["regcred"])),
        vec![("regcred", pull_secret("registry.example.com"))],
    ));
    assert_eq!(r.pull_secrets_from, "serviceAccount");
    assert_eq!(r.pull_secrets, ["regcred"]);
    assert!(r.ok);
}

#[test]
fn no_matching_entry_names_the_near_misses() {
    let r = report(facts(
        Some(pod(IMAGE, &["regcred"])),
        None,
        vec![("regcred", pull_secret("registry.example.com:5000"))],
    ));
    assert_eq!(codes(&r), ["NoMatchingEntry"]);
    assert!(r.verdict.contains("near misses"), "{}", r.verdict);
    assert!(!r.images[0].entries[0].matches);
}

#[test]
fn the_credentials_are_wanted_only_for_an_image_nothing_matches() {
    let matched = facts(
        Some(pod(IMAGE, &["regcred"])),
        None,
        vec![("regcred", pull_secret("registry.example.com"))],
    );
    assert!(!analyse(&matched).unwrap().unmatched);
    let unmatched = facts(
        Some(pod(IMAGE, &["regcred"])),
        None,
        vec![("regcred", pull_secret("quay.io"))],
    );
    assert!(analyse(&unmatched).unwrap().unmatched);
}

#[test]
fn a_credential_that_leaves_the_namespace_out_is_named() {
    let mut f = facts(Some(pod(IMAGE, &[])), Some(sa(&[])), vec![]);
    f.credentials = vec![
        CredentialFacts {
            name: "corp".into(),
            secret_name: "corp-pull".into(),
            registries: vec!["registry.example.com".into()],
            copy_here: false,
        },
        // Has its copy here, or holds nothing for this registry: not named.
        CredentialFacts {
            name: "here".into(),
            secret_name: "here".into(),
            registries: vec!["registry.example.com".into()],
            copy_here: true,
        },
        CredentialFacts {
            name: "other".into(),
            secret_name: "other".into(),
            registries: vec!["quay.io".into()],
            copy_here: false,
        },
    ];
    let r = report(f);
    assert_eq!(codes(&r), ["NamespaceNotSelected"]);
    assert!(
        r.verdict.contains("RegistryCredential corp"),
        "{}",
        r.verdict
    );
}

#[test]
fn pull_failures_of_the_image_are_classified_and_the_last_one_is_the_problem() {
    let mut f = facts(
        Some(pod(IMAGE, &["regcred"])),
        None,
        vec![("regcred", pull_secret("registry.example.com"))],
    );
    f.events = vec![
        (
            "Failed".into(),
            format!("Failed to pull image \"{IMAGE}\": 401 Unauthorized"),
        ),
        // Another image's failure is not this one's.
        (
            "Failed".into(),
            "Failed to pull image \"quay.io/x\": not found".into(),
        ),
    ];
    let r = report(f);
    assert_eq!(r.images[0].events.len(), 1);
    assert_eq!(
        r.images[0].events[0].classification,
        PullFailure::AuthRefused
    );
    assert_eq!(codes(&r), ["PullFailed"]);
}

#[test]
fn an_image_on_the_node_refused_for_this_pod_is_the_kubelets_reverification() {
    let mut f = facts(
        Some(pod(IMAGE, &["regcred"])),
        None,
        vec![("regcred", pull_secret("registry.example.com"))],
    );
    f.events = vec![(
        "Failed".into(),
        format!("Failed to pull image \"{IMAGE}\": 401 Unauthorized"),
    )];
    f.node_images = vec![IMAGE.into()];
    let r = report(f);
    assert_eq!(codes(&r), ["PullFailed", "CachedImageNeedsCredentials"]);
    assert!(r.images[0].problems[1].message.contains("node-1"));
}

#[test]
fn the_first_match_is_checked_and_a_refusal_becomes_the_verdict() {
    let f = facts(
        Some(pod(IMAGE, &["regcred"])),
        None,
        vec![("regcred", pull_secret("registry.example.com"))],
    );
    let mut draft = analyse(&f).unwrap();
    assert_eq!(draft.checks.len(), 1);
    let wanted = draft.checks.pop().unwrap();
    assert_eq!(wanted.registry, "registry.example.com");
    assert_eq!(wanted.credentials.as_ref().unwrap().username, "u");
    let checked = Checked {
        outcome: Outcome::Refused("401".into()),
        other_host_realm: None,
    };
    record_check(&mut draft, &wanted, Some(checked));
    let r = conclude(f, draft);
    assert_eq!(codes(&r), ["RegistryRefused"]);
    assert_eq!(
        r.fix.as_deref(),
        Some("rotate the credentials in the source of the pull secret")
    );
}

#[test]
fn a_token_entry_is_reported_as_not_checked_without_a_problem() {
    let config =
        json!({ "auths": { "registry.example.com": { "identitytoken": "TOPSECRET-token" } } });
    let f = facts(
        Some(pod(IMAGE, &["regcred"])),
        None,
        vec![(
            "regcred",
            secret(
                DOCKER_CONFIG_JSON_TYPE,
                ".dockerconfigjson",
                &config.to_string(),
            ),
        )],
    );
    let mut draft = analyse(&f).unwrap();
    let wanted = draft.checks.pop().unwrap();
    assert!(wanted.credentials.is_none());
    record_check(&mut draft, &wanted, None);
    let r = conclude(f, draft);
    assert!(r.ok);
    assert!(matches!(
        r.images[0].registry_checks[0].outcome,
        Outcome::Unexpected(_)
    ));
}

#[test]
fn nothing_in_the_report_shows_a_password() {
    let r = report(facts(
        Some(pod(IMAGE, &["regcred", "broken"])),
        None,
        vec![
            ("regcred", pull_secret("registry.example.com:5000")),
            (
                "broken",
                secret(
                    DOCKER_CONFIG_JSON_TYPE,
                    ".dockerconfigjson",
                    r#"{"auths":{"r.io":{"auth":"TOPSECRET-doctor"}}}"#,
                ),
            ),
        ],
    ));
    let shown = format!(
        "{} {}",
        serde_json::to_string(&r).unwrap(),
        crate::doctor::render_text(&r)
    );
    assert!(!shown.contains("TOPSECRET"), "{shown}");
}

#[test]
fn an_invalid_image_reference_is_an_error_not_a_report() {
    let f = facts(Some(pod("Bad Image", &[])), None, vec![]);
    assert!(matches!(analyse(&f), Err(DoctorError::InvalidImage { .. })));
}

#[test]
fn pull_failures_are_read_from_waiting_container_statuses() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "status": {
            "initContainerStatuses": [{"name": "init", "image": "a", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"a\": ErrImagePull: 401 Unauthorized"}}}],
            "containerStatuses": [
                {"name": "app", "image": "b", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ErrImagePull", "message": "failed to pull and unpack image \"b\": not found"}}},
                {"name": "crashing", "image": "c", "imageID": "", "ready": false, "restartCount": 3,
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}}},
                {"name": "starting", "image": "d", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ErrImagePull"}}},
                {"name": "running", "image": "e", "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {}}}
            ]
        }
    }))
    .unwrap();
    let failures = status_pull_failures(&pod);
    assert_eq!(
        failures
            .iter()
            .map(|(c, r, _)| (c.as_str(), r.as_str()))
            .collect::<Vec<_>>(),
        vec![("init", "ImagePullBackOff"), ("app", "ErrImagePull")]
    );
    assert_eq!(
        pull_events::classify_pull_message(&failures[0].2),
        PullFailure::AuthRefused
    );
}
