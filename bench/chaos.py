#!/usr/bin/env python3
"""bench/chaos: nothing lost, nothing doubled, under kill -9 and cut connections.

A retrying sender (smtplib, 8 workers) sends N distinct messages to oncemail
through a proxy that cuts random connections (some exactly after the final
dot), while oncemail is killed with SIGKILL at random moments (half of them
aimed at the final-dot gap) and restarted on the same data dir. Then every
copy is counted, per message and recipient, in the Maildirs (--mode local)
or at an smtp-sink oncemail relays to (--mode relay). The logic lives in
tests/harness/chaos.py (its docstring defines lost and duplicated);
tests/test_chaos.py runs a short form of it.

Exit status 0 when, in every mode run, nothing acknowledged was lost and
nothing was duplicated (relay re-sends explained by a kill between the
sink's 250 and oncemail recording it are reported apart: smtp-sink offers
no CHECKPOINT, so they cannot be avoided; --strict counts them too).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import chaos  # noqa: E402
from harness.server import Server, kill_leftovers  # noqa: E402


def one(mode: str, a, workdir: Path) -> chaos.ChaosResult:
    cfg = chaos.ChaosConfig(mode=mode, n=a.n, threads=a.threads, rate=a.rate,
                            kill_every=tuple(a.kill_every), deadline=a.deadline,
                            settle_timeout=a.settle_timeout, seed=a.seed,
                            p_dot=a.p_dot, p_bytes=a.p_bytes)
    wd = workdir / mode
    sink = chaos.DumpingSink(wd) if mode == "relay" else None
    try:
        if sink:
            sink.__enter__()
        server = Server(wd, domains=[chaos.LOCAL_DOMAIN],
                        config=chaos.server_config(mode, sink.port if sink else None))
        server.start()
        try:
            r = chaos.run_chaos(server, cfg, sink,
                                progress=lambda s: print(f"  [{mode}] {s}", file=sys.stderr))
        finally:
            if server.running:
                server.stop()
    finally:
        if sink:
            sink.__exit__()
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("local", "relay", "both"), default="both")
    p.add_argument("-n", type=int, default=2000, help="distinct messages per mode")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--rate", type=float, default=40.0, help="attempts per second (0: as fast as possible)")
    p.add_argument("--kill-every", type=float, nargs=2, default=(0.3, 1.5), metavar=("MIN", "MAX"))
    p.add_argument("--p-dot", type=float, default=0.08, help="per connection: cut after a final dot")
    p.add_argument("--p-bytes", type=float, default=0.08, help="per connection: cut at a random byte")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds for sending, per mode")
    p.add_argument("--settle-timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workdir", type=Path, default=None, help="default: a new temporary directory")
    p.add_argument("--strict", action="store_true", help="fail on relay-window re-sends too")
    a = p.parse_args()
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="oncemail-chaos-"))
    print(f"workdir {workdir} (server logs, data dirs, sink dumps)", file=sys.stderr)
    modes = ["local", "relay"] if a.mode == "both" else [a.mode]
    ok = True
    try:
        for mode in modes:
            t0 = time.monotonic()
            r = one(mode, a, workdir)
            print(r.summary(), flush=True)
            for d in r.details[:20]:
                print("   ", d)
            ok &= r.ok and not (a.strict and r.dup_relay_window)
    finally:
        kill_leftovers()
    print("chaos: PASS" if ok else "chaos: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
