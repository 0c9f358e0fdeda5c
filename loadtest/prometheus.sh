#!/usr/bin/env bash
# A real Prometheus server scrapes veer; PromQL then returns the request rate per group.
#
# Runs `veer demo` (blue/green upstreams, split 80/20, admin HTTP on 127.0.0.1:9901), a
# Prometheus server scraping it every second, and a load loop; then asks Prometheus for
#   sum by (group) (rate(veer_requests_total{code="2xx"}[15s]))
# and checks that both groups appear with roughly the configured 80/20 split.
#
# Usage: loadtest/prometheus.sh            (VEER_BIN to use a prebuilt binary)
# Needs: prometheus (Debian package; installed if missing), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y -qq prometheus >/dev/null
fi
VEER_BIN=${VEER_BIN:-}
if [ -z "$VEER_BIN" ]; then
  cargo build --release --quiet
  VEER_BIN=target/release/veer
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for port in 8080 9001 9002 9901 9090; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "port $port is in use; stop what listens there first" >&2
    exit 1
  fi
done

RUST_LOG=warn "$VEER_BIN" demo >"$work/veer.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:9901/ready >/dev/null && break; sleep 0.1; done

cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: veer
    static_configs:
      - targets: ["127.0.0.1:9901"]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:9090/-/ready >/dev/null && break; sleep 0.2; done

echo "load for 20 s ..."
end=$((SECONDS + 20))
while [ $SECONDS -lt $end ]; do
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8080/; done
done

query='sum by (group) (rate(veer_requests_total{code="2xx"}[15s]))'
result=$(curl -s --get http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$query")
echo "PromQL: $query"
python3 - "$result" <<'PY'
import json, sys
data = json.loads(sys.argv[1])
rows = {r["metric"].get("group", "?"): float(r["value"][1]) for r in data["data"]["result"]}
for group, rate in sorted(rows.items()):
    print(f"  {group:6} {rate:8.1f} req/s")
total = sum(rows.values())
assert set(rows) >= {"blue", "green"} and total > 0, f"expected both groups: {rows}"
share = rows["green"] / total * 100
print(f"  green share {share:.1f} % (configured 20 %)")
assert 10 <= share <= 30, "the split seen by Prometheus does not match the config"
print("ok")
PY
