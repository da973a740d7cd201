//! The operator process around the controller: shutdown signals and leader election
//! ([`operator`], [`lease`]), the health and metrics endpoints ([`http`], [`metrics`]), start-up
//! checks ([`probe`]) and logging ([`telemetry`]).
//!
//! It may call the controller to run it; nothing below calls back into it except to count
//! ([`metrics`]).

pub mod http;
pub(crate) mod lease;
pub mod metrics;
pub mod operator;
pub mod probe;
pub mod telemetry;
