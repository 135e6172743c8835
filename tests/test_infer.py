"""Inference over a cache and straight from ROOT, writing friend files; the demo end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch
import uproot

from rntensor.cache.read import open_cache
from rntensor.convert import convert
from rntensor.demo import DEMO_SCHEMA, run_demo
from rntensor.errors import CacheError
from rntensor.infer import infer
from rntensor.torch import DataLoader
from rntensor.torch.models import JetTagger


@pytest.fixture(scope="module")
def jet_cache(small_dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("infer") / "cache")
    convert(DEMO_SCHEMA, [small_dataset.folder], out, scheduler="synchronous", progress=False)
    return out


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("model") / "model.pt")
    torch.save(JetTagger(), path)
    return path


def test_friend_root_file_from_cache(jet_cache, model_file, tmp_path):
    out = str(tmp_path / "friend.root")
    res = infer(model_file, jet_cache, out, batch_size=1000)
    reader = open_cache(jet_cache)
    assert res.rows == reader.num_rows
    tree = uproot.open(out)["Friends"]
    got = tree.arrays(library="np")
    assert {"score_0", "score_1", "run", "event"} <= set(got)
    events = np.concatenate([reader.read_shard(i)["event"] for i in range(len(reader.shards))])
    np.testing.assert_array_equal(np.sort(got["event"]), np.sort(events))
    # scores equal a direct forward pass on the same events
    model = torch.load(model_file, weights_only=False).eval()
    batch = next(iter(DataLoader(jet_cache, batch_size=50, keep=True)))
    with torch.no_grad():
        direct = model(batch).numpy()
    pos = {e: i for i, e in enumerate(got["event"])}
    rows = [pos[int(e)] for e in batch["event"]]
    np.testing.assert_allclose(got["score_0"][rows], direct[:, 0], rtol=1e-5, atol=1e-6)


def test_friend_arrow_from_root_with_training_stats(jet_cache, model_file, small_dataset, tmp_path):
    out = str(tmp_path / "friend.arrow")
    res = infer(
        model_file,
        small_dataset.paths[0],
        out,
        schema=DEMO_SCHEMA,
        stats_from=jet_cache,
        batch_size=700,
    )
    with pa.memory_map(out) as f:
        table = pa.ipc.open_file(f).read_all()
    assert table.num_rows == res.rows > 0
    assert "score_1" in table.column_names and "event" in table.column_names


def test_from_root_without_stats_says_what_to_do(model_file, small_dataset, tmp_path):
    with pytest.raises(CacheError, match="normalize"):
        infer(model_file, small_dataset.paths[0], str(tmp_path / "f.root"), schema=DEMO_SCHEMA)
    assert not (tmp_path / "f.root").exists()


def test_cli_infer(jet_cache, model_file, tmp_path):
    out = tmp_path / "scores.root"
    proc = subprocess.run(
        [sys.executable, "-m", "rntensor.cli", "infer", model_file, jet_cache, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and out.exists()


def test_demo_runs_every_stage(tmp_path, capsys):
    figures = run_demo(str(tmp_path / "demo"), n_events=20_000, workers=2)
    assert set(figures) == {"generate", "convert", "train", "infer"}
    text = capsys.readouterr().out
    assert "rntensor demo summary" in text and "events/s" in text
    assert (tmp_path / "demo" / "friend.root").exists()
