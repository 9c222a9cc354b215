#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, its own workspace) on the stable toolchain, as plain binaries:
# libfuzzer-sys compiles libFuzzer with the machine's C++ compiler (g++) and links it without
# coverage instrumentation. This checks that the targets still compile against the library; the
# coverage-guided runs use nightly and cargo-fuzz (see fuzz/README.md).
#
# The lint and format checks of the fuzz crate run here too, so a fuzz target never rots unseen.
# CARGO_TARGET_DIR may point at a shared target directory; by default fuzz/target is used.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
    echo "fuzz-build: a C++ compiler (g++) is needed to build libFuzzer" >&2
    exit 1
fi

echo "== cargo fmt --check (fuzz/)"
cargo fmt --manifest-path fuzz/Cargo.toml --check

echo "== cargo clippy (fuzz/) -- -D warnings"
cargo clippy --manifest-path fuzz/Cargo.toml --locked --all-targets -- -D warnings

echo "== cargo build (fuzz/) --bins"
cargo build --manifest-path fuzz/Cargo.toml --locked --bins

# Each target replays its seed corpus once (no fuzzing: -runs=0), so a target that panics on a
# known-good input fails here rather than in a fuzzing session.
target_dir="${CARGO_TARGET_DIR:-fuzz/target}"
for target in hook_request fhir_reader fhir_dates prefetch_template; do
    echo "== $target: seed corpus replay"
    mkdir -p "fuzz/artifacts/$target"
    "$target_dir/debug/$target" "fuzz/seeds/$target" -runs=0 -artifact_prefix="fuzz/artifacts/$target/" 2>&1 | tail -n 1
done
