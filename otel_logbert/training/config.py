"""Versioned training configs: ``otel_logbert/configs/<model>.yaml`` plus command-line overrides."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from otel_logbert.errors import UserError

TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": None,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "val_fraction": 0.2,
    # the quantile/max rules' quantile of the validation split's scores (also the baselines' quantile)
    "threshold_quantile": 1.0,
    # how the threshold is chosen (see training.calibration): auto | quantile | max | pot. quantile: the
    # threshold_quantile quantile of one validation split's scores; pot: a tail model of k-fold out-of-fold
    # scores; auto (default): quantile, or pot when the validation split would hold fewer than 1 / target_fpr
    # sessions (docs/calibration.md: on HDFS the fold models' score units do not carry over to the served
    # model, so pot is not the rule for large sets)
    "calibration": "auto",
    # the false-alarm rate the threshold is meant for: pot sets the threshold for it; every rule warns when
    # the normal sessions it calibrates on are fewer than 1 / target_fpr (0.2% needs >= 500)
    "target_fpr": 0.002,
    # pot: out-of-fold models (each trained on (folds-1)/folds of the sessions) that score every session
    "folds": 3,
    # pot: the tail model is fitted on the scores above this quantile
    "tail_quantile": 0.98,
    # the configured epochs are raised so that every model trains at least this many optimizer steps
    # (a set of 50 sessions is one batch: one step per epoch); an explicit --epochs is taken as given
    "min_steps": 800,
    # quantile / max: serve a seed ensemble of this many members, all trained on the train split with
    # seeds seed, seed + 1000, ... and made unit-free on the validation split (training.ensemble); 1 = one
    # model. pot always serves one model (its threshold comes from single fold models).
    "ensemble": 1,
}


def validate_training(training: dict[str, Any], source: str) -> None:
    """Raise ``UserError`` naming ``source`` and the key for a training option out of range."""
    from otel_logbert.training.calibration import CALIBRATIONS

    def bad(key: str, expected: str) -> UserError:
        return UserError(f"{source}: training option {key}={training[key]!r}: expected {expected}")

    if training["calibration"] not in CALIBRATIONS:
        raise bad("calibration", " | ".join(CALIBRATIONS))
    if not isinstance(training["target_fpr"], (int, float)) or not 0.0 < training["target_fpr"] < 0.5:
        raise bad("target_fpr", "a number in (0, 0.5)")
    if not isinstance(training["folds"], int) or training["folds"] < 2:
        raise bad("folds", "an integer >= 2")
    if not isinstance(training["tail_quantile"], (int, float)) or not 0.5 <= training["tail_quantile"] < 1.0:
        raise bad("tail_quantile", "a number in [0.5, 1)")
    if not isinstance(training["min_steps"], int) or training["min_steps"] < 0:
        raise bad("min_steps", "an integer >= 0")
    if not isinstance(training["ensemble"], int) or isinstance(training["ensemble"], bool) or training["ensemble"] < 1:
        raise bad("ensemble", "an integer >= 1")
    if not isinstance(training["threshold_quantile"], (int, float)) or not 0.0 < training["threshold_quantile"] <= 1:
        raise bad("threshold_quantile", "a number in (0, 1]")


def load_training_config(model: str, path: str | Path | None = None) -> tuple[dict, dict]:
    """(model section, training section) from the packaged defaults or from ``path``."""
    if path is None:
        text = resources.files("otel_logbert.configs").joinpath(f"{model}.yaml").read_text()
        source = f"otel_logbert/configs/{model}.yaml"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UserError(f"{path}: cannot read config ({exc.strerror})") from None
        source = str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model", {}), dict):
        raise UserError(f"{source}: expected mappings 'model:' and 'training:'")
    training = dict(TRAINING_DEFAULTS)
    unknown = sorted(set(data.get("training") or {}) - set(TRAINING_DEFAULTS))
    if unknown:
        raise UserError(f"{source}: unknown training option(s): {', '.join(unknown)}")
    training.update(data.get("training") or {})
    return dict(data.get("model") or {}), training
