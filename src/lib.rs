//! regcred-operator: keeps `kubernetes.io/dockerconfigjson` Secrets and ServiceAccount
//! `imagePullSecrets` in sync across namespaces from one cluster-scoped `RegistryCredential`.
//!
//! The crate is laid out by concern, each layer calling only the ones below it:
//!
//! * [`operator`]: the process: shutdown signals, leader election, then the controller.
//! * [`runtime`]: what the process serves and uses (the Lease, HTTP endpoints, metrics, start-up
//!   checks, logs); the controller reports to it.
//! * [`controller`]: watches → caches and indexes → reconcile (a pure plan) → apply → status.
//! * [`doctor`]: the `doctor` command, analysis apart from rendering.
//! * [`remote`]: the only code that talks to something other than the API server (registries'
//!   `/v2/`, Amazon ECR and STS).
//! * [`kubelet`]: the kubelet's rules (image references, registry keys, globs, matching). Pure.
//! * [`dockerconfig`]: the docker config a pull secret holds (parse, validate, build). Pure.
//! * [`api`]: the `RegistryCredential` custom resource.
//!
//! Every write to the API server goes through `writes`: the field manager, guarded deletes and
//! the one retry on conflict.

pub mod api;
pub mod controller;
pub mod dockerconfig;
pub mod doctor;
pub mod kubelet;
pub mod operator;
pub mod remote;
pub mod runtime;
mod writes;

#[cfg(test)]
mod testing;
