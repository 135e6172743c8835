"""The command line: one-line errors with exit codes, --debug tracebacks, every verb's --help,
inspect, schema init, convert, and the layering rule (importing rntensor skips torch and dask)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rntensor.cli import main

SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "schemas")
JET = os.path.join(SCHEMAS, "jet-tagging.yaml")
RNTUPLE = os.path.join(os.path.dirname(__file__), "data", "root_rntuple_zstd.root")


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rntensor.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_import_is_light():
    code = "import sys, rntensor, rntensor.cli, rntensor.sources, rntensor.schema; print(sorted(m for m in ('torch', 'dask', 'distributed') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "verb", ["convert", "inspect", "schema", "generate", "demo", "bench", "infer"]
)
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    assert "usage: rntensor" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (
            ["convert", JET, "/no/such/file.root", "-o", "{tmp}/o"],
            3,
            "file not found: /no/such/file.root",
        ),
        (
            ["convert", "{tmp}/missing.yaml", "{rntuple}", "-o", "{tmp}/o"],
            2,
            "schema file not found",
        ),
        (["convert", "{bad_field}", "{rntuple}", "-o", "{tmp}/o"], 2, "did you mean 'MET_pt'"),
        (["convert", "{bad_expr}", "{rntuple}", "-o", "{tmp}/o"], 2, "__import__"),
        (["convert", JET, "{rntuple}:Evnts", "-o", "{tmp}/o"], 3, "did you mean 'Events'"),
        (["convert", JET, "{notroot}", "-o", "{tmp}/o"], 3, "not a ROOT file"),
        (
            ["convert", JET, "{rntuple}", "-o", "{tmp}/o", "--storage-options", "{{nope"],
            2,
            "not valid JSON",
        ),
        (["inspect", "{tmp}/empty-folder"], 3, "neither a dataset"),
    ],
    ids=[
        "missing-file",
        "missing-schema",
        "bad-field",
        "bad-expression",
        "bad-tree",
        "not-root",
        "bad-json",
        "inspect-nothing",
    ],
)
def test_errors_are_one_line(args, code, needle, tmp_path):
    (tmp_path / "bad_field.yaml").write_text("name: x\noutputs:\n  a: {fields: [MET_ptt]}\n")
    (tmp_path / "bad_expr.yaml").write_text(
        "name: x\ndefine: {y: \"__import__('os')\"}\noutputs:\n  a: {fields: [y]}\n"
    )
    (tmp_path / "notroot.root").write_bytes(b"\x00garbage" * 500)
    (tmp_path / "empty-folder").mkdir()
    subs = {
        "tmp": str(tmp_path),
        "rntuple": RNTUPLE,
        "bad_field": str(tmp_path / "bad_field.yaml"),
        "bad_expr": str(tmp_path / "bad_expr.yaml"),
        "notroot": str(tmp_path / "notroot.root"),
    }
    proc = run(*[a.format(**subs) for a in args])
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("rntensor: error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "o" / "manifest.json")


def test_debug_shows_traceback(tmp_path):
    proc = run("--debug", "convert", JET, str(tmp_path / "nothing.root"), "-o", str(tmp_path / "o"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_convert_then_inspect(tmp_path):
    out = str(tmp_path / "cache")
    command = (
        "convert",
        JET,
        RNTUPLE + ":Events",
        "-o",
        out,
        "--scheduler",
        "threads",
        "--shard-size",
        "50 kB",
    )
    proc = run(*command)
    assert proc.returncode == 0, proc.stderr
    assert "shards written" in proc.stdout
    assert "shard 1/" in proc.stderr  # plain progress lines when not a terminal
    again = run(*command, "--quiet")
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    info = run("inspect", out, "--json")
    doc = json.loads(info.stdout)
    assert doc["rows"] > 0 and doc["columns"]["jets"]["shape"] == [10, 5]
    text = run("inspect", out).stdout
    assert "jets.Jet_logpt" in text and "rows in" in text


def test_inspect_root_file(root_file):
    proc = run("inspect", str(root_file))
    assert proc.returncode == 0, proc.stderr
    assert f"{root_file.format} 'Events': {root_file.n_entries} entries" in proc.stdout
    assert "Jet_pt" in proc.stdout and "[Jet]" in proc.stdout


def test_schema_init_roundtrip(tmp_path):
    target = tmp_path / "starter.yaml"
    proc = run("schema", "init", RNTUPLE + ":Events", "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    again = run("schema", "init", RNTUPLE + ":Events", "-o", str(target))
    assert again.returncode == 2 and "--force" in again.stderr
    conv = run(
        "convert",
        str(target),
        RNTUPLE + ":Events",
        "-o",
        str(tmp_path / "c"),
        "--scheduler",
        "synchronous",
        "-q",
    )
    assert conv.returncode == 0, conv.stderr


def test_skip_bad_records_failures(tmp_path):
    bad = tmp_path / "broken.root"
    with open(RNTUPLE, "rb") as f:
        bad.write_bytes(f.read(5000))
    out = tmp_path / "c"
    proc = run(
        "convert",
        JET,
        RNTUPLE + ":Events",
        str(bad),
        "-o",
        str(out),
        "--scheduler",
        "threads",
        "--skip-bad",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failures"][0]["source"].endswith("broken.root")
    assert manifest["num_rows"] > 0


def test_public_api_is_lazy_and_complete():
    code = (
        "import sys, rntensor; heavy = [m for m in ('torch', 'dask', 'uproot', 'pyarrow') if m in sys.modules]; "
        "[getattr(rntensor, n) for n in rntensor.__all__]; print(heavy, rntensor.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("]")[0] == "["
