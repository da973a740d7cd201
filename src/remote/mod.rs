//! Talking to something other than the API server: a registry's `/v2/` endpoint
//! ([`registry`], whether credentials work) and Amazon ECR with STS ([`ecr`], minting tokens).
//!
//! These are network clients with their own confinement rules (realms, redirects, timeouts); they
//! know nothing of the controller and return classified outcomes that never hold a credential.

pub(crate) mod ecr;
pub mod registry;
