#!/usr/bin/env python3
"""Turn run.sh's raw CSVs into the markdown results (medians, ratios vs HAProxy).

Usage: report.py OUT_DIR   (reads OUT_DIR/raw.csv and OUT_DIR/mem.csv)
"""
import csv
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = list(csv.DictReader(open(out / "raw.csv")))
mem = list(csv.DictReader(open(out / "mem.csv"))) if (out / "mem.csv").exists() else []
meta = (out / "meta.txt").read_text() if (out / "meta.txt").exists() else ""

TARGETS = ["direct", "veer-http", "haproxy-http", "nginx-proxy", "veer-tcp", "haproxy-tcp"]
LABEL = {
    "direct": "direct to a backend",
    "veer-http": "veer http",
    "haproxy-http": "HAProxy http",
    "nginx-proxy": "nginx proxy",
    "veer-tcp": "veer tcp (L4)",
    "haproxy-tcp": "HAProxy tcp (L4)",
}
# Which HAProxy row each target is compared with.
VS = {"veer-http": "haproxy-http", "nginx-proxy": "haproxy-http", "haproxy-http": "haproxy-http",
      "veer-tcp": "haproxy-tcp", "haproxy-tcp": "haproxy-tcp"}


def med(rows, key):
    vals = [float(r[key]) for r in rows if r[key] not in ("", "nan")]
    return statistics.median(vals) if vals else None


def fmt(v, digits=2):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


lines = []
p = lines.append
p("# veer vs HAProxy vs nginx — whole-proxy load test")
p("")
if meta:
    p("```")
    p(meta.strip())
    p("```")
    p("")

conns = sorted({int(r["conns"]) for r in runs})
cells = {}
for c in conns:
    for t in TARGETS:
        rows = [r for r in runs if int(r["conns"]) == c and r["target"] == t]
        if not rows:
            continue
        cells[(c, t)] = {
            "n": len(rows),
            "rps": med(rows, "rps"),
            "p50": med(rows, "p50_ms"),
            "p99": med(rows, "p99_ms"),
            "cpu": med(rows, "cpu_s_per_100k"),
            "core0": med(rows, "core0_busy_pct"),
            "core1": med(rows, "core1_busy_pct"),
            "errors": sum(int(r["non2xx"]) + int(r["sock_errors"]) for r in rows),
            "rps_all": [float(r["rps"]) for r in rows],
        }

p("## HTTP/1.1 keep-alive, 13-byte responses (medians)")
p("")
p("CPU s/100k = CPU seconds (utime+stime) of the proxy process per 100,000 requests. "
  "Ratios: veer/HAProxy and nginx/HAProxy of the same mode (http vs http, tcp vs tcp).")
p("")
p("| conns | target | runs | req/s | vs direct | p50 ms | p99 ms | CPU s/100k req | "
  "core0 % | core1 % | errors | req/s vs HAProxy | p99 vs HAProxy | CPU/req vs HAProxy |")
p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for c in conns:
    direct = cells.get((c, "direct"), {}).get("rps")
    for t in TARGETS:
        x = cells.get((c, t))
        if not x:
            continue
        ref = cells.get((c, VS[t])) if t in VS else None
        p(f"| {c} | {LABEL[t]} | {x['n']} | {fmt(x['rps'])} | {ratio(x['rps'], direct)} | "
          f"{fmt(x['p50'])} | {fmt(x['p99'])} | {fmt(x['cpu'], 3)} | {fmt(x['core0'], 0)} | "
          f"{fmt(x['core1'], 0)} | {x['errors']} | "
          f"{ratio(x['rps'], ref['rps']) if ref else '—'} | "
          f"{ratio(x['p99'], ref['p99']) if ref else '—'} | "
          f"{ratio(x['cpu'], ref['cpu']) if ref else '—'} |")
p("")
# Paired ratios: target vs HAProxy in the same round (runs ~10-60 s apart), median over
# rounds. Sturdier than a ratio of medians when the machine's load drifts between rounds.
p("Same-round ratios vs HAProxy (each round's ratio, then the median over rounds):")
p("")
p("| conns | target | req/s ratio | p99 ratio | CPU/req ratio | per-round req/s ratios |")
p("|---|---|---|---|---|---|")
for c in conns:
    for t in ("veer-http", "nginx-proxy", "veer-tcp"):
        ref = VS[t]
        rr, pr, cr = [], [], []
        for rnd in sorted({r["round"] for r in runs}, key=int):
            a = [r for r in runs if int(r["conns"]) == c and r["target"] == t and r["round"] == rnd]
            b = [r for r in runs if int(r["conns"]) == c and r["target"] == ref and r["round"] == rnd]
            if a and b:
                a, b = a[0], b[0]
                rr.append(float(a["rps"]) / float(b["rps"]))
                pr.append(float(a["p99_ms"]) / float(b["p99_ms"]))
                cr.append(float(a["cpu_s_per_100k"]) / float(b["cpu_s_per_100k"]))
        if rr:
            p(f"| {c} | {LABEL[t]} / {LABEL[ref]} | {statistics.median(rr):.2f} | "
              f"{statistics.median(pr):.2f} | {statistics.median(cr):.2f} | "
              + ", ".join(f"{x:.2f}" for x in rr) + " |")
p("")
p("Individual runs (req/s), in the order they ran:")
p("")
for c in conns:
    for t in TARGETS:
        x = cells.get((c, t))
        if x:
            p(f"- {c} conns, {LABEL[t]}: " + ", ".join(f"{v:,.0f}" for v in x["rps_all"]))
p("")

errs = [r for r in runs if int(r["non2xx"]) or int(r["sock_errors"])]
if errs:
    p("### wrk errors")
    p("")
    for r in errs:
        p(f"- round {r['round']}, {r['conns']} conns, {LABEL[r['target']]}: "
          f"non-2xx/3xx {r['non2xx']}, socket errors: {r['sock_detail']}")
    p("")

if mem:
    p("## Memory per idle keep-alive client connection")
    p("")
    p("Freshly started process; 20 warm-up connections; then N connections each send one "
      "request over keep-alive and are held idle. RSS (VmRSS) before and with them.")
    p("")
    p("| target | conns held | RSS before kB | RSS with kB | bytes per idle conn | vs HAProxy |")
    p("|---|---|---|---|---|---|")
    per = {m["target"]: float(m["per_conn_bytes"]) for m in mem}
    for m in mem:
        ref = per.get(VS.get(m["target"], ""))
        p(f"| {LABEL[m['target']]} | {m['conns']} (open {m['still_open']}, errors {m['errors']}) | "
          f"{m['before_kb']} | {m['with_kb']} | {float(m['per_conn_bytes']):,.0f} | "
          f"{ratio(float(m['per_conn_bytes']), ref) if ref else '—'} |")
    p("")

p("Fixed-rate latency (below saturation) is not measured: wrk2 is not packaged in Debian.")
text = "\n".join(lines) + "\n"
(out / "results.md").write_text(text)
sys.stdout.write(text)
