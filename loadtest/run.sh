#!/usr/bin/env bash
# Whole-proxy comparison: veer vs HAProxy 2.6 vs nginx (Debian packages), method of
# shared/anchors.md (the project's measurement notes). See loadtest/README.md.
#
# Env: DURATION (s per run, default 10), ROUNDS (default 3), CONNS (default "50 200"),
#      MODES (default "keepalive close big h2c capped tls tlsnew"): keep-alive small requests,
#      connection per request (50 conns), 1 MiB responses (10 conns, MB/s), h2c with h2load
#      -c50 -m10, keep-alive with every proxy capped at CAP % of a core (default 50, cgroup v1
#      cpu quota), and HTTPS (TLS 1.3, ECDSA P-256, resumption unused) keep-alive and one
#      handshake per request, veer against HAProxy, both capped the same way; and `pages`
#      (not in the default): keep-alive against veer with PAGES (default 10) status-page event
#      streams open (curl -N /events on the load core), beside veer and HAProxy without,
#      IDLE_CONNS (default 2000), OUT (default loadtest/out), VEER_BIN (default: build release into
#      LOADTEST_TARGET_DIR, default <repo>/target/loadtest), SKIP_MEM=1, SKIP_LOAD=1,
#      ANCHOR_FIELDS (default `same`: HAProxy and nginx add the request fields veer adds;
#      `none`: they add nothing, as before 2026-12-08).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
OUT="${OUT:-$HERE/out}"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-50 200}"
MODES="${MODES:-keepalive close big h2c capped tls tlsnew}"
CAP="${CAP:-50}"
IDLE_CONNS="${IDLE_CONNS:-2000}"
PAGES="${PAGES:-10}"
ANCHOR_FIELDS="${ANCHOR_FIELDS:-same}"
case "$ANCHOR_FIELDS" in same | none) ;; *) echo "ANCHOR_FIELDS must be same or none" >&2; exit 2 ;; esac
PAGE_PIDS=()
PROXY_CORE=0
LOAD_CORE=1

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v taskset >/dev/null || missing+=(util-linux)
command -v pgrep >/dev/null || missing+=(procps)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    $SUDO apt-get install -y "${missing[@]}" \
        || { $SUDO apt-get update && $SUDO apt-get install -y "${missing[@]}"; }
fi
command -v python3 >/dev/null || die "python3 is required"
# The chart in the report (results.md is written without it).
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib \
    || log "warning: matplotlib unavailable; the report will have no chart"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (proxy on core $PROXY_CORE, load on core $LOAD_CORE)"

repo_rev() {
    echo "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes in src/Cargo.*')"
}
if [ -z "${VEER_BIN:-}" ]; then
    log "building veer (release, CARGO_TARGET_DIR=${LOADTEST_TARGET_DIR:-$REPO/target/loadtest})"
    rev_before="$(repo_rev)"
    (cd "$REPO" && CARGO_TARGET_DIR="${LOADTEST_TARGET_DIR:-$REPO/target/loadtest}" cargo build --release)
    VEER_BIN="${LOADTEST_TARGET_DIR:-$REPO/target/loadtest}/release/veer"
    VEER_BIN_DESC="built by run.sh from $rev_before (${VEER_BIN#"$REPO"/})"
else
    VEER_BIN_DESC="prebuilt ${VEER_BIN#"$REPO"/} (modified $(date -u -r "$VEER_BIN" '+%Y-%m-%d %H:%M UTC')); repo at run time: $(repo_rev)"
fi
[ -x "$VEER_BIN" ] || die "VEER_BIN=$VEER_BIN is not executable"

# Enough descriptors for 2,000 idle connections (plus their upstream side for L4).
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -ge 20000 ]; then ulimit -n 20000; else ulimit -n "$hard"; fi
[ "$(ulimit -n)" -ge $((IDLE_CONNS * 2 + 256)) ] || log "warning: ulimit -n $(ulimit -n) may be too low for IDLE_CONNS=$IDLE_CONNS"

# ---------------------------------------------------------------------------------------
# Processes: every PID we start goes in PIDS; the trap stops exactly those.
TMP="$(mktemp -d /tmp/veer-loadtest.XXXXXX)"
PIDS=()
mkdir -p "$OUT/logs" "$OUT/wrk"

stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    uncap
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
    cp "$TMP"/*.log "$OUT/logs/" 2>/dev/null || true
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The capped mode: the proxies under test in one cgroup v1 cpu group, CAP % of one core each
# (they run one at a time, so the quota is theirs alone).
CGROUP=""
cap() { # pids...
    local root=/sys/fs/cgroup/cpu
    [ -w "$root" ] || die "capped mode needs a writable cgroup v1 cpu hierarchy at $root"
    CGROUP="$root/veer-loadtest-$$"
    mkdir -p "$CGROUP"
    echo 10000 > "$CGROUP/cpu.cfs_period_us"
    echo $((CAP * 100)) > "$CGROUP/cpu.cfs_quota_us"
    local p
    for p in "$@"; do echo "$p" > "$CGROUP/cgroup.procs"; done
}
uncap() {
    [ -n "$CGROUP" ] || return 0
    local p
    for p in $(cat "$CGROUP/cgroup.procs" 2>/dev/null); do echo "$p" > /sys/fs/cgroup/cpu/cgroup.procs 2>/dev/null || true; done
    rmdir "$CGROUP" 2>/dev/null || true
    CGROUP=""
}

wait_port() { # port pid name
    local i
    for i in $(seq 100); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited at start-up (see $OUT/logs/)"
        sleep 0.1
    done
    die "$3 did not listen on :$1"
}

for port in 9001 9002 8100 8101 8102 8200 8201 8202 8203 8300 8301; do
    port_open "$port" && die "127.0.0.1:$port is already in use; stop whatever holds it first"
done

# ANCHOR_FIELDS=none drops the request fields the anchors add to match veer's (the lines
# ending in `# fields`), as the runs before 2026-12-08 had them.
render() { # template output [port]
    local drop='/# fields$/d'
    [ "$ANCHOR_FIELDS" = none ] || drop=''
    sed -e "s|@DIR@|$TMP|g" -e "s|@PORT@|${3:-}|g" -e "$drop" "$1" > "$2"
}

# The certificate both TLS frontends serve: ECDSA P-256, made for this run.
make_cert() {
    command -v openssl >/dev/null || $SUDO apt-get install -y openssl
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
        -keyout "$TMP/bench.key" -out "$TMP/bench.pem" 2>/dev/null
    cat "$TMP/bench.pem" "$TMP/bench.key" > "$TMP/bench-haproxy.pem"
}

start_backends() {
    local port
    head -c 1048576 /dev/urandom > "$TMP/big.bin"
    # nginx's workers run as nobody when started by root.
    chmod 755 "$TMP"
    chmod 644 "$TMP/big.bin"
    for port in 9001 9002; do
        mkdir -p "$TMP/tmp-$port"
        render "$HERE/nginx-backend.conf.tmpl" "$TMP/backend-$port.conf" "$port"
        taskset -c "$LOAD_CORE" nginx -p "$TMP/" -e "$TMP/backend-$port.startup.log" \
            -c "$TMP/backend-$port.conf" >"$TMP/backend-$port.log" 2>&1 &
        PIDS+=($!)
        wait_port "$port" "$!" "nginx backend :$port"
    done
}

VEER_PID="" HAPROXY_PID="" NGINX_PID="" NGINX_WORKER=""

start_veer() {
    # loadtest/veer.toml plus the https listener (its certificate lives in this run's dir).
    { cat "$HERE/veer.toml"; sed -e "s|@DIR@|$TMP|g" "$HERE/veer-tls.toml.tmpl"; } > "$TMP/veer.toml"
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c "$PROXY_CORE" "$VEER_BIN" run -c "$TMP/veer.toml" \
        >>"$TMP/veer.log" 2>&1 &
    VEER_PID=$!
    PIDS+=("$VEER_PID")
    wait_port 8100 "$VEER_PID" veer
    wait_port 8101 "$VEER_PID" veer
    wait_port 8102 "$VEER_PID" veer
}

start_haproxy() {
    render "$HERE/haproxy.cfg.tmpl" "$TMP/haproxy.cfg"
    taskset -c "$PROXY_CORE" haproxy -db -f "$TMP/haproxy.cfg" >>"$TMP/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    PIDS+=("$HAPROXY_PID")
    wait_port 8200 "$HAPROXY_PID" haproxy
    wait_port 8201 "$HAPROXY_PID" haproxy
    wait_port 8203 "$HAPROXY_PID" haproxy
}

start_nginx_proxy() {
    mkdir -p "$TMP/tmp-proxy"
    render "$HERE/nginx-proxy.conf.tmpl" "$TMP/nginx-proxy.conf"
    taskset -c "$PROXY_CORE" nginx -p "$TMP/" -e "$TMP/nginx-proxy.startup.log" \
        -c "$TMP/nginx-proxy.conf" >>"$TMP/nginx-proxy.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_port 8300 "$NGINX_PID" "nginx proxy"
    NGINX_WORKER=""
    local i
    for i in $(seq 50); do
        NGINX_WORKER="$(pgrep -P "$NGINX_PID" | head -1 || true)"
        [ -n "$NGINX_WORKER" ] && break
        sleep 0.1
    done
    [ -n "$NGINX_WORKER" ] || die "nginx proxy has no worker process"
}

stop_veer() { [ -z "$VEER_PID" ] || stop_pid "$VEER_PID"; VEER_PID=""; }
stop_haproxy() { [ -z "$HAPROXY_PID" ] || stop_pid "$HAPROXY_PID"; HAPROXY_PID=""; }
stop_nginx_proxy() { [ -z "$NGINX_PID" ] || stop_pid "$NGINX_PID"; NGINX_PID=""; NGINX_WORKER=""; }

# target -> port; target -> PIDs whose CPU/RSS count as "the proxy"
port_of() {
    case "$1" in
        direct) echo 9001 ;; veer-http | veer-h2c | veer-pages) echo 8100 ;; veer-tcp) echo 8101 ;; veer-https) echo 8102 ;;
        haproxy-http) echo 8200 ;; haproxy-tcp) echo 8201 ;; haproxy-h2c) echo 8202 ;; haproxy-https) echo 8203 ;;
        nginx-proxy) echo 8300 ;; nginx-h2c) echo 8301 ;;
    esac
}
pids_of() {
    case "$1" in
        direct) echo "" ;;
        veer-*) echo "$VEER_PID" ;;
        haproxy-*) echo "$HAPROXY_PID" ;;
        nginx-*) echo "$NGINX_PID $NGINX_WORKER" ;;
    esac
}
# The targets and connection counts of each mode.
targets_of() {
    case "$1" in
        keepalive) echo "direct veer-http haproxy-http nginx-proxy veer-tcp haproxy-tcp" ;;
        close | capped) echo "veer-http haproxy-http nginx-proxy" ;;
        pages) echo "veer-http veer-pages haproxy-http" ;;
        big) echo "direct veer-http haproxy-http nginx-proxy" ;;
        h2c) echo "veer-h2c haproxy-h2c nginx-h2c" ;;
        tls | tlsnew) echo "veer-https haproxy-https" ;;
    esac
}
rotate() { # n item... : the items, starting n places in (wrapping round)
    local n=$(($1 % ($# - 1))); shift
    echo "${@:n+1}" "${@:1:n}"
}
conns_of() {
    case "$1" in keepalive | capped) echo "$CONNS" ;; close | h2c | tls | tlsnew | pages) echo 50 ;; big) echo 10 ;; esac
}
start_target() {
    case "$1" in veer-*) start_veer ;; haproxy-*) start_haproxy ;; nginx-proxy) start_nginx_proxy ;; esac
}
stop_target() {
    case "$1" in veer-*) stop_veer ;; haproxy-*) stop_haproxy ;; nginx-proxy) stop_nginx_proxy ;; esac
}

# PAGES status pages, as far as veer can tell: each an open /events stream read by curl on
# the load core (a browser would add its own CPU there, not veer's).
open_pages() { # file-prefix
    local i
    PAGE_PIDS=()
    for i in $(seq "$PAGES"); do
        taskset -c "$LOAD_CORE" curl -sN "http://127.0.0.1:8109/events" > "$1-page$i.txt" 2>/dev/null &
        PAGE_PIDS+=($!)
        PIDS+=($!)
    done
    sleep 1
}
close_pages() { # file-prefix
    local pid
    for pid in "${PAGE_PIDS[@]}"; do stop_pid "$pid"; done
    PAGE_PIDS=()
    log "  $PAGES pages got $(cat "$1"-page*.txt | grep -c '^event: snapshot') pictures in all"
}

# utime+stime (fields 14, 15 of /proc/PID/stat) summed over PIDs, in clock ticks.
cpu_ticks() {
    local total=0 pid rest
    for pid in "$@"; do
        rest="$(cat "/proc/$pid/stat")"
        rest="${rest##*) }"  # fields from 3 on; comm may contain spaces
        total=$((total + $(awk '{print $12 + $13}' <<<"$rest")))
    done
    echo "$total"
}
# "busy total" jiffies of one core from /proc/stat.
core_jiffies() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
CLK_TCK="$(getconf CLK_TCK)"

to_ms() { # wrk latency like 608.00us, 1.23ms, 2.01s, 1.00m
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# ---------------------------------------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "host: $(uname -srm), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "veer: $VEER_BIN_DESC"
    echo "haproxy: $(haproxy -v | head -1)"
    echo "nginx: $(nginx -v 2>&1)"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "method: proxy on core $PROXY_CORE (taskset), wrk -t1 and backends on core $LOAD_CORE;" \
         "wrk -d${DURATION}s, $ROUNDS rounds interleaved across targets, each round starting one target later; medians"
    if [ "$ANCHOR_FIELDS" = none ]; then
        echo "request fields: veer adds X-Forwarded-For/-Proto/-Host, X-Request-Id and traceparent; HAProxy and nginx add none (ANCHOR_FIELDS=none)"
    else
        echo "request fields: veer, HAProxy and nginx each add X-Forwarded-For/-Proto/-Host, X-Request-Id and traceparent (ANCHOR_FIELDS=same)"
    fi
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

start_backends
make_cert

# ---------------------------------------------------------------------------------------
# Memory: a freshly started proxy per measurement.
if [ -z "${SKIP_MEM:-}" ]; then
    echo "target,conns,still_open,errors,before_kb,with_kb,per_conn_bytes" > "$OUT/mem.csv"
    for target in veer-http haproxy-http nginx-proxy veer-tcp haproxy-tcp veer-https haproxy-https; do
        start_target "$target"
        pids=$(pids_of "$target")
        [ "$target" = nginx-proxy ] && pids="$NGINX_WORKER"   # the master does not grow
        pid_args=()
        for p in $pids; do pid_args+=(--pid "$p"); done
        log "memory: $target ($IDLE_CONNS idle keep-alive connections)"
        tls_arg=(); case "$target" in *-https) tls_arg=(--tls) ;; esac
        line="$(taskset -c "$LOAD_CORE" python3 "$HERE/idle_conns.py" --port "$(port_of "$target")" \
            -n "$IDLE_CONNS" "${pid_args[@]}" "${tls_arg[@]}" 2> >(tee -a "$TMP/idle_conns.log" >&2) || true)"
        log "  $line"
        [ -n "$line" ] || die "idle_conns.py produced no result for $target"
        eval "$(tr ' ' '\n' <<<"$line" | grep '=' | sed 's/^/m_/')"
        echo "$target,$m_conns,$m_still_open,$m_errors,$m_before_kb,$m_with_kb,$m_per_conn_bytes" >> "$OUT/mem.csv"
        stop_target "$target"
    done
fi

# ---------------------------------------------------------------------------------------
# Throughput / latency / CPU: all proxies up; per mode, rounds interleaved A B C … A B C …
if [ -z "${SKIP_LOAD:-}" ]; then
    start_veer
    start_haproxy
    start_nginx_proxy

    log "warm-up (2 s per target, not recorded)"
    for target in direct veer-http haproxy-http nginx-proxy veer-tcp haproxy-tcp; do
        taskset -c "$LOAD_CORE" wrk -t1 -c50 -d2s "http://127.0.0.1:$(port_of "$target")/" >/dev/null
    done
    for target in veer-https haproxy-https; do
        taskset -c "$LOAD_CORE" wrk -t1 -c50 -d2s "https://127.0.0.1:$(port_of "$target")/" >/dev/null
    done

    echo "mode,round,conns,target,rps,requests,p50_ms,p99_ms,cpu_s,cpu_s_per_100k,core0_busy_pct,core1_busy_pct,non2xx,sock_errors,mb_per_s,sock_detail" \
        > "$OUT/raw.csv"
    for mode in $MODES; do
        case "$mode" in
            capped | tls | tlsnew)
                # shellcheck disable=SC2046,SC2086
                [ -n "$CGROUP" ] || cap $VEER_PID $HAPROXY_PID $NGINX_PID $NGINX_WORKER
                log "$mode mode: every proxy at $CAP % of one core" ;;
            *) uncap ;;
        esac
        path=/; [ "$mode" = big ] && path=/big
        scheme=http; case "$mode" in tls | tlsnew) scheme=https ;; esac
        for c in $(conns_of "$mode"); do
            for round in $(seq "$ROUNDS"); do
                # Each round starts one target later than the one before: close mode leaves
                # tens of thousands of TIME_WAIT sockets and the machine drifts within a
                # run, so no target may always run first or always follow the same one.
                # shellcheck disable=SC2046
                for target in $(rotate "$((round - 1))" $(targets_of "$mode")); do
                    pids=$(pids_of "$target")
                    for p in $pids; do kill -0 "$p" 2>/dev/null || die "$target (pid $p) died; see $OUT/logs/"; done
                    f="$OUT/wrk/${mode}-c${c}-r${round}-${target}.txt"
                    [ "$target" = veer-pages ] && open_pages "${f%.txt}"
                    # shellcheck disable=SC2086
                    cpu0=$([ -n "$pids" ] && cpu_ticks $pids || echo 0)
                    read -r b0 t0 < <(core_jiffies "$PROXY_CORE")
                    read -r b1 t1 < <(core_jiffies "$LOAD_CORE")
                    url="$scheme://127.0.0.1:$(port_of "$target")$path"
                    case "$mode" in
                        h2c) taskset -c "$LOAD_CORE" h2load -t1 -c"$c" -m10 -D"$DURATION" "$url" > "$f" 2>&1 || true ;;
                        close | tlsnew) taskset -c "$LOAD_CORE" wrk -t1 -c"$c" -d"${DURATION}s" --latency -H "Connection: close" "$url" > "$f" 2>&1 || true ;;
                        *) taskset -c "$LOAD_CORE" wrk -t1 -c"$c" -d"${DURATION}s" --latency "$url" > "$f" 2>&1 || true ;;
                    esac
                    read -r b0b t0b < <(core_jiffies "$PROXY_CORE")
                    read -r b1b t1b < <(core_jiffies "$LOAD_CORE")
                    # shellcheck disable=SC2086
                    cpu1=$([ -n "$pids" ] && cpu_ticks $pids || echo 0)
                    [ "$target" = veer-pages ] && close_pages "${f%.txt}"

                    if [ "$mode" = h2c ]; then
                        rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$f")
                        reqs=$(awk '/^requests:/ {print $8}' "$f")
                        failed=$(awk '/^requests:/ {print $10}' "$f")
                        mbs=$(awk '/^finished in/ { v = $6 + 0; u = $6; sub(/^[0-9.]+/, "", u);
                            if (u == "KB/s") v /= 1024; else if (u == "GB/s") v *= 1024; else if (u == "B/s") v /= 1048576; print v }' "$f")
                        p50="" p99="" non2xx="${failed:-0}" sockerr=0 sockline=""
                        [ -n "$rps" ] && [ -n "$reqs" ] || { cat "$f" >&2; die "h2load failed against $target"; }
                    else
                        rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
                        reqs=$(awk '/ requests in / {print $1}' "$f")
                        [ -n "$rps" ] && [ -n "$reqs" ] || { cat "$f" >&2; die "wrk failed against $target"; }
                        p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")
                        p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
                        non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$f"); non2xx=${non2xx:-0}
                        sockline=$(grep 'Socket errors:' "$f" | sed 's/^ *Socket errors: *//' || true)
                        sockerr=$(awk -F'[ ,]+' '{s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s}' <<<"${sockline:-0}")
                        mbs=$(awk '/^Transfer\/sec:/ { v = $2 + 0; u = $2; sub(/^[0-9.]+/, "", u);
                            if (u == "KB") v /= 1024; else if (u == "GB") v *= 1024; else if (u == "B") v /= 1048576; print v }' "$f")
                    fi
                    if [ -n "$pids" ]; then
                        cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / t}')
                        cpu100k=$(awk -v s="$cpu_s" -v n="$reqs" 'BEGIN {printf "%.4f", n ? s / n * 100000 : 0}')
                    else
                        cpu_s="" cpu100k=""
                    fi
                    busy0=$(awk -v b="$((b0b - b0))" -v t="$((t0b - t0))" 'BEGIN {printf "%.0f", t ? 100 * b / t : 0}')
                    busy1=$(awk -v b="$((b1b - b1))" -v t="$((t1b - t1))" 'BEGIN {printf "%.0f", t ? 100 * b / t : 0}')
                    echo "$mode,$round,$c,$target,$rps,$reqs,$p50,$p99,$cpu_s,$cpu100k,$busy0,$busy1,$non2xx,$sockerr,${mbs:-},${sockline//,/;}" \
                        >> "$OUT/raw.csv"
                    log "$mode c=$c round=$round $target: ${rps} req/s p50=${p50:-—}ms p99=${p99:-—}ms cpu/100k=${cpu100k:-—}s MB/s=${mbs:-—} core0=${busy0}% core1=${busy1}% errors=$non2xx/$sockerr"
                    sleep 1
                done
            done
        done
    done
    uncap
fi

# The report needs raw.csv; keep the previous one when SKIP_LOAD is set.
[ -f "$OUT/raw.csv" ] && python3 "$HERE/report.py" "$OUT"
log "done; results in $OUT/results.md, raw runs in $OUT/raw.csv and $OUT/wrk/"
