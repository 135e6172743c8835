"""``rntensor demo``: the whole pipeline on generated data, local files, a local Dask cluster, CPU.

generate → convert (a local Dask distributed cluster) → train one epoch through the rntensor
DataLoader → inference writing a friend file → a summary with events/s per stage.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

__all__ = ["DEMO_SCHEMA", "make_model", "run_demo"]

DEMO_SCHEMA: dict[str, Any] = {
    "name": "jet-tagging",
    "tree": "Events",
    "selection": "nJet >= 2 and MET_pt > 10",
    "define": {"Jet_logpt": "log(Jet_pt)", "Jet_px": "Jet_pt * cos(Jet_phi)", "ht": "sum(Jet_pt)"},
    "outputs": {
        "jets": {
            "fields": ["Jet_logpt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btag"],
            "length": 10,
            "pad_value": 0,
            "sort_by": "-Jet_pt",
            "normalize": "standard",
        },
        "muons": {"fields": ["Muon_pt", "Muon_eta", "Muon_charge"], "ragged": True},
        "scalars": {"fields": ["MET_pt", "MET_phi", "ht"], "normalize": "standard"},
    },
    "labels": {"target": {"field": "label", "classes": 2}},
    "weights": "weight",
    "keep": ["run", "event"],
}


def make_model() -> Any:
    """The demo's jet tagger (:class:`rntensor.torch.models.JetTagger`)."""
    from rntensor.torch.models import JetTagger

    return JetTagger()


def run_demo(
    workdir: str = "rntensor-demo",
    *,
    n_events: int = 200_000,
    workers: int = 2,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run every stage and print a summary; returns the figures."""
    import torch

    from rntensor.convert import convert
    from rntensor.datagen import generate_dataset
    from rntensor.infer import infer
    from rntensor.torch import DataLoader

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    if os.path.isdir(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    raw, cache = os.path.join(workdir, "raw"), os.path.join(workdir, "cache")
    figures: dict[str, Any] = {}

    say(f"[1/4] generating {n_events:,} NanoAOD-like events (RNTuple, zstd) in {raw}")
    t = time.perf_counter()
    generate_dataset(raw, n_events=n_events, n_files=4, fmt="rntuple", compression="zstd", seed=1)
    figures["generate"] = (n_events, time.perf_counter() - t)

    say(f"[2/4] converting with Dask (a local distributed cluster, {workers} workers) into {cache}")
    res = convert(DEMO_SCHEMA, [raw], cache, shard_size="16 MB", n_workers=workers, progress=False)
    figures["convert"] = (res.num_entries, res.seconds)
    say(f"      {res.summary()}")
    again = convert(
        DEMO_SCHEMA, [raw], cache, shard_size="16 MB", scheduler="threads", progress=False
    )
    say(f"      re-run: {again.summary()}")

    say("[3/4] training one epoch through rntensor.torch.DataLoader (shuffled, batch 1024)")
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    used = ["jets", "jets_mask", "scalars", "target", "weight"]  # the model ignores the muons
    loader = DataLoader(
        cache, batch_size=1024, shuffle=True, seed=1, split="train", num_workers=0, columns=used
    )
    lossf = torch.nn.CrossEntropyLoss(reduction="none")
    t = time.perf_counter()
    seen, losses = 0, []
    for batch in loader:
        loss = (lossf(model(batch), batch["target"]) * batch["weight"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        seen += len(batch["target"])
    figures["train"] = (seen, time.perf_counter() - t)
    k = max(1, len(losses) // 10)
    say(
        f"      loss {sum(losses[:k]) / k:.4f} (first batches) -> {sum(losses[-k:]) / k:.4f} (last batches)"
    )

    say("[4/4] inference over the test split, writing a friend file")
    model_path = os.path.join(workdir, "model.pt")
    torch.save(model, model_path)
    test = DataLoader(
        cache, batch_size=4096, shuffle=False, split="test", keep=True, num_workers=0, columns=used
    )
    out = infer(model_path, test, os.path.join(workdir, "friend.root"))
    figures["infer"] = (out.rows, out.seconds)

    say("\nrntensor demo summary")
    say(f"  {'stage':<10}{'events':>12}{'seconds':>10}{'events/s':>14}")
    for stage, (n, s) in figures.items():
        say(f"  {stage:<10}{n:>12,}{s:>10.2f}{(n / s if s else 0):>14,.0f}")
    say(
        f"  cache: {cache} ({res.shards_total} shards, {res.num_rows:,} rows); friend file: {out.output}"
    )
    return figures
