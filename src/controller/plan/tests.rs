use super::*;
use crate::api::PULL_SECRETS_ANNOTATION;
use crate::testing::service_account;
use std::collections::HashMap;

#[derive(Default)]
struct FakeView {
    secrets: Vec<Arc<Secret>>,
    sas: Vec<Arc<ServiceAccount>>,
    conflicts: HashMap<(String, String), Option<String>>,
    sources: HashMap<(String, String), String>,
}

impl FakeView {
    /// A view of these Secrets and ServiceAccounts, with no conflict or source on record.
    fn of(secrets: Vec<Arc<Secret>>, sas: Vec<Arc<ServiceAccount>>) -> Self {
        FakeView {
            secrets,
            sas,
            ..Default::default()
        }
    }
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_string(), name.to_string())
}

fn ns_of<K: kube::Resource>(o: &K) -> &str {
    o.meta().namespace.as_deref().unwrap_or_default()
}

fn name_of<K: kube::Resource>(o: &K) -> &str {
    o.meta().name.as_deref().unwrap_or_default()
}

/// The objects `keep` selects and `except` leaves in: what the controller's view finds through
/// its indexes, found here by a scan.
fn scan<K: kube::Resource>(
    all: &[Arc<K>],
    except: Except<'_>,
    keep: impl Fn(&K) -> bool,
) -> Vec<Arc<K>> {
    all.iter()
        .filter(|o| !except(ns_of(o.as_ref()), name_of(o.as_ref())) && keep(o))
        .cloned()
        .collect()
}

/// The whole plan of a pass, targets planned up front.
fn sync(desired: &Desired<'_>, view: &impl View) -> Plan {
    let mut plan = cleanup(desired, view);
    plan.targets = (desired.targets.iter())
        .map(|ns| target(desired, view, ns))
        .collect();
    plan
}

impl View for FakeView {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets
            .iter()
            .find(|s| ns_of(s.as_ref()) == namespace && s.metadata.name.as_deref() == Some(name))
            .cloned()
    }
    fn service_accounts(&self, namespace: &str) -> Vec<Arc<ServiceAccount>> {
        self.sas
            .iter()
            .filter(|s| ns_of(s.as_ref()) == namespace)
            .cloned()
            .collect()
    }
    fn secrets_of(&self, credential: &str, except: Except<'_>) -> Vec<Arc<Secret>> {
        scan(&self.secrets, except, |s| labelled_for(s, credential))
    }
    fn managed_secrets_in(
        &self,
        namespaces: &BTreeSet<String>,
        except: Except<'_>,
    ) -> Vec<Arc<Secret>> {
        scan(&self.secrets, except, |s| namespaces.contains(ns_of(s)))
    }
    fn service_accounts_of(
        &self,
        credential: &str,
        except: Except<'_>,
    ) -> Vec<Arc<ServiceAccount>> {
        scan(&self.sas, except, |s| {
            !service_accounts::owned_by(s, credential).is_empty()
        })
    }
    fn known_conflict(&self, namespace: &str, name: &str) -> Option<Option<String>> {
        self.conflicts.get(&key(namespace, name)).cloned()
    }

    fn source_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.sources.get(&key(namespace, name)).cloned()
    }
}

fn owner() -> Owner {
    Owner {
        name: "acme".into(),
        uid: "uid-1".into(),
    }
}

fn ours(ns: &str, name: &str, data: &[u8]) -> Arc<Secret> {
    let mut s = desired_secret(&owner(), ns, name, data);
    s.metadata.uid = Some(format!("{ns}-{name}-uid"));
    Arc::new(s)
}

fn sa(ns: &str, name: &str, entries: &[&str], annotation: Option<&str>) -> Arc<ServiceAccount> {
    let mut sa = service_account(ns, name, entries);
    sa.metadata.resource_version = Some("1".into());
    sa.metadata.annotations =
        annotation.map(|a| [(PULL_SECRETS_ANNOTATION.to_string(), a.to_string())].into());
    Arc::new(sa)
}

/// An account listing `others` and then our `acme-pull`, with the annotation that records our entry.
fn listing_ours(ns: &str, name: &str, others: &[&str]) -> Arc<ServiceAccount> {
    let entries: Vec<&str> = others.iter().copied().chain(["acme-pull"]).collect();
    sa(ns, name, &entries, Some("acme/acme-pull"))
}

fn desired<'a>(targets: &'a [String], sas: &'a [String]) -> Desired<'a> {
    // Leak the owner for brevity in tests.
    let owner: &'static Owner = Box::leak(Box::new(owner()));
    Desired {
        owner,
        secret_name: "acme-pull",
        data: b"{\"auths\":{}}",
        service_accounts: sas,
        targets,
        within: None,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(std::string::ToString::to_string).collect()
}

/// The sync plan of `acme-pull` over the `targets`, selecting the accounts `sas`, in the whole
/// cluster or (`within`) in those namespaces only.
fn sync_within(view: &FakeView, targets: &[&str], sas: &[&str], within: Option<&[&str]>) -> Plan {
    let (targets, sas) = (strings(targets), strings(sas));
    let within: Option<BTreeSet<String>> = within.map(|w| strings(w).into_iter().collect());
    sync(
        &Desired {
            within: within.as_ref(),
            ..desired(&targets, &sas)
        },
        view,
    )
}

/// The sync plan over the whole cluster.
fn sync_all(view: &FakeView, targets: &[&str], sas: &[&str]) -> Plan {
    sync_within(view, targets, sas, None)
}

/// The names an account lists after an edit.
fn entry_names(change: &SaChange) -> Vec<String> {
    change
        .edit
        .image_pull_secrets
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

#[test]
fn new_namespace_gets_create_and_default_sa_edit() {
    let view = FakeView::of(
        vec![],
        vec![sa("a", "default", &[], None), sa("a", "builder", &[], None)],
    );
    let plan = sync_all(&view, &["a"], &["default"]);
    assert!(matches!(plan.targets[0].secret, SecretStep::Create));
    assert_eq!(
        plan.targets[0].edits.len(),
        1,
        "only the selected SA is edited"
    );
    assert_eq!(
        plan.targets[0].edits[0]
            .service_account
            .metadata
            .name
            .as_deref(),
        Some("default")
    );
    assert_eq!(plan.writes(), 2);
}

#[test]
fn converged_state_plans_no_writes() {
    let data = b"{\"auths\":{}}";
    let view = FakeView::of(
        vec![ours("a", "acme-pull", data)],
        vec![listing_ours("a", "default", &["x"])],
    );
    let plan = sync_all(&view, &["a"], &["default"]);
    assert!(matches!(plan.targets[0].secret, SecretStep::InSync));
    assert_eq!(plan.writes(), 0);
    assert_eq!(plan.targets[0].listing_service_accounts, 1);
}

#[test]
fn changed_content_is_an_update_with_uid_precondition() {
    let view = FakeView::of(vec![ours("a", "acme-pull", b"old")], vec![]);
    let plan = sync_all(&view, &["a"], &[]);
    assert!(
        matches!(&plan.targets[0].secret, SecretStep::Update { current } if current.metadata.uid.as_deref() == Some("a-acme-pull-uid"))
    );
}

#[test]
fn a_source_is_never_written_adopted_or_deleted() {
    // A source exported from a copy, labels and all, sits in a target namespace under the
    // copy's name, and another one outside the targets.
    let view = FakeView {
        secrets: vec![ours("a", "acme-pull", b"old"), ours("b", "acme-pull", b"x")],
        sas: vec![sa("a", "default", &[], None)],
        sources: [
            (key("a", "acme-pull"), "acme".to_string()),
            (key("b", "acme-pull"), "acme".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let plan = sync_all(&view, &["a"], &["default"]);
    assert!(
        matches!(&plan.targets[0].secret, SecretStep::Conflict { message } if message.contains("is the source of RegistryCredential acme")),
        "{:?}",
        plan.targets[0].secret
    );
    assert!(plan.targets[0].edits.is_empty());
    assert!(plan.cleanups.iter().all(|c| c.delete.is_empty()));
    let down = teardown(&owner(), DeletionPolicy::Delete, &view);
    assert!(down.cleanups.iter().all(|c| c.delete.is_empty()));
}

#[test]
fn secret_of_another_credential_is_never_touched() {
    let mut other = desired_secret(
        &Owner {
            name: "other".into(),
            uid: "uid-2".into(),
        },
        "a",
        "acme-pull",
        b"x",
    );
    other.metadata.uid = Some("u".into());
    let view = FakeView::of(vec![Arc::new(other)], vec![sa("a", "default", &[], None)]);
    let plan = sync_all(&view, &["a"], &["default"]);
    assert!(
        matches!(&plan.targets[0].secret, SecretStep::Conflict { message } if message.ends_with("RegistryCredential other"))
    );
    assert_eq!(plan.writes(), 0, "no SA edit either");
}

#[test]
fn known_conflict_is_reported_then_rechecked_never_recreated() {
    let fresh = FakeView {
        conflicts: [(key("a", "acme-pull"), Some("taken".into()))].into(),
        ..Default::default()
    };
    assert!(
        matches!(&sync_all(&fresh, &["a"], &[]).targets[0].secret, SecretStep::Conflict { message } if message == "taken")
    );
    let stale = FakeView {
        conflicts: [(key("a", "acme-pull"), None)].into(),
        ..Default::default()
    };
    assert!(matches!(
        sync_all(&stale, &["a"], &[]).targets[0].secret,
        SecretStep::Recheck
    ));
}

#[test]
fn wildcard_and_empty_service_account_lists() {
    let view = FakeView::of(
        vec![],
        vec![sa("a", "default", &[], None), sa("a", "builder", &[], None)],
    );
    assert_eq!(sync_all(&view, &["a"], &["*"]).targets[0].edits.len(), 2);
    assert_eq!(sync_all(&view, &["a"], &[]).targets[0].edits.len(), 0);
}

#[test]
fn deselected_service_account_loses_our_entry() {
    let view = FakeView::of(
        vec![ours("a", "acme-pull", b"{\"auths\":{}}")],
        vec![listing_ours("a", "builder", &["x"])],
    );
    let plan = sync_all(&view, &["a"], &["default"]);
    assert_eq!(entry_names(&plan.targets[0].edits[0]), ["x"]);
}

#[test]
fn namespace_no_longer_targeted_is_cleaned_sa_first() {
    let view = FakeView::of(
        vec![ours("gone", "acme-pull", b"d")],
        vec![listing_ours("gone", "default", &["keep"])],
    );
    let plan = sync_all(&view, &["a"], &["default"]);
    assert_eq!(plan.cleanups.len(), 1);
    let c = &plan.cleanups[0];
    assert_eq!(c.namespace, "gone");
    assert_eq!(c.delete.len(), 1);
    assert_eq!(entry_names(&c.edits[0]), ["keep"]);
}

#[test]
fn renamed_secret_deletes_the_old_one_in_a_target() {
    let view = FakeView::of(vec![ours("a", "old-pull", b"d")], vec![]);
    let plan = sync_all(&view, &["a"], &[]);
    assert!(matches!(plan.targets[0].secret, SecretStep::Create));
    assert_eq!(
        plan.cleanups[0].delete[0].metadata.name.as_deref(),
        Some("old-pull")
    );
}

#[test]
fn a_pass_within_some_namespaces_plans_nothing_outside_them() {
    // A copy and an entry left in "gone" (no longer targeted) and a missing copy in "b": a pass
    // within "a" and "left" sees neither.
    let view = FakeView::of(
        vec![
            ours("gone", "acme-pull", b"d"),
            ours("left", "acme-pull", b"d"),
        ],
        vec![
            listing_ours("gone", "default", &[]),
            listing_ours("left", "default", &[]),
            sa("a", "default", &[], None),
        ],
    );
    let plan = sync_within(&view, &["a"], &["default"], Some(&["a", "left"]));
    assert_eq!(plan.targets.len(), 1);
    assert!(matches!(plan.targets[0].secret, SecretStep::Create));
    // "left" is in scope and no longer a target: cleaned, account first. "gone" is not in scope.
    assert_eq!(plan.cleanups.len(), 1, "{:?}", plan.cleanups);
    let c = &plan.cleanups[0];
    assert_eq!(c.namespace, "left");
    assert_eq!((c.delete.len(), c.edits.len()), (1, 1));
}

#[test]
fn a_pass_within_namespaces_finds_a_copy_under_an_old_name_there() {
    let view = FakeView::of(
        vec![ours("a", "old-pull", b"d"), ours("b", "old-pull", b"d")],
        vec![],
    );
    let plan = sync_within(&view, &["a"], &[], Some(&["a"]));
    let deleted: Vec<_> = plan
        .cleanups
        .iter()
        .flat_map(|c| &c.delete)
        .map(|s| (ns_of(s.as_ref()).to_string(), s.metadata.name.clone()))
        .collect();
    assert_eq!(deleted, [("a".to_string(), Some("old-pull".to_string()))]);
}

#[test]
fn teardown_delete_and_orphan() {
    let view = FakeView::of(
        vec![ours("a", "acme-pull", b"d")],
        vec![listing_ours("a", "default", &["x"])],
    );
    let del = teardown(&owner(), DeletionPolicy::Delete, &view);
    assert_eq!(del.cleanups[0].delete.len(), 1);
    assert_eq!(del.cleanups[0].edits[0].edit.image_pull_secrets.len(), 1);
    let orphan = teardown(&owner(), DeletionPolicy::Orphan, &view);
    assert!(orphan.cleanups[0].delete.is_empty());
    assert_eq!(orphan.cleanups[0].release.len(), 1);
    assert_eq!(
        orphan.cleanups[0].edits[0].edit.image_pull_secrets.len(),
        2,
        "entries stay"
    );
    assert_eq!(orphan.cleanups[0].edits[0].edit.annotation, None);
}

#[test]
fn update_patch_keeps_foreign_owners_and_carries_the_version() {
    let mut current = (*ours("a", "acme-pull", b"old")).clone();
    current.metadata.resource_version = Some("77".into());
    current.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "other".into(),
        uid: "other-uid".into(),
        ..Default::default()
    }]);
    let patch = update_patch(&current, &owner(), b"new");
    assert_eq!(patch["metadata"]["resourceVersion"], "77");
    let uids: Vec<_> = patch["metadata"]["ownerReferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids, ["other-uid", "uid-1"]);
    assert_eq!(
        patch["data"][DOCKER_CONFIG_JSON_KEY], "bmV3",
        "base64 of the new config"
    );
    assert_eq!(patch["metadata"]["labels"][CREDENTIAL_LABEL], "acme");
}

#[test]
fn ownership_rules() {
    let o = owner();
    assert_eq!(ownership(&ours("a", "s", b""), &o), Ownership::Ours);
    let mut relabelled = (*ours("a", "s", b"")).clone();
    relabelled.metadata.labels = None;
    assert_eq!(
        ownership(&relabelled, &o),
        Ownership::Ours,
        "our controller ownerReference is enough"
    );
    relabelled.metadata.owner_references = None;
    assert_eq!(ownership(&relabelled, &o), Ownership::Foreign);
}

#[test]
fn a_namespace_is_not_in_sync_before_its_default_service_account_is_seen() {
    let view = FakeView::of(vec![], vec![sa("a", "builder", &[], None)]);
    for (patterns, awaiting) in [
        (&["default"][..], true),
        (&["*"], true),
        (&["builder"], false),
        (&[], false),
    ] {
        let plan = sync_all(&view, &["a"], patterns);
        assert_eq!(
            plan.targets[0].awaiting_default_account, awaiting,
            "{patterns:?}"
        );
        assert!(
            matches!(plan.targets[0].secret, SecretStep::Create),
            "the Secret is written meanwhile"
        );
    }
}

/// Labelled as our copy, without our controller ownerReference (a decoy, a source exported
/// from a copy, a replacement made by hand; or our uid without `controller: true`).
fn lookalike(ns: &str, name: &str) -> Arc<Secret> {
    let mut s = (*ours(ns, name, b"x")).clone();
    s.metadata.owner_references = None;
    Arc::new(s)
}

#[test]
fn labels_alone_do_not_make_a_copy_ours() {
    let o = owner();
    assert_eq!(ownership(&lookalike("a", "s"), &o), Ownership::LabelledOnly);
    let mut not_controller = (*ours("a", "s", b"")).clone();
    not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
    assert_eq!(ownership(&not_controller, &o), Ownership::LabelledOnly);
    let mut other_uid = (*ours("a", "s", b"")).clone();
    other_uid.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-of-a-former-acme".into();
    assert_eq!(
        ownership(&other_uid, &o),
        Ownership::LabelledOnly,
        "a copy of a deleted credential of the same name is not ours"
    );
}

#[test]
fn a_lookalike_in_a_target_is_reported_and_never_written() {
    let view = FakeView::of(
        vec![lookalike("a", "acme-pull")],
        vec![sa("a", "default", &[], None)],
    );
    let plan = sync_all(&view, &["a"], &["default"]);
    assert!(
        matches!(&plan.targets[0].secret, SecretStep::NotOwned { message } if message.contains("not its copy")),
        "{:?}",
        plan.targets[0].secret
    );
    assert!(
        plan.targets[0].edits.is_empty(),
        "no ServiceAccount points at a Secret that is not ours"
    );
    assert_eq!(plan.writes(), 0);
}

#[test]
fn a_lookalike_outside_the_targets_is_reported_never_pruned() {
    let view = FakeView::of(
        vec![ours("a", "acme-pull", b"x"), lookalike("b", "acme-pull")],
        vec![],
    );
    let plan = sync_all(&view, &["a"], &[]);
    assert!(plan.cleanups.iter().all(|c| c.delete.is_empty()));
    assert_eq!(plan.unowned.len(), 1);
    assert_eq!(plan.unowned[0].metadata.namespace.as_deref(), Some("b"));
    for policy in [DeletionPolicy::Delete, DeletionPolicy::Orphan] {
        let down = teardown(&owner(), policy, &view);
        let (deleted, released): (Vec<_>, Vec<_>) = down
            .cleanups
            .iter()
            .map(|c| (c.delete.len(), c.release.len()))
            .unzip();
        assert_eq!(
            deleted.iter().sum::<usize>() + released.iter().sum::<usize>(),
            1,
            "only the real copy in a is removed or released ({policy:?})"
        );
        assert_eq!(down.unowned.len(), 1);
    }
}

#[test]
fn a_delete_needs_our_controller_reference_our_write_and_no_reader() {
    let o = owner();
    let mut written = (*ours("a", "acme-pull", b"x")).clone();
    written.metadata.managed_fields = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
            manager: Some(MANAGER.into()),
            operation: Some("Update".into()),
            ..Default::default()
        },
    ]);
    assert_eq!(undeletable(&written, &o, false), None);
    assert!(
        undeletable(&written, &o, true).is_some_and(|why| why.contains("source")),
        "a source is never deleted, whoever wrote it"
    );
    let mut by_hand = written.clone();
    by_hand.metadata.managed_fields = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
            manager: Some("kubectl-client-side-apply".into()),
            ..Default::default()
        },
    ]);
    assert!(undeletable(&by_hand, &o, false).is_some_and(|why| why.contains("did not write")));
    let mut unowned = written.clone();
    unowned.metadata.owner_references = None;
    assert!(undeletable(&unowned, &o, false).is_some_and(|why| why.contains("ownerReference")));
}
