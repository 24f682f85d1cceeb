#!/usr/bin/env bash
# Builds the `meshrpc` binary of the previous release (the commit named in
# scripts/previous-release) and prints its path, for tests/processes/mixed_process.rs:
#
#   MESHRPC_PREVIOUS_BIN=$(scripts/previous_release.sh) cargo test --test processes mixed_process
#
# It builds in a target directory of its own (target/previous/target: sharing ours lets
# cargo leave our binary where the old one should be) and copies the binary to
# target/previous/meshrpc. `--release` builds an optimized one, for scripts/scale.py
# --bin. Prints nothing and exits 0 when that commit is not in this clone (a shallow
# clone), saying so on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(grep -v '^#' scripts/previous-release | head -n 1 | tr -d '[:space:]')
if ! git cat-file -e "${commit}^{commit}" 2>/dev/null; then
  echo "previous release ${commit} is not in this clone: the mixed-version test will play it with --max-protocol 3" >&2
  exit 0
fi
src=target/previous/src
rm -rf "$src"
mkdir -p "$src"
git archive "$commit" | tar -x -C "$src"
profile=debug
if [ "${1:-}" = "--release" ]; then profile=release; fi
flags=()
if [ "$profile" = release ]; then flags=(--release); fi
(cd "$src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --quiet "${flags[@]}" --bin meshrpc >&2)
out=target/previous/meshrpc
if [ "$profile" = release ]; then out=target/previous/meshrpc-release; fi
cp "target/previous/target/$profile/meshrpc" "$out"
echo "$PWD/$out"
