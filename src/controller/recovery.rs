//! Pod recovery (`spec.podRecovery`): a pod whose image pull failed before the credential reached
//! its namespace keeps failing, because its `imagePullSecrets` were fixed at admission. This
//! module finds such pods (pure: [`candidates`]) and keeps the pod watch that feeds it
//! ([`PodWatch`]): the watch runs only while some credential has recovery on, sees only `Pending`
//! pods (field selector), and decodes of each only what the decision reads ([`PendingPod`]).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tracing::{debug, warn};

use crate::{
    controller::cache::pod::PendingPod,
    kubelet::{self, ImageRef},
};

/// Controllers that recreate an evicted pod.
const RECREATING_KINDS: [&str; 4] = ["ReplicaSet", "StatefulSet", "DaemonSet", "Job"];

/// A pod that failed to pull an image this credential covers and would pull if recreated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) service_account: String,
    /// The first failing image the credential covers.
    pub(crate) image: String,
    /// Controlled by a ReplicaSet, StatefulSet, DaemonSet or Job: eviction brings a new pod.
    pub(crate) recreated: bool,
    /// How its ServiceAccount lists the Secret: [`Listing::Written`] or [`Listing::Seen`].
    pub(crate) listing: Listing,
}

/// Whether a pod's ServiceAccount lists the Secret, as the operator knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listing {
    /// It does not.
    No,
    /// Only our own write says so: the watch has not delivered it yet. The API server's
    /// ServiceAccount admission reads the same kind of cache, so a pod recreated now could still
    /// be admitted without the Secret.
    Written,
    /// The watch has delivered the ServiceAccount listing it.
    Seen,
}

/// What the credential offers, for [`candidates`].
pub(crate) struct Offer<'a> {
    /// Target namespaces, sorted.
    pub(crate) targets: &'a [String],
    /// `spec.serviceAccounts` patterns.
    pub(crate) service_accounts: &'a [String],
    pub(crate) secret_name: &'a str,
    /// Registry keys of the credential's config.
    pub(crate) keys: Vec<&'a str>,
}

/// Images of the pod's containers (init containers included) waiting on a failed pull.
pub(crate) fn failing_images(pod: &Pod) -> Vec<&str> {
    kubelet::pull_waits(pod)
        .into_iter()
        .map(|w| w.image)
        .collect()
}

fn service_account_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

fn lists_secret(pod: &Pod, secret: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .is_some_and(|l| l.iter().any(|r| r.name == secret))
}

/// Whether the kubelet would use one of `keys` for `image` (its matching rules, as `doctor`
/// applies them).
pub(crate) fn covers(keys: &[&str], image: &str) -> bool {
    ImageRef::parse(image).is_ok_and(|image| {
        kubelet::evaluate(keys.iter().copied(), &image)
            .iter()
            .any(|e| e.verdict.is_match())
    })
}

/// The pods a credential can recover: in a target namespace, using a selected ServiceAccount
/// that now lists the Secret (`sa_lists(namespace, account)`, [`Listing::Written`] or
/// [`Listing::Seen`]), failing to pull an image the
/// credential covers, and without the Secret in their own spec.
pub(crate) fn candidates<'p>(
    pods: impl IntoIterator<Item = &'p Pod>,
    offer: &Offer<'_>,
    sa_lists: impl Fn(&str, &str) -> Listing,
) -> Vec<Candidate> {
    let mut found = Vec::new();
    for pod in pods {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        if offer
            .targets
            .binary_search_by(|t| t.as_str().cmp(ns))
            .is_err()
        {
            continue;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            continue; // evicted or deleted already: its controller is replacing it
        }
        let account = service_account_of(pod);
        let selected = offer
            .service_accounts
            .iter()
            .any(|p| p == "*" || p == account);
        if !selected || lists_secret(pod, offer.secret_name) {
            continue;
        }
        let listing = sa_lists(ns, account);
        if listing == Listing::No {
            continue;
        }
        let Some(image) = failing_images(pod)
            .into_iter()
            .find(|image| covers(&offer.keys, image))
        else {
            continue;
        };
        let recreated = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && RECREATING_KINDS.contains(&r.kind.as_str()));
        found.push(Candidate {
            namespace: ns.into(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            service_account: account.into(),
            image: image.into(),
            recreated,
            listing,
        });
    }
    found.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    found
}

/// The candidates to act on (report or evict) now, and how many wait until the watch delivers
/// their ServiceAccount listing the Secret ([`Listing::Written`]): a pod recreated before the API
/// server's own cache has the entry could be admitted without it, and fail again.
pub(crate) fn seen_only(found: Vec<Candidate>) -> (Vec<Candidate>, u32) {
    let (seen, unseen): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|c| c.listing == Listing::Seen);
    (seen, unseen.len() as u32)
}

/// The pod watch, started when the first credential turns recovery on and stopped when the last
/// turns it off: with recovery off everywhere, no pod is watched at all.
pub(crate) struct PodWatch {
    client: Client,
    /// 1 while running, for `regcred_pod_watch_active`.
    active: prometheus_client::metrics::gauge::Gauge,
    /// Pods with a failed pull go here; the controller maps them to the credentials concerned.
    triggers: mpsc::UnboundedSender<Result<Pod, watcher::Error>>,
    running: Mutex<Option<Running>>,
}

struct Running {
    store: Store<PendingPod>,
    synced: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// The watch and the stream of pods whose pull failed, for the controller's triggers.
    pub(crate) fn new(
        client: Client,
        active: prometheus_client::metrics::gauge::Gauge,
    ) -> (Self, mpsc::UnboundedReceiver<Result<Pod, watcher::Error>>) {
        let (triggers, receiver) = mpsc::unbounded();
        let watch = PodWatch {
            client,
            active,
            triggers,
            running: Mutex::new(None),
        };
        (watch, receiver)
    }

    /// Starts or stops the watch.
    pub(crate) fn set_wanted(&self, wanted: bool) {
        let mut running = self.running.lock().expect("pod watch lock");
        match (wanted, running.is_some()) {
            (true, false) => {
                debug!("starting the pod watch (podRecovery is on)");
                *running = Some(self.start());
                self.active.set(1);
            }
            (false, true) => {
                debug!("stopping the pod watch (podRecovery is off everywhere)");
                *running = None;
                self.active.set(0);
            }
            _ => {}
        }
    }

    /// The pods, once the watch holds its initial list.
    pub(crate) fn pods(&self) -> Option<Vec<Arc<PendingPod>>> {
        let running = self.running.lock().expect("pod watch lock");
        let running = running.as_ref()?;
        running
            .synced
            .load(Ordering::Acquire)
            .then(|| running.store.state())
    }

    fn start(&self) -> Running {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let api = Api::<PendingPod>::all(self.client.clone());
        // 100 a page, not 500: a page's body is read whole before it is decoded, and pods are
        // the largest objects listed (annotations, managedFields).
        let config = watcher::Config::default()
            .fields("status.phase=Pending")
            .any_semantic()
            .page_size(100);
        let stream = watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .inspect({
                let synced = synced.clone();
                move |event| match event {
                    Ok(watcher::Event::InitDone) => synced.store(true, Ordering::Release),
                    Err(e) => warn!(error = %e, "pod watch failed; retrying"),
                    _ => {}
                }
            })
            .applied_objects();
        let triggers = self.triggers.clone();
        let task = tokio::spawn(async move {
            stream
                .for_each(|pod| {
                    if let Ok(pod) = pod
                        && !failing_images(pod.pod()).is_empty()
                    {
                        let _ = triggers.unbounded_send(Ok(pod.into_pod()));
                    }
                    std::future::ready(())
                })
                .await;
        });
        Running {
            store,
            synced,
            task,
        }
    }
}

/// Evictions per credential in the last minute, for the rate limit, and the pods evicted: the
/// pod watch shows an evicted pod as terminating only a moment later, and a pass in between must
/// not evict it again.
#[derive(Default)]
pub(crate) struct EvictionBudget {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// Pods by uid, with when they were evicted.
    evicted: Mutex<HashMap<String, Instant>>,
}

impl EvictionBudget {
    const WINDOW: Duration = Duration::from_secs(60);
    /// Long past the moment the pod watch shows an eviction.
    const REMEMBER: Duration = Duration::from_secs(120);

    /// Takes one eviction of `credential`'s budget; `Err(wait)` when spent, with the time until
    /// the next one is allowed.
    pub(crate) fn take(&self, credential: &str, per_minute: u32) -> Result<(), Duration> {
        let mut recent = self.recent.lock().expect("eviction budget lock");
        let times = recent.entry(credential.into()).or_default();
        while times.front().is_some_and(|t| t.elapsed() >= Self::WINDOW) {
            times.pop_front();
        }
        if times.len() >= per_minute as usize {
            let oldest = times.front().copied().unwrap_or_else(Instant::now);
            return Err(Self::WINDOW.saturating_sub(oldest.elapsed()));
        }
        times.push_back(Instant::now());
        Ok(())
    }

    /// Gives back the last eviction taken (it was refused, so it did not count).
    pub(crate) fn refund(&self, credential: &str) {
        if let Some(times) = self
            .recent
            .lock()
            .expect("eviction budget lock")
            .get_mut(credential)
        {
            times.pop_back();
        }
    }

    pub(crate) fn forget(&self, credential: &str) {
        self.recent
            .lock()
            .expect("eviction budget lock")
            .remove(credential);
    }

    /// Remembers that the pod with `uid` was evicted.
    pub(crate) fn evicted(&self, uid: &str) {
        let mut evicted = self.evicted.lock().expect("evicted pods lock");
        evicted.retain(|_, at| at.elapsed() < Self::REMEMBER);
        evicted.insert(uid.into(), Instant::now());
    }

    /// Whether the pod with `uid` was evicted lately (its deletion may not be in the cache yet).
    pub(crate) fn was_evicted(&self, uid: &str) -> bool {
        self.evicted
            .lock()
            .expect("evicted pods lock")
            .get(uid)
            .is_some_and(|at| at.elapsed() < Self::REMEMBER)
    }
}

/// Pods already given an Event, per credential (by uid): one Event per pod, not one per pass.
#[derive(Default)]
pub(crate) struct Reported {
    by_credential: Mutex<HashMap<String, HashSet<String>>>,
}

impl Reported {
    /// Records this pass's candidates; returns those not reported before.
    pub(crate) fn fresh<'c>(&self, credential: &str, now: &'c [Candidate]) -> Vec<&'c Candidate> {
        let mut all = self.by_credential.lock().expect("reported pods lock");
        let before = all.insert(
            credential.into(),
            now.iter().map(|c| c.uid.clone()).collect(),
        );
        let before = before.unwrap_or_default();
        now.iter().filter(|c| !before.contains(&c.uid)).collect()
    }

    pub(crate) fn forget(&self, credential: &str) {
        self.by_credential
            .lock()
            .expect("reported pods lock")
            .remove(credential);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::{
            Container, ContainerState, ContainerStateWaiting, ContainerStatus,
            LocalObjectReference, PodSpec, PodStatus,
        },
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    };

    fn pod(ns: &str, name: &str, sa: Option<&str>, own: &[&str], waiting: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                uid: Some(format!("{ns}-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: sa.map(Into::into),
                image_pull_secrets: (!own.is_empty()).then(|| {
                    own.iter()
                        .map(|n| LocalObjectReference {
                            name: n.to_string(),
                        })
                        .collect()
                }),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                container_statuses: Some(
                    waiting
                        .iter()
                        .map(|(image, reason)| ContainerStatus {
                            name: "c".into(),
                            image: image.to_string(),
                            state: Some(ContainerState {
                                waiting: Some(ContainerStateWaiting {
                                    reason: Some(reason.to_string()),
                                    message: Some("pull access denied".into()),
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn controlled_by(mut p: Pod, kind: &str) -> Pod {
        p.metadata.owner_references = Some(vec![OwnerReference {
            kind: kind.into(),
            name: "owner".into(),
            uid: "owner-uid".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        p
    }

    fn offer<'a>(targets: &'a [String], sas: &'a [String]) -> Offer<'a> {
        Offer {
            targets,
            service_accounts: sas,
            secret_name: "acme-pull",
            keys: vec!["registry.example.com"],
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn a_pod_that_failed_before_its_service_account_listed_the_secret_is_a_candidate() {
        let (targets, sas) = (strings(&["a"]), strings(&["default"]));
        let pods = [controlled_by(
            pod(
                "a",
                "web-1",
                None,
                &[],
                &[("registry.example.com/app:1", "ImagePullBackOff")],
            ),
            "ReplicaSet",
        )];
        let found = candidates(&pods, &offer(&targets, &sas), |_, _| Listing::Seen);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].service_account, "default");
        assert!(found[0].recreated);
        assert_eq!(found[0].image, "registry.example.com/app:1");
    }

    #[test]
    fn a_pod_waits_until_the_watch_shows_its_service_account_listing_the_secret() {
        let (targets, sas) = (strings(&["a"]), strings(&["*"]));
        let failing = |name: &str, account: &str| {
            controlled_by(
                pod(
                    "a",
                    name,
                    Some(account),
                    &[],
                    &[("registry.example.com/app:1", "ErrImagePull")],
                ),
                "ReplicaSet",
            )
        };
        let pods = [failing("web-1", "written"), failing("web-2", "seen")];
        let found = candidates(&pods, &offer(&targets, &sas), |_, account| {
            if account == "seen" {
                Listing::Seen
            } else {
                Listing::Written
            }
        });
        assert_eq!(found.len(), 2, "both are candidates");
        let (now, waiting) = seen_only(found);
        let now: Vec<_> = now.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            now,
            ["web-2"],
            "only the pod whose ServiceAccount the watch shows listing the Secret"
        );
        assert_eq!(waiting, 1, "the other one waits, counted as awaiting");
    }

    #[test]
    fn pods_recovery_cannot_help_are_left_out() {
        let (targets, sas) = (strings(&["a"]), strings(&["default"]));
        let failing = |ns: &str, name: &str| {
            pod(
                ns,
                name,
                None,
                &[],
                &[("registry.example.com/app:1", "ErrImagePull")],
            )
        };
        let pods = [
            failing("b", "other-namespace"),
            pod(
                "a",
                "other-account",
                Some("builder"),
                &[],
                &[("registry.example.com/app:1", "ErrImagePull")],
            ),
            pod(
                "a",
                "has-it",
                None,
                &["acme-pull"],
                &[("registry.example.com/app:1", "ErrImagePull")],
            ),
            pod(
                "a",
                "other-registry",
                None,
                &[],
                &[("elsewhere.example.com/app:1", "ErrImagePull")],
            ),
            pod(
                "a",
                "not-a-pull-failure",
                None,
                &[],
                &[("registry.example.com/app:1", "CrashLoopBackOff")],
            ),
        ];
        assert!(candidates(&pods, &offer(&targets, &sas), |_, _| Listing::Seen).is_empty());
        let pods = [failing("a", "account-does-not-list-it-yet")];
        assert!(
            candidates(&pods, &offer(&targets, &sas), |_, _| Listing::No).is_empty(),
            "a recreated pod would fail again"
        );
    }

    #[test]
    fn bare_pods_and_pods_of_other_controllers_are_not_recreated() {
        let (targets, sas) = (strings(&["a"]), strings(&["*"]));
        let waiting = [("registry.example.com/app:1", "ErrImagePull")];
        let pods = [
            pod("a", "bare", Some("x"), &[], &waiting),
            controlled_by(pod("a", "custom", None, &[], &waiting), "MyOperatorKind"),
            controlled_by(pod("a", "job", None, &[], &waiting), "Job"),
        ];
        let found = candidates(&pods, &offer(&targets, &sas), |_, _| Listing::Seen);
        let recreated: Vec<_> = found
            .iter()
            .map(|c| (c.name.as_str(), c.recreated))
            .collect();
        assert_eq!(
            recreated,
            [("bare", false), ("custom", false), ("job", true)]
        );
    }

    #[test]
    fn coverage_follows_the_kubelet_rules() {
        assert!(covers(
            &["registry.example.com"],
            "registry.example.com/team/app:1"
        ));
        assert!(covers(&["*.example.com"], "registry.example.com/app"));
        assert!(
            !covers(&["*.example.com"], "a.b.example.com/app"),
            "one label per glob"
        );
        assert!(
            !covers(&["registry.example.com:5000"], "registry.example.com/app"),
            "ports must match"
        );
        assert!(
            covers(&["https://index.docker.io/v1/"], "nginx"),
            "Docker Hub"
        );
        assert!(!covers(&["registry.example.com"], "not an image"));
    }

    #[test]
    fn the_watch_decodes_only_what_the_decision_reads() {
        let mut p = controlled_by(
            pod(
                "a",
                "web-1",
                Some("builder"),
                &["mine"],
                &[("registry.example.com/app:1", "ErrImagePull")],
            ),
            "ReplicaSet",
        );
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.metadata.annotations = Some([("big".to_string(), "x".repeat(10_000))].into());
        p.spec.as_mut().unwrap().containers = vec![Container {
            name: "c".into(),
            image: Some("registry.example.com/app:1".into()),
            ..Default::default()
        }];
        let waiting = |p: &Pod| {
            p.status
                .as_ref()
                .unwrap()
                .container_statuses
                .as_ref()
                .unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .waiting
                .clone()
                .unwrap()
        };
        p.metadata
            .owner_references
            .as_mut()
            .unwrap()
            .push(OwnerReference {
                kind: "Other".into(),
                name: "not-the-controller".into(),
                ..Default::default()
            });
        let (targets, accounts) = (strings(&["a"]), strings(&["builder"]));
        let offer = offer(&targets, &accounts);
        let before = candidates([&p], &offer, |_, _| Listing::Seen);
        assert_eq!(before.len(), 1);

        // As the API server sends it: JSON, decoded by the watch.
        let decoded: PendingPod =
            serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        let slim = decoded.pod();
        assert!(slim.metadata.labels.is_none() && slim.metadata.annotations.is_none());
        assert!(slim.spec.as_ref().unwrap().containers.is_empty());
        assert_eq!(slim.metadata.owner_references.as_ref().unwrap().len(), 1);
        assert_eq!(waiting(slim).reason.as_deref(), Some("ErrImagePull"));
        assert!(
            waiting(slim).message.is_none(),
            "pull messages are not kept"
        );
        assert_eq!(
            candidates([slim], &offer, |_, _| Listing::Seen),
            before,
            "the same decision from the decoded pod"
        );
    }

    #[test]
    fn an_evicted_pod_is_not_evicted_again_before_the_cache_shows_it_terminating() {
        let budget = EvictionBudget::default();
        assert!(!budget.was_evicted("uid-1"));
        budget.evicted("uid-1");
        assert!(budget.was_evicted("uid-1"));
        assert!(!budget.was_evicted("uid-2"));
    }

    #[test]
    fn the_eviction_budget_holds_per_credential() {
        let budget = EvictionBudget::default();
        assert!(budget.take("a", 2).is_ok());
        assert!(budget.take("a", 2).is_ok());
        let wait = budget.take("a", 2).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert!(
            budget.take("b", 2).is_ok(),
            "another credential has its own"
        );
    }

    #[test]
    fn a_pod_is_reported_once_while_it_waits() {
        let reported = Reported::default();
        let c = |uid: &str| Candidate {
            namespace: "a".into(),
            name: uid.into(),
            uid: uid.into(),
            service_account: "default".into(),
            image: "i".into(),
            recreated: false,
            listing: Listing::Seen,
        };
        let first = [c("1"), c("2")];
        assert_eq!(reported.fresh("acme", &first).len(), 2);
        assert!(reported.fresh("acme", &first).is_empty());
        let next = [c("2"), c("3")];
        let fresh: Vec<_> = reported
            .fresh("acme", &next)
            .iter()
            .map(|c| c.uid.clone())
            .collect();
        assert_eq!(fresh, ["3"]);
    }
}
