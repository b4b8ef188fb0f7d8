"""``SeedEnsemble``: K trained members of one model family served as one model (one graph, one score).

The forward is the exported detection forward of every member, then ``score`` = the mean over members of
``(member score - loc) / scale`` (each member's unit, ``training.ensemble.member_units``) and
``evidence`` = the mean of the members' evidence, so a key is unexpected (evidence > 0.5) where most
members say so. Exported to ONNX like any single model: the serving side (ONNX Runtime, Triton) sees the
same contract, ``tokens`` [B, L] -> ``score`` [B], ``evidence`` [B, L].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SeedEnsemble(nn.Module):
    """Members of one family and config; ``loc`` / ``scale`` (K,) buffers put their scores in one unit."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.register_buffer("loc", torch.zeros(len(members)))
        self.register_buffer("scale", torch.ones(len(members)))
        self.cfg = members[0].cfg
        # the members' own centers (LogBERT, BERT-LogAnom) are inside them; the trainer refits none here
        self.center: torch.Tensor | None = None

    def set_units(self, units: Sequence[tuple[float, float]]) -> None:
        """Set each member's (location, scale); ``len(units)`` must be the number of members."""
        if len(units) != len(self.members):
            raise ValueError(f"{len(units)} units for {len(self.members)} members")
        self.loc.copy_(torch.tensor([loc for loc, _ in units], dtype=torch.float32))
        self.scale.copy_(torch.tensor([scale for _, scale in units], dtype=torch.float32))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) -> score (B,) mean unit-free member score, evidence (B, L) mean member evidence."""
        scores, evidence = zip(*(member(tokens) for member in self.members), strict=True)
        unit_free = (torch.stack(scores) - self.loc[:, None]) / self.scale[:, None]  # (K, B)
        return unit_free.mean(0), torch.stack(evidence).mean(0)
