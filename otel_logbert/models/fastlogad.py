"""FastLogAD (Lin et al., 2024): a generator makes anomalies, a discriminator learns to separate them.

* Generator: a small masked-log-key model. Mask-guided anomaly generation replaces the masked keys
  with keys sampled from the *complement* of its predicted distribution (likely keys become
  unlikely), so replacements look anomalous in context. Variant ``generator="random"``: the
  training-free random generator, replacements drawn uniformly. UNK is a possible replacement, so
  the discriminator learns that never-seen keys are anomalous.
* Discriminator: the shared encoder with a replaced-token-detection (RTD) head, trained with RTD
  for ``rtd_epochs``, then with RTD + hyperspherical separation: ||W h_CLS||^2 small for normal
  sessions, -log(1 - exp(-||W h_CLS||^2)) pushes generated anomalies away from the origin.
* Score = ||W h_CLS||_2 of the discriminator on the unmodified session (W: a linear projection);
  per-key evidence = the RTD probability that a key was replaced (UNK keys are always unexpected).
  Only the discriminator is exported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from otel_logbert.models.encoder import Encoder, EncoderConfig
from otel_logbert.models.masked_keys import random_mask
from otel_logbert.parsing.vocabulary import CLS_ID, MASK_ID, PAD_ID, UNK_ID
from otel_logbert.training.faults import with_structural_faults


@dataclass
class FastLogADConfig(EncoderConfig):
    generator: str = "mask"  # "mask" (complement sampling from an MLM generator) | "random"
    gen_d_model: int = 32
    gen_layers: int = 1
    gen_heads: int = 2
    gen_d_ff: int = 64
    mask_ratio: float = 0.15  # share of keys replaced in a generated anomaly (>= 1 per session)
    gen_epochs: int = 4  # MLM epochs of the generator (0 for the random generator)
    rtd_epochs: int = 4  # discriminator epochs with replaced-token detection only
    sep_epochs: int = 8  # then RTD + hyperspherical separation
    sep_weight: float = 1.0
    # How anomalies are generated for training, one op per session drawn uniformly. "replace" is the
    # paper's mask-guided generation; "delete" (missing steps, cut-off sessions), "swap" (two keys
    # exchanged, or a block of steps moved: reordering) and "repeat" (a key repeated, e.g. a retry
    # storm) are structural log faults the replacement never produces. ("replace",) is the paper's
    # configuration.
    generated_ops: tuple[str, ...] = ("replace", "delete", "swap", "repeat")


class Generator(nn.Module):
    def __init__(self, cfg: FastLogADConfig) -> None:
        super().__init__()
        gen_cfg = EncoderConfig(
            vocab_size=cfg.vocab_size, max_len=cfg.max_len, d_model=cfg.gen_d_model,
            n_layers=cfg.gen_layers, n_heads=cfg.gen_heads, d_ff=cfg.gen_d_ff, dropout=cfg.dropout,
        )
        self.encoder = Encoder(gen_cfg)
        self.head = nn.Linear(cfg.gen_d_model, cfg.vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(tokens)[:, 1:])  # (B, L, V)


def replacement_weights(vocab_size: int, tokens: torch.Tensor, probs: torch.Tensor | None) -> torch.Tensor:
    """Sampling weights (B, L, V) for replacements: the complement (1 - p) of the generator's
    distribution, or uniform when ``probs`` is None; never PAD/MASK/CLS, never the true key."""
    weights = torch.ones(*tokens.shape, vocab_size) if probs is None else (1.0 - probs).clamp_min(1e-6)
    invalid = torch.zeros(vocab_size, dtype=torch.bool)
    invalid[[PAD_ID, MASK_ID, CLS_ID]] = True
    weights = weights.masked_fill(invalid, 0.0)
    return weights.scatter(-1, tokens.unsqueeze(-1), 0.0)


# The separation phase pushes generated anomalies' embedding norms above normal sessions' (about 2x at
# the end on full HDFS). A ratio near 1 means the discriminator put both at one norm: the model does
# not separate anything (seen on one of three draws of 20 HDFS sessions, AUROC 0.59).
SEPARATION_MIN_RATIO = 1.1


def separation_warning(losses: list[dict[str, float]]) -> str | None:
    """A one-line warning when training ended with generated-anomaly and normal norms (``losses``' last
    epoch, as the trainer records them) closer than ``SEPARATION_MIN_RATIO``; None otherwise or when the
    losses carry no separation phase. Needs no label."""
    last = losses[-1] if losses else {}
    normal, anomaly = last.get("normal_norm"), last.get("anomaly_norm")
    if normal is None or anomaly is None or anomaly >= SEPARATION_MIN_RATIO * normal:
        return None
    return (f"FastLogAD's separation phase ended with generated-anomaly norm {anomaly:.3f} against normal "
            f"{normal:.3f} (less than {SEPARATION_MIN_RATIO}x): this model may separate nothing; retrain with "
            "another --seed or more sessions")


class FastLogAD(nn.Module):
    def __init__(self, cfg: FastLogADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg) if cfg.generator == "mask" else None
        self.encoder = Encoder(cfg)  # the discriminator
        self.rtd_head = nn.Linear(cfg.d_model, 1)
        # The hypersphere embedding: a projection of h_CLS. The encoder ends in a LayerNorm, which pins
        # ||h_CLS|| near sqrt(D); the projection lets normal sessions actually move towards the origin.
        self.sphere_head = nn.Linear(cfg.d_model, cfg.d_model)
        # The hypersphere's center is the origin, fixed: the trainer has no center to refit.
        self.center: torch.Tensor | None = None

    def embedding(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, 1+L, D) discriminator states -> (B, D) hypersphere embedding of the session."""
        return self.sphere_head(hidden[:, 0])

    def session_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (B, D) hypersphere embedding of the unmodified sessions."""
        return self.embedding(self.encoder(tokens))

    def train_epochs(self, configured: int) -> int:
        """The sum of the phases' epochs (generator, RTD, separation); ``configured`` if that is 0."""
        gen = self.cfg.gen_epochs if self.generator is not None else 0
        return gen + self.cfg.rtd_epochs + self.cfg.sep_epochs or configured

    def calibrate(self, tokens: torch.Tensor) -> dict[str, float]:
        """Nothing to calibrate: score and evidence come straight from the discriminator."""
        return {}

    def phase(self, epoch: int) -> str:
        gen = self.cfg.gen_epochs if self.generator is not None else 0
        if epoch < gen:
            return "generator"
        return "rtd" if epoch < gen + self.cfg.rtd_epochs else "separation"

    # -- training --------------------------------------------------------------------------------
    @torch.no_grad()
    def make_anomalies(self, tokens: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace a random share of keys by generated ones, then apply the structural faults of
        ``generated_ops`` (``training.faults``). Returns (anomalous tokens, replaced (B, L))."""
        masked, mask = random_mask(tokens, self.cfg.mask_ratio, generator)
        probs = None
        if self.generator is not None:
            self.generator.eval()
            probs = F.softmax(self.generator(masked), dim=-1)  # (B, L, V)
        weights = replacement_weights(self.cfg.vocab_size, tokens, probs)[mask]  # (M, V)
        sampled = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (M,)
        fake = tokens.clone()
        fake[mask] = sampled
        if set(self.cfg.generated_ops) <= {"replace"}:
            return fake, mask
        return with_structural_faults(
            tokens, fake, mask, generator, self.cfg.generated_ops, self.cfg.mask_ratio, self.cfg.max_len
        )

    def loss(self, tokens: torch.Tensor, generator: torch.Generator, epoch: int) -> tuple[torch.Tensor, dict]:
        phase = self.phase(epoch)
        if phase == "generator":
            assert self.generator is not None
            self.generator.train()
            masked, mask = random_mask(tokens, self.cfg.mask_ratio, generator)
            mlm = F.cross_entropy(self.generator(masked)[mask], tokens[mask])
            return mlm, {"gen_mlm": mlm.item()}
        fake, replaced = self.make_anomalies(tokens, generator)
        hidden_fake = self.encoder(fake)  # (B, 1+L', D): structural faults change lengths
        real = fake != PAD_ID
        rtd_logits = self.rtd_head(hidden_fake[:, 1:]).squeeze(-1)  # (B, L)
        rtd = F.binary_cross_entropy_with_logits(rtd_logits[real], replaced[real].float())
        stats = {"rtd": rtd.item()}
        if phase == "rtd":
            return rtd, stats
        normal_sq = (self.session_embedding(tokens) ** 2).sum(-1)  # (B,)
        fake_sq = (self.embedding(hidden_fake) ** 2).sum(-1)
        separation = normal_sq.mean() - torch.log(-torch.expm1(-fake_sq) + 1e-6).mean()
        stats.update(normal_norm=normal_sq.sqrt().mean().item(), anomaly_norm=fake_sq.sqrt().mean().item())
        return rtd + self.cfg.sep_weight * separation, stats

    # -- detection (the exported discriminator) ---------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) -> score (B,) = ||embedding||, evidence (B, L) = P(key replaced), 1 for UNK."""
        hidden = self.encoder(tokens)  # (B, 1+L, D)
        score = torch.sqrt((self.embedding(hidden) ** 2).sum(-1))  # (B,)
        evidence = torch.sigmoid(self.rtd_head(hidden[:, 1:]).squeeze(-1))  # (B, L)
        evidence = torch.where(tokens == UNK_ID, torch.ones_like(evidence), evidence)
        evidence = evidence.masked_fill(tokens == PAD_ID, 0.0)
        return score, evidence
