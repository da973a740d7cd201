#!/usr/bin/env bash
# Starts and stops a local one-node Kubernetes cluster: etcd, kube-apiserver and kube-controller-manager,
# and a node (containerd 2.x with runc and CNI, a kubelet) with a private registry beside it (node.sh),
# all built from Go modules by build.sh. Admission stays on (including the ServiceAccount plugin, which
# copies a ServiceAccount's imagePullSecrets into new pods), authorization is Node and RBAC, the admin
# authenticates with a client certificate, and ServiceAccount tokens (TokenRequest) work.
#
#   cluster.sh up   [DIR]   start (idempotent), write DIR/kubeconfig; DIR defaults to .cluster
#   cluster.sh down [DIR]   stop exactly the processes recorded in DIR/pids, by PID, and remove the node's
#                           pods, mounts, bridge and cgroups
#   cluster.sh status [DIR]
#   cluster.sh restart-apiserver [DIR]   stop kube-apiserver and start it again with the same command
#                                        line and port (fault tests); etcd and its data stay
#
# Environment:
#   APISERVER_PORT, ETCD_PORT    fixed ports instead of free ones (a taken port fails fast)
#   CONTROLLER_MANAGER=0         start no kube-controller-manager
#   NODE=0                       start no node and no registry (a control plane only)
#   REGISTRY_PORT                fixed port for the registry; REGISTRY_PASSWORD its password (default: random)
#
# With a node, `up` also writes DIR/registry.env: REGISTRY (host:port), REGISTRY_USERNAME,
# REGISTRY_PASSWORD, REGISTRY_CA, IMAGE (a runnable image in it), REGISTRY_HOSTS_DIR (containerd's
# registry config directory) and NODE (the node's name).
#   APISERVER_EXTRA_ARGS         extra kube-apiserver flags (e.g. an audit log for the benchmark)
#   READY_TIMEOUT                seconds to wait for readiness (default 90)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmd=${1:-}
dir=${2:-.cluster}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

log() { echo "[cluster] $*" >&2; }
die() {
  echo "[cluster] error: $*" >&2
  exit 1
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stops one recorded process by its PID; SIGKILL after a grace period.
stop_pid() { # name
  local pidfile="$dir/pids/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$pidfile"
}

# In the current directory: a CA (ca.key, ca.crt) named CN (also used by node.sh).
new_ca() { # cn
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt -subj "/CN=$1" 2>/dev/null
}

# In the current directory: NAME.key and NAME.crt for SUBJECT, signed by ca.key, with the given
# extension lines (NAME.csr and NAME.ext are left for the caller to remove; also used by node.sh).
signed_cert() { # name subject extension...
  local name=$1 subject=$2
  shift 2
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" 2>/dev/null
  printf '%s\n' "$@" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
}

# shellcheck source=tests/controlplane/node.sh
. "$here/node.sh"

# Stops every process this cluster directory recorded, the node first; SIGKILL after a grace period.
stop_all() {
  if [ -d "$dir/node" ] || [ -f "$dir/pids/kubelet.pid" ] || [ -f "$dir/pids/registry.pid" ]; then
    node_cleanup
  fi
  for name in kube-controller-manager kube-apiserver etcd; do
    stop_pid $name
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_taken() {
  python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$1"
}

pick_port() { # env var name
  local fixed=${!1:-}
  if [ -n "$fixed" ]; then
    port_taken "$fixed" && die "port $fixed (from $1) is already in use on 127.0.0.1: stop what uses it ('ss -ltnp | grep :$fixed') or unset $1 to pick a free port."
    echo "$fixed"
  else
    free_port
  fi
}

# Fails with the tail of the process's log if it exits while we wait for it.
wait_for() { # name, pidfile, check command...
  local name=$1 pidfile=$2 deadline=$((SECONDS + ${READY_TIMEOUT:-90}))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$pidfile"; then
      echo "[cluster] error: $name exited during start-up; last lines of $dir/logs/$name.log:" >&2
      tail -n 25 "$dir/logs/$name.log" >&2 || true
      stop_all
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "[cluster] error: $name not ready after ${READY_TIMEOUT:-90}s; last lines of $dir/logs/$name.log:" >&2
      tail -n 25 "$dir/logs/$name.log" >&2 || true
      stop_all
      exit 1
    fi
    sleep 0.3
  done
}

gen_pki() {
  local pki=$dir/pki
  [ -f "$pki/.done" ] && return 0
  command -v openssl >/dev/null || die "openssl is not installed: apt-get install -y openssl"
  mkdir -p "$pki"
  (
    cd "$pki"
    new_ca regcred-test-ca
    signed_cert apiserver /CN=kube-apiserver \
      subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc \
      extendedKeyUsage=serverAuth
    signed_cert admin /O=system:masters/CN=admin extendedKeyUsage=clientAuth
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
    touch .done
  )
}

write_kubeconfig() { # port
  local pki=$dir/pki
  cat >"$dir/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: regcred-local
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: regcred-local
  context: {cluster: regcred-local, user: admin}
current-context: regcred-local
EOF
  mv "$dir/kubeconfig.tmp" "$dir/kubeconfig"
}

api() { # path
  curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:$(cat "$dir/apiserver.port")$1"
}

# Readiness: /readyz is OK and, when the controller manager runs, a new namespace gets its default
# ServiceAccount (the serviceaccount controller is working).
check_ready() {
  api /readyz >/dev/null || return 1
  [ "${CONTROLLER_MANAGER:-1}" = 0 ] && return 0
  local ns
  ns="readiness-$(date +%s%N)"
  api_post /api/v1/namespaces "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\"}}" >/dev/null
  local deadline=$((SECONDS + ${READY_TIMEOUT:-90})) ok=1
  until api "/api/v1/namespaces/$ns/serviceaccounts/default" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! pid_alive "$dir/pids/kube-controller-manager.pid"; then ok=0; break; fi
    sleep 0.2
  done
  curl -fsS --max-time 5 -X DELETE --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:$(cat "$dir/apiserver.port")/api/v1/namespaces/$ns" >/dev/null || true
  if [ $ok = 0 ]; then
    echo "[cluster] error: the default ServiceAccount never appeared in a new namespace; last lines of $dir/logs/kube-controller-manager.log:" >&2
    tail -n 25 "$dir/logs/kube-controller-manager.log" >&2 || true
    return 2
  fi
}

api_post() { # path, json
  curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' -d "$2" --cacert "$dir/pki/ca.crt" \
    --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" "https://127.0.0.1:$(cat "$dir/apiserver.port")$1"
}

start() { # name, command...
  local name=$1
  shift
  # setsid: the process outlives this script but not a `cluster.sh down`; its own session so that a
  # Ctrl-C in the calling terminal does not take it down half-way. A restart appends to the log.
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name.pid"
  log "started $name (pid $!)"
}

up() {
  if pid_alive "$dir/pids/kube-apiserver.pid" && pid_alive "$dir/pids/etcd.pid" &&
    { [ "${CONTROLLER_MANAGER:-1}" = 0 ] || pid_alive "$dir/pids/kube-controller-manager.pid"; } &&
    { [ "${NODE:-1}" = 0 ] || { pid_alive "$dir/pids/kubelet.pid" && pid_alive "$dir/pids/containerd.pid" &&
      pid_alive "$dir/pids/registry.pid"; }; } &&
    api /readyz >/dev/null 2>&1; then
    log "already running: export KUBECONFIG=$dir/kubeconfig"
    return 0
  fi
  stop_all # leftovers of a half-started or crashed cluster

  for tool in curl python3 openssl setsid; do
    command -v $tool >/dev/null || die "$tool is not installed (apt-get install -y curl python3 openssl util-linux)."
  done
  local bin
  bin=$("$here/build.sh" | tail -n1) || die "building the control plane failed (see above)."
  mkdir -p "$dir/logs" "$dir/pids"
  rm -f "$dir"/logs/*
  gen_pki

  local etcd_port peer_port api_port
  etcd_port=$(pick_port ETCD_PORT)
  peer_port=$(free_port)
  api_port=$(pick_port APISERVER_PORT)
  echo "$api_port" >"$dir/apiserver.port"
  echo "$etcd_port" >"$dir/etcd.port"

  rm -rf "$dir/etcd-data"
  start etcd "$bin/etcd" --name=regcred-test --data-dir="$dir/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="regcred-test=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn
  wait_for etcd "$dir/pids/etcd.pid" curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health"

  # shellcheck disable=SC2086 # APISERVER_EXTRA_ARGS is a list of flags
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --secure-port="$api_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --cert-dir="$dir/apiserver-certs" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --kubelet-client-certificate="$dir/pki/admin.crt" --kubelet-client-key="$dir/pki/admin.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    ${APISERVER_EXTRA_ARGS:-}
  wait_for kube-apiserver "$dir/pids/kube-apiserver.pid" api /readyz
  write_kubeconfig "$api_port"

  if [ "${CONTROLLER_MANAGER:-1}" != 0 ]; then
    start kube-controller-manager "$bin/kube-controller-manager" \
      --kubeconfig="$dir/kubeconfig" --leader-elect=false --secure-port=0 \
      --controllers=serviceaccount-controller,garbage-collector-controller,namespace-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller,deployment-controller,replicaset-controller \
      --root-ca-file="$dir/pki/ca.crt"
  fi
  local rc=0
  check_ready || rc=$?
  if [ $rc -ne 0 ]; then
    stop_all
    exit 1
  fi
  [ "${NODE:-1}" = 0 ] || node_up "$bin"
  log "ready: export KUBECONFIG=$dir/kubeconfig"
}

restart_apiserver() {
  local pidfile=$dir/pids/kube-apiserver.pid pid
  pid_alive "$pidfile" || die "kube-apiserver is not running in $dir"
  pid=$(cat "$pidfile")
  local -a args
  mapfile -d '' args <"/proc/$pid/cmdline"
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  log "stopped kube-apiserver (pid $pid)"
  start kube-apiserver "${args[@]}"
  wait_for kube-apiserver "$pidfile" api /readyz
  log "kube-apiserver ready again"
}

case "$cmd" in
up) up ;;
down)
  stop_all
  log "down ($dir)"
  ;;
status)
  for name in etcd kube-apiserver kube-controller-manager registry containerd kubelet; do
    if pid_alive "$dir/pids/$name.pid"; then echo "$name: running (pid $(cat "$dir/pids/$name.pid"))"; else echo "$name: stopped"; fi
  done
  ;;
restart-apiserver) restart_apiserver ;;
*) die "usage: $0 up|down|status|restart-apiserver [DIR]" ;;
esac
