"""Model bundle: one directory holding everything scoring needs, as JSON + ONNX (+ safetensors).

Layout (file names are constants below):

    bundle.json        format name + version, model name, model version, package version, created
    config.json        the model's hyper-parameters (its dataclass config)
    vocab.json         key -> token id (see ``parsing.vocabulary``)
    threshold.json     static threshold, how it was chosen, and model-specific detection params
    center.json        hypersphere center, where the model has one
    metadata.json      training metadata: data, split sizes, epochs, seconds, losses, seed
    weights.safetensors  weights for re-training and export (torch only)
    drain3.json        Drain3 parser state, when trained on raw log lines
    semantic.json      training template embeddings, min_cosine and the centroid baseline (``train --semantic``;
                       see ``parsing.semantic``)
    baselines.json     the count-vector baseline fitted on the normal training split (``training.baselines``)
    metrics.json       written by ``eval``
    model.onnx         written by ``export``; input ``tokens`` int64 [batch, seq]; outputs
                       ``score`` float32 [batch] and ``evidence`` float32 [batch, seq] (1 = unexpected)

Loading reads JSON and ONNX/safetensors only; nothing is ever unpickled. A bundle whose format version
differs from ``FORMAT_VERSION`` is refused with a ``BundleError``. A bundle may come from an untrusted
place: every file is read through ``safe_files`` (it must resolve inside the bundle directory, be a
regular file, JSON parts at most ``MAX_JSON_BYTES``, ``model.onnx`` at most ``MAX_MODEL_BYTES``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_logbert import __version__
from otel_logbert.errors import BundleError
from otel_logbert.parsing.vocabulary import Vocabulary
from otel_logbert.safe_files import MAX_MODEL_BYTES, checked_file, read_json

FORMAT_NAME = "otel-logbert-bundle"
FORMAT_VERSION = 1
MODELS = ("logbert", "fastlogad", "loganom")

MANIFEST_FILE = "bundle.json"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
THRESHOLD_FILE = "threshold.json"
CENTER_FILE = "center.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.safetensors"
DRAIN_FILE = "drain3.json"
METRICS_FILE = "metrics.json"
ONNX_FILE = "model.onnx"


@dataclass
class Bundle:
    """A loaded bundle. ``threshold`` holds the static threshold and the detection parameters."""

    path: Path
    model: str
    model_version: str
    config: dict[str, Any]
    vocab: Vocabulary
    threshold: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    center: list[float] | None = None
    drain_state: dict[str, Any] | None = None

    @property
    def static_threshold(self) -> float:
        return float(self.threshold["threshold"])

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def max_len(self) -> int:
        return int(self.config["max_len"])


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _read_json(path: Path) -> Any:
    """The JSON in bundle file ``path`` (checked by ``safe_files.read_json`` against its directory)."""
    try:
        return read_json(path.parent, path.name)
    except FileNotFoundError:
        raise BundleError(f"{path}: missing bundle file") from None


def _optional_json(path: Path) -> Any:
    """Like ``_read_json``, None when the file does not exist."""
    try:
        return read_json(path.parent, path.name)
    except FileNotFoundError:
        return None


def save_bundle(bundle: Bundle) -> None:
    """Write every JSON part of ``bundle`` into ``bundle.path`` (weights and ONNX are written by
    their owners: ``training`` and ``export``)."""
    out = bundle.path
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MANIFEST_FILE, {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": bundle.model,
        "model_version": bundle.model_version,
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    write_json(out / CONFIG_FILE, bundle.config)
    write_json(out / VOCAB_FILE, bundle.vocab.to_json())
    write_json(out / THRESHOLD_FILE, bundle.threshold)
    write_json(out / METADATA_FILE, bundle.metadata)
    if bundle.center is not None:
        write_json(out / CENTER_FILE, bundle.center)
    if bundle.drain_state is not None:
        write_json(out / DRAIN_FILE, bundle.drain_state)


def load_bundle(path: str | Path, *, require_onnx: bool = False) -> Bundle:
    """Load and validate a bundle directory. Raises ``BundleError`` naming the offending file."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: bundle directory not found")
    manifest = _read_json(root / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{root / MANIFEST_FILE}: not an otel-logbert bundle")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{root / MANIFEST_FILE}: bundle format version {version} is not supported by otel-logbert "
            f"{__version__} (expects {FORMAT_VERSION}); retrain or export it with a matching version"
        )
    model = manifest.get("model")
    if model not in MODELS:
        raise BundleError(f"{root / MANIFEST_FILE}: unknown model {model!r} (expected one of {MODELS})")
    try:
        vocab = Vocabulary.from_json(_read_json(root / VOCAB_FILE))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root / VOCAB_FILE}: invalid vocabulary ({exc})") from None
    threshold = _read_json(root / THRESHOLD_FILE)
    if not isinstance(threshold, dict) or not isinstance(threshold.get("threshold"), (int, float)):
        raise BundleError(f"{root / THRESHOLD_FILE}: missing numeric 'threshold'")
    config = _read_json(root / CONFIG_FILE)
    if not isinstance(config, dict) or "max_len" not in config:
        raise BundleError(f"{root / CONFIG_FILE}: missing 'max_len'")
    bundle = Bundle(
        path=root,
        model=model,
        model_version=str(manifest.get("model_version", "unknown")),
        config=config,
        vocab=vocab,
        threshold=threshold,
        metadata=_optional_json(root / METADATA_FILE) or {},
        center=_optional_json(root / CENTER_FILE),
        drain_state=_optional_json(root / DRAIN_FILE),
    )
    if require_onnx or os.path.lexists(bundle.onnx_path):
        model_file(bundle, ONNX_FILE)
    return bundle


def model_file(bundle: Bundle, name: str) -> Path:
    """The real path of the bundle's binary part ``name`` (``model.onnx``, ``weights.safetensors``),
    checked like every bundle file (inside the bundle, regular, at most ``MAX_MODEL_BYTES``). Raises
    ``BundleError`` when missing or refused."""
    try:
        return checked_file(bundle.path, name, limit=MAX_MODEL_BYTES)
    except FileNotFoundError:
        hint = f"; run `otel-logbert export --bundle {bundle.path}`" if name == ONNX_FILE else ""
        raise BundleError(f"{bundle.path / name}: missing{hint}") from None
