#!/usr/bin/env python3
"""Where oncemail's CPU goes in one bench cell (default: 5 KiB x 100 sessions).

Starts oncemail and the relay smtp-sink exactly as bench/run does, runs
gapbench against it under `perf record -e cpu-clock -g` (a software clock
event: this VM exposes no hardware counters), and writes to
bench/results/profile.txt:

- CPU per thread (from /proc/PID/task/*/stat: tokio workers, the spool
  writer, the blocking pool, ...), user and system apart;
- system calls and context switches per message, from /proc/PID/task/*/status
  and /proc/PID/io (syscr/syscw);
- perf's top symbols (self time) and top shared objects.

Usage: bench/profile.py [SIZE SESSIONS MESSAGES]   (ONCEMAIL_BIN as for bench/run)
"""

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import bench
import proctree


def threads(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                raw = f.read()
            name = raw[raw.index(b"(") + 1:raw.rindex(b")")].decode()
            fields = raw[raw.rindex(b")") + 2:].split()
            ctx = {}
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:
                        k, v = line.split(":")
                        ctx[k.strip()] = int(v)
            out[tid] = (name, int(fields[11]), int(fields[12]),
                        ctx.get("voluntary_ctxt_switches", 0), ctx.get("nonvoluntary_ctxt_switches", 0))
        except OSError:
            continue
    return out


def io_counts(pid):
    d = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            d[k] = int(v)
    return d


def main():
    size, sess, total = (int(x) for x in (sys.argv[1:4] if len(sys.argv) >= 4 else (5120, 100, 6000)))
    bench.OUT.mkdir(parents=True, exist_ok=True)
    sink = bench.SmtpSink(bench.RELAY_SINK_PORT, "relay-sink")
    om = bench.Oncemail(bench.RELAY_SINK_PORT)
    lines = []
    try:
        om.start()
        bench.run_gapbench(om.port, om.to, size, sess, 500)   # warm up
        proctree.wait_for(om.drained, 60)
        t0, io0, cpu0 = threads(om.pid), io_counts(om.pid), proctree.cpu_seconds(om.pid)
        data = bench.OUT / "perf.data"
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g",
                                 "-o", str(data), "-p", str(om.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        t_start = time.monotonic()
        r = bench.run_gapbench(om.port, om.to, size, sess, total)
        proctree.wait_for(om.drained, 120)
        wall = time.monotonic() - t_start
        perf.send_signal(2)
        perf.wait(60)
        t1, io1, cpu1 = threads(om.pid), io_counts(om.pid), proctree.cpu_seconds(om.pid)
        n = r["ok"]
        lines.append(f"oncemail profile: {bench.human_size(size)} x {sess} sessions, {n} messages, "
                     f"gapbench {r['msgs_per_s']:.0f} msg/s, gap p50 {r['gap_ms']['p50']:.2f} ms "
                     f"p99 {r['gap_ms']['p99']:.2f} ms; delivery {bench.DELIVERY}; "
                     f"{wall:.1f} s until drained; {1000 * (cpu1 - cpu0) / n:.3f} ms CPU per message "
                     f"(under perf, which costs a little)")
        lines.append("")
        lines.append("CPU per thread name (ms per message; user / system), context switches per message:")
        per = defaultdict(lambda: [0, 0, 0, 0, 0])
        for tid, (name, u, s, v, nv) in t1.items():
            u0, s0, v0, nv0 = (t0[tid][1:] if tid in t0 else (0, 0, 0, 0))
            p = per[name]
            p[0] += u - u0
            p[1] += s - s0
            p[2] += v - v0
            p[3] += nv - nv0
            p[4] += 1
        tick_ms = 1000 / proctree.CLK_TCK
        for name, (u, s, v, nv, k) in sorted(per.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
            if u + s == 0 and v + nv == 0:
                continue
            lines.append(f"  {name:24s} x{k:<3d} user {u * tick_ms / n:.3f}  sys {s * tick_ms / n:.3f}  "
                         f"voluntary cs {v / n:.2f}  involuntary {nv / n:.2f}")
        lines.append(f"read/write-class syscalls per message: syscr {(io1['syscr'] - io0['syscr']) / n:.1f}, "
                     f"syscw {(io1['syscw'] - io0['syscw']) / n:.1f}; bytes written to storage per message "
                     f"{(io1['write_bytes'] - io0['write_bytes']) / n:,.0f}")
        lines.append("")
        for title, sort in (("top symbols by self time", "sym"), ("by shared object", "dso")):
            rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                                  "--sort", sort, "-g", "none", "--percent-limit", "0.7"],
                                 capture_output=True, text=True)
            body = [l for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")]
            lines.append(f"perf ({title}):")
            lines.extend("  " + l.strip() for l in body[:35])
            lines.append("")
    finally:
        om.stop()
        sink.stop()
    text = "\n".join(lines)
    print(text)
    (bench.OUT / "profile.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
