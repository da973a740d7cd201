//! regcred-operator: keeps `kubernetes.io/dockerconfigjson` Secrets and ServiceAccount
//! `imagePullSecrets` in sync across namespaces from one cluster-scoped `RegistryCredential`.
//!
//! A reconcile is a pipeline: [`source`] (with [`ecr`] minting tokens) and [`targets`] resolve what is wanted from the caches,
//! [`plan`] decides the writes (pure), [`apply`] carries them out and prunes, [`status`] reports.

pub mod apply;
pub mod contests;
pub mod context;
pub mod controller;
pub mod crd;
pub mod dockerconfig;
pub mod doctor;
pub mod ecr;
pub mod error;
pub mod http;
pub mod lease;
pub mod matching;
pub mod metrics;
pub mod operator;
pub mod overlay;
pub mod plan;
pub mod probe;
pub mod recovery;
pub mod registry;
pub mod registry_check;
pub mod service_accounts;
pub mod source;
pub mod status;
pub mod targets;
pub mod telemetry;
pub mod tokens;
