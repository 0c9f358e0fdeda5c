#!/usr/bin/env python3
"""RSS per idle keep-alive client connection of a proxy.

Opens N connections to HOST:PORT, sends one `GET / HTTP/1.1` on each, reads the
response, and keeps every socket open and idle. Reads VmRSS of the given PIDs
(summed) before and while the connections are held, and prints one line:

    conns=<ok> before_kb=<kB> with_kb=<kB> per_conn_bytes=<bytes>

Usage: idle_conns.py --port 8100 --pid 1234 [--pid 1235] [-n 2000] [--hold 2]
"""
import argparse
import asyncio
import resource
import ssl
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def vm_rss_kb(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise RuntimeError("chunked responses are not expected here")
    if length:
        await reader.readexactly(length)
    return status


TLS = None  # an ssl.SSLContext with --tls (no verification: the cert is the test's own)


async def open_one(host, port, sem, timeout):
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=TLS), timeout)
        writer.write(REQUEST)
        await writer.drain()
        status = await asyncio.wait_for(read_response(reader), timeout)
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected status line {status!r}")
        return reader, writer


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, action="append", required=True,
                    help="process whose VmRSS is measured (repeatable; summed)")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--hold", type=float, default=2.0, help="seconds to idle before measuring")
    ap.add_argument("--warmup", type=int, default=20,
                    help="short-lived connections made before the baseline")
    ap.add_argument("--concurrency", type=int, default=100, help="connects in flight at once")
    ap.add_argument("--tls", action="store_true", help="connect with TLS (HTTP/1.1 by ALPN)")
    args = ap.parse_args()
    global TLS
    if args.tls:
        TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        TLS.check_hostname = False
        TLS.verify_mode = ssl.CERT_NONE
        TLS.set_alpn_protocols(["http/1.1"])

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))

    sem = asyncio.Semaphore(args.concurrency)
    # Warm-up: one-time allocations (upstream pool, lazy statics) are not per-connection.
    for _ in range(args.warmup):
        r, w = await open_one(args.host, args.port, sem, 10)
        w.close()
        await w.wait_closed()
    await asyncio.sleep(1.0)
    before = vm_rss_kb(args.pid)

    results = await asyncio.gather(
        *(open_one(args.host, args.port, sem, 30) for _ in range(args.n)),
        return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    await asyncio.sleep(args.hold)
    with_ = vm_rss_kb(args.pid)

    # Are the connections still open (the proxy did not time them out)?
    still_open = 0
    for reader, writer in ok:
        if not reader.at_eof() and not writer.is_closing():
            still_open += 1

    per_conn = (with_ - before) * 1024 / max(len(ok), 1)
    print(f"conns={len(ok)} still_open={still_open} errors={len(errors)} "
          f"before_kb={before} with_kb={with_} per_conn_bytes={per_conn:.0f}")
    if errors:
        kinds = {}
        for e in errors:
            kinds[repr(e)[:120]] = kinds.get(repr(e)[:120], 0) + 1
        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  error x{v}: {k}", file=sys.stderr)

    for _, writer in ok:
        writer.close()
    await asyncio.sleep(0.2)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
