#!/usr/bin/env bash
# A fuzzing campaign over every target: `fuzz/run.sh [SECONDS] [TARGET...]` (default 600 s
# each, all targets of fuzz_targets/). Stable toolchain, no sanitizer (`-s none`; cargo-fuzz
# is installed if missing). Each campaign starts from fuzz/corpus/<target>/ in a scratch
# copy: the committed corpus stays a set of named, readable inputs; a crash is copied into fuzz/corpus/<target>/crash-<date>-<hash> so that
# `cargo test` (tests/fuzz_corpus.rs) replays it from then on. Prints one line per target:
# runs, seconds, new coverage, crashes.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build -s none

status=0
for t in "${targets[@]}"; do
  work="$(mktemp -d)"
  cp -r "corpus/$t/." "$work/"
  log="$work.log"
  start=$(date +%s)
  if cargo fuzz run -s none "$t" "$work" -- -max_total_time="$seconds" -max_len=8192 \
      -artifact_prefix="$work.crash-" >"$log" 2>&1; then
    result="no crash"
  else
    result="CRASH"
    status=1
    for c in "$work".crash-*; do
      [ -f "$c" ] || continue
      cp "$c" "corpus/$t/crash-$(date +%F)-$(sha1sum "$c" | cut -c1-8)"
    done
  fi
  runs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
  echo "$t: ${runs:-0} runs in $(( $(date +%s) - start )) s, ${cov:-cov: ?}, $result"
  rm -rf "$work" "$log" "$work".crash-* 
done
exit "$status"
