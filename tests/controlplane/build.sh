#!/usr/bin/env bash
# Builds the local cluster from the Go modules in tests/controlplane/: the control plane (kube-apiserver,
# kube-controller-manager, etcd, and a kubectl of the same version), the node (a kubelet from the same
# Kubernetes module, containerd 2.x with its runc shim and ctr, the CNI plugins bridge, host-local and
# loopback, and crictl) and helm (to check the chart). The binaries are cached outside the repository,
# keyed by version, so that only the first run pays the cold build (about 20-40 minutes on 2 cores).
#
# Prints the directory holding the binaries on its last line of stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${REGCRED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/regcred-operator}

log() { echo "[controlplane] $*" >&2; }
die() { echo "[controlplane] error: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 ||
  die "Go is not installed or not on PATH. Install Go >= 1.26 (e.g. 'apt-get install golang-1.26' or from go.dev) and rerun."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
go_patch=$(go env GOVERSION | sed -E 's/^go1\.[0-9]+\.?([0-9]*).*/\1/')
{ [ "${go_minor:-0}" -gt 26 ] || { [ "${go_minor:-0}" -eq 26 ] && [ "${go_patch:-0}" -ge 6 ]; }; } 2>/dev/null ||
  die "Go $(go env GOVERSION) is too old: Kubernetes v1.36 needs Go >= 1.26, containerd v2.4 and crictl v1.37 need Go >= 1.26.6."

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

module_version() { # module dir, module path
  sed -n "s#^[[:space:]]*\(require \)\{0,1\}$2 \(v[^ ]*\).*#\2#p" "$1/go.mod" | head -n1
}

# build_tools <module dir> <cache dir> <package>...
build_tools() {
  local dir=$1 out=$2; shift 2
  local missing=()
  for pkg in "$@"; do
    local bin=${pkg##*/}
    [ "$bin" = v3 ] && bin=etcd
    [ -x "$out/$bin" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && { log "cached: $out"; return 0; }
  mkdir -p "$out"
  log "downloading modules for $(basename "$dir") (first run only) ..."
  (cd "$dir" && go mod download) || die "downloading Go modules for $dir failed: check network access to the Go module proxy ($(go env GOPROXY))."
  for pkg in "${missing[@]}"; do
    local bin=${pkg##*/}
    [ "$bin" = v3 ] && bin=etcd
    log "building $bin (cold builds take several minutes on 2 cores) ..."
    local start=$SECONDS
    # A ticker so that a long compile does not look like a hang.
    ( while sleep 60; do log "  ... still building $bin ($(( (SECONDS - start) / 60 )) min)"; done ) &
    local ticker=$!
    if ! (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$out/$bin.tmp" "$pkg"); then
      kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
      rm -f "$out/$bin.tmp"
      die "building $pkg failed (see the compiler output above)."
    fi
    kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
    mv "$out/$bin.tmp" "$out/$bin"
    log "built $bin in $(( SECONDS - start ))s"
  done
}

k8s_version=$(module_version "$here/k8s" k8s.io/kubernetes)
etcd_version=$(module_version "$here/etcd" go.etcd.io/etcd/server/v3)
helm_version=$(module_version "$here/helm" helm.sh/helm/v3)
containerd_version=$(module_version "$here/containerd" github.com/containerd/containerd/v2)
cni_version=$(module_version "$here/cni" github.com/containernetworking/plugins)
crictl_version=$(module_version "$here/cri-tools" sigs.k8s.io/cri-tools)
for v in "$k8s_version" "$etcd_version" "$helm_version" "$containerd_version" "$cni_version" "$crictl_version"; do
  [ -n "$v" ] || die "cannot read versions from $here/{k8s,etcd,helm,containerd,cni,cri-tools}/go.mod"
done
k8s_out="$cache_root/k8s-$k8s_version"
kubelet_out="$cache_root/kubelet-$k8s_version"
etcd_out="$cache_root/etcd-$etcd_version"
helm_out="$cache_root/helm-$helm_version"
containerd_out="$cache_root/containerd-$containerd_version"
cni_out="$cache_root/cni-$cni_version"
crictl_out="$cache_root/cri-tools-$crictl_version"

build_tools "$here/etcd" "$etcd_out" go.etcd.io/etcd/server/v3
build_tools "$here/helm" "$helm_out" helm.sh/helm/v3/cmd/helm
build_tools "$here/k8s" "$k8s_out" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
build_tools "$here/k8s" "$kubelet_out" k8s.io/kubernetes/cmd/kubelet
build_tools "$here/containerd" "$containerd_out" github.com/containerd/containerd/v2/cmd/containerd \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/ctr
build_tools "$here/cni" "$cni_out" github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/ipam/host-local github.com/containernetworking/plugins/plugins/main/loopback
build_tools "$here/cri-tools" "$crictl_out" sigs.k8s.io/cri-tools/cmd/crictl

bin="$cache_root/bin-k8s-$k8s_version-etcd-$etcd_version-helm-$helm_version-containerd-$containerd_version-cni-$cni_version-crictl-$crictl_version"
mkdir -p "$bin"
ln -sf "$k8s_out/kube-apiserver" "$k8s_out/kube-controller-manager" "$k8s_out/kubectl" "$kubelet_out/kubelet" \
  "$etcd_out/etcd" "$helm_out/helm" "$containerd_out/containerd" "$containerd_out/containerd-shim-runc-v2" \
  "$containerd_out/ctr" "$crictl_out/crictl" "$bin/"
ln -sfn "$cni_out" "$bin/cni" # CNI plugins: containerd's bin_dirs, not for PATH
echo "$bin"
