#!/usr/bin/env bash
# `make bench`: the benchmark on a dedicated local control plane with an audit log, the operator in
# its own process under deploy/'s identity, and the driver in benches/regcred/. Results:
# target/bench/results.json and a table on stdout.
#   OPERATOR_ARGS (extra flags for the operator), N=1000 (namespaces), N_SCALE=3000 (scaling run; 0 skips), UNRELATED=2000 (unrelated 256 KiB
#   Secrets for the memory scenario), PODS=2000 (Pending pods for the podRecovery memory scenario), IDLE_SECONDS=60, ONBOARD=200,
#   ROTATION_PAIRS=3 (operator and floor rotations, interleaved; the ratio is their median),
#   FANOUT_PAIRS=3 (the same for the fan-out; both are undone between pairs).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BENCH_CLUSTER_DIR:-$PWD/target/bench-cluster}
out=$PWD/target/bench
mkdir -p "$dir" "$out"
operator_pid=

cleanup() {
  local rc=$?
  [ -n "$operator_pid" ] && kill -TERM "$operator_pid" 2>/dev/null && sleep 1
  tests/controlplane/cluster.sh down "$dir" >/dev/null 2>&1 || true
  [ $rc -ne 0 ] && echo "[bench] failed; logs in $dir/logs" >&2
  exit $rc
}
trap cleanup EXIT INT TERM

hack/install-deps.sh
PATH="$(tests/controlplane/build.sh | tail -n1):$PATH"
export PATH
echo "[bench] building (release)" >&2
cargo build --release --locked --bin regcred-operator --quiet
driver=$(cargo bench --bench regcred --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "regcred" and m.get("executable"):
        print(m["executable"])')

tests/controlplane/cluster.sh down "$dir" >/dev/null 2>&1 || true
rm -f "$dir/audit.log"
APISERVER_EXTRA_ARGS="--audit-policy-file=$PWD/benches/audit-policy.yaml --audit-log-path=$dir/audit.log --audit-log-format=json --audit-log-maxsize=0 --audit-log-mode=batch --audit-log-batch-max-wait=1s" \
  tests/controlplane/cluster.sh up "$dir"
export KUBECONFIG=$dir/kubeconfig
kubectl apply -k deploy/ >/dev/null
kubectl wait --for=condition=Established crd/registrycredentials.regcred.dev --timeout=60s >/dev/null

# Two identities: the operator (deploy/'s RBAC) and the floor client (same priority level: both are
# ServiceAccounts, so API Priority and Fairness treats them alike).
kubectl -n regcred-system create serviceaccount bench-floor >/dev/null
kubectl create clusterrolebinding bench-floor --clusterrole=cluster-admin --serviceaccount=regcred-system:bench-floor >/dev/null
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
kubeconfig_for() { # sa, file
  local token
  token=$(kubectl -n regcred-system create token "$1" --duration=24h)
  printf 'apiVersion: v1\nkind: Config\nclusters: [{name: l, cluster: {server: "%s", certificate-authority-data: "%s"}}]\nusers: [{name: u, user: {token: "%s"}}]\ncontexts: [{name: c, context: {cluster: l, user: u}}]\ncurrent-context: c\n' "$server" "$ca" "$token" >"$2"
}
kubeconfig_for regcred-operator "$dir/operator.kubeconfig"
kubeconfig_for bench-floor "$dir/floor.kubeconfig"

mkdir -p "$dir/logs"
KUBECONFIG=$dir/operator.kubeconfig RUST_LOG=info target/release/regcred-operator run \
  --namespace regcred-system --source-namespaces regcred-system \
  --metrics-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 ${OPERATOR_ARGS:-} >"$dir/logs/operator.log" 2>&1 &
operator_pid=$!
# The operator's metrics address (it binds port 0): the driver reads its sync-pass counters.
for _ in $(seq 1 100); do
  metrics_addr=$(sed -n 's/.*metrics_addr=\([0-9.:]*\).*/\1/p' "$dir/logs/operator.log" | head -n1)
  [ -n "$metrics_addr" ] && break
  sleep 0.1
done

BENCH_ADMIN_KUBECONFIG=$dir/kubeconfig BENCH_FLOOR_KUBECONFIG=$dir/floor.kubeconfig \
  BENCH_OPERATOR_PID=$operator_pid BENCH_AUDIT_LOG=$dir/audit.log BENCH_OUT=$out \
  BENCH_METRICS_URL="http://${metrics_addr:-127.0.0.1:1}/metrics" \
  BENCH_OPERATOR_USER=system:serviceaccount:regcred-system:regcred-operator \
  BENCH_FLOOR_USER=system:serviceaccount:regcred-system:bench-floor \
  "$driver"
