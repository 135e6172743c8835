"""Small reference models used by the demo, the examples and the tests."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["JetTagger"]


class JetTagger(nn.Module):
    """A deep-sets jet tagger: a per-jet MLP, a masked sum over jets, a head with the scalars.

    Args:
        jet_features: features per jet (last axis of ``batch["jets"]``).
        scalar_features: width of ``batch["scalars"]``.
        hidden: hidden width.
        classes: output logits.
    """

    def __init__(
        self, jet_features: int = 5, scalar_features: int = 3, hidden: int = 32, classes: int = 2
    ) -> None:
        super().__init__()
        self.phi = nn.Sequential(
            nn.Linear(jet_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.rho = nn.Sequential(
            nn.Linear(hidden + scalar_features, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        jets = batch["jets"]
        mask = batch["jets_mask"].unsqueeze(-1).to(jets.dtype)
        pooled = (self.phi(jets) * mask).sum(1)
        return self.rho(torch.cat([pooled, batch["scalars"]], dim=1))
