#!/usr/bin/env python3
"""oncemail against Postfix on this machine: speed, final-dot gap, CPU, memory.

Run it through `bench/run` (which installs and configures Postfix, builds
oncemail and provides matplotlib); the knobs are environment variables,
listed in `bench/run`. What it does:

1. starts two Postfix smtp-sink processes: one that oncemail relays to (the
   work comparable to Postfix's discard transport, see below), one as the
   ceiling (a server that stores nothing), and oncemail itself on a fresh
   data dir on the filesystem that holds Postfix's queue;
2. for every repetition, cell (size x sessions) and load client (gapbench.py,
   Postfix's smtp-source), runs the client against oncemail and Postfix in
   turn, alternating which goes first, then against the ceiling sink. Before
   and after each run it waits until the server's queue is empty, so the
   CPU measured (the server's whole process tree, from /proc) covers
   receiving *and* delivering every message of the run;
3. the memory case: N sessions each stopped half way through a large DATA,
   the server's memory sampled while they hold, then aborted;
4. prints one table (medians over repetitions), writes it to
   results/latest.md, raw rows to results/raw.jsonl and the gap CDFs to
   results/gap.png.

Fairness: Postfix queues each message (file, fsync) and hands it to the
`discard` transport. oncemail queues it (log record, group fdatasync) and
relays it over SMTP to a local smtp-sink (DELIVERY=relay, the default) or
writes it into a Maildir with its own fsync (DELIVERY=maildir). Both are at
least the work of discarding, so ratios err in Postfix's favour. Duplicate
suppression is on (oncemail's default); every message the clients send is
distinct, and the table reports any that were suppressed.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import proctree

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"
KIB = 1024
MIB = 1024 * 1024


def env(name, default):
    v = os.environ.get(name)
    return type(default)(v) if v not in (None, "") else default


QUICK = env("QUICK", 0) == 1
REPS = env("REPS", 2 if QUICK else 4)
SCALE = env("SCALE", 0.3 if QUICK else 1.0)   # multiplies every message count
OUT = Path(env("OUT", str(HERE / "results")))
ONCEMAIL_BIN = env("ONCEMAIL_BIN", str(REPO / "target/release/oncemail"))
OM_PORT = env("ONCEMAIL_PORT", 2525)
PF_PORT = env("POSTFIX_PORT", 2526)
RELAY_SINK_PORT = env("RELAY_SINK_PORT", 2527)
CEIL_SINK_PORT = env("CEILING_SINK_PORT", 2528)
DELIVERY = env("DELIVERY", "relay")               # relay | maildir
DATA_ROOT = Path(env("DATA_ROOT", "/var/spool/oncemail-bench"))
STEP_TIMEOUT = env("STEP_TIMEOUT", 240)
BUDGET = env("BUDGET_SECONDS", 300 if QUICK else 1500)  # stop adding repetitions after this
MEM_SESSIONS = env("MEM_SESSIONS", 1000)
MEM_SIZE = env("MEM_SIZE", 10 * MIB)
MEM_HOLD = env("MEM_HOLD", 5.0)
MEM_POSTFIX = env("MEM_POSTFIX", 0 if QUICK else 1)
SKIP_MEM = env("SKIP_MEM", 0)
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
FROM = "from@example.com"

# (size, sessions, total messages at SCALE 1)
CELLS = [
    (1 * KIB, 1, 1000), (1 * KIB, 10, 2000), (1 * KIB, 100, 3000),
    (5 * KIB, 100, 3000),
    (10 * KIB, 1, 1000), (10 * KIB, 10, 2000), (10 * KIB, 100, 3000),
    (1 * MIB, 1, 40), (1 * MIB, 10, 100), (1 * MIB, 100, 200),
]
if os.environ.get("CELLS"):   # e.g. CELLS="5120x100:2000 1024x1:600"
    CELLS = []
    for item in os.environ["CELLS"].split():
        cell, _, n = item.partition(":")
        size, _, sess = cell.partition("x")
        CELLS.append((int(size), int(sess), int(n or 1000)))
CLIENTS = env("CLIENTS", "gapbench smtp-source").split()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def human_size(n):
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"


def _is_listening(port):
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == want and line.split()[3] == "0A" for line in list(f)[1:])


# -- the servers -------------------------------------------------------------

class SmtpSink:
    """Postfix's smtp-sink: accepts everything, stores nothing."""

    def __init__(self, port, name):
        self.port, self.name = port, name
        if _is_listening(port):
            raise SystemExit(f"port {port} ({name}) is already in use")
        self.logf = open(OUT / f"{name}.log", "ab")
        self.proc = subprocess.Popen([SINK, "-u", "nobody", "-m", "2048", f"{HOST}:{port}", "2048"],
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf)
        if not proctree.wait_for(lambda: _is_listening(port), 10):
            raise SystemExit(f"smtp-sink on {port} did not start")
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Oncemail:
    name = "oncemail"

    def __init__(self, relay_port):
        self.dir = DATA_ROOT
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.data = self.dir / "data"
        self.config = self.dir / "oncemail.toml"
        self.config.write_text(
            "[server]\n"
            'hostname = "oncemail.bench.invalid"\n'
            "[local]\n"
            'domains = ["localhost"]\n'
            "[limits]\n"
            "max_message_size = 52428800\n"
            "max_connections = 4000\n"
            "max_connections_per_ip = 4000\n"
            "[relay]\n"
            'trusted_networks = ["127.0.0.0/8"]\n'
            f'routes = {{ "*" = "{HOST}:{relay_port}" }}\n'
            "starttls = false\n"
            "concurrency = 20\n"
            "per_destination = 20\n"
        )
        self.port = OM_PORT
        self.to = "to@example.net" if DELIVERY == "relay" else "user@localhost"
        self.proc = None
        self.starts = 0
        self.counts = {"accepted": 0, "removed": 0, "suppressed duplicate": 0, "deferred": 0,
                       "possibly delivered": 0, "failed": 0, "rejected": 0,
                       "session ended in the gap": 0}
        self._pos = 0

    def start(self):
        if _is_listening(self.port):
            raise SystemExit(f"port {self.port} (oncemail) is already in use")
        self.starts += 1
        self.logpath = self.dir / f"oncemail-{self.starts}.log"
        self._pos = 0
        with open(self.logpath, "wb") as out:
            self.proc = subprocess.Popen(
                [ONCEMAIL_BIN, "serve", "--listen", f"{HOST}:{self.port}",
                 "--data-dir", str(self.data), "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)
        if not proctree.wait_for(lambda: _is_listening(self.port) or self.proc.poll() is not None, 20) \
                or self.proc.poll() is not None:
            raise SystemExit(f"oncemail did not start; see {self.logpath}")
        self.pid = self.proc.pid
        for k in self.counts:
            self.counts[k] = 0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _scan_log(self):
        with open(self.logpath, "rb") as f:
            f.seek(self._pos)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._pos += end
        for line in chunk[:end].split(b"\n"):
            parts = line.split(None, 2)
            if len(parts) < 3:
                continue
            rest = parts[2].decode("utf-8", "replace")
            for key in self.counts:
                if rest.startswith(key + " ") or rest == key:
                    self.counts[key] += 1
                    break

    def snapshot(self):
        self._scan_log()
        return dict(self.counts)

    def drained(self):
        self._scan_log()
        if self.proc.poll() is not None:
            raise SystemExit(f"oncemail died (exit {self.proc.returncode}); see {self.logpath}")
        return self.counts["removed"] >= self.counts["accepted"]


class Postfix:
    name = "postfix"

    def __init__(self):
        self.port = PF_PORT
        self.to = "to@example.net"
        self.qdir = Path(subprocess.run(["postconf", "-h", "queue_directory"], capture_output=True,
                                        text=True, check=True).stdout.strip())
        self.pid = int((self.qdir / "pid/master.pid").read_text().split()[0])
        if not _is_listening(self.port):
            raise SystemExit(f"Postfix is not listening on {HOST}:{self.port} (run bench/run)")

    def queued(self):
        n = 0
        for sub in ("incoming", "active", "deferred", "maildrop", "hold"):
            for _, _, files in os.walk(self.qdir / sub):
                n += len(files)
        return n

    def drained(self):
        return self.queued() == 0

    def snapshot(self):
        return {}


# -- the load clients -----------------------------------------------------------

def run_gapbench(port, to, size, sessions, total):
    per = max(1, total // sessions)
    cmd = [sys.executable, str(HERE / "gapbench.py"), "--host", HOST, "--port", str(port),
           "-s", str(sessions), "-m", str(per), "-l", str(size), "-f", FROM, "-t", to,
           "--max-seconds", str(STEP_TIMEOUT - 10), "--json", "--raw"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    if not p.stdout.strip():
        return {"ok": 0, "failed": per * sessions, "msgs_per_s": 0.0, "rc": p.returncode,
                "error": p.stderr[-500:]}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["rc"] = p.returncode
    return r


def run_smtp_source(port, to, size, sessions, total):
    cmd = [SOURCE, "-s", str(sessions), "-m", str(total), "-l", str(size), "-f", FROM, "-t", to,
           f"{HOST}:{port}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    wall = time.perf_counter() - t0
    ok = total if p.returncode == 0 else 0
    return {"ok": ok, "failed": total - ok, "wall_s": wall, "msgs_per_s": ok / wall if ok else 0.0,
            "rc": p.returncode, **({"error": (p.stdout + p.stderr)[-500:]} if p.returncode else {})}


CLIENT_FN = {"gapbench": run_gapbench, "smtp-source": run_smtp_source}


def measure(server, client, size, sessions, total, rep):
    """One client run against one server; CPU and memory cover the run and the
    delivery of everything it sent."""
    if not proctree.wait_for(server.drained, 120):
        log(f"warning: {server.name} queue not empty before the run")
    before = server.snapshot()
    with proctree.MemSampler(server.pid, 0.25) as mem, proctree.CpuMeter(server.pid) as cpu:
        t0 = time.monotonic()
        r = CLIENT_FN[client](server.port, server.to, size, sessions, total)
        t_client = time.monotonic() - t0
        drained = proctree.wait_for(server.drained, 180, 0.02)
        t_drain = time.monotonic() - t0 - t_client
    after = server.snapshot()
    row = {
        "server": server.name, "client": client, "size": size, "sessions": sessions,
        "messages": total, "rep": rep, "ok": r["ok"], "failed": r.get("failed", 0), "rc": r["rc"],
        "msgs_per_s": r["msgs_per_s"], "cpu_s": cpu.seconds,
        "cpu_s_per_1k": 1000 * cpu.seconds / r["ok"] if r["ok"] else None,
        "peak_rss_mib": mem.peak_rss / MIB, "peak_pss_mib": mem.peak_pss / MIB,
        "peak_procs": mem.peak_procs, "client_s": t_client, "drain_s": t_drain, "drained": drained,
        "events": {k: after[k] - before.get(k, 0) for k in after},
    }
    if "gap_ms" in r:
        row["gap_ms"] = r["gap_ms"]
        row["gaps_ms_raw"] = r.get("gaps_ms_raw", [])
        row["client_cpu_s"] = r.get("client_cpu_s")
    if r.get("error") or r.get("fail_reasons"):
        row["error"] = r.get("error") or r.get("fail_reasons")
    return row


def measure_sink(sink, client, size, sessions, total, rep):
    t = total * 3 if size < MIB else total
    r = CLIENT_FN[client](sink.port, "to@example.net", size, sessions, t)
    row = {"server": "smtp-sink", "client": client, "size": size, "sessions": sessions,
           "messages": t, "rep": rep, "ok": r["ok"], "failed": r.get("failed", 0), "rc": r["rc"],
           "msgs_per_s": r["msgs_per_s"]}
    if "gap_ms" in r:
        row["gap_ms"] = r["gap_ms"]
        row["gaps_ms_raw"] = r.get("gaps_ms_raw", [])
    return row


# -- memory case ------------------------------------------------------------------

def memory_case(server, to):
    log(f"memory case: {server.name}, {MEM_SESSIONS} sessions x half of {human_size(MEM_SIZE)}")
    proctree.wait_for(server.drained, 120)
    series = []
    sampler = proctree.MemSampler(server.pid, 0.5)
    sampler.__enter__()
    cmd = [sys.executable, str(HERE / "memcase.py"), "--port", str(server.port),
           "--sessions", str(MEM_SESSIONS), "--size", str(MEM_SIZE), "--hold", str(MEM_HOLD),
           "-t", to]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ready_line = p.stdout.readline().split()
    # Sample at the hold explicitly (a few times), besides the background sampler.
    hold = []
    t_end = time.monotonic() + max(1.0, MEM_HOLD - 1)
    while time.monotonic() < t_end:
        rss, pss, n = proctree.tree_memory(server.pid)
        hold.append((rss, pss, n))
        time.sleep(0.5)
    out = p.communicate(timeout=STEP_TIMEOUT)[0]
    sampler.__exit__()
    summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    row = {
        "case": "memory", "server": server.name, "sessions": MEM_SESSIONS, "size": MEM_SIZE,
        "ready": int(ready_line[1]) if len(ready_line) > 1 else 0,
        "ready_s": float(ready_line[2]) if len(ready_line) > 2 else None,
        "hold_rss_mib": max((h[0] for h in hold), default=0) / MIB,
        "hold_pss_mib": max((h[1] for h in hold), default=0) / MIB,
        "hold_procs": max((h[2] for h in hold), default=0),
        "peak_rss_mib": sampler.peak_rss / MIB, "peak_pss_mib": sampler.peak_pss / MIB,
        "client": summary,
    }
    if server.name == "oncemail":
        row["vmhwm_mib"] = proctree.status_kib(server.pid, "VmHWM") / KIB
    proctree.wait_for(server.drained, 60)
    return row


# -- the report -------------------------------------------------------------------

def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def fmt(v, nd=0):
    if v is None:
        return "-"
    if nd == 0 and abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def ratio(a, b, nd=2):
    if a is None or b in (None, 0):
        return "-"
    r = a / b
    return f"{r:.{nd}f}" if r < 10 else f"{r:.1f}"


def summarize(rows, meta):
    cells = []
    for size, sess, _ in CELLS:
        for client in CLIENTS:
            sel = lambda srv: [r for r in rows if r.get("server") == srv and r.get("client") == client
                               and r.get("size") == size and r.get("sessions") == sess]
            om, pf, sk = sel("oncemail"), sel("postfix"), sel("smtp-sink")
            if not om and not pf:
                continue
            g = lambda rs, k: med([r["gap_ms"][k] for r in rs if r.get("gap_ms") and r["gap_ms"]["n"]])
            cells.append({
                "size": size, "sessions": sess, "client": client, "reps": len(om),
                "om_rate": med([r["msgs_per_s"] for r in om]), "pf_rate": med([r["msgs_per_s"] for r in pf]),
                "sink_rate": med([r["msgs_per_s"] for r in sk]),
                "om_p50": g(om, "p50"), "pf_p50": g(pf, "p50"), "sink_p50": g(sk, "p50"),
                "om_p99": g(om, "p99"), "pf_p99": g(pf, "p99"), "sink_p99": g(sk, "p99"),
                "om_max": g(om, "max"), "pf_max": g(pf, "max"),
                "om_cpu": med([r["cpu_s_per_1k"] for r in om]), "pf_cpu": med([r["cpu_s_per_1k"] for r in pf]),
                "om_mem": med([r["peak_pss_mib"] for r in om]), "pf_mem": med([r["peak_pss_mib"] for r in pf]),
                "om_rate_range": (min((r["msgs_per_s"] for r in om), default=0), max((r["msgs_per_s"] for r in om), default=0)),
                "pf_rate_range": (min((r["msgs_per_s"] for r in pf), default=0), max((r["msgs_per_s"] for r in pf), default=0)),
            })
    return cells


def render(cells, mem_rows, rows, meta):
    L = []
    L.append(f"oncemail vs Postfix, {meta['date']}, {meta['reps_done']} interleaved repetition(s), "
             f"medians; {meta['machine']}")
    L.append(f"oncemail {meta['oncemail_version']} delivering by {DELIVERY}"
             + (" (relay to a local smtp-sink)" if DELIVERY == "relay" else " (Maildir, fsync'd)")
             + f"; Postfix {meta['postfix_version']} delivering by discard; duplicate suppression on.")
    L.append("msg/s: as the client saw it. gap: final dot -> 250, ms (gapbench only). CPU: server "
             "process tree, seconds per 1,000 messages, receiving and delivering. mem: peak PSS "
             "of the process tree, MiB. Ratios are oncemail/Postfix.")
    L.append("")
    L.append("| size | sess | client | msg/s om | msg/s pf | x | om/sink | gap p50 om | pf | x "
             "| gap p99 om | pf | x | gap max om | pf | CPU s/1k om | pf | x | mem om | pf |")
    L.append("|" + "---:|" * 3 + "---:|" * 17)
    for c in cells:
        L.append("| " + " | ".join([
            human_size(c["size"]), str(c["sessions"]), c["client"],
            fmt(c["om_rate"]), fmt(c["pf_rate"]), ratio(c["om_rate"], c["pf_rate"], 1),
            ratio(c["om_rate"], c["sink_rate"]),
            fmt(c["om_p50"], 2), fmt(c["pf_p50"], 2), ratio(c["om_p50"], c["pf_p50"]),
            fmt(c["om_p99"], 2), fmt(c["pf_p99"], 2), ratio(c["om_p99"], c["pf_p99"]),
            fmt(c["om_max"], 1), fmt(c["pf_max"], 1),
            fmt(c["om_cpu"], 2), fmt(c["pf_cpu"], 2), ratio(c["om_cpu"], c["pf_cpu"]),
            fmt(c["om_mem"], 0), fmt(c["pf_mem"], 0),
        ]) + " |")
    L.append("")
    L.append("smtp-sink (stores nothing; the ceiling) in the same run: " + "; ".join(
        f"{human_size(c['size'])}/{c['sessions']} {c['client']} {fmt(c['sink_rate'])} msg/s"
        + (f", gap p50 {fmt(c['sink_p50'], 2)} p99 {fmt(c['sink_p99'], 2)} ms" if c["sink_p50"] is not None else "")
        for c in cells if c["sink_rate"] is not None and (c["size"], c["sessions"]) in ((5 * KIB, 100), (1 * KIB, 1))))
    if mem_rows:
        L.append("")
        L.append("Memory case: " + "; ".join(
            f"{m['server']}: {m['ready']}/{m['sessions']} sessions each {fmt(m['client'].get('bytes_each', 0) / MIB, 1)} MiB "
            f"into a {human_size(m['size'])} DATA, at the hold RSS {fmt(m['hold_rss_mib'], 0)} MiB / PSS "
            f"{fmt(m['hold_pss_mib'], 0)} MiB over {m['hold_procs']} process(es)"
            + (f", VmHWM {fmt(m['vmhwm_mib'], 0)} MiB" if "vmhwm_mib" in m else "")
            for m in mem_rows))
    # Targets
    L.append("")
    L.append("Targets:")
    t = {(c["size"], c["sessions"], c["client"]): c for c in cells}

    def verdict(ok):
        return "met" if ok else "MISSED"

    for client in CLIENTS:
        c = t.get((5 * KIB, 100, client))
        if c and c["om_rate"] and c["pf_rate"]:
            x = c["om_rate"] / c["pf_rate"]
            L.append(f"- 5 KiB x 100 sessions ({client}): {x:.2f}x Postfix's msg/s (target >= 5x): {verdict(x >= 5)}")
            if c["sink_rate"]:
                s = c["om_rate"] / c["sink_rate"]
                L.append(f"- 5 KiB x 100 sessions ({client}): {100 * s:.0f}% of smtp-sink's msg/s (target >= 40%): {verdict(s >= 0.4)}")
        if c and c["om_p99"] and c["pf_p99"]:
            x = c["om_p99"] / c["pf_p99"]
            L.append(f"- 5 KiB x 100 sessions: gap p99 {c['om_p99']:.2f} ms vs Postfix {c['pf_p99']:.2f} ms = "
                     f"{x:.2f} (target <= 0.20): {verdict(x <= 0.2)}")
    for size in (1 * KIB, 10 * KIB):
        c = t.get((size, 1, "gapbench"))
        if c and c["om_p50"] is not None:
            L.append(f"- 1 session, {human_size(size)}: gap p50 {c['om_p50']:.3f} ms (target <= 0.5 ms): "
                     f"{verdict(c['om_p50'] <= 0.5)}")
    cpu_x = [c["om_cpu"] / c["pf_cpu"] for c in cells if c["om_cpu"] and c["pf_cpu"]]
    if cpu_x:
        worst = max(cpu_x)
        L.append(f"- CPU per message: oncemail/Postfix from {min(cpu_x):.3f} to {worst:.3f} over the cells, "
                 f"median {statistics.median(cpu_x):.3f} (target <= 0.10): "
                 f"{verdict(worst <= 0.1)} in {sum(1 for x in cpu_x if x <= 0.1)} of {len(cpu_x)} cells")
    for m in mem_rows:
        if m["server"] == "oncemail":
            peak = max(m["hold_rss_mib"], m["peak_rss_mib"])
            L.append(f"- {m['ready']} sessions mid-DATA: oncemail peak RSS {peak:.0f} MiB (target < 200 MiB): "
                     f"{verdict(peak < 200 and m['ready'] == m['sessions'])}")
    drains = {srv: [r["drain_s"] for r in rows if r.get("server") == srv and "drain_s" in r]
              for srv in ("oncemail", "postfix")}
    if drains["oncemail"]:
        L.append("")
        L.append("Queue drained after the client finished (delivery lag, included in CPU): "
                 + "; ".join(f"{srv} median {statistics.median(v):.2f} s, max {max(v):.2f} s"
                             for srv, v in drains.items() if v)
                 + (". Runs whose queue did not drain within 180 s: "
                    + str(sum(1 for r in rows if r.get("drained") is False))))
        sustained = []
        for size, sess, _ in CELLS:
            for client in CLIENTS[:1]:
                v = {srv: med([r["ok"] / (r["client_s"] + r["drain_s"]) for r in rows
                               if r.get("server") == srv and r.get("client") == client
                               and r.get("size") == size and r.get("sessions") == sess and r["ok"]])
                     for srv in ("oncemail", "postfix")}
                if v["oncemail"] and v["postfix"]:
                    sustained.append(f"{human_size(size)}x{sess} {fmt(v['oncemail'])} vs {fmt(v['postfix'])} "
                                     f"({v['oncemail'] / v['postfix']:.1f}x)")
        L.append(f"Sustained msg/s (messages / time until the queue was empty again, {CLIENTS[0]}), "
                 "oncemail vs Postfix: " + "; ".join(sustained) + ".")
    bad = [r for r in rows if r.get("rc") or r.get("failed")]
    sup = sum(r.get("events", {}).get("suppressed duplicate", 0) for r in rows)
    odd = {k: sum(r.get("events", {}).get(k, 0) for r in rows)
           for k in ("deferred", "possibly delivered", "failed", "rejected")}
    L.append("")
    L.append(f"Runs with a failed message or non-zero exit: {len(bad)}"
             + ("" if not bad else " (" + "; ".join(
                 f"{r['server']} {r['client']} {human_size(r['size'])}x{r['sessions']} rep {r['rep']}: "
                 f"failed={r['failed']} rc={r['rc']}" for r in bad[:6]) + ")")
             + f". oncemail suppressed {sup} message(s) as duplicates"
             + f"; other oncemail events: {', '.join(f'{k} {v}' for k, v in odd.items())}.")
    return "\n".join(L)


def chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        log("matplotlib not available: no chart (bench/run installs it into bench/.venv)")
        return False
    gcells = [(s, n) for s, n, _ in CELLS]
    cols = 5 if len(gcells) > 4 else len(gcells)
    nrows = (len(gcells) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.3 * nrows), squeeze=False)
    colours = {"oncemail": "tab:blue", "postfix": "tab:orange", "smtp-sink": "tab:gray"}
    for ax, (size, sess) in zip(axes.flat, gcells):
        for srv in ("oncemail", "postfix", "smtp-sink"):
            gaps = sorted(g for r in rows if r.get("server") == srv and r.get("client") == "gapbench"
                          and r.get("size") == size and r.get("sessions") == sess
                          for g in r.get("gaps_ms_raw", []))
            if not gaps:
                continue
            ys = [(i + 1) / len(gaps) for i in range(len(gaps))]
            ax.plot(gaps, ys, label=srv, color=colours[srv],
                    linestyle="--" if srv == "smtp-sink" else "-", linewidth=1.3)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{human_size(size)}, {sess} session{'s' if sess > 1 else ''}", fontsize=10)
        ax.set_xlabel("final-dot gap, ms (log)", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.axhline(0.99, color="red", linewidth=0.5, alpha=0.5)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(gcells):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("fraction of messages")
    axes.flat[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Final-dot gap (RFC 1047), CDF per cell, all repetitions pooled "
                 "(gapbench, persistent sessions); red line: p99", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# -- main ---------------------------------------------------------------------------

def machine_info(om_bin):
    def sh(cmd):
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} vCPU, kernel {os.uname().release}, loadavg before "
                   f"{open('/proc/loadavg').read().split()[0]}",
        "postfix_version": sh("postconf -h mail_version"),
        "oncemail_version": sh(f"cd {REPO} && git describe --always --dirty 2>/dev/null") or "?",
        "oncemail_bin": om_bin,
    }


def main():
    if sys.argv[1:] == ["--replot"]:   # redraw results/gap.png from results/raw.jsonl
        rows = [json.loads(l) for l in open(OUT / "raw.jsonl")]
        return 0 if chart(rows, OUT / "gap.png") else 1
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    meta = machine_info(ONCEMAIL_BIN)
    if os.environ.get("ONCEMAIL_COMMIT"):
        meta["oncemail_version"] = os.environ["ONCEMAIL_COMMIT"]
    pf = Postfix()
    if os.stat(pf.qdir).st_dev != os.stat(DATA_ROOT.parent).st_dev:
        raise SystemExit(f"{DATA_ROOT} is not on the filesystem of Postfix's queue {pf.qdir}")
    relay_sink = SmtpSink(RELAY_SINK_PORT, "relay-sink")
    ceiling = SmtpSink(CEIL_SINK_PORT, "ceiling-sink")
    om = Oncemail(RELAY_SINK_PORT)
    rows, mem_rows = [], []
    raw = open(OUT / "raw.jsonl", "w")

    def keep(row):
        rows.append(row)
        raw.write(json.dumps(row) + "\n")
        raw.flush()

    try:
        om.start()
        log(f"oncemail pid {om.pid} on {OM_PORT} (data {om.data}, delivery {DELIVERY}); "
            f"Postfix master pid {pf.pid} on {PF_PORT}; sinks {RELAY_SINK_PORT} (relay) {CEIL_SINK_PORT} (ceiling)")
        reps_done = 0
        for rep in range(1, REPS + 1):
            if rep > 1 and time.monotonic() - started > BUDGET:
                log(f"time budget ({BUDGET}s) used: stopping after {reps_done} repetition(s)")
                break
            for i, (size, sess, n) in enumerate(CELLS):
                total = max(sess, int(n * SCALE))
                for client in CLIENTS:
                    order = [om, pf] if (rep + i) % 2 else [pf, om]
                    for srv in order:
                        row = measure(srv, client, size, sess, total, rep)
                        keep(row)
                        log(f"rep {rep} {human_size(size):>7s} x{sess:<3d} {client:11s} {srv.name:8s} "
                            f"{row['msgs_per_s']:8.0f} msg/s  gap p50/p99 "
                            f"{fmt(row.get('gap_ms', {}).get('p50'), 2)}/{fmt(row.get('gap_ms', {}).get('p99'), 2)} ms  "
                            f"cpu {fmt(row['cpu_s_per_1k'], 2)} s/1k  mem {row['peak_pss_mib']:.0f} MiB"
                            + (f"  FAILED {row['failed']}" if row["failed"] else ""))
                    keep(measure_sink(ceiling, client, size, sess, total, rep))
            reps_done = rep
        meta["reps_done"] = reps_done
        if not SKIP_MEM:
            # A fresh oncemail so that VmHWM belongs to the memory case alone.
            om.stop()
            om.start()
            mem_rows.append(memory_case(om, om.to))
            keep(mem_rows[-1])
            if MEM_POSTFIX:
                mem_rows.append(memory_case(pf, pf.to))
                keep(mem_rows[-1])
    finally:
        om.stop()
        relay_sink.stop()
        ceiling.stop()
        raw.close()
    meta["loadavg_after"] = open("/proc/loadavg").read().split()[0]
    meta["elapsed_s"] = round(time.monotonic() - started)
    cells = summarize(rows, meta)
    text = render(cells, mem_rows, rows, meta)
    text += f"\n\n(elapsed {meta['elapsed_s']} s; loadavg after {meta['loadavg_after']}; raw rows in {OUT / 'raw.jsonl'})"
    print(text)
    (OUT / "latest.md").write_text(text + "\n")
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    if chart(rows, OUT / "gap.png"):
        log(f"chart: {OUT / 'gap.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
