"""Host → device transfer overlapping compute, and the last per-batch touches.

:class:`DevicePrefetcher` keeps ``depth`` batches in flight: each is copied with
``non_blocking=True`` on a side CUDA stream (asynchronous from pinned memory), and before a batch
is handed out the consumer's stream waits for that batch's copy event only; ``record_stream``
tells the caching allocator the tensors are used on the consumer's stream.  On a CPU device it is
a pass-through, so the same training loop runs everywhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

__all__ = ["DevicePrefetcher", "finalize"]

Batch = dict[str, torch.Tensor]


def _move(obj: Any, device: torch.device, moved: list[torch.Tensor]) -> Any:
    """``obj`` with every tensor in it (dicts, tuples, lists) copied to ``device``."""
    if isinstance(obj, torch.Tensor):
        t = obj.to(device, non_blocking=True)
        moved.append(t)
        return t
    if isinstance(obj, dict):
        return {k: _move(v, device, moved) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_move(v, device, moved) for v in obj)
    return obj


class DevicePrefetcher:
    """Iterate ``batches`` moved to ``device``, copies running ahead on a side stream.

    Args:
        batches: items holding (preferably pinned) CPU tensors, in dicts, tuples or lists;
            anything else is passed along as it is.
        device: target device; ``cpu`` (or ``None``) passes batches through.
        depth: batches whose copies are in flight ahead of the consumer (1-2 is enough).
    """

    def __init__(
        self, batches: Iterable[Any], device: torch.device | str | None, *, depth: int = 2
    ) -> None:
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        self.batches = batches
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.depth = depth

    def __iter__(self) -> Iterator[Any]:
        if self.device.type == "cpu":
            yield from self.batches
        elif self.device.type != "cuda":
            for b in self.batches:
                yield _move(b, self.device, [])
        else:
            yield from self._cuda()

    def _cuda(self) -> Iterator[Any]:
        side = torch.cuda.Stream(device=self.device)
        it = iter(self.batches)
        inflight: deque[tuple[Any, list[torch.Tensor], torch.cuda.Event]] = deque()

        def launch() -> bool:
            try:
                host = next(it)
            except StopIteration:
                return False
            moved: list[torch.Tensor] = []
            with torch.cuda.stream(side):
                item = _move(host, self.device, moved)
                done = torch.cuda.Event()
                done.record(side)
            inflight.append((item, moved, done))
            return True

        for _ in range(self.depth):
            if not launch():
                break
        while inflight:
            item, moved, done = inflight.popleft()
            current = torch.cuda.current_stream(self.device)
            current.wait_event(done)  # this batch's copies only, not the ones behind it
            for t in moved:
                t.record_stream(current)  # freed only after the consumer's work on it
            launch()
            yield item


def finalize(
    batch: Batch, *, ragged: Sequence[str], nested: bool, one_hot: dict[str, int]
) -> Batch:
    """Ragged ``values`` + ``offsets`` → nested tensors (``nested``); labels → one-hot."""
    if nested:
        for name in ragged:
            offsets = batch.pop(f"{name}_offsets")
            batch[name] = torch.nested.nested_tensor_from_jagged(batch[name], offsets)
    for name, classes in one_hot.items():
        batch[name] = torch.nn.functional.one_hot(batch[name], classes).to(torch.float32)
    return batch
