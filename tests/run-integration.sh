#!/usr/bin/env bash
# Runs the integration tests against a private local control plane and a real operator process:
# starts the cluster (tests/controlplane/cluster.sh), installs the CRD, runs `regcred-operator run`,
# runs `cargo test --test integration`, then checks that no test password reached the operator's
# log. Everything it started is stopped on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TEST_CLUSTER_DIR:-$PWD/target/test-cluster}
threads=${TEST_THREADS:-8}
mkdir -p "$dir"
operator_pid=

log() { echo "[integration] $*" >&2; }

cleanup() {
  local rc=$?
  if [ -n "$operator_pid" ] && kill -0 "$operator_pid" 2>/dev/null; then
    kill -TERM "$operator_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$operator_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$operator_pid" 2>/dev/null || true
  fi
  tests/controlplane/cluster.sh down "$dir" >/dev/null 2>&1 || true
  if [ $rc -ne 0 ]; then
    log "failed; logs kept in $dir/logs (operator: $dir/logs/operator.log)"
    [ -f "$dir/logs/operator.log" ] && { echo "--- last lines of the operator log ---" >&2; tail -n 40 "$dir/logs/operator.log" >&2; }
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

# kubectl of the cluster's own version, built with it (the tests also use it for `kubectl wait`).
PATH="$(tests/controlplane/build.sh | tail -n1):$PATH"
export PATH
# Argo CD's Lua health check and Flux's kstatus, as the tools run them (tests/gitops).
REGCRED_TEST_GITOPS_BIN=$(tests/gitops/build.sh | tail -n1)
export REGCRED_TEST_GITOPS_BIN

log "building the operator and the tests"
cargo build --bins --tests --quiet
bin=$PWD/target/debug/regcred-operator

tests/controlplane/cluster.sh down "$dir" >/dev/null 2>&1 || true
# The registry's password carries the marker the log scan below looks for.
REGISTRY_PASSWORD="TOPSECRET-registry-$(openssl rand -hex 8)" tests/controlplane/cluster.sh up "$dir"
export KUBECONFIG=$dir/kubeconfig
# Install exactly what deploy/ installs (no scheduler here, so the pods of its Deployment stay
# Pending) and run
# the operator as that ServiceAccount, with that RBAC, from a TokenRequest token.
kubectl apply -k deploy/ >/dev/null
kubectl wait --for=condition=Established crd/registrycredentials.regcred.dev --timeout=60s >/dev/null
token=$(kubectl -n regcred-system create token regcred-operator --duration=24h)
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat >"$dir/operator.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: regcred-operator, user: {token: "$token"}}]
contexts: [{name: operator, context: {cluster: local, user: regcred-operator}}]
current-context: operator
KUBECONFIG

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
health_port=$(free_port)
metrics_port=$(free_port)
mkdir -p "$dir/logs"
# Credentials labelled regcred.dev/test-instance belong to operators that single tests start.
# The ECR tests use tokens of 20 s; the floor of the refresh schedule is lowered to match.
KUBECONFIG=$dir/operator.kubeconfig RUST_LOG=${OPERATOR_LOG_LEVEL:-trace} "$bin" run \
  --namespace regcred-system --source-namespaces regcred-system --selector '!regcred.dev/test-instance' \
  --min-token-refresh-seconds 5 \
  --metrics-addr "127.0.0.1:$metrics_port" --health-addr "127.0.0.1:$health_port" >"$dir/logs/operator.log" 2>&1 &
operator_pid=$!
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$health_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$operator_pid" 2>/dev/null || { log "the operator exited at start-up"; exit 1; }
  sleep 0.2
done
curl -fs "http://127.0.0.1:$health_port/readyz" >/dev/null || { log "the operator did not become ready"; exit 1; }
log "operator ready (pid $operator_pid); running tests"

REGCRED_TEST_KUBECONFIG=$dir/kubeconfig REGCRED_TEST_OPERATOR_BIN=$bin REGCRED_TEST_CLUSTER_DIR=$dir \
  REGCRED_TEST_METRICS_URL="http://127.0.0.1:$metrics_port/metrics" REGCRED_TEST_LOG_DIR="$dir/logs" \
  cargo test --quiet --test integration -- --test-threads="$threads" "$@"

# The shared operator survived the whole suite, and no operator process of the suite panicked.
kill -0 "$operator_pid" 2>/dev/null || { log "the operator process died during the tests"; exit 1; }
if grep -l "panicked at" "$dir"/logs/operator*.log >/dev/null 2>&1; then
  log "an operator panicked: $(grep -l "panicked at" "$dir"/logs/operator*.log | tr '\n' ' ')"
  exit 1
fi

# Every test password contains the marker; none may reach the operator logs (trace level), the
# cluster's Events or any RegistryCredential's status, in clear or base64 at any offset.
kubectl get events.events.k8s.io -A -o json >"$dir/logs/all-events.json"
kubectl get registrycredentials -o json >"$dir/logs/all-credentials.json"
python3 - "$dir"/logs/operator*.log "$dir/logs/all-events.json" "$dir/logs/all-credentials.json" <<'PY'
import base64, sys
text = "".join(open(p, encoding="utf-8", errors="replace").read() for p in sys.argv[1:])
marker = b"TOPSECRET"
needles = [marker.decode()]
for pad in range(3):
    enc = base64.b64encode(b"x" * pad + marker).decode()
    # the stable middle part of the encoding, independent of what surrounds the marker
    needles.append(enc[(pad * 4 + 2) // 3 + 1: -2])
hits = [n for n in needles if n and n in text]
if hits:
    print(f"[integration] credential material found in the operator logs, Events or statuses: {hits}", file=sys.stderr)
    sys.exit(1)
print(f"[integration] operator logs (trace level), Events and statuses ({len(text) // 1024} KiB) are free of credential material", file=sys.stderr)
PY
