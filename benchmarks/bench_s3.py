"""S3 benchmark: reading and converting from a real object store, with latency per request.

SeaweedFS (``rntensor.testing.SeaweedS3``, ``weed mini`` on loopback) holds the generated
RNTuple files; every S3 request goes through a ``LatencyProxy`` that delays it by
``--latency-ms`` (one extra round trip's worth, as a remote store adds).  For each latency, in the
same run and interleaved, medians of ``--repeat`` runs, each in a fresh child interpreter:

1. ``uproot`` ``arrays()`` of the fields the jet-tagging schema reads, from the ``s3://`` URLs,
   file after file, s3fs's default connection pool (botocore: 10): the **baseline**;
2. the same with ``config_kwargs={"max_pool_connections": 64}`` (what rntensor passes);
3. ``rntensor convert`` from S3 to a local folder and from S3 to an S3 prefix (default
   scheduler, ``n_workers=2``);
4. ``rntensor convert`` of the same files from local disk (the reference).

Every figure is reported as events/s, MB/s of the compressed input read from S3, the number of
HTTP requests the proxy forwarded, and a ratio to the baseline of the same latency.

    python benchmarks/bench_s3.py --events 1000000 --repeat 3 --latency-ms 20 --latency-ms 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["main"]

_RESULT = "@@rntensor-bench-s3-result@@ "
_IN, _OUT = "bench-in", "bench-out"
#: (key, label, what the child does) in the order they run within one repeat
MEASUREMENTS = (
    ("uproot", "uproot arrays() from S3, default pool (baseline)"),
    ("uproot_pool64", "uproot arrays() from S3, max_pool_connections=64"),
    ("convert_s3_local", "rntensor convert S3 -> local, 2 workers"),
    ("convert_s3_s3", "rntensor convert S3 -> S3, 2 workers"),
    ("convert_local", "rntensor convert local -> local (reference)"),
)


# -- children: one measurement in a fresh interpreter ---------------------------------------
def _warm(p: Mapping[str, Any]) -> None:
    """Imports and uproot's lazy set-up (100 entries of the first input) before the clock."""
    import awkward  # noqa: F401
    import uproot

    if p["inputs"][0].startswith("s3://"):
        import s3fs  # noqa: F401
    with uproot.open(p["inputs"][0], **(p.get("storage_options") or {})) as f:
        f["Events"].arrays(list(p["fields"]), entry_stop=100)


def _child_uproot(p: Mapping[str, Any]) -> dict[str, Any]:
    import uproot

    from rntensor.bench import TreeMemory

    _warm(p)
    opts = p.get("storage_options") or {}
    n = nbytes = 0
    with TreeMemory() as mem:
        t = time.perf_counter()
        for url in p["inputs"]:
            with uproot.open(url, **opts) as f:
                a = f["Events"].arrays(list(p["fields"]))
            n += len(a)
            nbytes += a.layout.nbytes
            del a
        s = time.perf_counter() - t
    return {"seconds": s, "events": n, "nbytes": nbytes, "memory": mem.figures()}


def _child_convert(p: Mapping[str, Any]) -> dict[str, Any]:
    from rntensor.bench import TreeMemory
    from rntensor.convert import convert
    from rntensor.demo import DEMO_SCHEMA

    _warm(p)
    with TreeMemory() as mem:
        t = time.perf_counter()
        res = convert(
            DEMO_SCHEMA,
            list(p["inputs"]),
            p["out"],
            storage_options=p.get("storage_options"),
            output_storage_options=p.get("output_storage_options"),
            n_workers=p["workers"],
            progress=False,
        )
        s = time.perf_counter() - t
    return {
        "seconds": s,
        "events": res.num_entries,
        "rows": res.num_rows,
        "shards": res.shards_total,
        "bytes_written": res.bytes_written,
        "memory": mem.figures(),
    }


_CHILDREN = {"uproot": _child_uproot, "convert": _child_convert}


def _child_main(name: str, params_json: str) -> None:
    from rntensor.bench.harness import child_main

    child_main(_CHILDREN, name, params_json, marker=_RESULT)


def run_child(name: str, params: Mapping[str, Any], *, timeout_s: float = 1800) -> dict[str, Any]:
    """Run child ``name`` of this script in a fresh interpreter (the harness's runner)."""
    from rntensor.bench.harness import run_child as _run

    return _run(
        name, params, timeout_s=timeout_s, script=__file__, marker=_RESULT,
        extra_env={"NO_PROXY": "127.0.0.1,localhost"},
    )  # fmt: skip


# -- figures --------------------------------------------------------------------------------
def _figure(
    label: str, samples: Sequence[Mapping[str, Any]], input_bytes: int, base: Mapping[str, Any]
) -> dict[str, Any]:
    ok = [s for s in samples if "seconds" in s]
    secs = [s["seconds"] for s in ok]
    events = ok[0]["events"] if ok else 0
    med = statistics.median(secs) if secs else None
    best = min(secs) if secs else None
    eps = events / med if med else None
    best_eps = events / best if best else None
    reqs = [s["requests"] for s in ok if "requests" in s]
    rss = [s["memory"]["peak_rss_bytes"] for s in ok if "memory" in s]
    return {
        "label": label,
        "events": events,
        "seconds": med,
        "seconds_all": secs,
        "events_per_s": eps,
        "best_events_per_s": best_eps,
        "mb_per_s": input_bytes / med / 1e6 if med else None,
        "ratio": eps / base["events_per_s"] if eps and base.get("events_per_s") else None,
        "best_ratio": (
            best_eps / base["best_events_per_s"]
            if best_eps and base.get("best_events_per_s")
            else None
        ),
        "requests": statistics.median(reqs) if reqs else None,
        "peak_rss_bytes": statistics.median(rss) if rss else None,
        "load_avg": statistics.median(s["load_avg"] for s in ok) if ok else None,
        "errors": [s["error"] for s in samples if "error" in s],
    }


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def format_table(results: Mapping[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"rntensor S3 bench, {m['date']}, {m['cpus']} CPUs, python {m['python']}; "
        f"SeaweedFS {results['input_mb']:.0f} MB in {len(results['inputs'])} files, "
        f"{results['events']:,} events; medians of {results['repeat']} runs"
    ]
    for sec in results["sections"]:
        lines += [
            "",
            f"[latency {sec['latency_ms']:g} ms per request]",
            f"  {'measurement':<52}{'events/s':>11}{'best':>11}{'median s':>10}{'MB/s':>7}"
            f"{'requests':>9}{'RSS MB':>8}{'load':>6}{'ratio':>8}{'best':>8}",
        ]
        for f in sec["figures"].values():
            ratio = f"{f['ratio']:.2f}x" if f.get("ratio") is not None else ""
            best = f"{f['best_ratio']:.2f}x" if f.get("best_ratio") is not None else ""
            err = f"  ({len(f['errors'])} failed: {f['errors'][0][:160]})" if f["errors"] else ""
            rss = f["peak_rss_bytes"] / 1e6 if f["peak_rss_bytes"] else None
            lines.append(
                f"  {f['label']:<52}{_num(f['events_per_s']):>11}{_num(f['best_events_per_s']):>11}"
                f"{_num(f['seconds'], '.3f'):>10}{_num(f['mb_per_s'], '.1f'):>7}"
                f"{_num(f['requests']):>9}{_num(rss):>8}{_num(f['load_avg'], '.1f'):>6}"
                f"{ratio:>8}{best:>8}{err}"
            )
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate (or reuse) the inputs, start SeaweedFS, measure every latency; the results."""
    from rntensor.bench import prepare_inputs
    from rntensor.convert import plan
    from rntensor.demo import DEMO_SCHEMA
    from rntensor.testing import LatencyProxy, SeaweedS3

    if args.events < 1 or args.files < 1 or args.repeat < 1 or args.workers < 1:
        raise ValueError("--events, --files, --repeat and --workers must be >= 1")
    latencies = args.latency_ms or [20.0, 0.0]
    if any(x < 0 for x in latencies):
        raise ValueError(f"--latency-ms must be >= 0, got {latencies}")
    unknown = sorted(set(args.skip or ()) - {k for k, _ in MEASUREMENTS})
    if unknown:
        raise ValueError(f"unknown --skip {unknown}; choose from {[k for k, _ in MEASUREMENTS]}")
    workdir = os.path.abspath(args.workdir)
    files = prepare_inputs(workdir, n_events=args.events, n_files=args.files)
    fields = list(plan(DEMO_SCHEMA, files)[0].input_fields)
    input_bytes = sum(os.path.getsize(f) for f in files)
    scratch = os.path.join(workdir, "s3")
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    log = (
        (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    )
    results: dict[str, Any] = {
        "events": args.events,
        "repeat": args.repeat,
        "workers": args.workers,
        "inputs": files,
        "input_mb": input_bytes / 1e6,
        "fields": fields,
        "sections": [],
    }
    with SeaweedS3(max_lifetime_s=args.max_lifetime_s) as s3:
        s3.make_bucket(_IN)
        s3.make_bucket(_OUT)
        t = time.perf_counter()
        urls = [s3.upload(f, f"s3://{_IN}/data/") for f in files]
        up_s = time.perf_counter() - t
        results["upload"] = {"seconds": up_s, "mb_per_s": input_bytes / up_s / 1e6}
        log(
            f"SeaweedFS up in {s3.startup_s:.1f} s; uploaded {input_bytes / 1e6:.0f} MB "
            f"in {up_s:.1f} s"
        )
        admin = s3.filesystem()
        base_opts = {"endpoint_url": s3.endpoint_url, "key": s3.key, "secret": s3.secret}
        for lat in latencies:
            with LatencyProxy.from_url(
                s3.endpoint_url, latency_s=lat / 1000, max_lifetime_s=args.max_lifetime_s
            ) as proxy:
                opts = dict(base_opts, endpoint_url=proxy.endpoint_url)
                pool64 = dict(opts, config_kwargs={"max_pool_connections": 64})
                samples: dict[str, list[dict[str, Any]]] = {k: [] for k, _ in MEASUREMENTS}
                for r in range(args.repeat):
                    local_out = os.path.join(scratch, f"lat{lat:g}-r{r}")
                    s3_out = f"s3://{_OUT}/lat{lat:g}-r{r}"
                    common = {"fields": fields, "workers": args.workers}
                    params = {
                        "uproot": ("uproot", dict(common, inputs=urls, storage_options=opts)),
                        "uproot_pool64": (
                            "uproot",
                            dict(common, inputs=urls, storage_options=pool64),
                        ),
                        "convert_s3_local": (
                            "convert",
                            dict(common, inputs=urls, storage_options=opts, out=local_out),
                        ),
                        "convert_s3_s3": (
                            "convert",
                            dict(common, inputs=urls, storage_options=opts, out=s3_out),
                        ),
                        "convert_local": (
                            "convert",
                            dict(common, inputs=files, out=local_out + "-local"),
                        ),
                    }
                    for key, _label in MEASUREMENTS:
                        if key in (args.skip or ()):
                            continue
                        child, p = params[key]
                        before = proxy.requests
                        res = run_child(child, p)
                        res["requests"] = proxy.requests - before
                        samples[key].append(res)
                        shutil.rmtree(local_out, ignore_errors=True)
                        shutil.rmtree(local_out + "-local", ignore_errors=True)
                        if key == "convert_s3_s3":
                            with contextlib.suppress(FileNotFoundError):
                                admin.rm(s3_out[len("s3://") :], recursive=True)
                        log(
                            f"latency {lat:g} ms, run {r + 1}/{args.repeat}, {key}: "
                            + (f"{res['seconds']:.2f} s" if "seconds" in res else res["error"])
                        )
                figs: dict[str, Any] = {}
                for key, label in MEASUREMENTS:
                    if samples[key]:
                        figs[key] = _figure(
                            label, samples[key], input_bytes, figs.get("uproot", {})
                        )
                results["sections"].append({"latency_ms": lat, "figures": figs, "samples": samples})
    shutil.rmtree(scratch, ignore_errors=True)
    results["machine"] = _machine()
    return results


def _machine() -> dict[str, Any]:
    import platform

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "load_avg_1_5_15": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="generated events (1000000)")
    parser.add_argument("--files", type=int, default=4, help="input files (4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; medians (3)")
    parser.add_argument("--workers", type=int, default=2, help="convert n_workers (2)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        action="append",
        help="delay per S3 request in ms, repeatable (default: 20 and 0)",
    )
    parser.add_argument("--workdir", default=".bench", help="inputs and scratch (.bench)")
    parser.add_argument(
        "--skip", action="append", help=f"leave out: {', '.join(k for k, _ in MEASUREMENTS)}"
    )
    parser.add_argument("--json", metavar="OUT", help="write every sample and figure here")
    parser.add_argument(
        "--max-lifetime-s", type=float, default=3600.0, help="servers stop after this (3600)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    results = run(args)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":  # convert starts a distributed LocalCluster: keep this guard
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1:])
