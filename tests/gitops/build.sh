#!/usr/bin/env bash
# Builds regcred-gitops (the Argo CD Lua health check and Flux's kstatus, as the GitOps tools run
# them) from this Go module and caches the binary outside the repository, keyed by the module's
# content. Prints the binary's path on its last line of stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${REGCRED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/regcred-operator}
key=$(cat "$here/go.mod" "$here/go.sum" "$here"/*.go | sha256sum | cut -c1-16)
out="$cache_root/gitops-$key"
if [ ! -x "$out/regcred-gitops" ]; then
  command -v go >/dev/null 2>&1 || { echo "[gitops] Go >= 1.26 is needed to build tests/gitops" >&2; exit 1; }
  echo "[gitops] building regcred-gitops (first run only) ..." >&2
  mkdir -p "$out"
  (cd "$here" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$out/regcred-gitops.tmp" .)
  mv "$out/regcred-gitops.tmp" "$out/regcred-gitops"
fi
echo "$out/regcred-gitops"
