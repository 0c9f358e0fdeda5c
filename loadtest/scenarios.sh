#!/usr/bin/env bash
# The scenario suite: every scenario of tests/scenarios.rs (mixed constant load — keep-alive
# and connection-per-request HTTP/1.1, h2c, 1 MiB uploads, sticky clients, upgraded echo —
# through a veer process while deploys change it), >= 100,000 requests each, in a
# release-like build (profile `scenarios`). Loopback only; every veer and backend the
# scenarios start is stopped by PID (the test harness kills its children).
#
#   loadtest/scenarios.sh [FILTER...]  FILTER: substrings of the scenario names (s01, reload…)
#   REQUESTS=100000 OUT=loadtest/results/<date>-scenarios.md
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${REQUESTS:-100000}"
out="${OUT:-loadtest/results/$(date +%F)-scenarios.md}"
filter="$*"
command -v cargo >/dev/null || { echo "cargo is needed" >&2; exit 1; }

rows="$(mktemp)"
trap 'rm -f "$rows"' EXIT
echo "--- building (cargo test --profile scenarios --test scenarios)"
cargo test --profile scenarios --test scenarios --no-run

echo "--- running (>= $requests requests per scenario)"
status=0
VEER_SCENARIO_REQUESTS="$requests" VEER_SCENARIO_OUT="$rows" \
  cargo test --profile scenarios --test scenarios -- --ignored --skip soak --test-threads 1 --nocapture "$@" || status=$?

{
  echo "# Scenario suite, $(date -u +%FT%TZ), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo
  echo "\`loadtest/scenarios.sh $filter\` (REQUESTS=$requests; $(nproc) cores; veer, the backends and the"
  echo "clients share the machine). p99 is over every answered request of the scenario; compare"
  echo "it with the baseline row of the same run. Sticky moves: answers from another server than"
  echo "the sticky client's cookie named (a drain, a removal or a split move them by design)."
  echo
  echo "| scenario | what changed | requests | failed | p99 ms | sticky moves | took |"
  echo "|---|---|---|---|---|---|---|"
  cat "$rows"
  echo
  [ "$status" -eq 0 ] && echo "Every scenario passed its assertions." || echo "A scenario FAILED (exit $status): see the run's output."
} > "$out"
cat "$out"
exit "$status"
