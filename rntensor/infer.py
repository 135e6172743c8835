"""Run a model over a stream of events and write its outputs as a friend file.

The friend holds one row per event the model saw, in source order, with the schema's ``keep``
columns (``run``, ``event``), the source file name and entry number, and the model's outputs
(``score`` for one output, ``score_0..score_{C-1}`` for several).  Written as a ROOT TTree
(``.root``, readable by ROOT as a friend indexed on run/event with ``TTree::BuildIndex``) or as
an Arrow IPC file (``.arrow``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rntensor.errors import RNTensorError, SourceError

__all__ = ["InferResult", "infer", "load_model"]


@dataclass
class InferResult:
    """What an inference run did."""

    output: str
    rows: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return f"wrote {self.rows} rows to {self.output} ({self.events_per_s:,.0f} events/s)"


def load_model(path: str, device: str = "cpu") -> Any:
    """A pickled module (``torch.save``; its class must be importable) or TorchScript."""
    import torch

    if not os.path.exists(path):
        raise SourceError(f"model file not found: {path}; pass the path of a saved model")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception:
        try:
            return torch.jit.load(path, map_location=device)
        except Exception as err:
            raise SourceError(
                f"cannot load model {path}: {type(err).__name__}: {err}; save it with torch.save "
                "(its class must be importable) or torch.jit.save"
            ) from err


def infer(
    model: Any,
    data: str | Any,
    output: str,
    *,
    schema: Any = None,
    batch_size: int = 4096,
    device: str = "cpu",
    storage_options: Mapping[str, Any] | None = None,
    stats_from: str | None = None,
    tree_name: str = "Friends",
) -> InferResult:
    """Run ``model`` over ``data`` (a dataset path, ROOT inputs with ``schema``, or a loader).

    Args:
        model: a ``torch.nn.Module`` (or a path to one) taking a batch dict, returning
            ``(B,)`` or ``(B, C)``.
        data: a converted dataset path; ROOT file(s) when ``schema`` is given; or a
            :class:`rntensor.torch.DataLoader` built with ``shuffle=False``.
        output: ``.root`` (TTree) or ``.arrow`` friend file to write (atomically).
        schema: schema for reading ROOT inputs directly (streaming, no cache).
        batch_size: events per forward pass.
        device: ``"cpu"`` or ``"cuda"``.
        storage_options: fsspec options for S3 inputs.
        stats_from: with ``schema``, the training cache whose normalization statistics the
            model was trained with (needed when the schema normalizes an output).
        tree_name: name of the friend TTree.
    """
    import torch

    from rntensor.torch import DataLoader

    if not (output.endswith(".root") or output.endswith(".arrow")):
        raise ValueError(f"output must end in .root or .arrow, got {output!r}")
    if isinstance(model, str):
        model = load_model(model, device)
    model.eval()
    if isinstance(data, DataLoader):
        loader = data
    elif schema is not None:
        inputs = [data] if isinstance(data, str) else list(data)
        stats = None
        if stats_from is not None:
            from rntensor.cache.read import open_cache

            stats = open_cache(stats_from, storage_options=dict(storage_options or {})).stats
        loader = DataLoader.from_root(
            inputs,
            schema,
            batch_size=batch_size,
            storage_options=storage_options,
            keep=True,
            device=device,
            stats=stats,
        )
    else:
        loader = DataLoader(
            data,
            batch_size=batch_size,
            shuffle=False,
            split=None,
            keep=True,
            storage_options=storage_options,
            device=device,
            drop_last=False,
        )
    t0 = time.perf_counter()
    parts: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for batch in loader:
            out = model(batch)
            out = out.float().cpu().numpy()
            cols = (
                {"score": out}
                if out.ndim == 1
                else {f"score_{j}": out[:, j] for j in range(out.shape[1])}
            )
            for k, v in batch.items():
                if k in cols:
                    continue
                if k in loader.keep_columns:
                    cols[k] = v.cpu().numpy() if hasattr(v, "cpu") else np.asarray(v)
            for k, v in cols.items():
                parts.setdefault(k, []).append(np.ascontiguousarray(v))
    table = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    rows = len(next(iter(table.values()))) if table else 0
    _write_friend(output, table, tree_name)
    return InferResult(output=output, rows=rows, seconds=time.perf_counter() - t0)


def _write_friend(output: str, table: Mapping[str, np.ndarray], tree_name: str) -> None:
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(output)}.tmp-{os.getpid()}")
    try:
        if output.endswith(".root"):
            import uproot

            cols = {
                k: (v.astype(np.int64) if v.dtype == np.int64 else v)
                for k, v in table.items()
                if v.dtype != object
            }
            with uproot.recreate(tmp) as f:
                f[tree_name] = cols
        else:
            import pyarrow as pa

            t = pa.table({k: pa.array(v) for k, v in table.items()})
            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
                w.write_table(t)
        os.replace(tmp, output)
    except RNTensorError:
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
