//! Integration tests against the real cluster that `make test` starts (kube-apiserver, etcd,
//! kube-controller-manager, a node with a kubelet and containerd, a private registry) and the operator
//! process it runs. One binary, one module per area.

mod support;

mod bad_input;
mod catalogue;
mod chart;
mod confinement;
mod conflicts;
mod doctor;
mod ecr;
mod fanout;
mod faults;
mod foundation;
mod gitops;
mod lifecycle;
mod monitoring;
mod node;
mod operate;
mod ownership;
mod packaging;
mod recovery;
mod registry;
mod registry_fixture;
mod security;
mod service_accounts;
mod sources;
