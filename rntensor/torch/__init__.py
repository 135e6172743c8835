"""PyTorch loading: a converted cache (or ROOT files, streamed) → batches of tensors.

The only package that imports torch.  ``DataLoader`` is the entry point::

    from rntensor.torch import DataLoader

    loader = DataLoader("cache/jets", batch_size=1024, shuffle=True, seed=1, split="train")
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:  # dict of tensors
            ...

Modules: ``plan`` (splits, rank partition, shuffle order; numpy only), ``collate`` (batch
assembly), ``dataset`` (cache → IterableDataset), ``stream`` (tables → IterableDataset),
``device`` (asynchronous host → device copies), ``loader`` (the DataLoader).
"""

from rntensor.torch.dataset import CacheDataset
from rntensor.torch.device import DevicePrefetcher
from rntensor.torch.loader import DataLoader
from rntensor.torch.plan import SPLITS, row_uniform, split_mask
from rntensor.torch.stream import RootTables, StreamDataset

__all__ = [
    "SPLITS",
    "CacheDataset",
    "DataLoader",
    "DevicePrefetcher",
    "RootTables",
    "StreamDataset",
    "row_uniform",
    "split_mask",
]
