"""BERT-LogAnom: the shared encoder, a gated residual BiLSTM and attention pooling.

Training loss = MLKP cross-entropy on randomly masked keys + lambda * VHM, where VHM is the squared
distance of the attention-pooled session embedding z to the center c (mean z over training).
Score = an MLKP term over the per-key cross-entropies (every key predicted once with ``k`` interleaved
mask patterns) + lambda * ||z - c||^2. The MLKP term is ``score``:

* ``graded`` (the packaged config's): LogBERT's graded surprise over the ranks (a key inside the
  calibrated top-g adds 0, a never-seen key a lot); a sum, so one bad key is not diluted.
* ``max``: the largest per-key loss. One surprising key weighs the same in a session of 5 keys and of
  120, but one normal key with a huge loss sets the threshold.
* ``topk``: the mean of the ``top_k`` largest per-key losses.
* ``mean``: the paper's mean over all keys; one bad key is diluted by the length of the session.

``benchmarks/loganom_score_choice.py`` compares them without labels.

Per-key evidence: a key outside the top-g is unexpected (g calibrated on normal validation data, as
for LogBERT). ``use_bilstm=False`` is the ablation without the GR-BiLSTM. The DTPM dynamic threshold
lives in ``scoring.dtpm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from otel_logbert.errors import UserError
from otel_logbert.models.encoder import NEG_INF, Encoder, EncoderConfig
from otel_logbert.models.masked_keys import choose_g, key_ranks, pattern_hidden, random_mask
from otel_logbert.parsing.vocabulary import FIRST_KEY_ID, PAD_ID


@dataclass
class LogAnomConfig(EncoderConfig):
    use_bilstm: bool = True
    mask_ratio: float = 0.3
    lam: float = 0.1  # weight of the VHM distance in the loss and the score
    # MLKP term of the session score: graded | max | topk | mean. The dataclass keeps the paper's mean, so a
    # bundle written before the option existed scores as it did; the packaged config says graded.
    score: str = "mean"
    top_k: int = 3  # keys averaged by score: topk
    k_patterns: int = 4
    g_candidates: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10)
    key_miss_target: float = 0.001  # calibration: largest tolerated share of unexpected normal keys


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``lengths[b]`` steps, leaving padding in place. x (B, T, D)."""
    B, T, D = x.shape
    steps = torch.arange(T, device=x.device)[None, :]  # (1, T)
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # (B, T)
    return x.gather(1, index[:, :, None].expand(B, T, D))


class GatedResidualBiLSTM(nn.Module):
    """out = LayerNorm(x + sigmoid(W [x; BiLSTM(x)]) * BiLSTM(x)).

    The backward direction runs on per-row reversed sequences, so padding never reaches a real
    position and scores do not depend on how much a batch was padded.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.forward_lstm = nn.LSTM(d_model, d_model // 2, batch_first=True)
        self.backward_lstm = nn.LSTM(d_model, d_model // 2, batch_first=True)
        self.gate = nn.Linear(2 * d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        fwd, _ = self.forward_lstm(x)  # (B, T, D/2)
        bwd, _ = self.backward_lstm(reverse_padded(x, lengths))
        y = torch.cat([fwd, reverse_padded(bwd, lengths)], dim=-1)  # (B, T, D)
        gate = torch.sigmoid(self.gate(torch.cat([x, y], dim=-1)))
        return self.norm(x + gate * y)


SCORES = ("graded", "max", "topk", "mean")


def graded_surprise(ranks: torch.Tensor, real: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """LogBERT's graded surprise over the MLKP ranks (B, L) -> (B,): sum of max(0, log((rank + 1) / g)).
    A key inside the top-g adds 0, one just outside a little, a never-seen key about log(2^20 / g)."""
    surprise = torch.log((ranks.to(torch.float32) + 1.0) / g.to(torch.float32)).clamp_min(0.0)
    return (surprise * real).sum(-1)


def mlkp_term(ce: torch.Tensor, real: torch.Tensor, score: str, top_k: int) -> torch.Tensor:
    """Per-key losses ce (B, L), 0 on padding (ce >= 0) -> the session's MLKP term (B,) for ``score``
    ``mean``, ``max`` or ``topk`` (``graded`` works on ranks: ``graded_surprise``).

    ``topk`` pads with zeros so ``k`` is a constant of the graph whatever the sequence length, and
    divides by min(k, real keys): a 2-key session's term is the mean of its 2 losses.
    """
    if score == "mean":
        return ce.sum(-1) / real.sum(-1).clamp_min(1)
    if score == "max":
        return ce.max(dim=-1).values
    top = F.pad(ce, (0, top_k)).topk(top_k, dim=-1).values  # (B, k)
    return top.sum(-1) / real.sum(-1).clamp(min=1, max=top_k)


class LogAnom(nn.Module):
    def __init__(self, cfg: LogAnomConfig) -> None:
        super().__init__()
        if cfg.score not in SCORES:
            raise UserError(f"loganom score {cfg.score!r}: expected one of {', '.join(SCORES)}")
        if cfg.top_k < 1:
            raise UserError(f"loganom top_k {cfg.top_k}: must be >= 1")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.grbilstm = GatedResidualBiLSTM(cfg.d_model) if cfg.use_bilstm else None
        self.attention = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.Tanh(), nn.Linear(cfg.d_model, 1))
        self.mlkp_head = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.register_buffer("center", torch.zeros(cfg.d_model))
        self.register_buffer("g", torch.tensor(cfg.g_candidates[-1], dtype=torch.int64))

    def contextual(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (B, 1+L, D): encoder, then the GR-BiLSTM (CLS row included)."""
        hidden = self.encoder(tokens)
        if self.grbilstm is None:
            return hidden
        lengths = (tokens != PAD_ID).sum(-1) + 1  # +1 for CLS
        return self.grbilstm(hidden, lengths)

    def pooled(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention pooling over CLS and keys, padding excluded: (B, 1+L, D) -> (B, D)."""
        pad = F.pad(tokens == PAD_ID, (1, 0), value=False)  # (B, 1+L)
        logits = self.attention(hidden).squeeze(-1) + pad.to(hidden.dtype) * NEG_INF
        weights = torch.softmax(logits, dim=-1)  # (B, 1+L)
        return (weights.unsqueeze(-1) * hidden).sum(1)

    def train_epochs(self, configured: int) -> int:
        return configured

    # -- training --------------------------------------------------------------------------------
    def loss(self, tokens: torch.Tensor, generator: torch.Generator, epoch: int) -> tuple[torch.Tensor, dict]:
        masked, mask = random_mask(tokens, self.cfg.mask_ratio, generator)
        hidden = self.contextual(masked)
        mlkp = F.cross_entropy(self.mlkp_head(hidden[:, 1:])[mask], tokens[mask])
        vhm = ((self.pooled(hidden, tokens) - self.center) ** 2).sum(-1).mean()
        return mlkp + self.cfg.lam * vhm, {"mlkp": mlkp.item(), "vhm": vhm.item()}

    @torch.no_grad()
    def session_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (B, D) attention-pooled z, the embedding whose training mean is the center."""
        return self.pooled(self.contextual(tokens), tokens)

    # -- detection -------------------------------------------------------------------------------
    def key_losses(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L) cross-entropy and rank of each key under its mask pattern, (B,) VHM distance."""
        hidden = pattern_hidden(lambda t: self.contextual(t)[:, 1:], tokens, self.cfg.k_patterns)
        logits = self.mlkp_head(hidden)  # (B, L, V)
        ce = -F.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, L)
        ce = ce.masked_fill(tokens == PAD_ID, 0.0)
        distance = ((self.session_embedding(tokens) - self.center) ** 2).sum(-1)
        return ce, key_ranks(logits, tokens), distance

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) -> score (B,) = MLKP term + lambda * VHM, evidence (B, L) = top-g miss."""
        ce, ranks, distance = self.key_losses(tokens)
        real = tokens != PAD_ID
        if self.cfg.score == "graded":
            mlkp = graded_surprise(ranks, real, self.g)
        else:
            mlkp = mlkp_term(ce, real, self.cfg.score, self.cfg.top_k)
        unexpected = ((ranks >= self.g) & real).to(torch.float32)
        return mlkp + self.cfg.lam * distance, unexpected

    def calibrate(self, tokens: torch.Tensor) -> dict[str, float]:
        """Choose g for the per-key evidence from normal validation sessions only."""
        _, ranks, _ = self.key_losses(tokens)
        n_keys = self.cfg.vocab_size - FIRST_KEY_ID
        g, miss_rate = choose_g(ranks, tokens, self.cfg.g_candidates, self.cfg.key_miss_target, n_keys)
        self.g.fill_(g)
        return {"g": g, "key_miss_rate": miss_rate}
