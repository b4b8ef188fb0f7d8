"""Masked log key prediction helpers shared by LogBERT and BERT-LogAnom.

Training masks a random share of each session's keys. Detection is deterministic: ``k`` interleaved
patterns (position i is masked in pattern i % k), all k run as one batch, so every key is predicted
exactly once from its context.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from otel_logbert.parsing.vocabulary import MASK_ID, PAD_ID, UNK_ID


def random_mask(
    tokens: torch.Tensor, ratio: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``ratio`` of the real keys of each row (at least one). Returns (masked tokens, mask (B, L))."""
    real = tokens != PAD_ID  # (B, L)
    noise = torch.rand(tokens.shape, generator=generator)
    mask = (noise < ratio) & real
    # guarantee one masked key per session: the real key with the smallest noise
    first = torch.where(real, noise, torch.full_like(noise, 2.0)).argmin(dim=1)  # (B,)
    mask[torch.arange(tokens.shape[0]), first] = True
    mask &= real
    return tokens.masked_fill(mask, MASK_ID), mask


def pattern_hidden(
    encode: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, k: int
) -> torch.Tensor:
    """Hidden state of every key, computed with that key masked (pattern i % k).

    ``encode``: tokens (N, L) -> per-key hidden states (N, L, D) (CLS row already dropped).
    Returns (B, L, D).
    """
    B, L = tokens.shape
    position = torch.arange(L, device=tokens.device)  # (L,)
    pattern_of = position % k  # (L,)
    patterns = pattern_of[None, :] == torch.arange(k, device=tokens.device)[:, None]  # (k, L)
    real = tokens != PAD_ID
    masked = torch.where(patterns[:, None, :] & real[None], MASK_ID, tokens[None])  # (k, B, L)
    hidden = encode(masked.reshape(k * B, L))  # (k*B, L, D)
    D = hidden.shape[-1]
    hidden = hidden.reshape(k, B, L, D)
    index = pattern_of.view(1, 1, L, 1).expand(1, B, L, D)
    return hidden.gather(0, index).squeeze(0)  # (B, L, D)


def key_ranks(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Rank of the true key among the predictions (0 = top-1), (B, L). UNK keys get a rank above
    any top-g (they were never seen in training); padding gets rank 0."""
    true_logit = logits.gather(-1, tokens.unsqueeze(-1))  # (B, L, 1)
    rank = (logits > true_logit).sum(dim=-1)  # (B, L)
    rank = torch.where(tokens == UNK_ID, torch.full_like(rank, 1 << 20), rank)
    return torch.where(tokens == PAD_ID, torch.zeros_like(rank), rank)


def choose_g(
    ranks: torch.Tensor, tokens: torch.Tensor, candidates: tuple[int, ...], miss_target: float, n_keys: int
) -> tuple[int, float]:
    """Smallest top-g for which at most ``miss_target`` of the normal validation keys fall outside
    the top-g (the largest usable candidate if none does). Normal data only.

    ranks, tokens: (N, L) for the validation sessions (chunks), padded with PAD_ID. Candidates are
    capped below ``n_keys`` (the number of real keys): a top-g holding every key flags nothing.
    Returns (g, the share of normal keys outside the top-g).
    """
    normal_ranks = ranks[tokens != PAD_ID]
    usable = [g for g in candidates if g < n_keys] or [max(1, n_keys - 1)]
    for candidate in usable:
        miss_rate = float((normal_ranks >= candidate).float().mean())
        if miss_rate <= miss_target:
            return candidate, miss_rate
    return usable[-1], miss_rate
