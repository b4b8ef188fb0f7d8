"""``LogParser``: log message -> log key (a Drain3 cluster id), with a fast path and JSON persistence.

The key of a message is the id of the Drain3 cluster it falls into, as a string. A cluster keeps its id
when its template later generalises (gains a ``<*>``), so keys are stable across training and serving.

Two ways in:

- ``parse(text)`` mines: an unseen message creates or generalises a cluster (training, and serving
  by default). Messages whose masked token shape was seen before skip mining entirely.
- ``match(text)`` never changes the parser: known shapes come from a cache, other messages go through
  drain3's exact-match search, and a message no template covers gives ``None``.

Both mask each token through a per-token cache (see ``masking.TokenMaskingInstruction``), which is
what makes the serve path several times faster than ``TemplateMiner.add_log_message``.

Bad input never raises: lone surrogates become U+FFFD, text longer than ``max_line_chars`` is cut
for parsing (``truncated=True``), and an empty or blank body gets the fixed key ``EMPTY_KEY``. The
caller's string is never changed. A ``LogParser`` is not thread-safe; callers serialise access.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from drain3.drain import Drain, LogCluster, Node
from drain3.template_miner import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig

from otel_logbert.parsing.masker import MASK_PREFIX, MASK_SUFFIX, Masker, MaskSpec
from otel_logbert.parsing.masking import get_preset, masking_for

EMPTY_KEY = "0"  # Drain3 cluster ids start at 1; numeric so learn files stay valid train input
EMPTY_TEMPLATE = "<empty>"
DEFAULT_MAX_LINE_CHARS = 8192
STATE_FORMAT = "otel-logbert/drain-state"
STATE_VERSION = 1
# Cleared when it reaches this size; it only holds what can be recomputed.
SHAPE_CACHE_SIZE = 100_000


class ParseResult(NamedTuple):
    """The outcome of parsing one message.

    ``key``: the cluster id as a string (``EMPTY_KEY`` for an empty body); ``template``: the cluster's
    current template; ``truncated``: the text was cut to ``max_line_chars`` before parsing; ``new``:
    this call created the cluster.
    """

    key: str
    template: str
    truncated: bool
    new: bool


class LogParser:
    """Drain3 with masking presets, a serve-time fast path and plain-JSON state.

    ``masking`` names a preset (``masking.preset_names()``); ``custom_masking`` adds rules
    ``[{"regex": ..., "mask_with": ...}]`` applied first. ``sim_th`` and ``depth`` default to the
    preset's. ``max_clusters`` > 0 bounds the clusters kept: past it, drain3 evicts the least recently
    matched cluster (as the Collector contrib drain processor does), so high-cardinality bodies cannot
    grow the parser without bound; a message of an evicted cluster later gets a new key. Raises
    ``ValueError`` for an unknown preset or a bad custom rule.

    ``revision`` counts the changes that decide keys (a cluster created, a template generalised) since
    the parser was built or loaded; ``parsing.persistence`` saves the state when it moved.
    """

    def __init__(
        self,
        masking: str = "default",
        custom_masking: list[dict] | None = None,
        max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
        sim_th: float | None = None,
        depth: int | None = None,
        max_children: int = 100,
        max_clusters: int = 0,
    ) -> None:
        if max_line_chars < 1:
            raise ValueError("max_line_chars must be at least 1")
        if max_clusters < 0:
            raise ValueError("max_clusters must be >= 0 (0: unbounded)")
        self.max_clusters = max_clusters
        preset = get_preset(masking)
        self.masking = masking
        self.custom_masking = [dict(rule) for rule in custom_masking or []]
        self.max_line_chars = max_line_chars
        self.sim_th = preset.sim_th if sim_th is None else float(sim_th)
        self.depth = preset.depth if depth is None else int(depth)
        self.max_children = max_children
        self.extra_delimiters = preset.extra_delimiters
        self.rules = masking_for(masking, self.custom_masking)

        self.miner = TemplateMiner(config=self.miner_config())
        self.drain: Drain = self.miner.drain
        self.masker = Masker(self.mask_spec())
        self._shape_cache: dict[str, int] = {}  # masked text -> cluster id
        self._keys: dict[int, str] = {}  # cluster id -> key: one str per key, however many records
        self.revision = 0

    def miner_config(self) -> TemplateMinerConfig:
        """A drain3 config equivalent to this parser (no ini file, no persistence, no profiling)."""
        config = TemplateMinerConfig()
        config.drain_sim_th = self.sim_th
        config.drain_depth = self.depth
        config.drain_max_children = self.max_children
        config.drain_max_clusters = self.max_clusters or None
        config.drain_extra_delimiters = list(self.extra_delimiters)
        config.masking_instructions = list(self.rules)
        config.mask_prefix, config.mask_suffix = MASK_PREFIX, MASK_SUFFIX
        return config

    # --- parsing ------------------------------------------------------------------------------------

    def mask_spec(self) -> MaskSpec:
        """What masking depends on, as picklable data (for ``parsing.worker``)."""
        return MaskSpec.of(self.rules, self.max_line_chars, self.extra_delimiters)

    def parse(self, text: str | bytes) -> ParseResult:
        """Key of ``text``, learning from it: may create a cluster or generalise a template. Never raises."""
        masked, truncated = self.masker.masked(text)
        return self.parse_masked(masked, truncated)

    def parse_masked(self, masked: str, truncated: bool = False) -> ParseResult:
        """``parse`` for a message already masked (``Masker.masked`` with this parser's
        ``mask_spec``, possibly in another process): the cheap half that reads and changes Drain."""
        if not masked:
            return ParseResult(EMPTY_KEY, EMPTY_TEMPLATE, truncated, False)
        cluster = self._cached_cluster(masked)
        if cluster is not None:
            cluster.size += 1
            return ParseResult(self._key(cluster.cluster_id), cluster.get_template(), truncated, False)
        cluster, change = self.drain.add_log_message(masked)
        if change != "none":
            self.revision += 1
        self._remember_shape(masked, cluster)
        return ParseResult(
            self._key(cluster.cluster_id), cluster.get_template(), truncated, change == "cluster_created"
        )

    def match(self, text: str | bytes) -> ParseResult | None:
        """Key of ``text`` from the known templates only, or ``None``; never changes the parser."""
        masked, truncated = self.masker.masked(text)
        if not masked:
            return ParseResult(EMPTY_KEY, EMPTY_TEMPLATE, truncated, False)
        cluster = self._cached_cluster(masked)
        if cluster is None:
            cluster = self.drain.match(masked, full_search_strategy="fallback")
            if cluster is None:
                return None
            self._remember_shape(masked, cluster)
        return ParseResult(self._key(cluster.cluster_id), cluster.get_template(), truncated, False)

    def mask(self, text: str) -> str:
        """``text`` masked by this parser's rules, tokens joined by single spaces (for inspection)."""
        return self.masker.masked(text)[0]

    @property
    def cluster_count(self) -> int:
        return len(self.drain.id_to_cluster)

    def templates(self) -> dict[str, str]:
        """Every key with its current template."""
        return {str(c.cluster_id): c.get_template() for c in self.drain.clusters}

    def _key(self, cluster_id: int) -> str:
        """The key of a cluster id: one shared str per key, however many records carry it."""
        key = self._keys.get(cluster_id)
        if key is None:
            if len(self._keys) >= SHAPE_CACHE_SIZE:
                self._keys.clear()
            key = self._keys[cluster_id] = str(cluster_id)
        return key

    def _cached_cluster(self, masked: str) -> LogCluster | None:
        cluster_id = self._shape_cache.get(masked)
        if cluster_id is None:
            return None
        clusters = self.drain.id_to_cluster
        # drain3's LRU cache (max_clusters): indexing marks the cluster used, ``get`` would not; an
        # evicted cluster gives None.
        return clusters.get(cluster_id) if isinstance(clusters, dict) else clusters[cluster_id]

    def _remember_shape(self, masked: str, cluster: LogCluster) -> None:
        if len(self._shape_cache) >= SHAPE_CACHE_SIZE:
            self._shape_cache.clear()
        self._shape_cache[masked] = cluster.cluster_id

    # --- persistence --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The whole parser state as plain JSON-serialisable data (``from_json`` restores it)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "masking": self.masking,
            "custom_masking": self.custom_masking,
            "max_line_chars": self.max_line_chars,
            "drain": {"sim_th": self.sim_th, "depth": self.depth, "max_children": self.max_children},
            "next_cluster_id": self.drain.clusters_counter + 1,
            "clusters": [
                {"id": c.cluster_id, "template_tokens": list(c.log_template_tokens), "size": c.size}
                for c in sorted(self.drain.clusters, key=lambda c: c.cluster_id)
            ],
            "tree": _node_to_json(self.drain.root_node),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], max_clusters: int = 0) -> LogParser:
        """Rebuild a parser from ``to_json`` output (``max_clusters``: see the class; a serving bound,
        not part of the state). Raises ``ValueError`` on a foreign or broken state.

        The prefix tree is restored exactly when ``tree`` is present (so keys match the saved parser's
        on any input); without it, it is rebuilt from the clusters in id order.
        """
        if data.get("format") != STATE_FORMAT or data.get("version") != STATE_VERSION:
            raise ValueError(f"not an {STATE_FORMAT} v{STATE_VERSION} state")
        try:
            drain_params = data["drain"]
            parser = cls(
                masking=data["masking"],
                custom_masking=data.get("custom_masking") or None,
                max_line_chars=int(data["max_line_chars"]),
                sim_th=float(drain_params["sim_th"]),
                depth=int(drain_params["depth"]),
                max_children=int(drain_params["max_children"]),
                max_clusters=max_clusters,
            )
            drain = parser.drain
            for entry in data["clusters"]:
                cluster = LogCluster([str(t) for t in entry["template_tokens"]], int(entry["id"]))
                cluster.size = int(entry["size"])
                drain.id_to_cluster[cluster.cluster_id] = cluster
            last_id = max(drain.id_to_cluster, default=0)
            drain.clusters_counter = max(int(data["next_cluster_id"]) - 1, last_id)
            if data.get("tree") is not None:
                drain.root_node = _node_from_json(data["tree"])
            else:
                for cluster_id in sorted(drain.id_to_cluster):
                    drain.add_seq_to_prefix_tree(drain.root_node, drain.id_to_cluster[cluster_id])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"broken parser state: {exc!r}") from None
        return parser

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state as JSON atomically (``persistence.FilePersistence``): a reader sees the old
        file or the new one, never half. A running sidecar saves through ``ParserPersister`` instead."""
        from otel_logbert.parsing.persistence.file import FilePersistence

        FilePersistence(path).save_state(json.dumps(self.to_json()).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str], max_clusters: int = 0) -> LogParser:
        """Read a state written by ``save``. Raises ``OSError`` or ``ValueError`` (also for a file that
        leaves its directory through a symlink, is not a regular file or is over ``MAX_JSON_BYTES``)."""
        from otel_logbert.safe_files import read_json

        target = Path(path)
        return cls.from_json(read_json(target.parent, target.name, error=ValueError), max_clusters=max_clusters)


def _node_to_json(node: Node) -> dict[str, Any]:
    return {
        "clusters": list(node.cluster_ids),
        "children": {token: _node_to_json(child) for token, child in node.key_to_child_node.items()},
    }


def _node_from_json(data: dict[str, Any]) -> Node:
    node = Node()
    node.cluster_ids = [int(i) for i in data["clusters"]]
    node.key_to_child_node = {str(t): _node_from_json(child) for t, child in data["children"].items()}
    return node


def plain_miner(
    masking: str = "default", custom_masking: list[dict] | None = None, **params: Any
) -> TemplateMiner:
    """A stock drain3 ``TemplateMiner`` configured like ``LogParser(masking, custom_masking, **params)``.

    The baseline for benchmarks: same masking, same Drain parameters, drain3's own code path.
    """
    return TemplateMiner(config=LogParser(masking, custom_masking, **params).miner_config())


__all__ = ["EMPTY_KEY", "EMPTY_TEMPLATE", "LogParser", "ParseResult", "plain_miner"]
