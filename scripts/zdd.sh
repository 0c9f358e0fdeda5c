#!/bin/sh
# zdd.sh: a zero-downtime deploy through veer's admin socket: check the new group, shift
# traffic to it step by step, judge each step on the groups' 5xx rates (and p99) from
# `show stat` / `show latency` deltas, roll back on a breach, drain the old group.
#
# POSIX sh; needs socat (and awk, sed, tr, sleep from any POSIX system). The reference
# for teams that keep their own tooling: `veer ctl rollout` does the same inside veer.
set -eu

usage() {
    cat <<'USAGE'
usage: zdd.sh --socket PATH --backend NAME --from GROUP --to GROUP
              [--steps 10,25,50,100] [--pause SECONDS] [--max-error-rate PERCENT]
              [--max-p99-ms MS] [--drain-timeout SECONDS] [--dry-run]

  --socket           veer's admin socket ([admin] socket)
  --backend          the backend to deploy
  --from / --to      the group taking traffic now / the new one (it needs UP servers)
  --steps            percentages of traffic for the new group, rising to 100
  --pause            seconds each step is observed (default 30)
  --max-error-rate   most 5xx, in percent of the new group's responses (default 1)
  --max-p99-ms       highest p99 response time of the new group, in ms (off by default)
  --drain-timeout    seconds to wait for the old group to drain (default 300)
  --dry-run          print the commands that would change state; change nothing

One progress line per step. Exit codes:
  0  deployed: the new group takes all traffic, the old one is drained
  1  usage error, veer unreachable, or a command refused
  2  a threshold was breached: rolled back (the old group takes all traffic again)
  3  both groups breach (a backend-wide failure, not the new version's): the split is
     left at the step it reached, nothing is rolled back
  4  the old group did not drain within --drain-timeout
USAGE
}

SOCKET=/run/veer/admin.sock
BACKEND=
FROM=
TO=
STEPS=10,25,50,100
PAUSE=30
MAX_ERR=1
MAX_P99=
DRAIN_TIMEOUT=300
DRY=0

need() { [ $# -ge 2 ] || { echo "zdd.sh: $1 needs a value" >&2; exit 1; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --socket) need "$@"; SOCKET=$2; shift 2 ;;
        --backend) need "$@"; BACKEND=$2; shift 2 ;;
        --from) need "$@"; FROM=$2; shift 2 ;;
        --to) need "$@"; TO=$2; shift 2 ;;
        --steps) need "$@"; STEPS=$2; shift 2 ;;
        --pause) need "$@"; PAUSE=${2%s}; shift 2 ;;
        --max-error-rate) need "$@"; MAX_ERR=${2%\%}; shift 2 ;;
        --max-p99-ms) need "$@"; MAX_P99=${2%ms}; shift 2 ;;
        --drain-timeout) need "$@"; DRAIN_TIMEOUT=${2%s}; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "zdd.sh: unknown option $1" >&2; usage >&2; exit 1 ;;
    esac
done
if [ -z "$BACKEND" ] || [ -z "$FROM" ] || [ -z "$TO" ]; then
    usage >&2
    exit 1
fi
command -v socat >/dev/null 2>&1 || { echo "zdd.sh: socat is required" >&2; exit 1; }

# One admin command; its answer on stdout.
ask() {
    printf '%s\n' "$1" | socat -t 60 - "UNIX-CONNECT:$SOCKET"
}

# A command that changes state: printed in a dry run; a refusal (any output) stops.
change() {
    if [ "$DRY" = 1 ]; then
        echo "would send: $1"
        return 0
    fi
    answer=$(ask "$1") || { echo "zdd.sh: cannot reach $SOCKET" >&2; exit 1; }
    if [ -n "$answer" ]; then
        echo "zdd.sh: '$1' refused: $answer" >&2
        exit 1
    fi
}

# `group server state health` for every server of the backend, from `show split`.
servers() {
    ask "show split $BACKEND" | awk '
        NR == 1 || /^meta / || /\(no servers\)/ { next }
        NF >= 9 { g = $1; print g, $4, $5, $6; next }
        NF == 6 { print g, $1, $2, $3 }'
}

# `requests 5xx` of a group's servers since start, from `show stat`'s CSV columns.
counts() {
    map=$(servers)
    ask "show stat" | awk -F, -v b="$BACKEND" -v g="$1" -v map="$map" '
        BEGIN { n = split(map, lines, "\n"); for (i = 1; i <= n; i++) { split(lines[i], f, " "); if (f[1] == g) mine[f[2]] = 1 } }
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == b && ($2 in mine) {
            req += $col["hrsp_1xx"] + $col["hrsp_2xx"] + $col["hrsp_3xx"] + $col["hrsp_4xx"] + $col["hrsp_5xx"] + $col["hrsp_other"]
            err += $col["hrsp_5xx"]
        }
        END { printf "%d %d\n", req, err }'
}

# A group's response-time buckets since start (`upper_us:count ...`), from `show latency`.
latency() {
    ask "show latency $BACKEND" | awk -v g="$1" '$1 == g { $1 = ""; print }'
}

# The p99 in ms of the difference between two bucket readings.
p99() {
    printf '%s\n%s\n' "$1" "$2" | awk '
        NR == 1 { for (i = 1; i <= NF; i++) { split($i, kv, ":"); before[kv[1]] = kv[2] } }
        NR == 2 { for (i = 1; i <= NF; i++) { split($i, kv, ":"); d = kv[2] - before[kv[1]]; if (d > 0) { up[++n] = kv[1]; c[n] = d; total += d } } }
        END {
            if (total == 0) { print "-"; exit }
            rank = total * 0.99; seen = 0
            for (i = 1; i <= n; i++) { seen += c[i]; if (seen >= rank) { printf "%.1f\n", up[i] / 1000; exit } }
        }'
}

# The 5xx rate in percent between two `requests 5xx` readings.
rate() {
    printf '%s %s\n' "$1" "$2" | awk '{ r = $3 - $1; e = $4 - $2; printf "%.2f %d\n", (r > 0 ? e * 100 / r : 0), r }'
}

# Above a threshold? (awk: the shell has no fractions.)
above() {
    awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "-" && a + 0 > b + 0) }'
}

up=$(servers | awk -v g="$TO" '$1 == g && $3 == "ready" && $4 == "up"' | wc -l)
if [ "$up" -eq 0 ]; then
    echo "zdd.sh: group $TO of backend $BACKEND has no server that is ready and UP" >&2
    exit 1
fi
servers | awk -v g="$FROM" '$1 == g { found = 1 } END { exit !found }' || {
    echo "zdd.sh: backend $BACKEND has no group $FROM with servers" >&2
    exit 1
}

total=$(echo "$STEPS" | tr ',' '\n' | wc -l | tr -d ' ')
i=0
for step in $(echo "$STEPS" | tr ',' ' '); do
    i=$((i + 1))
    to_w=$((step * 10))
    from_w=$((1000 - to_w))
    change "set split $BACKEND $FROM=$from_w $TO=$to_w"
    if [ "$DRY" = 1 ]; then
        echo "step $i/$total: $FROM=$from_w $TO=$to_w (dry run: not observed)"
        continue
    fi
    to_before=$(counts "$TO"); from_before=$(counts "$FROM")
    lat_to_before=$(latency "$TO"); lat_from_before=$(latency "$FROM")
    sleep "$PAUSE"
    to_now=$(counts "$TO"); from_now=$(counts "$FROM")
    r=$(rate "$to_before" "$to_now"); to_rate=${r% *}; to_req=${r#* }
    r=$(rate "$from_before" "$from_now"); from_rate=${r% *}; from_req=${r#* }
    to_p99=$(p99 "$lat_to_before" "$(latency "$TO")")
    from_p99=$(p99 "$lat_from_before" "$(latency "$FROM")")
    echo "step $i/$total: $FROM=$from_w $TO=$to_w | $TO $to_req req ${to_rate}% 5xx p99 ${to_p99}ms | $FROM $from_req req ${from_rate}% 5xx p99 ${from_p99}ms"

    breach=
    old_too=1
    if above "$to_rate" "$MAX_ERR"; then
        breach="$TO 5xx rate ${to_rate}% > ${MAX_ERR}%"
        if [ "$from_req" -eq 0 ] || ! above "$from_rate" "$MAX_ERR"; then old_too=0; fi
    fi
    if [ -n "$MAX_P99" ] && above "$to_p99" "$MAX_P99"; then
        breach="${breach:+$breach, }$TO p99 ${to_p99}ms > ${MAX_P99}ms"
        if [ "$from_req" -eq 0 ] || ! above "$from_p99" "$MAX_P99"; then old_too=0; fi
    fi
    if [ -n "$breach" ] && [ "$old_too" = 1 ]; then
        echo "zdd.sh: backend-wide failure ($FROM breaches too: ${from_rate}% 5xx, p99 ${from_p99}ms): not blamed on $TO; split left at $FROM=$from_w $TO=$to_w" >&2
        exit 3
    fi
    if [ -n "$breach" ]; then
        change "set split $BACKEND $FROM=1000 $TO=0"
        echo "rolled back at step $i/$total: $breach; $FROM takes all traffic again"
        exit 2
    fi
done

change "set group $BACKEND/$FROM state drain"
if [ "$DRY" = 1 ]; then
    echo "would send: wait ${DRAIN_TIMEOUT}s group-drained $BACKEND/$FROM"
    exit 0
fi
answer=$(ask "wait ${DRAIN_TIMEOUT}s group-drained $BACKEND/$FROM") || true
if [ "$answer" != "Drained." ]; then
    echo "zdd.sh: $FROM did not drain: $answer" >&2
    exit 4
fi
echo "deployed: $TO takes all traffic of $BACKEND, $FROM drained"
