//! The controller's Events: one Recorder for the process (so that repeats aggregate), one Event
//! per finding while it lasts, and notes cut to what the API accepts.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Resource, ResourceExt,
    runtime::events::{Event, EventType},
};
use tracing::warn;

use crate::{
    api::{NamespaceFailure, RegistryCredential},
    controller::{apply, context::Context},
};

/// One Warning Event per Secret found carrying our labels without being ours, while it lasts.
pub(super) async fn report_unowned(
    ctx: &Context,
    rc: &RegistryCredential,
    unowned: &[NamespaceFailure],
) {
    for finding in ctx.new_findings(&rc.name_any(), unowned) {
        warn!(credential = %rc.name_any(), namespace = %finding.namespace, "{}", finding.message);
        publish(
            ctx,
            rc,
            EventType::Warning,
            apply::NOT_OWNED,
            finding.message.clone(),
        )
        .await;
    }
}

pub(super) async fn publish(
    ctx: &Context,
    rc: &RegistryCredential,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_about(ctx, &rc.object_ref(&()), "Reconcile", type_, reason, note).await;
}

/// Events go through the one Recorder of the process, so that repeats aggregate.
pub(super) async fn publish_about(
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
    if let Err(e) = ctx.recorder.publish(&event, regarding).await {
        warn!(regarding = ?regarding.name, error = %e, "could not publish event");
    }
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
