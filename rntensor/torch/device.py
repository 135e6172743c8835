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


class DevicePrefetcher:
    """Iterate ``batches`` moved to ``device``, copies running ahead on a side stream.

    Args:
        batches: dicts of (preferably pinned) CPU tensors.
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
            return
        if self.device.type != "cuda":
            for b in self.batches:
                yield {k: v.to(self.device) for k, v in b.items()} if isinstance(b, dict) else b
            return
        yield from self._cuda()

    def _cuda(self) -> Iterator[Any]:
        side = torch.cuda.Stream(device=self.device)
        it = iter(self.batches)
        inflight: deque[tuple[Any, torch.cuda.Event | None]] = deque()

        def launch() -> bool:
            try:
                host = next(it)
            except StopIteration:
                return False
            if not isinstance(host, dict):  # e.g. a worker's error: passed along in order
                inflight.append((host, None))
                return True
            with torch.cuda.stream(side):
                moved = {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
                done = torch.cuda.Event()
                done.record(side)
            inflight.append((moved, done))
            return True

        for _ in range(self.depth):
            if not launch():
                break
        while inflight:
            moved, done = inflight.popleft()
            if done is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(done)
                for t in moved.values():
                    t.record_stream(current)  # freed only after the consumer's work on it
            launch()
            yield moved


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
