"""CPU time and memory of a server's whole process tree, from /proc.

- `tree(root)`: the root PID and every descendant alive right now.
- `cpu_seconds(root)`: user+system CPU of the tree: every live process's own
  time, plus the root's cutime/cstime, which hold the time of the children it
  already reaped (Postfix's master reaps smtpd, cleanup, ... when they exit
  after max_use/max_idle). Take it before and after a run; the difference is
  what the server spent, whatever processes came and went in between.
- `MemSampler(root)`: a thread that samples the tree's summed RSS and PSS
  every `interval` seconds and keeps the peaks. PSS (proportional set size)
  splits shared pages between the processes that map them, so a hundred
  smtpd processes sharing libc are not counted a hundred times; for a single
  process (oncemail) PSS and RSS are nearly equal.
"""

import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].split()


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat(int(name))[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(root: int) -> list[int]:
    kids = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    total = 0
    for pid in tree(root):
        try:
            f = _stat(pid)
        except OSError:
            continue
        # utime stime cutime cstime are fields 14-17 of stat (1-based), i.e.
        # 11-14 here (0 = state, field 3).
        total += int(f[11]) + int(f[12])
        if pid == root:
            total += int(f[13]) + int(f[14])
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status, e.g. VmHWM, VmRSS."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def tree_memory(root: int) -> tuple[int, int, int]:
    """(summed RSS, summed PSS, process count) of the tree right now."""
    rss = pss = n = 0
    for pid in tree(root):
        try:
            rss += rss_bytes(pid)
            pss += pss_bytes(pid)
            n += 1
        except OSError:
            continue
    return rss, pss, n


class MemSampler:
    def __init__(self, root: int, interval: float = 0.25):
        self.root = root
        self.interval = interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        rss, pss, n = tree_memory(self.root)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, n)
        self.samples += 1

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sample()


class CpuMeter:
    """with CpuMeter(pid) as m: ...; m.seconds (tree CPU spent inside)."""

    def __init__(self, root: int):
        self.root = root
        self.seconds = 0.0

    def __enter__(self):
        self._t0 = cpu_seconds(self.root)
        return self

    def stop(self):
        self.seconds = cpu_seconds(self.root) - self._t0
        return self.seconds

    def __exit__(self, *exc):
        self.stop()


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
