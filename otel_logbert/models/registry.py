"""Model name -> (config dataclass, module class), and building models from config dicts."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from otel_logbert.errors import UserError
from otel_logbert.models.encoder import EncoderConfig
from otel_logbert.models.fastlogad import FastLogAD, FastLogADConfig
from otel_logbert.models.loganom import LogAnom, LogAnomConfig
from otel_logbert.models.logbert import LogBERT, LogBERTConfig

MODEL_CLASSES: dict[str, tuple[type[EncoderConfig], type[nn.Module]]] = {
    "logbert": (LogBERTConfig, LogBERT),
    "fastlogad": (FastLogADConfig, FastLogAD),
    "loganom": (LogAnomConfig, LogAnom),
}


def make_config(model: str, values: dict[str, Any]) -> EncoderConfig:
    """Build the model's config dataclass; unknown keys are an error naming them."""
    config_class, _ = MODEL_CLASSES[model]
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown {model} model parameter(s): {', '.join(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return config_class(**values)


def build_model(model: str, config: EncoderConfig) -> nn.Module:
    return MODEL_CLASSES[model][1](config)


def config_to_json(config: EncoderConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
