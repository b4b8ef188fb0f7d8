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
    "threshold_quantile": 1.0,
}


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
