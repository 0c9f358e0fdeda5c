#!/usr/bin/env bash
# The soak: `loadtest/soak.sh [MINUTES]` (default 30) drives the scenario suite's mixed load
# through one veer process with a split flip every 10 s and a config reload every 30 s,
# sampling veer's RSS and open file descriptors every 10 s; after the first fifth (warm-up)
# neither may grow (tests/scenarios.rs `soak`). Writes loadtest/results/<date>-soak.{csv,svg,md}.
# Loopback only; veer and the backends are stopped by PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
out="${OUT:-loadtest/results/$(date +%F)-soak}"
cargo test --profile scenarios --test scenarios --no-run
VEER_SOAK_MINUTES="$minutes" VEER_SOAK_OUT="$PWD/$out" \
  cargo test --profile scenarios --test scenarios -- --ignored --exact soak --nocapture
