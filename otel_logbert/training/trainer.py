"""Training a model on normal sessions and writing the bundle.

Only normal sessions are used: a validation split held out from the training file calibrates the
detection parameters (LogBERT's g and radius, BERT-LogAnom's g) and the threshold (a quantile of the
validation scores). No anomaly label enters training, early stopping, thresholds or parameters.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from otel_logbert import bundle as bundle_io
from otel_logbert.errors import BundleError, UserError
from otel_logbert.models.encoder import EncoderConfig
from otel_logbert.models.registry import build_model, config_to_json, make_config
from otel_logbert.parsing.vocabulary import Vocabulary
from otel_logbert.progress import progress_bar
from otel_logbert.scoring.dtpm import fit_dtpm
from otel_logbert.scoring.pytorch import TorchScorer
from otel_logbert.training.config import load_training_config
from otel_logbert.training.data import batches, pad, split_normal, to_chunks

log = logging.getLogger(__name__)

# Torch intra-op threads for training. These models are small: one thread is as fast as two on this
# class of machine and does not oversubscribe the CPU when other work runs beside training.
THREADS_ENV = "OTEL_LOGBERT_TORCH_THREADS"
DEFAULT_THREADS = 1
# Relative margin added to the threshold quantile: the export parity tolerance (see export.py).
THRESHOLD_MARGIN = 1e-4


def _set_epochs(model_name: str, model_cfg: dict, training: dict, epochs: int | None) -> None:
    """Apply ``--epochs``: LogBERT/BERT-LogAnom train that many epochs; FastLogAD rescales its phases."""
    if epochs is None:
        return
    if epochs < 1:
        raise UserError("--epochs must be >= 1")
    if model_name != "fastlogad":
        training["epochs"] = epochs
        return
    phases = ["gen_epochs", "rtd_epochs", "sep_epochs"]
    if model_cfg.get("generator", "mask") == "random":
        model_cfg["gen_epochs"] = 0
    current = [int(model_cfg.get(p, 0)) for p in phases]
    total = sum(current) or 1
    scaled = [max(1 if c else 0, round(c * epochs / total)) for c in current]
    model_cfg.update(dict(zip(phases, scaled, strict=True)))


class TrainableModel(Protocol):
    """What the trainer needs of a model, beyond ``nn.Module``; LogBERT, FastLogAD and BERT-LogAnom
    provide all of it (``models.registry`` builds them)."""

    cfg: EncoderConfig
    # The hypersphere center, refitted by the trainer as the mean ``session_embedding`` of the training
    # chunks before training and after each epoch; None when the model's center is fixed.
    center: torch.Tensor | None

    def train_epochs(self, configured: int) -> int:
        """How many epochs to train, given the training config's ``epochs``."""
        ...

    def loss(self, tokens: torch.Tensor, generator: torch.Generator, epoch: int) -> tuple[torch.Tensor, dict]:
        """(loss to minimise, named float statistics for the log) for a batch (B, L) of normal chunks."""
        ...

    def session_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (B, D), the embedding the center is the mean of."""
        ...

    def calibrate(self, tokens: torch.Tensor) -> dict[str, float]:
        """Set the detection parameters from normal validation chunks (N, L); returns them (the
        bundle's ``threshold.json`` ``detection``)."""
        ...


@torch.no_grad()
def _update_center(model: TrainableModel, chunks: Sequence[Sequence[int]], batch_size: int) -> None:
    assert model.center is not None
    model.eval()
    total = None
    for tokens in batches(chunks, batch_size * 4):
        emb = model.session_embedding(tokens).sum(0)
        total = emb if total is None else total + emb
    model.center.copy_(total / len(chunks))


def train_model(
    model_name: str,
    sessions: Sequence[Sequence[str]],
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    config_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, Vocabulary, dict[str, Any], dict[str, Any]]:
    """Train ``model_name`` on normal ``sessions`` (lists of keys).

    Returns (model, vocabulary, threshold dict, metadata dict). Deterministic on CPU for a fixed seed.
    """
    if device != "cpu" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available here")
    if len(sessions) < 2:
        raise UserError(f"need at least 2 normal sessions to train, got {len(sessions)}")
    model_values, training = load_training_config(model_name, config_path)
    for key, value in (overrides or {}).items():
        (training if key in training else model_values)[key] = value
    _set_epochs(model_name, model_values, training, epochs)
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, DEFAULT_THREADS)))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    train_sessions, val_sessions = split_normal(sessions, training["val_fraction"], seed)
    vocab = Vocabulary.from_sessions(sessions)
    config = make_config(model_name, {**model_values, "vocab_size": len(vocab)})
    model = cast(TrainableModel, build_model(model_name, config).to(device))
    train_chunks = to_chunks(train_sessions, vocab, config.max_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    n_epochs = int(model.train_epochs(training["epochs"]))
    steps_per_epoch = -(-len(train_chunks) // training["batch_size"])
    losses: list[dict[str, float]] = []
    started = time.perf_counter()
    has_center = model.center is not None
    if has_center:
        _update_center(model, train_chunks, training["batch_size"])
    with progress_bar(total=n_epochs * steps_per_epoch, desc=f"train {model_name}", unit="step",
                      enabled=progress) as bar:
        for epoch in range(n_epochs):
            model.train()
            epoch_stats: dict[str, list[float]] = {}
            for tokens in batches(train_chunks, training["batch_size"], generator):
                loss, stats = model.loss(tokens.to(device), generator, epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                for k, v in {"loss": loss.item(), **stats}.items():
                    epoch_stats.setdefault(k, []).append(v)
                bar.update(1)
            summary = {k: float(np.mean(v)) for k, v in epoch_stats.items()}
            losses.append({"epoch": epoch + 1, **summary})
            bar.set_postfix({k: f"{v:.3f}" for k, v in summary.items()})
            if has_center:
                _update_center(model, train_chunks, training["batch_size"])
    train_seconds = time.perf_counter() - started

    model.eval()
    val_chunks = to_chunks(val_sessions, vocab, config.max_len)
    with torch.no_grad():
        detection = model.calibrate(pad(val_chunks))
    scorer = TorchScorer(model, model_name=model_name, model_version="")
    val_scores = np.array([s.score for s in scorer.score([vocab.encode(s) for s in val_sessions])])
    quantile = float(training["threshold_quantile"])
    value = float(np.quantile(val_scores, quantile))
    threshold = {
        # The margin covers runtime differences (PyTorch here, ONNX Runtime or Triton when serving agree
        # to PARITY_TOLERANCE): a normal session scoring exactly the quantile is never flagged by noise.
        "threshold": value + THRESHOLD_MARGIN * max(1.0, abs(value)),
        "method": "quantile of normal validation scores, plus a margin for runtime differences",
        "quantile": quantile,
        "quantile_value": value,
        "margin": THRESHOLD_MARGIN,
        "validation_sessions": len(val_sessions),
        "validation_score_mean": float(val_scores.mean()),
        "validation_score_std": float(val_scores.std()),
        "validation_scores": [round(float(s), 6) for s in val_scores],
        "detection": detection,
    }
    dtpm = fit_dtpm(val_scores, threshold["threshold"], tau=min(quantile, 0.999), seed=seed)
    threshold["dtpm"] = dtpm.to_json()
    metadata = {
        "model": model_name,
        "seed": seed,
        "device": device,
        "epochs": n_epochs,
        "training": training,
        "train_sessions": len(train_sessions),
        "validation_sessions": len(val_sessions),
        "train_chunks": len(train_chunks),
        "train_seconds": round(train_seconds, 2),
        "losses": losses,
        "torch_version": torch.__version__,
    }
    return model, vocab, threshold, metadata


def save_trained(
    out_dir: str | Path,
    model_name: str,
    model: nn.Module,
    vocab: Vocabulary,
    threshold: dict[str, Any],
    metadata: dict[str, Any],
    drain_state: dict[str, Any] | None = None,
) -> bundle_io.Bundle:
    """Write weights (safetensors) and the JSON parts of a bundle; returns the loaded ``Bundle``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / bundle_io.WEIGHTS_FILE))
    digest = hashlib.sha256((out / bundle_io.WEIGHTS_FILE).read_bytes()).hexdigest()[:12]
    center = cast(TrainableModel, model).center
    bundle = bundle_io.Bundle(
        path=out,
        model=model_name,
        model_version=f"{model_name}-{digest}",
        config={"model": model_name, **config_to_json(model.cfg)},
        vocab=vocab,
        threshold=threshold,
        metadata=metadata,
        center=[float(x) for x in center] if center is not None else None,
        drain_state=drain_state,
    )
    bundle_io.save_bundle(bundle)
    return bundle


def load_model(bundle: bundle_io.Bundle) -> nn.Module:
    """Rebuild the PyTorch model of a bundle from config.json + weights.safetensors (no pickle)."""
    values = {k: v for k, v in bundle.config.items() if k != "model"}
    model = build_model(bundle.model, make_config(bundle.model, values))
    weights = bundle_io.model_file(bundle, bundle_io.WEIGHTS_FILE)  # inside the bundle, regular, bounded
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"{bundle.weights_path}: cannot read weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(f"{bundle.weights_path}: weights do not match the model config "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
