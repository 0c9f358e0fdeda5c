#!/usr/bin/env python3
"""Turn run.sh's raw CSVs into the markdown results (medians, same-round ratios vs HAProxy)
and a chart of veer's ratios.

Usage: report.py OUT_DIR   (reads OUT_DIR/raw.csv, OUT_DIR/mem.csv, OUT_DIR/meta.txt;
                            writes OUT_DIR/results.md and OUT_DIR/ratios.png)
"""
import csv
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = list(csv.DictReader(open(out / "raw.csv"))) if (out / "raw.csv").exists() else []
for r in runs:
    r.setdefault("mode", "keepalive")
    if not r.get("mode"):
        r["mode"] = "keepalive"
mem = list(csv.DictReader(open(out / "mem.csv"))) if (out / "mem.csv").exists() else []
meta = (out / "meta.txt").read_text() if (out / "meta.txt").exists() else ""

LABEL = {
    "direct": "direct to a backend",
    "veer-http": "veer http",
    "veer-pages": "veer http, status pages open",
    "haproxy-http": "HAProxy http",
    "nginx-proxy": "nginx proxy",
    "veer-tcp": "veer tcp (L4)",
    "haproxy-tcp": "HAProxy tcp (L4)",
    "veer-h2c": "veer h2c",
    "haproxy-h2c": "HAProxy h2c",
    "nginx-h2c": "nginx h2c",
    "veer-https": "veer https (TLS 1.3)",
    "haproxy-https": "HAProxy https (TLS 1.3)",
}
# Which HAProxy row each target is compared with.
VS = {"veer-http": "haproxy-http", "veer-pages": "haproxy-http", "nginx-proxy": "haproxy-http", "haproxy-http": "haproxy-http",
      "veer-tcp": "haproxy-tcp", "haproxy-tcp": "haproxy-tcp",
      "veer-h2c": "haproxy-h2c", "nginx-h2c": "haproxy-h2c", "haproxy-h2c": "haproxy-h2c",
      "veer-https": "haproxy-https", "haproxy-https": "haproxy-https"}
MODES = {
    "keepalive": "HTTP/1.1 keep-alive, 13-byte responses",
    "close": "HTTP/1.1, a new connection per request (Connection: close)",
    "big": "1 MiB responses (throughput in MB/s)",
    "h2c": "h2c (HTTP/2 prior knowledge), h2load -c50 -m10",
    "capped": "HTTP/1.1 keep-alive, every proxy capped at the same share of one core (proxy-bound)",
    "tls": "HTTPS keep-alive (TLS 1.3, ECDSA P-256), both capped at the same share of one core",
    "tlsnew": "HTTPS, a new TLS handshake per request (Connection: close), both capped at the same share of one core",
    "pages": "HTTP/1.1 keep-alive with status pages open (PAGES /events streams) against without",
}


def num(r, key):
    v = r.get(key, "")
    return float(v) if v not in ("", "nan", None) else None


def med(rows, key):
    vals = [v for v in (num(r, key) for r in rows) if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=2):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def same_round(rows, t, ref, key):
    """Median over rounds of target/ref for `key`, and the per-round ratios."""
    ratios = []
    for rnd in sorted({r["round"] for r in rows}, key=int):
        a = [r for r in rows if r["target"] == t and r["round"] == rnd]
        b = [r for r in rows if r["target"] == ref and r["round"] == rnd]
        if a and b and num(a[0], key) and num(b[0], key):
            ratios.append(num(a[0], key) / num(b[0], key))
    return (statistics.median(ratios) if ratios else None), ratios


lines = []
p = lines.append
p("# veer vs HAProxy vs nginx — whole-proxy load test")
p("")
if meta:
    p("```")
    p(meta.strip())
    p("```")
    p("")
p("CPU s/100k = CPU seconds (utime+stime) of the proxy process per 100,000 requests. Ratios are "
  "same-round: each round's target/HAProxy ratio, then the median over rounds (sturdier than a "
  "ratio of medians when the machine's load drifts).")
p("")

chart = []  # (label, req/s ratio, cpu ratio)
for mode, title in MODES.items():
    rows_m = [r for r in runs if r["mode"] == mode]
    if not rows_m:
        continue
    p(f"## {title}")
    p("")
    p("| conns | target | runs | req/s | MB/s | p50 ms | p99 ms | CPU s/100k | core0 % | core1 % | errors "
      "| req/s vs HAProxy | p99 vs HAProxy | CPU/req vs HAProxy | per-round req/s ratios |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in sorted({int(r["conns"]) for r in rows_m}):
        rows = [r for r in rows_m if int(r["conns"]) == c]
        for t in LABEL:
            mine = [r for r in rows if r["target"] == t]
            if not mine:
                continue
            errors = sum(int(float(r["non2xx"] or 0)) + int(float(r["sock_errors"] or 0)) for r in mine)
            ref = VS.get(t)
            rr, per = same_round(rows, t, ref, "rps") if ref and ref != t else (None, [])
            pr, _ = same_round(rows, t, ref, "p99_ms") if ref and ref != t else (None, [])
            cr, _ = same_round(rows, t, ref, "cpu_s_per_100k") if ref and ref != t else (None, [])
            p(f"| {c} | {LABEL[t]} | {len(mine)} | {fmt(med(mine, 'rps'))} | {fmt(med(mine, 'mb_per_s'))} | "
              f"{fmt(med(mine, 'p50_ms'))} | {fmt(med(mine, 'p99_ms'))} | {fmt(med(mine, 'cpu_s_per_100k'), 3)} | "
              f"{fmt(med(mine, 'core0_busy_pct'), 0)} | {fmt(med(mine, 'core1_busy_pct'), 0)} | {errors} | "
              f"{fmt(rr)} | {fmt(pr)} | {fmt(cr)} | {', '.join(f'{x:.2f}' for x in per) or '—'} |")
            if t.startswith("veer") and rr is not None:
                chart.append((f"{mode} {LABEL[t].split()[1]} c{c}", rr, cr))
        if mode == "pages":
            # The page's own cost: veer with pages open against veer without, same rounds.
            rr, per = same_round(rows, "veer-pages", "veer-http", "rps")
            cr, _ = same_round(rows, "veer-pages", "veer-http", "cpu_s_per_100k")
            pr, _ = same_round(rows, "veer-pages", "veer-http", "p99_ms")
            p("")
            p(f"veer with pages open / veer without, c={c}: req/s {fmt(rr)} "
              f"(per round {', '.join(f'{x:.2f}' for x in per) or '—'}), CPU/req {fmt(cr)}, p99 {fmt(pr)}.")
    p("")

if mem:
    p("## Memory per idle keep-alive client connection")
    p("")
    p("Freshly started process; N connections each send one request over keep-alive and are held "
      "idle. RSS (VmRSS) before and with them.")
    p("")
    p("| target | conns held | RSS before kB | RSS with kB | bytes per idle conn | vs HAProxy |")
    p("|---|---|---|---|---|---|")
    per = {m["target"]: float(m["per_conn_bytes"]) for m in mem}
    for m in mem:
        ref = per.get(VS.get(m["target"], ""))
        v = float(m["per_conn_bytes"])
        p(f"| {LABEL[m['target']]} | {m['conns']} (open {m['still_open']}, errors {m['errors']}) | "
          f"{m['before_kb']} | {m['with_kb']} | {v:,.0f} | {fmt(v / ref) if ref else '—'} |")
    p("")

p("Fixed-rate latency (below saturation) is not measured: wrk2 is not packaged in Debian.")
text = "\n".join(lines) + "\n"
(out / "results.md").write_text(text)
sys.stdout.write(text)

if chart:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write("matplotlib not installed (Debian python3-matplotlib): no chart\n")
    else:
        fig, ax = plt.subplots(figsize=(max(6, len(chart) * 0.9), 4))
        xs = range(len(chart))
        ax.bar([x - 0.2 for x in xs], [c[1] for c in chart], width=0.4, label="req/s vs HAProxy")
        ax.bar([x + 0.2 for x in xs], [c[2] or 0 for c in chart], width=0.4, label="CPU per request vs HAProxy")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([c[0] for c in chart], rotation=30, ha="right")
        ax.set_ylabel("ratio (same run, medians of rounds)")
        ax.set_title("veer / HAProxy 2.6")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "ratios.png", dpi=110)
