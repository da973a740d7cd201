#!/usr/bin/env bash
# Runs every fuzz target (or those named as arguments) for FUZZ_SECONDS each
# (default 60) and fails if any of them finds a crash. Used by `make fuzz`.
#
# Each target starts from the committed seeds (seeds/<target>/) plus what
# earlier runs found (corpus/<target>/, not committed). A crashing input is
# written to artifacts/<target>/; replay it with
#   cargo +nightly fuzz run <target> artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
# Safe Rust only: the sanitizer adds cost and finds nothing here; debug
# assertions and overflow checks stay on.
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}"
export RUSTUP_AUTO_INSTALL=0

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "make fuzz needs a nightly Rust toolchain (cargo-fuzz uses nightly-only compiler flags)." >&2
    echo "None is installed: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz into $(dirname "$(command -v cargo)")"
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

dict_for() {
    case "$1" in
        dockerconfig) echo dicts/dockerconfig.dict ;;
        *) echo dicts/keys.dict ;;
    esac
}

cargo +nightly fuzz build --sanitizer "$FUZZ_SANITIZER"

failed=()
for target in "${targets[@]}"; do
    echo "=== $target: ${FUZZ_SECONDS}s"
    mkdir -p "corpus/$target"
    if ! cargo +nightly fuzz run --sanitizer "$FUZZ_SANITIZER" "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -dict="$(dict_for "$target")" -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran ${FUZZ_SECONDS}s without a failure: ${targets[*]}"
