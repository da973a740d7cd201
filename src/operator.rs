//! The operator process: shutdown signals, leader election and the controller, in that order.
//!
//! With leader election only the lease holder runs the controller (and so writes). SIGTERM stops
//! the controller gracefully (in-flight reconciles finish), then releases the lease so that a
//! standby replica takes over at once. A leader that cannot renew its lease within the renew
//! deadline stops the controller before any other replica may take over, and stands by again in
//! the same process: when the API server is reachable again it rejoins the election, and on
//! winning starts a fresh controller with clean caches. An outage of the API server or etcd thus
//! never needs a restart of the process.

use std::{sync::Arc, time::Duration};

use kube::Client;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::{
    controller,
    controller::settings::Settings,
    runtime::http::Health,
    runtime::lease::{Elector, Held, LeaseConfig, LeaseError},
    runtime::metrics::Metrics,
};

#[derive(Debug, Clone)]
pub struct Election {
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

/// kube's graceful shutdown takes a `Sync` future; a task plus a oneshot makes any future one.
fn sync_future(
    f: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        f.await;
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

/// Fires on SIGTERM or SIGINT.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
        }
        let _ = tx.send(true);
    });
    rx
}

/// Why the operator process stopped before a shutdown was asked for.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("leader election: {0}")]
    Election(#[source] LeaseError),
    #[error("lease task failed: {0}")]
    LeaseTask(#[source] tokio::task::JoinError),
}

pub async fn run(
    client: Client,
    settings: Settings,
    election: Option<Election>,
    metrics: Arc<Metrics>,
    health: Health,
) -> Result<(), OperatorError> {
    let mut stop = shutdown_signal();
    let Some(election) = election else {
        metrics.leader.set(1);
        let mut stop_ctrl = stop.clone();
        let shutdown = async move {
            let _ = stop_ctrl.wait_for(|s| *s).await;
        };
        controller::run(client, settings, metrics, health, sync_future(shutdown)).await;
        return Ok(());
    };

    let config = LeaseConfig::new(
        &settings.namespace,
        &election.lease_name,
        &election.identity,
        election.lease_duration,
    );
    let mut elector = Elector::new(client.clone(), config);
    loop {
        health.set_standby(true);
        if !elector
            .acquire(&mut stop)
            .await
            .map_err(OperatorError::Election)?
        {
            return Ok(()); // shut down while standing by
        }
        health.set_standby(false);
        metrics.leader.set(1);

        // Hold the lease in the background; stop the controller on shutdown or on losing it.
        let (lost_tx, lost_rx) = oneshot::channel::<()>();
        let holder = tokio::spawn({
            let mut stop = stop.clone();
            async move {
                let held = elector.hold(&mut stop).await;
                if held == Held::Lost {
                    let _ = lost_tx.send(());
                }
                (elector, held)
            }
        });
        let mut stop_ctrl = stop.clone();
        let shutdown = async move {
            tokio::select! {
                _ = stop_ctrl.wait_for(|s| *s) => {}
                _ = lost_rx => {}
            }
        };
        controller::run(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            health.clone(),
            sync_future(shutdown),
        )
        .await;
        metrics.leader.set(0);
        health.set_ready(false);

        // The holder has returned or is returning: on shutdown it saw the same signal, on loss it
        // caused the stop.
        let held;
        (elector, held) = holder.await.map_err(OperatorError::LeaseTask)?;
        match held {
            Held::ShutDown => {
                elector.release().await;
                return Ok(());
            }
            Held::Lost => warn!(
                "lost the leader lease (could not renew it in time); the controller stopped, \
                 standing by to take the lease again"
            ),
        }
    }
}
