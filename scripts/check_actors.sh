#!/usr/bin/env bash
# The actor checker for longer than CI runs it: SIGKILLs of key owners on one SQLite file,
# then partitions and kills between namespace hosts on PostgreSQL (root, iproute2 and
# Debian's postgresql; without them that half skips, saying so). Each run prints the
# history's counts and, on a violation, its witness. docs/RELIABILITY.md has the figures.
#
#   scripts/check_actors.sh [SECONDS]        (default 600 per store)
#
# A debug build: the test-only switches (MESHRPC_TEST_UNSAFE) exist there, and the two
# runs that show the checker catches what they let through run too.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
MESHRPC_CHECK_SECS=$secs cargo test --test checker -- --test-threads 1 --nocapture 2>&1 \
  | grep -E '^checker: [0-9]+ operations|^  |^test result|SKIPPED|panicked'
