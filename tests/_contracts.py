"""Contract checks reused across components: pickle round trip, resume from a midpoint
(torchdata's save/load-state check), determinism for a seed.

Loaders are passed as factories (``make() -> loader``) so that every check starts from a fresh
object, as a restarted job would.  Batches are ``dict[str, Tensor | ndarray]``; nested tensors
compare by their values and offsets.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np


def _plain(x: Any) -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_nested:
            return ("nested", x.values().numpy(), x.offsets().numpy())
        return x.numpy()
    return x


def batches_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same keys and equal values (shape, dtype and content; NaN equal to NaN)."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = _plain(a[k]), _plain(b[k])
        if isinstance(x, tuple) or isinstance(y, tuple):
            if not (isinstance(x, tuple) and isinstance(y, tuple)):
                return False
            if not all(np.array_equal(p, q) for p, q in zip(x[1:], y[1:], strict=True)):
                return False
            continue
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            return False
    return True


def assert_same_batches(got: list[Mapping[str, Any]], want: list[Mapping[str, Any]]) -> None:
    assert len(got) == len(want), f"{len(got)} batches, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert batches_equal(g, w), f"batch {i} differs (keys {sorted(g)} vs {sorted(w)})"


def assert_pickle_roundtrip(obj: Any, check: Callable[[Any, Any], None] | None = None) -> Any:
    """Pickle and unpickle ``obj``; ``check(original, clone)`` compares behaviour."""
    clone = pickle.loads(pickle.dumps(obj))
    assert type(clone) is type(obj)
    if check is not None:
        check(obj, clone)
    return clone


def epoch_batches(loader: Any, epoch: int) -> list[Mapping[str, Any]]:
    loader.set_epoch(epoch)
    return list(loader)


def assert_resume_from_midpoint(
    make: Callable[[], Any], *, epoch: int = 0, stop_after: int | None = None
) -> tuple[int, int]:
    """Consume ``stop_after`` batches, save, restore into a fresh loader: the rest must match.

    Also checks that the state survives pickling (it goes into checkpoints) and that the next
    epoch after a resumed one starts from its beginning.  Returns (batches, stop_after).
    """
    full = epoch_batches(make(), epoch)
    n = len(full)
    k = n // 2 if stop_after is None else stop_after
    first = make()
    first.set_epoch(epoch)
    head = []
    it = iter(first)
    for _ in range(k):
        head.append(next(it))
    state = pickle.loads(pickle.dumps(first.state_dict()))
    del it
    assert_same_batches(head, full[:k])
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)  # the usual training loop calls it again: keeps the resume point
    tail = list(resumed)
    assert_same_batches(tail, full[k:])
    assert resumed.state_dict()["batches_yielded"] == n
    nxt = epoch_batches(resumed, epoch + 1)
    assert_same_batches(nxt, epoch_batches(make(), epoch + 1))
    return n, k


def assert_deterministic(
    make: Callable[[], Any],
    *,
    epochs: Iterable[int] = (0, 1),
    other: Callable[[], Any] | None = None,
) -> None:
    """Two fresh loaders give identical batches per epoch (``other``: a differently configured
    loader that must give the same batches too, e.g. another number of workers)."""
    for epoch in epochs:
        want = epoch_batches(make(), epoch)
        assert_same_batches(epoch_batches(make(), epoch), want)
        if other is not None:
            assert_same_batches(epoch_batches(other(), epoch), want)
