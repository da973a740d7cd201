#!/usr/bin/env bash
# Prints the krew plugin manifest of `kubectl regcred` (the regcred-operator binary, whose
# `doctor` explains why a pod cannot pull its image) for one release, one platform per archive:
#
#   hack/krew-manifest.sh v0.1.0 target/krew/kubectl-regcred_linux_amd64.tar.gz [...] > regcred.yaml
#
# Each archive holds the binary as `kubectl-regcred` and is named kubectl-regcred_<os>_<arch>.tar.gz;
# `make krew` builds the one for this machine. The archives are expected under
# $REGCRED_RELEASE_URL/<version>/ (default: the project's GitHub releases).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 <version> <archive>..." >&2; exit 2; }
version=$1; shift
base=${REGCRED_RELEASE_URL:-https://github.com/regcred/regcred-operator/releases/download}
cat <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: regcred
spec:
  version: ${version}
  homepage: https://github.com/regcred/regcred-operator
  shortDescription: Explain why a pod cannot pull its image
  description: |
    kubectl regcred doctor pod/<name> -n <namespace> reports, for every image of a pod, the pull
    secrets in effect, whether each exists and has a usable type, which entries match the image
    by the kubelet's rules (and why near misses do not), the pod's pull Events, and a verdict with
    the fix. --check-registry asks the registry whether it accepts the credentials. It never
    prints credential material. The same binary runs the regcred-operator controller.
  platforms:
YAML
for archive in "$@"; do
  file=$(basename "$archive")
  [[ $file =~ ^kubectl-regcred_([a-z0-9]+)_([a-z0-9]+)\.tar\.gz$ ]] ||
    { echo "$archive: expected kubectl-regcred_<os>_<arch>.tar.gz" >&2; exit 2; }
  os=${BASH_REMATCH[1]} arch=${BASH_REMATCH[2]}
  tar -tzf "$archive" | grep -qx 'kubectl-regcred' || { echo "$archive: no kubectl-regcred in it" >&2; exit 2; }
  sha=$(sha256sum "$archive" | cut -d' ' -f1)
  cat <<YAML
    - selector:
        matchLabels: {os: ${os}, arch: ${arch}}
      uri: ${base}/${version}/${file}
      sha256: ${sha}
      files:
        - {from: kubectl-regcred, to: .}
      bin: kubectl-regcred
YAML
done
