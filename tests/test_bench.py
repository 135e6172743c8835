"""Smoke tests of the benchmark harness (rntensor/bench/): it runs and produces its figures.

No timing assertions (timing belongs in benchmarks/): only that every measurement ran, that
the keys, ratios and memory figures are there, and that the table prints.  The expensive
measurements (Dask clusters, ROOT's RDataLoader, the plain loop) are skipped here; the real
runs are ``rntensor bench`` and benchmarks/.  The whole file takes about 15 s; the two
section tests are marked ``slow``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest

from rntensor import bench


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def files(workdir: str) -> list[str]:
    return bench.prepare_inputs(workdir, n_events=20_000, n_files=2, quiet=True)


def test_import_is_light() -> None:
    code = (
        "import sys, rntensor.bench; "
        "print(sorted(m for m in ('torch', 'dask', 'distributed', 'uproot', 'ROOT') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_options() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        ["--events", "5", "--repeat", "2", "--only", "load", "--only", "gpu", "--json", "x.json"]
    )
    assert (args.events, args.repeat, args.only, args.json) == (5, 2, ["load", "gpu"], "x.json")
    with pytest.raises(SystemExit):
        parser.parse_args(["--only", "everything"])


def test_inputs_are_reused(workdir: str, files: list[str]) -> None:
    mtimes = [os.path.getmtime(p) for p in files]
    assert bench.prepare_inputs(workdir, n_events=20_000, n_files=2, quiet=True) == files
    assert [os.path.getmtime(p) for p in files] == mtimes


def test_tree_memory_counts_children() -> None:
    code = (
        "import time; b = bytearray(60_000_000); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.0)"
    )
    with bench.TreeMemory(interval_s=0.02) as mem:
        child = subprocess.Popen([sys.executable, "-c", code])
        child.wait()
        time.sleep(0.05)
    fig = mem.figures()
    assert fig["peak_rss_above_start_bytes"] > 50_000_000
    assert fig["peak_rss_bytes"] >= fig["start_rss_bytes"] > 0
    assert set(fig) == {
        f"{w}_{k}_bytes" for k in ("rss", "pss", "anon") for w in ("start", "peak")
    } | {f"peak_{k}_above_start_bytes" for k in ("rss", "pss", "anon")}


@pytest.mark.slow  # ~6-10 s: a handful of child interpreters
def test_convert_and_load_sections(workdir: str, files: list[str]) -> None:
    work = workdir
    logs: list[str] = []
    conv = bench.bench_convert(
        files, work, repeat=1, skip=("convert", "convert_warm", "awkward"), log=logs.append
    )
    figs = conv["figures"]
    assert {
        "uproot",
        "memcpy",
        "convert_sync",
        "stage_read",
        "stage_transform",
        "stage_write",
    } <= set(figs)
    for key, f in figs.items():
        assert not f["errors"], (key, f["errors"])
        assert f["events"] == 20_000 and f["events_per_s"] > 0
        assert (f["ratio"] is None) == (key == "uproot")
    assert figs["convert_sync"]["vs"] == "uproot" and figs["convert_sync"]["ratio"] > 0
    assert conv["params"]["decompressed_bytes"] > 0

    load = bench.bench_load(
        files,
        work,
        repeat=1,
        epochs=1,
        num_workers=(0,),
        skip=("rdataloader", "plain", "rntensor_w0_masks"),
        log=logs.append,
    )
    figs = load["figures"]
    assert set(figs) == {"rntensor_w0", "memcpy"}
    assert not figs["rntensor_w0"]["errors"], figs["rntensor_w0"]["errors"]
    assert figs["rntensor_w0"]["events"] == load["params"]["events"] == 20_000
    mem = load["memory"]["rntensor_w0"]
    assert mem["peak_rss_bytes"] > 0 and "peak_pss_above_start_bytes" in mem
    assert any("num_workers=0" in c["what"] and c["unit"] == "GB" for c in load["criteria"])

    table = bench.format_table(
        {"machine": bench._machine(), "repeat": 1, "convert": conv, "load": load}
    )
    assert "uproot arrays()" in table and "rntensor DataLoader, num_workers=0" in table
    assert "peak memory" in table and "target:" in table
    assert len(logs) >= 6


@pytest.mark.slow  # a child interpreter importing torch
def test_gpu_section_skips_without_cuda(workdir: str, files: list[str]) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; tests/test_bench.py only checks the skip path")
    out = bench.bench_gpu(files, workdir, repeat=1, log=lambda msg: None)
    assert out["skipped"] == "no CUDA device"
    table = bench.format_table({"machine": bench._machine(), "repeat": 1, "gpu": out})
    assert "[gpu] skipped: no CUDA device" in table


def test_child_errors_come_back() -> None:
    res = bench.run_child("uproot", {"files": ["/nonexistent.root"], "fields": ["x"]})
    assert "error" in res and "nonexistent" in res["error"]
