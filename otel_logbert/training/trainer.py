"""Training a model on normal sessions and writing the bundle.

Only normal sessions are used. ``calibration: auto`` (default) is ``quantile`` for a training set whose
validation split holds at least 1 / ``target_fpr`` sessions and ``pot`` for a smaller one
(``training.calibration.resolve``). With ``quantile`` / ``max`` a validation split held out from the
training file calibrates the detection parameters (LogBERT's g and radius, BERT-LogAnom's g)
and the threshold; ``ensemble: K`` trains K members on the same train split (seeds ``seed + 1000 i``) and
serves their mean unit-free score (``training.ensemble``). With ``pot`` ``folds`` models give every
training session an out-of-fold score, which
sets the threshold (``training.calibration``) and the top-g (the folds' median); the served model is
trained on all sessions. No anomaly label enters training, early stopping, thresholds or parameters.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from otel_logbert import bundle as bundle_io
from otel_logbert.errors import BundleError, UserError
from otel_logbert.models.encoder import EncoderConfig
from otel_logbert.models.ensemble import SeedEnsemble
from otel_logbert.models.registry import build_model, config_to_json, make_config
from otel_logbert.parsing.vocabulary import Vocabulary
from otel_logbert.progress import progress_bar
from otel_logbert.scoring.dtpm import fit_dtpm
from otel_logbert.scoring.pytorch import TorchScorer
from otel_logbert.training.calibration import fold_indices, pot_threshold, resolve, too_small
from otel_logbert.training.config import load_training_config, validate_training
from otel_logbert.training.data import batches, pad, split_normal, to_chunks
from otel_logbert.training.ensemble import member_seed, member_units

log = logging.getLogger(__name__)

# Torch intra-op threads for training. These models are small: one thread is as fast as two on this
# class of machine and does not oversubscribe the CPU when other work runs beside training.
THREADS_ENV = "OTEL_LOGBERT_TORCH_THREADS"
DEFAULT_THREADS = 1
# Relative margin added to the threshold quantile: the export parity tolerance (see export.py).
THRESHOLD_MARGIN = 1e-4
# config.json key of a seed ensemble's member count (absent: one model)
ENSEMBLE_KEY = "ensemble_members"


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


def with_margin(value: float) -> float:
    """``value`` raised by the runtime-difference margin (``THRESHOLD_MARGIN``, relative above 1)."""
    return value + THRESHOLD_MARGIN * max(1.0, abs(value))


@dataclass
class Fit:
    """One trained model and how it was trained."""

    model: TrainableModel
    epochs: int
    steps: int
    chunks: int  # training chunks (sessions cut to max_len)
    losses: list[dict[str, float]]
    seconds: float


def _fit(
    model_name: str, model_values: dict, training: dict, sessions: Sequence[Sequence[str]], vocab: Vocabulary, *,
    seed: int, device: str, explicit_epochs: bool, progress: bool, desc: str,
) -> Fit:
    """Build and train one model on ``sessions``. Unless the epochs were given explicitly, they are
    raised so that training takes at least ``training["min_steps"]`` optimizer steps."""
    model_values, training = dict(model_values), dict(training)
    max_len = int(model_values.get("max_len", EncoderConfig.max_len))
    chunks = to_chunks(sessions, vocab, max_len)
    steps_per_epoch = -(-len(chunks) // training["batch_size"])

    def build() -> tuple[TrainableModel, int]:
        torch.manual_seed(seed)
        config = make_config(model_name, {**model_values, "vocab_size": len(vocab)})
        model = cast(TrainableModel, build_model(model_name, config).to(device))
        return model, int(model.train_epochs(training["epochs"]))

    model, n_epochs = build()
    if not explicit_epochs and n_epochs * steps_per_epoch < training["min_steps"]:
        _set_epochs(model_name, model_values, training, -(-training["min_steps"] // steps_per_epoch))
        model, n_epochs = build()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    losses: list[dict[str, float]] = []
    started = time.perf_counter()
    has_center = model.center is not None
    if has_center:
        _update_center(model, chunks, training["batch_size"])
    with progress_bar(total=n_epochs * steps_per_epoch, desc=desc, unit="step", enabled=progress) as bar:
        for epoch in range(n_epochs):
            model.train()
            epoch_stats: dict[str, list[float]] = {}
            for tokens in batches(chunks, training["batch_size"], generator):
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
                _update_center(model, chunks, training["batch_size"])
    model.eval()
    return Fit(model, n_epochs, n_epochs * steps_per_epoch, len(chunks), losses, time.perf_counter() - started)


def _scores(model: TrainableModel, model_name: str, vocab: Vocabulary, sessions: Sequence[Sequence[str]]) -> np.ndarray:
    scorer = TorchScorer(cast(nn.Module, model), model_name=model_name, model_version="")
    return np.array([s.score for s in scorer.score([vocab.encode(s) for s in sessions])])


def _calibrate(model: TrainableModel, sessions: Sequence[Sequence[str]], vocab: Vocabulary) -> dict[str, float]:
    with torch.no_grad():
        return model.calibrate(pad(to_chunks(sessions, vocab, model.cfg.max_len)))


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
    """Train ``model_name`` on normal ``sessions`` (lists of keys) and choose its threshold.

    ``calibration: pot``: ``folds`` models, each trained on the other folds, score every
    session out of fold; the served model is trained on all sessions; the threshold is the tail
    model's for ``target_fpr`` over the out-of-fold scores (``training.calibration``). ``quantile`` /
    ``max``: one model on a ``1 - val_fraction`` split, the threshold a quantile of the
    validation split's scores. ``auto`` (default): one of the two by the set's size.

    Returns (model, vocabulary, threshold dict, metadata dict). Deterministic on CPU for a fixed seed.
    """
    if device != "cpu" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available here")
    if len(sessions) < 2:
        raise UserError(f"need at least 2 normal sessions to train, got {len(sessions)}")
    model_values, training = load_training_config(model_name, config_path)
    for key, value in (overrides or {}).items():
        (training if key in training else model_values)[key] = value
    validate_training(training, str(config_path or f"otel_logbert/configs/{model_name}.yaml"))
    _set_epochs(model_name, model_values, training, epochs)
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, DEFAULT_THREADS)))
    vocab = Vocabulary.from_sessions(sessions)
    common = {"seed": seed, "device": device, "explicit_epochs": epochs is not None, "progress": progress}
    training["calibration"] = resolve(training["calibration"], len(sessions), float(training["val_fraction"]),
                                      float(training["target_fpr"]))
    if training["calibration"] == "pot" and training["ensemble"] > 1:
        log.warning("calibration pot serves one model: ensemble %d is not used", training["ensemble"])
        training["ensemble"] = 1
    if training["calibration"] == "pot":
        fit, threshold, split, fold_seconds = _train_pot(model_name, model_values, training, sessions, vocab, common)
    else:
        fit, threshold, split = _train_quantile(model_name, model_values, training, sessions, vocab, seed, common)
        fold_seconds = []
    metadata = {
        "model": model_name,
        "seed": seed,
        "device": device,
        "epochs": fit.epochs,
        "steps": fit.steps,
        "training": training,
        **split,
        "train_seconds": round(fit.seconds + sum(fold_seconds), 2),
        "served_model_train_seconds": round(fit.seconds, 2),
        "fold_train_seconds": [round(s, 2) for s in fold_seconds],
        "losses": fit.losses,
        "torch_version": torch.__version__,
    }
    return cast(nn.Module, fit.model), vocab, threshold, metadata


def _train_quantile(
    model_name: str, model_values: dict, training: dict, sessions: Sequence[Sequence[str]], vocab: Vocabulary,
    seed: int, common: dict,
) -> tuple[Fit, dict[str, Any], dict[str, Any]]:
    """The ``quantile`` / ``max`` rules: one model on a train split, a quantile of the validation scores."""
    train_sessions, val_sessions = split_normal(sessions, training["val_fraction"], seed)
    members = int(training["ensemble"])
    if members == 1:
        fit = _fit(model_name, model_values, training, train_sessions, vocab, desc=f"train {model_name}", **common)
        detection = _calibrate(fit.model, val_sessions, vocab)
        about = None
    else:
        fit, detection, about = _fit_ensemble(model_name, model_values, training, train_sessions, val_sessions, vocab,
                                              members, common)
    val_scores = _scores(fit.model, model_name, vocab, val_sessions)
    quantile = 1.0 if training["calibration"] == "max" else float(training["threshold_quantile"])
    value = float(np.quantile(val_scores, quantile))
    threshold = {
        # The margin covers runtime differences (PyTorch here, ONNX Runtime or Triton when serving agree
        # to PARITY_TOLERANCE): a normal session scoring exactly the quantile is never flagged by noise.
        "threshold": with_margin(value),
        "calibration": training["calibration"],
        "method": "quantile of normal validation scores, plus a margin for runtime differences",
        "quantile": quantile,
        "quantile_value": value,
        "margin": THRESHOLD_MARGIN,
        # the validation split is too small when it holds fewer than 1 / target_fpr sessions: its largest
        # scores then say nothing about a false-alarm rate that rare
        "target_fpr": float(training["target_fpr"]),
        "too_small": too_small(len(val_sessions), float(training["target_fpr"])),
        **_score_summary(val_scores),
        "detection": detection,
    }
    threshold["dtpm"] = fit_dtpm(val_scores, threshold["threshold"], tau=min(quantile, 0.999), seed=seed).to_json()
    split = {"train_sessions": len(train_sessions), "validation_sessions": len(val_sessions),
             "train_chunks": fit.chunks}
    if about is not None:
        split["ensemble"] = about
    return fit, threshold, split


def _fit_ensemble(
    model_name: str, model_values: dict, training: dict, train_sessions: Sequence[Sequence[str]],
    val_sessions: Sequence[Sequence[str]], vocab: Vocabulary, members: int, common: dict,
) -> tuple[Fit, dict[str, Any], dict[str, Any]]:
    """``members`` models on the same train split (member seeds from ``common["seed"]``), each calibrated
    and made unit-free on the validation split. Returns the ``SeedEnsemble`` as one ``Fit`` (steps and
    seconds summed, member 0's losses), the detection parameters (per member) and the metadata's
    ``ensemble`` (seeds, units, per-member training seconds and losses)."""
    seed = common["seed"]
    fits, detections, member_val = [], [], []
    for i in range(members):
        fit = _fit(model_name, model_values, training, train_sessions, vocab,
                   desc=f"train {model_name} member {i + 1}/{members}", **{**common, "seed": member_seed(seed, i)})
        detections.append(_calibrate(fit.model, val_sessions, vocab))
        member_val.append(_scores(fit.model, model_name, vocab, val_sessions))
        fits.append(fit)
    units = member_units(member_val)
    ensemble = SeedEnsemble([cast(nn.Module, f.model) for f in fits])
    ensemble.set_units(units)
    ensemble.eval()
    combined = Fit(cast(TrainableModel, ensemble), fits[0].epochs, sum(f.steps for f in fits), fits[0].chunks,
                   fits[0].losses, sum(f.seconds for f in fits))
    about = {"members": members, "seeds": [member_seed(seed, i) for i in range(members)],
             "units": [list(u) for u in units], "train_seconds": [round(f.seconds, 2) for f in fits],
             "losses": [f.losses for f in fits]}
    return combined, {"members": detections}, about


def _train_pot(
    model_name: str, model_values: dict, training: dict, sessions: Sequence[Sequence[str]], vocab: Vocabulary,
    common: dict,
) -> tuple[Fit, dict[str, Any], dict[str, Any], list[float]]:
    """The ``pot`` rule: out-of-fold scores of every session, a tail model, the served model on all."""
    k = int(training["folds"])
    folds = fold_indices(len(sessions), k, common["seed"])
    tail_quantile = float(training["tail_quantile"])
    out_of_fold = np.zeros(len(sessions))
    fold_of = np.zeros(len(sessions), dtype=int)
    fold_seconds, fold_detections = [], []
    for i, held in enumerate(folds):
        held_set = set(held)
        inside = [s for j, s in enumerate(sessions) if j not in held_set]
        outside = [sessions[j] for j in held]
        fit = _fit(model_name, model_values, training, inside, vocab, desc=f"train {model_name} fold {i + 1}/{k}",
                   **common)
        fold_detections.append(_calibrate(fit.model, outside, vocab))
        out_of_fold[held] = _scores(fit.model, model_name, vocab, outside)
        fold_of[held] = i
        fold_seconds.append(fit.seconds)
    fit = _fit(model_name, model_values, training, sessions, vocab, desc=f"train {model_name}", **common)
    detection = _calibrate(fit.model, sessions, vocab)
    # The served model has no held-out sessions: its top-g (LogBERT, BERT-LogAnom) is the folds' median,
    # each chosen on that fold's held-out sessions. LogBERT's radius stays the served model's own: a
    # hypersphere distance is in units particular to each trained model (the folds' median radius, 0.075
    # against the served model's 0.55 on HDFS seed 0, flagged 38% of normal dev sessions).
    if "g" in detection:
        g = sorted(int(d["g"]) for d in fold_detections)[(k - 1) // 2]
        cast(Any, fit.model).g.fill_(g)
        detection.update(g=g, fold_g=[int(d["g"]) for d in fold_detections])
    target = float(training["target_fpr"])
    tail = pot_threshold(out_of_fold, target, tail_quantile)
    value = tail.threshold
    threshold = {
        "threshold": with_margin(value),
        "calibration": "pot",
        "method": f"peaks over threshold: generalized Pareto tail of {k}-fold out-of-fold normal scores at "
                  "target_fpr, plus a margin for runtime differences",
        "target_fpr": target,
        "too_small": too_small(len(sessions), target),
        "folds": k,
        "tail_quantile": tail_quantile,
        "tail": tail.to_json(),
        # which fold model scored each session (``validation_scores``), for re-calibration and reports
        "out_of_fold_fold": fold_of.tolist(),
        "margin": THRESHOLD_MARGIN,
        # the quantile the count-vector and semantic baselines use (they keep the quantile rule)
        "quantile": float(training["threshold_quantile"]),
        **_score_summary(out_of_fold),
        "detection": detection,
    }
    threshold["dtpm"] = fit_dtpm(out_of_fold, threshold["threshold"], tau=1.0 - target, seed=common["seed"]).to_json()
    split = {"train_sessions": len(sessions), "validation_sessions": 0, "out_of_fold_sessions": len(sessions),
             "train_chunks": fit.chunks}
    return fit, threshold, split, fold_seconds


def _score_summary(scores: np.ndarray) -> dict[str, Any]:
    """The normal scores the threshold was chosen from (``validation_scores``: out-of-fold for pot)."""
    return {
        "validation_sessions": len(scores),
        "validation_score_mean": float(scores.mean()),
        "validation_score_std": float(scores.std()),
        "validation_scores": [round(float(s), 6) for s in scores],
    }


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
    config = {"model": model_name, **config_to_json(cast(TrainableModel, model).cfg)}
    if isinstance(model, SeedEnsemble):
        config[ENSEMBLE_KEY] = len(model.members)
    bundle = bundle_io.Bundle(
        path=out,
        model=model_name,
        model_version=f"{model_name}-{digest}",
        config=config,
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
    values = {k: v for k, v in bundle.config.items() if k not in ("model", ENSEMBLE_KEY)}
    members = bundle.config.get(ENSEMBLE_KEY)
    if members is None:
        model = build_model(bundle.model, make_config(bundle.model, values))
    elif isinstance(members, int) and not isinstance(members, bool) and members >= 1:
        model = SeedEnsemble([build_model(bundle.model, make_config(bundle.model, values)) for _ in range(members)])
    else:
        raise BundleError(f"{bundle.path / bundle_io.CONFIG_FILE}: {ENSEMBLE_KEY} {members!r}: "
                          "expected an integer >= 1")
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
