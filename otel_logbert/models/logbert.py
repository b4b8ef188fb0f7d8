"""LogBERT (Guo et al., 2021): masked log key prediction + volume of hypersphere.

Training loss = MLKP cross-entropy on randomly masked keys + alpha * mean ||h_CLS - c||^2, with the
center c the mean CLS embedding over the training sessions (recomputed after every epoch).
Detection (deterministic): every key is predicted once with ``k`` interleaved mask patterns; a key is
unexpected when it is not in the top-``g`` predictions (UNK keys always are). The session score grades
each key's surprise instead of counting misses: sum over keys of max(0, log((rank + 1) / g)), plus
||h_CLS - c||^2 / radius. A key ranked just outside the top-g (a rare but normal ordering) adds a
little, a never-seen key (UNK) adds about log(2^20 / g). ``g`` and ``radius`` are calibrated on
normal validation sessions (see ``calibrate``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from otel_logbert.models.encoder import Encoder, EncoderConfig
from otel_logbert.models.masked_keys import choose_g, key_ranks, pattern_hidden, random_mask
from otel_logbert.parsing.vocabulary import FIRST_KEY_ID, PAD_ID


@dataclass
class LogBERTConfig(EncoderConfig):
    mask_ratio: float = 0.3
    alpha: float = 0.1  # weight of the hypersphere term
    k_patterns: int = 4  # detection mask patterns
    g_candidates: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10)
    key_miss_target: float = 0.001  # calibration: largest tolerated share of unexpected normal keys


class LogBERT(nn.Module):
    def __init__(self, cfg: LogBERTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.mlkp_head = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.register_buffer("center", torch.zeros(cfg.d_model))
        self.register_buffer("g", torch.tensor(cfg.g_candidates[-1], dtype=torch.int64))
        self.register_buffer("radius", torch.tensor(1.0))

    # -- training --------------------------------------------------------------------------------
    def loss(self, tokens: torch.Tensor, generator: torch.Generator, epoch: int) -> tuple[torch.Tensor, dict]:
        masked, mask = random_mask(tokens, self.cfg.mask_ratio, generator)
        hidden = self.encoder(masked)  # (B, 1+L, D)
        logits = self.mlkp_head(hidden[:, 1:])  # (B, L, V)
        mlkp = F.cross_entropy(logits[mask], tokens[mask])
        vhm = ((hidden[:, 0] - self.center) ** 2).sum(-1).mean()
        return mlkp + self.cfg.alpha * vhm, {"mlkp": mlkp.item(), "vhm": vhm.item()}

    def train_epochs(self, configured: int) -> int:
        return configured

    @torch.no_grad()
    def session_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (B, D) h_CLS, the embedding whose training mean is the center."""
        return self.encoder(tokens)[:, 0]  # (B, D)

    # -- detection -------------------------------------------------------------------------------
    def ranks_and_distance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) rank of each true key under its mask pattern, (B,) squared distance to the center."""
        hidden = pattern_hidden(lambda t: self.encoder(t)[:, 1:], tokens, self.cfg.k_patterns)
        ranks = key_ranks(self.mlkp_head(hidden), tokens)  # (B, L)
        distance = ((self.encoder(tokens)[:, 0] - self.center) ** 2).sum(-1)  # (B,)
        return ranks, distance

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exported graph: tokens (B, L) -> score (B,), evidence (B, L) (1.0 = unexpected key)."""
        ranks, distance = self.ranks_and_distance(tokens)
        real = tokens != PAD_ID
        unexpected = ((ranks >= self.g) & real).to(torch.float32)  # (B, L)
        surprise = torch.log((ranks.to(torch.float32) + 1.0) / self.g.to(torch.float32)).clamp_min(0.0)  # (B, L)
        score = (surprise * real).sum(-1) + distance / self.radius  # (B,)
        return score, unexpected

    def calibrate(self, tokens: torch.Tensor) -> dict[str, float]:
        """Choose g and radius from normal validation sessions only (``tokens`` (N, L) padded).

        g: the smallest candidate for which at most ``key_miss_target`` of the normal keys fall
        outside the top-g. radius: the largest normal squared distance, so the distance term is <= 1
        for every normal validation session.
        """
        ranks, distances = self.ranks_and_distance(tokens)
        n_keys = self.cfg.vocab_size - FIRST_KEY_ID
        g, miss_rate = choose_g(ranks, tokens, self.cfg.g_candidates, self.cfg.key_miss_target, n_keys)
        radius = max(float(distances.max()), 1e-6)
        self.g.fill_(g)
        self.radius.fill_(radius)
        return {"g": g, "radius": radius, "key_miss_rate": miss_rate}
