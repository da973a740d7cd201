//! The teardown of a credential being deleted: only what is provably ours is removed.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, runtime::controller::Action};
use tracing::info;

use super::{
    apply,
    events::report_unowned,
    pass::{owner_of, update_pod_watch},
    plan,
};

use crate::{
    api::NamespaceFailure, api::RegistryCredential, controller::apply::Apply,
    controller::context::Context, controller::error::Error, controller::plan::View,
};

pub(super) async fn teardown(rc: &RegistryCredential, ctx: &Context) -> Result<Action, Error> {
    update_pod_watch(ctx, rc, true);
    let owner = owner_of(rc)?;
    // The last chance to remove our entries: plan from ServiceAccounts read just now in every
    // namespace where we left something, not from caches that may be a moment behind.
    let view = ctx.view(rc);
    let mut namespaces: Vec<String> = view
        .secrets_of(&owner.name, &plan::nothing)
        .iter()
        .filter_map(|s| s.metadata.namespace.clone())
        .chain(
            view.service_accounts_of(&owner.name, &plan::nothing)
                .iter()
                .filter_map(|sa| sa.metadata.namespace.clone()),
        )
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let fresh: Vec<Arc<ServiceAccount>> = futures::stream::iter(namespaces)
        .map(|ns| {
            let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns);
            async move {
                api.list(&kube::api::ListParams::default())
                    .await
                    .map_err(|e| Error::api("listing", "ServiceAccounts", &ns, "", e))
            }
        })
        .buffer_unordered(ctx.settings.write_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flat_map(|list| list.items)
        .map(Arc::new)
        .collect();
    let view = plan::FreshServiceAccounts {
        inner: &view,
        service_accounts: fresh,
    };
    let plan = plan::teardown(&owner, rc.spec.deletion_policy, &view);
    let secret_name = rc.secret_name();
    let cleaned = Apply {
        ctx,
        owner: &owner,
        secret_name: &secret_name,
        data: &[],
        conflict_policy: rc.spec.conflict_policy,
        source: &rc.spec.source,
    }
    .cleanups(plan.cleanups)
    .await;
    // Left alone for good: they do not hold the deletion up.
    let unowned: Vec<NamespaceFailure> = cleaned
        .unowned
        .into_iter()
        .chain(plan.unowned.iter().map(|s| {
            let (ns, name) = (
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default(),
            );
            NamespaceFailure {
                namespace: ns.into(),
                reason: apply::NOT_OWNED.into(),
                message: plan::not_owned(
                    ns,
                    name,
                    &owner.name,
                    "no controller ownerReference of this credential",
                ),
            }
        }))
        .collect();
    report_unowned(ctx, rc, &unowned);
    let failures = cleaned.failures;
    if let Some(first) = failures.first() {
        return Err(Error::Finalizer {
            name: owner.name.clone(),
            message: format!(
                "cleanup failed in {} namespaces; first: {}",
                failures.len(),
                first.message
            ),
        });
    }
    ctx.metrics.forget(&owner.name);
    ctx.tokens.forget(&owner.name);
    ctx.verifier.forget(&owner.name);
    ctx.contests.forget(&owner.name);
    ctx.forget_status(rc);
    ctx.status_writer.forget(&owner.name);
    ctx.forget_findings(&owner.name);
    ctx.ledgers.forget(&owner.name);
    ctx.reported_pods.forget(&owner.name);
    ctx.evictions.forget(&owner.name);
    info!(credential = %owner.name, policy = ?rc.spec.deletion_policy, "cleaned up");
    Ok(Action::await_change())
}
