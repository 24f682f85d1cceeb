#!/usr/bin/env bash
# Builds the `meshrpc` binary of the previous release (the commit named in
# scripts/previous-release) and prints its path, for tests/mixed_process.rs:
#
#   MESHRPC_PREVIOUS_BIN=$(scripts/previous_release.sh) cargo test --test mixed_process
#
# It shares target/ with this build (the dependencies are the same), so it builds the old
# binary first and copies it to target/previous/meshrpc. Prints nothing and exits 0 when
# that commit is not in this clone (a shallow clone), saying so on stderr.
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
# The old workspace builds into our target/ (same dependencies, compiled once).
(cd "$src" && CARGO_TARGET_DIR="$PWD/../../../target" cargo build --quiet --bin meshrpc >&2)
cp target/debug/meshrpc target/previous/meshrpc
# Our own binary was just overwritten: cargo rebuilds it on the next build.
touch node/main.rs
echo "$PWD/target/previous/meshrpc"
