//! The services of the operator process: the Lease of leader election ([`lease`]), the health and
//! metrics endpoints ([`http`], [`metrics`]), start-up checks ([`probe`]) and logging
//! ([`telemetry`]).
//!
//! The controller reports to them (readiness, counters); they call nothing above them.

pub mod http;
pub mod lease;
pub mod metrics;
pub mod probe;
pub mod telemetry;
