//! Integration tests against the real control plane that `make test` starts (kube-apiserver, etcd,
//! kube-controller-manager) and the operator process it runs. One binary, one module per area.

mod support;

mod bad_input;
mod catalogue;
mod chart;
mod conflicts;
mod doctor;
mod fanout;
mod faults;
mod foundation;
mod gitops;
mod lifecycle;
mod monitoring;
mod operate;
mod ownership;
mod packaging;
mod recovery;
mod registry;
mod registry_fixture;
mod security;
mod service_accounts;
mod sources;
