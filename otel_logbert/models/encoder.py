"""The shared encoder: log-key embedding + sinusoid positions + a CLS token + pre-LN transformer blocks.

Hand-written (nanoGPT style) rather than ``nn.TransformerEncoder`` so the ONNX export is a plain graph
(no fused fast path) and PyTorch and ONNX Runtime agree to 1e-5. Shapes: B batch, L keys, D d_model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from otel_logbert.parsing.vocabulary import CLS_ID, PAD_ID

NEG_INF = -1e9  # finite, so fully padded rows stay NaN-free in every runtime


@dataclass
class EncoderConfig:
    vocab_size: int
    max_len: int = 128  # keys per chunk; the CLS token is extra
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    dropout: float = 0.1
    # Multiply key embeddings (initialised N(0, 1)) by sqrt(d_model) before adding the unit-scale
    # sinusoids, as the Transformer paper does: keys then dominate positions, which makes the model
    # tolerant of benign reordering (concurrent writers interleave their lines, as HDFS's DataNodes do).
    scale_embeddings: bool = True


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """The Transformer paper's fixed position encodings, (length, dim)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # 3 x (B, T, D)
        q = q.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D // self.n_heads))  # (B, H, T, T)
        att = att + key_bias  # (B, 1, 1, T): 0 for keys, NEG_INF for padding
        att = self.dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model), nn.Dropout(cfg.dropout)
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln1(x), key_bias))
        return x + self.mlp(self.ln2(x))


class Encoder(nn.Module):
    """tokens (B, L) int64 padded with PAD_ID -> hidden states (B, 1 + L, D); row 0 is the CLS token."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.key_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD_ID)
        self.register_buffer("positions", sinusoid_table(cfg.max_len + 1, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, L = tokens.shape
        cls = torch.full((B, 1), CLS_ID, dtype=tokens.dtype, device=tokens.device)
        seq = torch.cat([cls, tokens], dim=1)  # (B, 1 + L)
        scale = math.sqrt(self.cfg.d_model) if self.cfg.scale_embeddings else 1.0
        x = self.key_embedding(seq) * scale + self.positions[: L + 1]  # (B, 1+L, D)
        x = self.dropout(x)
        key_bias = (seq == PAD_ID).to(x.dtype)[:, None, None, :] * NEG_INF  # (B, 1, 1, 1+L)
        for block in self.blocks:
            x = block(x, key_bias)
        return self.ln_f(x)  # (B, 1 + L, D)
