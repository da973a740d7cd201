//! The controller's Events: one Recorder for the process (so that repeats aggregate), fed by a
//! queue that one task drains in order, so that a pass never waits for the API server to record an
//! Event; one Event per finding while it lasts, and notes cut to what the API accepts.

use std::future::Future;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Resource, ResourceExt,
    runtime::events::{Event, EventType, Recorder},
};
use tokio::sync::mpsc;
use tracing::warn;

use crate::{
    api::{NamespaceFailure, RegistryCredential},
    controller::{apply, context::Context},
};

/// One Warning Event per Secret found carrying our labels without being ours, while it lasts.
/// Events waiting to be recorded, in the order they were published. Bounded: while the API server
/// does not take Events, the newest are dropped (and logged) rather than kept without limit.
pub(crate) struct EventQueue {
    tx: mpsc::Sender<(Event, ObjectReference)>,
}

impl EventQueue {
    const CAPACITY: usize = 1024;

    /// The queue and the task that records its Events; the task ends once every sender is gone
    /// and the queue is empty.
    pub(crate) fn start(recorder: Recorder) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(Self::CAPACITY);
        let task = async move {
            while let Some((event, regarding)) = rx.recv().await {
                if let Err(e) = recorder.publish(&event, &regarding).await {
                    warn!(regarding = ?regarding.name, reason = %event.reason, error = %e, "could not publish event");
                }
            }
        };
        (Self { tx }, task)
    }

    fn send(&self, event: Event, regarding: ObjectReference) {
        let (why, (event, regarding)) = match self.tx.try_send((event, regarding)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(v)) => ("too many waiting", v),
            Err(mpsc::error::TrySendError::Closed(v)) => ("shutting down", v),
        };
        warn!(regarding = ?regarding.name, reason = %event.reason, "event dropped: {why}");
    }
}

pub(super) fn report_unowned(ctx: &Context, rc: &RegistryCredential, unowned: &[NamespaceFailure]) {
    for finding in ctx.new_findings(&rc.name_any(), unowned) {
        warn!(credential = %rc.name_any(), namespace = %finding.namespace, "{}", finding.message);
        publish(
            ctx,
            rc,
            EventType::Warning,
            apply::NOT_OWNED,
            finding.message.clone(),
        );
    }
}

pub(super) fn publish(
    ctx: &Context,
    rc: &RegistryCredential,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_about(ctx, &rc.object_ref(&()), "Reconcile", type_, reason, note);
}

/// Events go through the one Recorder of the process, so that repeats aggregate.
pub(super) fn publish_about(
    ctx: &Context,
    regarding: &ObjectReference,
    action: &str,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    ctx.events.send(event, regarding.clone());
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

pub(super) fn summarize(namespaces: &[String]) -> String {
    let shown: Vec<&str> = namespaces.iter().take(10).map(String::as_str).collect();
    match namespaces.len() {
        n if n > shown.len() => format!("{} and {} more", shown.join(", "), n - shown.len()),
        _ => shown.join(", "),
    }
}
