"""Child processes, timing and process-tree memory: the machinery every section uses.

A measurement runs in a fresh interpreter (``python -m rntensor.bench --child NAME PARAMS``,
dispatched by :mod:`rntensor.bench.command`) and prints its result dict on one tagged line.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SECTIONS", "SKIPPABLE", "TreeMemory", "child_main", "run_child"]


_RESULT = "@@rntensor-bench-result@@ "
SECTIONS = ("convert", "load", "gpu")
#: measurements ``--skip`` can leave out
SKIPPABLE = (
    "uproot",
    "awkward",
    "memcpy",
    "convert",
    "convert_warm",
    "convert_sync",
    "stages",
    "rdataloader",
    "plain",
    "rntensor_w0_masks",
)


# -- memory of a process tree ---------------------------------------------------------------
class TreeMemory:
    """Peak RSS, PSS and anonymous memory summed over a process and its descendants.

    Sampled in a thread.  RSS counts pages shared between processes (libraries, forked memory,
    memory-mapped shards) once per process, so it is the pessimistic figure; PSS splits shared
    pages between their users; anonymous memory (RSS without file-backed and shared pages) is
    the heap that cannot be reclaimed, without memory-mapped files.

    The sampler must not slow down what it measures: RSS and anonymous memory come from
    ``/proc/PID/statm`` (two small reads per process), the list of descendants and PSS (the
    kernel walks every mapping for it) are refreshed only every ``slow_every`` samples, and
    the process's own exact peak RSS (``getrusage``) tops up the sampled one at the end.

    Args:
        pid: the root of the tree (default: this process).
        interval_s: time between samples.
        slow_every: refresh the process list and PSS every this many samples.
    """

    def __init__(
        self, pid: int | None = None, *, interval_s: float = 0.02, slow_every: int = 10
    ) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._self = pid is None or pid == os.getpid()
        self.interval_s = interval_s
        self.slow_every = max(1, slow_every)
        self.start = {"rss": 0, "pss": 0, "anon": 0}
        self.peak = dict(self.start)
        self._pids: list[int] = [self._proc.pid]
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._statm = os.path.exists("/proc/self/statm")  # Linux: cheap reads, else psutil
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _refresh_tree(self) -> None:
        import psutil

        try:
            self._pids = [self._proc.pid, *(c.pid for c in self._proc.children(recursive=True))]
        except psutil.Error:
            self._pids = [self._proc.pid]

    def _read_statm(self, pid: int) -> tuple[int, int] | None:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                fields = f.read().split()
            return int(fields[1]) * self._page, int(fields[2]) * self._page
        except (OSError, IndexError, ValueError):
            return None

    def sample(self, *, pss: bool = True) -> dict[str, int]:
        """Current totals over the tree (``pss`` is 0 unless asked: it is slower to read)."""
        import psutil

        if pss:
            self._refresh_tree()
        out = {"rss": 0, "pss": 0, "anon": 0}
        for pid in self._pids:
            got = self._read_statm(pid) if self._statm else None
            try:
                if got is None:
                    m = psutil.Process(pid).memory_info()
                    got = (m.rss, getattr(m, "shared", 0))
                if pss:
                    out["pss"] += psutil.Process(pid).memory_full_info().pss
            except psutil.Error:  # exited between listing and reading
                continue
            rss, shared = got
            out["rss"] += rss
            out["anon"] += rss - shared
        return out

    def _update(self, now: Mapping[str, int]) -> None:
        for k, v in now.items():
            self.peak[k] = max(self.peak[k], v)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.interval_s):
            i += 1
            self._update(self.sample(pss=i % self.slow_every == 0))

    def __enter__(self) -> TreeMemory:
        self.start = self.sample()
        self.peak = dict(self.start)
        self._thread = threading.Thread(target=self._run, name="rntensor-bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._update(self.sample())
        if self._self and len(self._pids) == 1:  # the exact peak, when the tree is this process
            import resource

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak["rss"] = max(self.peak["rss"], maxrss)

    def figures(self) -> dict[str, int]:
        """``start_<kind>_bytes``, ``peak_<kind>_bytes``, ``peak_<kind>_above_start_bytes``."""
        out = {}
        for k in ("rss", "pss", "anon"):
            out[f"start_{k}_bytes"] = self.start[k]
            out[f"peak_{k}_bytes"] = self.peak[k]
            out[f"peak_{k}_above_start_bytes"] = self.peak[k] - self.start[k]
        return out


# -- child processes ------------------------------------------------------------------------
def child_main(
    children: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]],
    name: str,
    params_json: str,
    *,
    marker: str = _RESULT,
) -> None:
    """The child side of :func:`run_child`: run ``children[name]`` on the JSON parameters and
    print its result (with the load average over the run) on one line tagged ``marker``."""
    params = json.loads(params_json)
    load = os.getloadavg()[0]
    result = children[name](params)
    result["load_avg"] = max(load, os.getloadavg()[0])
    print(marker + json.dumps(result), flush=True)


def run_child(
    name: str,
    params: Mapping[str, Any],
    *,
    timeout_s: float = 3600,
    script: str | None = None,
    marker: str = _RESULT,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run measurement ``name`` in a fresh interpreter; its result dict, or ``{"error": ...}``.

    The child is ``python -m rntensor.bench --child NAME PARAMS`` (or ``python SCRIPT --child
    ...``) and prints its result on a line starting with ``marker``.  It runs in its own
    session: on a timeout or an interrupt its whole process group (Dask workers, DataLoader
    workers) is killed, so nothing outlives the harness.
    """
    import signal

    entry = [os.path.abspath(script)] if script else ["-m", "rntensor.bench"]
    cmd = [sys.executable, *entry, "--child", name, json.dumps(dict(params))]
    env = dict(os.environ, PYTHONWARNINGS="ignore", **dict(extra_env or {}))
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except BaseException as err:  # timeout, Ctrl-C: take the whole tree down
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(err, subprocess.TimeoutExpired):
            return {"error": f"timed out after {timeout_s:.0f} s"}
        raise
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker) :])
    tail = " | ".join((stderr or stdout).strip().splitlines()[-6:])
    return {"error": f"exit code {proc.returncode}: {tail[-600:]}"}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _memcpy(nbytes: int) -> float:
    """Seconds of one copy of ``nbytes`` between warm buffers (median of 3, after a warm-up)."""
    import numpy as np

    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.ones(nbytes, dtype=np.uint8)
    np.copyto(dst, src)
    return statistics.median(_timed(lambda: np.copyto(dst, src))[0] for _ in range(3))


def _child_memcpy(p: dict[str, Any]) -> dict[str, Any]:
    return {"seconds": _memcpy(int(p["nbytes"])), "bytes": int(p["nbytes"])}
