#!/usr/bin/env bash
# `make demo`: a local control plane, the CRD, the examples, the operator, and what it did.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-$PWD/.cluster}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting the local cluster: control plane, node, private registry (the first run builds it from Go modules: 20-40 minutes)"
tests/controlplane/cluster.sh up "$dir"
PATH="$(tests/controlplane/build.sh 2>/dev/null | tail -n1):$PATH"
export KUBECONFIG=$dir/kubeconfig

say "installing the CRD"
target/debug/regcred-operator crd | kubectl apply -f -
kubectl wait --for=condition=Established crd/registrycredentials.regcred.dev --timeout=60s

say "source Secrets in regcred-system and three namespaces"
kubectl create namespace regcred-system --dry-run=client -o yaml | kubectl apply -f -
kubectl -n regcred-system create secret docker-registry acme-pull --docker-server=registry.acme.example \
  --docker-username=robot --docker-password=demo-password --dry-run=client -o yaml | kubectl apply -f -
kubectl -n regcred-system create secret generic ghcr-token --from-literal=token=demo-token \
  --dry-run=client -o yaml | kubectl apply -f -
for ns in team-a team-b payments; do kubectl create namespace $ns --dry-run=client -o yaml | kubectl apply -f -; done
kubectl label namespace team-a team-b pull-from-acme=true --overwrite
kubectl label namespace team-b pull-from-ghcr=true --overwrite

say "applying examples/"
kubectl apply -f examples/

say "running the operator (log: $dir/logs/operator.log)"
mkdir -p "$dir/logs"
target/debug/regcred-operator run --metrics-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 >"$dir/logs/operator.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
kubectl wait --for=condition=Ready registrycredential/acme registrycredential/ghcr-bot --timeout=120s

say "what it did"
kubectl get registrycredentials
kubectl get secrets -A -l app.kubernetes.io/managed-by=regcred-operator
kubectl get serviceaccounts -A -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,IMAGE PULL SECRETS:.imagePullSecrets[*].name' \
  | grep -E 'NAMESPACE|team-|payments'

say "a pod created in team-b gets both pull secrets from its ServiceAccount"
kubectl -n team-b run demo --image=registry.acme.example/app:1.0 --restart=Never --dry-run=server -o jsonpath='{.spec.imagePullSecrets}'
echo

say "doctor: would a pod in team-a pull registry.acme.example/app?"
kubectl -n team-a delete pod demo --ignore-not-found >/dev/null
kubectl -n team-a run demo --image=registry.acme.example/app:1.0 --restart=Never >/dev/null
target/debug/regcred-operator doctor pod/demo -n team-a || true

say "a real pull: the cluster's private registry ($dir/registry.env), onboarded by a RegistryCredential"
# shellcheck disable=SC1091 # written by cluster.sh up
. "$dir/registry.env"
kubectl -n regcred-system create secret docker-registry local-pull --docker-server="$REGISTRY" \
  --docker-username="$REGISTRY_USERNAME" --docker-password="$REGISTRY_PASSWORD" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f - <<YAML
apiVersion: regcred.dev/v1alpha1
kind: RegistryCredential
metadata:
  name: local
spec:
  source:
    secretRef: {namespace: regcred-system, name: local-pull}
  namespaceSelector:
    matchLabels: {pull-from-local: "true"}
YAML
kubectl create namespace team-c --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace team-a pull-from-local=true --overwrite
kubectl wait --for=condition=Ready registrycredential/local --timeout=120s
until kubectl -n team-a get serviceaccount default -o jsonpath='{.imagePullSecrets[*].name}' | grep -qw local; do sleep 0.5; done
# There is no scheduler: the pods name the node.
for ns in team-a team-c; do
  kubectl -n "$ns" delete pod sleeper --ignore-not-found --wait=true >/dev/null
  kubectl -n "$ns" run sleeper --image="$IMAGE" --restart=Never --overrides="{\"spec\":{\"nodeName\":\"$NODE\"}}" >/dev/null
done
kubectl -n team-a wait --for=condition=Ready pod/sleeper --timeout=180s
deadline=$((SECONDS + 180))
until kubectl -n team-c get pod sleeper -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}' | grep -qE 'ErrImagePull|ImagePullBackOff'; do
  [ $SECONDS -lt $deadline ] || { echo "team-c/sleeper did not fail to pull within 180s" >&2; exit 1; }
  sleep 1
done
echo "team-a is selected by RegistryCredential local, team-c is not:"
kubectl get pods -A -l run=sleeper -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,IMAGE:.spec.containers[0].image,PULL SECRETS:.spec.imagePullSecrets[*].name,STATE:.status.containerStatuses[0].state.*.reason,PHASE:.status.phase'

say "doctor: why does team-c/sleeper not start?"
target/debug/regcred-operator doctor pod/sleeper -n team-c || true

say "done: the operator stopped; the cluster keeps running ('make cluster-down' stops it)"
echo "  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$(command -v kubectl)"):\$PATH"
