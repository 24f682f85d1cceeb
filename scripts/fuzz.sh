#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 30 s each). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets the stable toolchain take the sanitizer
# flags cargo-fuzz passes. A crash leaves its input in fuzz/artifacts/TARGET/: fix it, then add
# the input as a regression test (tests/library/decoders.rs or the parser's unit tests).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame handshake xmlrpc jsonrpc)
for target in "${targets[@]}"; do
  echo "== $target ($secs s)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=1024 2>&1 | tail -3
done
