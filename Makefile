# regcred-operator: see README.md. `make demo` and `make test` are the two entry points.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
CLUSTER_DIR ?= $(CURDIR)/.cluster

.PHONY: help deps build release lint unit gitops integration test-repeat test krew cluster-up cluster-down demo crd bench bench-smoke fuzz

help:
	@echo "make demo          build, start the local cluster, install the CRD, apply examples/, run the operator, pull on the node"
	@echo "make test          fmt, clippy, unit tests and integration tests on a private local cluster"
	@echo "make test-repeat   the integration suite REPEAT times (default 5) on fresh clusters, failures per test"
	@echo "make cluster-up    start the local one-node cluster and registry (.cluster/kubeconfig, .cluster/registry.env)"
	@echo "make cluster-down  stop it"
	@echo "make crd           regenerate crds/registrycredential.yaml from the Rust types"
	@echo "make bench         the benchmark (N=1000 by default; results in target/bench/)"
	@echo "make fuzz          run every fuzz target FUZZ_SECONDS (default 60) each; needs a nightly toolchain"
	@echo "make gitops        the Argo CD health check's tests and kstatus, under the tools' own engines"
	@echo "make krew          the kubectl-regcred plugin archive and its krew manifest (target/krew/)"

## Installs what the build and the tests need (Debian packages, Rust components); quick when present.
deps:
	@hack/install-deps.sh

build: deps
	cargo build --bins

lint: deps
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	hadolint Dockerfile

## The binary exactly as the Dockerfile builds it (there is no container engine here).
release: deps
	cargo build --release --locked --bin regcred-operator

unit: deps
	cargo test --lib --bins

## The Argo CD health check's own tests (health_test.yaml) and kstatus, under the tools' engines.
gitops: deps
	cd tests/gitops && GOTOOLCHAIN=local GOFLAGS=-mod=mod go test ./...

integration: deps
	tests/run-integration.sh

## The integration suite REPEAT times against fresh clusters, with the failures per test.
REPEAT ?= 5
test-repeat: deps
	REPEAT=$(REPEAT) tests/repeat-integration.sh

test: lint unit gitops release integration bench-smoke

crd:
	cargo run --quiet -- crd > crds/registrycredential.yaml
	cp crds/registrycredential.yaml deploy/helm/regcred-operator/crds/registrycredential.yaml

## kubectl plugin archive for this machine and its krew manifest (target/krew/).
KREW_VERSION ?= v$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
krew: release
	mkdir -p target/krew/pkg
	cp target/release/regcred-operator target/krew/pkg/kubectl-regcred
	tar -C target/krew/pkg -czf target/krew/kubectl-regcred_$$(uname -s | tr A-Z a-z)_$$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/').tar.gz kubectl-regcred
	hack/krew-manifest.sh $(KREW_VERSION) target/krew/kubectl-regcred_*.tar.gz > target/krew/regcred.yaml
	@echo "target/krew/regcred.yaml"

cluster-up: deps
	tests/controlplane/cluster.sh up $(CLUSTER_DIR)
	@echo "kubectl of the same version: export PATH=$$(tests/controlplane/build.sh 2>/dev/null | tail -n1):\$$PATH"

cluster-down:
	tests/controlplane/cluster.sh down $(CLUSTER_DIR)

demo: build
	hack/demo.sh $(CLUSTER_DIR)

## The benchmark (not part of `make test`): N=1000 N_SCALE=3000 UNRELATED=2000 PODS=2000 IDLE_SECONDS=60 ONBOARD=200 ROTATION_PAIRS=3 FANOUT_PAIRS=3
bench:
	benches/run.sh

## A small run of the benchmark, to keep it working.
bench-smoke:
	N=20 N_SCALE=40 UNRELATED=20 PODS=20 IDLE_SECONDS=3 ONBOARD=10 ROTATION_PAIRS=2 FANOUT_PAIRS=2 BENCH_CLUSTER_DIR=$(CURDIR)/target/bench-smoke-cluster benches/run.sh

## The fuzz targets in fuzz/ (not part of `make test`): FUZZ_SECONDS=60 per target, FUZZ_TARGETS="a b"
## for some of them. Installs cargo-fuzz when missing; fails on any crash (inputs in fuzz/artifacts/).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_TARGETS)
