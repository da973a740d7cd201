# shellcheck shell=bash
# The node of the local cluster, sourced by cluster.sh: a private registry (Debian's docker-registry,
# TLS from its own CA, htpasswd, 127.0.0.1 only) holding a small image, containerd 2.x with runc and
# the CNI bridge plugin, and a kubelet registered as node $NODE_NAME. Everything lives under
# $dir/node and $dir/registry; processes are recorded in $dir/pids like the control plane's.
#
# Host-global state is kept to what a kubelet cannot do without, each piece named after the cluster
# directory so that several clusters can run side by side and `down` removes exactly its own:
#   - a cgroup /regcred-<id> in each cgroup v1 hierarchy (the kubelet's cgroupRoot),
#   - a Linux bridge rcn<id> without an address (pods get a network; the host does not route to it),
#   - the kubelet's symlinks in /var/log/containers (a fixed path in the kubelet) to our pod logs.
# The kubelet sets the kernel parameters it requires (vm.overcommit_memory=1, kernel.panic=10,
# kernel.panic_on_oops=1), as on every Kubernetes node.
#
# There is no scheduler: pods that should run name the node (`spec.nodeName`); every other pod stays
# Pending, as pods did before the cluster had a node.

NODE_NAME=regcred-node
# Pods of the cluster's own image run this; it exits at once on SIGTERM.
SLEEPER_CMD='trap "exit 0" TERM INT; while :; do sleep 1; done'

node_id() { printf %s "$dir" | sha256sum | cut -c1-6; }
node_dir() { echo "$dir/node"; }

# Every mount point below the cluster directory, deepest first.
mounts_below() {
  awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# Removes what the node left behind: pod sandboxes (through CRI, which also runs CNI DEL and
# unmounts), then stray shims, mounts, the bridge, the cgroups and the log symlinks. Runs with
# containerd still up (for CRI) and stops it afterwards.
node_cleanup() {
  local nd id pid f
  nd=$(node_dir)
  id=$(node_id)
  stop_pid kubelet
  if pid_alive "$dir/pids/containerd.pid" && [ -x "$nd/bin/crictl" ]; then
    timeout 60 "$nd/bin/crictl" --config "$nd/crictl.yaml" rmp -fa >/dev/null 2>&1 ||
      log "warning: crictl rmp -fa failed; removing what is left by hand"
  fi
  stop_pid containerd
  # Shims (and their containers) that outlived containerd: their PIDs are in containerd's state.
  if [ -d "$nd/state" ]; then
    for f in "$nd"/state/io.containerd.runtime.v2.task/*/*/init.pid "$nd"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
      [ -f "$f" ] || continue
      pid=$(cat "$f" 2>/dev/null) || continue
      [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  local m
  while read -r m; do
    [ -n "$m" ] && umount -l "$m" 2>/dev/null || true
  done < <(mounts_below)
  ip link show "rcn$id" >/dev/null 2>&1 && ip link del "rcn$id" 2>/dev/null || true
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h/regcred-$id" ] || continue
    for _ in $(seq 1 50); do
      find "$h/regcred-$id" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$h/regcred-$id" ] || break
      sleep 0.1
    done
  done
  if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$nd/pod-logs/*" -delete 2>/dev/null || true
  fi
  stop_pid registry
  rm -f "$dir/registry.env"
}

# A busybox-static OCI image with one command: <layout dir> <tag> <command for sh -c>.
build_busybox_image() {
  local layout=$1 tag=$2 cmd=$3 rootfs
  rootfs=$(mktemp -d "$dir/node/rootfs.XXXXXX")
  mkdir -p "$rootfs/bin" "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in sh sleep true cat echo ls; do ln -s busybox "$rootfs/bin/$applet"; done
  [ -d "$layout" ] || umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci insert --image "$layout:$tag" "$rootfs" / >/dev/null
  umoci config --image "$layout:$tag" --config.entrypoint /bin/sh --config.entrypoint -c \
    --config.cmd "$cmd" --config.env PATH=/bin --config.workingdir /
  rm -rf "$rootfs"
}

gen_registry_pki() {
  local r=$dir/registry
  [ -f "$r/pki/.done" ] && return 0
  mkdir -p "$r/pki"
  (
    cd "$r/pki"
    new_ca regcred-local-registry-ca
    signed_cert tls /CN=127.0.0.1 subjectAltName=IP:127.0.0.1,DNS:localhost extendedKeyUsage=serverAuth
    rm -f tls.csr tls.ext
    mkdir -p certs && cp ca.crt certs/ca.crt # skopeo's --cert-dir layout
    touch .done
  )
}

gen_node_pki() {
  local pki=$dir/pki
  [ -f "$pki/node.crt" ] && return 0
  (
    cd "$pki"
    openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj "/O=system:nodes/CN=system:node:$NODE_NAME" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >node.ext
    openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile node.ext -out node.crt 2>/dev/null
    rm -f node.csr node.ext
  )
}

# hosts.toml making containerd trust a registry's CA: <hosts dir> <host:port> <ca file>.
trust_registry() {
  mkdir -p "$1/$2"
  cat >"$1/$2/hosts.toml" <<EOF
server = "https://$2"

[host."https://$2"]
  capabilities = ["pull", "resolve"]
  ca = "$3"
EOF
}

registry_up() { # bin dir
  local r=$dir/registry port user=regcred password
  for tool in docker-registry htpasswd skopeo umoci; do
    command -v $tool >/dev/null || die "$tool is not installed: run hack/install-deps.sh (or make deps)."
  done
  gen_registry_pki
  rm -rf "$r/data"
  mkdir -p "$r/data"
  port=$(pick_port REGISTRY_PORT)
  password=${REGISTRY_PASSWORD:-regcred-$(openssl rand -hex 12)}
  (umask 077 && htpasswd -Bbn "$user" "$password" >"$r/htpasswd")
  cat >"$r/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $r/data}, delete: {enabled: true}}
http:
  addr: 127.0.0.1:$port
  tls: {certificate: $r/pki/tls.crt, key: $r/pki/tls.key}
auth:
  htpasswd: {realm: regcred-local, path: $r/htpasswd}
EOF
  start registry docker-registry serve "$r/config.yml"
  wait_for registry "$dir/pids/registry.pid" curl -sS --max-time 2 -o /dev/null --cacert "$r/pki/ca.crt" "https://127.0.0.1:$port/v2/"

  local nd image
  nd=$(node_dir)
  image=127.0.0.1:$port/regcred/sleeper:1
  rm -rf "$nd/images"
  mkdir -p "$nd/images"
  build_busybox_image "$nd/images/oci" sleeper "$SLEEPER_CMD"
  (umask 077 && printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}' "$port" "$(printf '%s:%s' "$user" "$password" | base64 -w0)" >"$r/auth.json")
  skopeo copy --quiet --dest-authfile "$r/auth.json" --dest-cert-dir "$r/pki/certs" \
    "oci:$nd/images/oci:sleeper" "docker://$image" || die "pushing $image to the local registry failed"
  rm -f "$r/auth.json"

  trust_registry "$nd/certs.d" "127.0.0.1:$port" "$r/pki/ca.crt"
  q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
  (
    umask 077
    {
      echo "# The local cluster's private registry (written by tests/controlplane/cluster.sh up)."
      echo "REGISTRY=$(q "127.0.0.1:$port")"
      echo "REGISTRY_USERNAME=$(q "$user")"
      echo "REGISTRY_PASSWORD=$(q "$password")"
      echo "REGISTRY_CA=$(q "$r/pki/ca.crt")"
      echo "IMAGE=$(q "$image")"
      echo "# containerd's registry config (config_path): a <host:port>/hosts.toml here makes the node trust a registry."
      echo "REGISTRY_HOSTS_DIR=$(q "$nd/certs.d")"
      echo "NODE=$(q "$NODE_NAME")"
    } >"$dir/registry.env.tmp"
  )
  mv "$dir/registry.env.tmp" "$dir/registry.env"
  log "registry on 127.0.0.1:$port with $image (credentials in $dir/registry.env)"
}

node_ready() {
  api "/api/v1/nodes/$NODE_NAME" | python3 -c 'import json,sys
n = json.load(sys.stdin)
ok = any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
sys.exit(0 if ok else 1)'
}

node_up() { # bin dir
  local bin=$1 nd id runc_bin
  nd=$(node_dir)
  id=$(node_id)
  command -v runc >/dev/null || die "runc is not installed: run hack/install-deps.sh (or apt-get install -y runc)."
  runc_bin=$(command -v runc)
  [ "$(id -u)" = 0 ] || die "the node (kubelet, containerd) needs root; run as root or set NODE=0 for a cluster without a node."
  [ -x /bin/busybox ] || die "busybox-static is not installed: run hack/install-deps.sh (or apt-get install -y busybox-static)."

  rm -rf --one-file-system "$nd"
  mkdir -p "$nd"/{bin,root,state,certs.d,cni/net.d,cni/ipam,kubelet,kubelet-certs,pod-logs,volume-plugins,opt}
  ln -s "$bin/crictl" "$nd/bin/crictl"
  printf 'runtime-endpoint: unix://%s/containerd.sock\nimage-endpoint: unix://%s/containerd.sock\ntimeout: 20\n' "$nd" "$nd" >"$nd/crictl.yaml"
  registry_up "$bin"

  # The kubelet's cgroupRoot must exist in every hierarchy; a new cpuset starts empty.
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -f "$h/cgroup.procs" ] || continue
    mkdir -p "$h/regcred-$id"
    if [ -f "$h/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" >"$h/regcred-$id/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/regcred-$id/cpuset.mems"
    fi
  done

  # Pods get an address on a bridge that carries no host address: nothing is routed or forwarded.
  local octet=$(( 0x${id:0:2} ))
  cat >"$nd/cni/net.d/10-regcred.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "regcred-$id",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "rcn$id",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.213.$octet.0/24"}]], "dataDir": "$nd/cni/ipam"}
    }
  ]
}
EOF

  cat >"$nd/containerd.toml" <<EOF
version = 3
root = "$nd/root"
state = "$nd/state"
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.differ.v1.erofs", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$nd/containerd.sock"

[ttrpc]
  address = "$nd/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "localhost/regcred/pause:1"
    [plugins."io.containerd.cri.v1.images".registry]
      config_path = "$nd/certs.d"

  [plugins."io.containerd.cri.v1.runtime"]
    netns_mounts_under_state_dir = true
    # Processes here lack CAP_SYS_RESOURCE: never ask for an oom_score_adj below containerd's own.
    restrict_oom_score_adj = true
    cdi_spec_dirs = []
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          BinaryName = "$runc_bin"
          Root = "$nd/state/runc"
          SystemdCgroup = false
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["$bin/cni"]
      conf_dir = "$nd/cni/net.d"

  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"

  [plugins."io.containerd.transfer.v1.local"]
    config_path = "$nd/certs.d"

  [plugins."io.containerd.internal.v1.opt"]
    path = "$nd/opt"
EOF
  # The shim is looked up on PATH.
  PATH="$bin:$PATH" start containerd "$bin/containerd" --config "$nd/containerd.toml"
  wait_for containerd "$dir/pids/containerd.pid" "$bin/crictl" --config "$nd/crictl.yaml" --timeout 2s version

  # The pod sandbox image, built here (nothing is downloaded) and imported as containerd's pinned one.
  build_busybox_image "$nd/images/oci" pause 'trap "exit 0" TERM INT; sleep 2147483647 & wait'
  skopeo copy --quiet "oci:$nd/images/oci:pause" "docker-archive:$nd/images/pause.tar:localhost/regcred/pause:1"
  "$bin/ctr" --address "$nd/containerd.sock" -n k8s.io images import "$nd/images/pause.tar" >/dev/null 2>>"$dir/logs/containerd.log" ||
    die "importing the pause image into containerd failed"

  kubelet_up "$bin"
}

kubelet_up() { # bin dir
  local bin=$1 nd id
  nd=$(node_dir)
  id=$(node_id)
  gen_node_pki
  local pki=$dir/pki port healthz
  port=$(free_port)
  healthz=$(free_port)
  cat >"$nd/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: regcred-local
  cluster:
    server: https://127.0.0.1:$(cat "$dir/apiserver.port")
    certificate-authority: $pki/ca.crt
users:
- name: kubelet
  user:
    client-certificate: $pki/node.crt
    client-key: $pki/node.key
contexts:
- name: kubelet
  context: {cluster: regcred-local, user: kubelet}
current-context: kubelet
EOF
  cat >"$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$nd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /regcred-$id
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failCgroupV1: false
failSwapOn: false
podLogsDir: $nd/pod-logs
volumePluginDir: $nd/volume-plugins
resolvConf: /etc/resolv.conf
serializeImagePulls: false
maxPods: 50
evictionHard: {memory.available: 1%, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
EOF
  start kubelet "$bin/kubelet" --config="$nd/kubelet.yaml" --kubeconfig="$nd/kubelet.kubeconfig" \
    --root-dir="$nd/kubelet" --cert-dir="$nd/kubelet-certs" --hostname-override="$NODE_NAME" --v=2
  local start_s=$SECONDS
  wait_for kubelet "$dir/pids/kubelet.pid" node_ready
  log "node $NODE_NAME Ready after $((SECONDS - start_s))s (kubelet on 127.0.0.1:$port)"
}
