"""Masking presets: named lists of drain3 ``MaskingInstruction``s plus the Drain parameters that suit them.

Masking replaces the variable parts of a log message (ids, addresses, numbers...) with ``<NAME>``
placeholders before Drain clusters it, so that messages differing only in variables share a template.
A preset is chosen by name (``masking_for("hdfs")``); users add their own rules in YAML as
``[{regex: "...", mask_with: "ID"}]``, applied before the preset's rules.

Instructions are applied in order, each to the output of the previous one. Most rules are
``TokenMaskingInstruction``s: their matches never contain whitespace and their look-arounds treat a
space like the start or end of the text, so applying them to each whitespace-separated token gives
the same result as applying them to the whole line. ``LogParser`` relies on that to cache masking per
token; rules that may span tokens (``Mon Jul 24 02:38:22 2005``) stay plain ``MaskingInstruction``s and
must come first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from drain3.masking import MaskingInstruction


class TokenMaskingInstruction(MaskingInstruction):
    """A ``MaskingInstruction`` whose matches stay inside one whitespace-separated token."""


class GatedMaskingInstruction(MaskingInstruction):
    """A line-level rule with a cheap necessary condition checked first: every match contains one of
    the substrings ``needs`` and, when given, a match of ``needs_pattern`` (a simpler regex). Most
    lines fail it and skip the costly regex; the result is the same as without the gate."""

    def __init__(self, pattern: str, mask_with: str, needs: tuple[str, ...], needs_pattern: str | None = None):
        super().__init__(pattern, mask_with)
        self.needs = needs
        self.needs_pattern = re.compile(needs_pattern) if needs_pattern else None

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        for needed in self.needs:
            if needed in content:
                break
        else:
            return content
        if self.needs_pattern is not None and self.needs_pattern.search(content) is None:
            return content
        return super().mask(content, mask_prefix, mask_suffix)


# Boundaries: a variable starts where the previous character is not part of a word, and ends where
# the next one is not. Whitespace, start and end of text all count as boundaries.
_B = r"(?<![A-Za-z0-9_])"  # left boundary
_E = r"(?![A-Za-z0-9_])"  # right boundary
_HEX = "[0-9a-fA-F]"


def _t(pattern: str, mask_with: str) -> TokenMaskingInstruction:
    return TokenMaskingInstruction(pattern, mask_with)


# --- rules shared by the presets (token-local unless noted) -----------------------------------------

# Line-level: timestamps spelled with spaces, "Sun Jul 24 02:38:22 2005", "2017-05-16 00:00:00.008".
DATETIME_WITH_SPACES = GatedMaskingInstruction(
    r"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) )?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" +\d{1,2} \d{2}:\d{2}:\d{2}(?: \d{4})?\b"
    r"|\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b",
    "TIME",
    needs=(":",),
    needs_pattern=r"\d:\d\d:\d\d",  # both alternatives hold hh:mm:ss
)
# Line-level: data sizes, "9.2 KB", "2034 bytes (1.98 KB)", "67108864 bytes".
DATA_SIZE = GatedMaskingInstruction(
    r"(?<![\w.])\d+(?:\.\d+)? ?(?:[KMGTP]i?B|B|bytes)\b(?: \(\d+(?:\.\d+)? ?[KMGTP]i?B\))?", "SIZE",
    needs=("B", "bytes"),
)
ISO_TIMESTAMP = _t(
    rf"{_B}\d{{4}}-\d{{2}}-\d{{2}}[T_-]\d{{2}}[:.]\d{{2}}[:.]\d{{2}}(?:[.,]\d+)?(?:Z|[+-]\d{{2}}:?\d{{2}})?{_E}",
    "TIME",
)
# 02:38:22, 02:38:22.123, and minutes:seconds 00:39.
CLOCK = _t(rf"{_B}\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?:[.,]\d+)?{_E}", "TIME")
URL = _t(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+", "URL")
# An endpoint: IPv4 or lower-case dotted host name, with a port.
_IP = r"\d{1,3}(?:\.\d{1,3}){3}"
ENDPOINT = _t(rf"(?<![\w.])(?:{_IP}|[a-z0-9-]+(?:\.[a-z0-9-]+)+):\d{{1,5}}(?![\w.])", "ADDR")
# An IPv4 address, or a comma-separated list of them (X-Forwarded-For).
IPV4 = _t(rf"(?<![\w.]){_IP}(?:,{_IP})*(?![\w.])", "IP")
IPV6 = _t(rf"(?<![\w:.])(?:{_HEX}{{0,4}}:){{3,7}}{_HEX}{{1,4}}(?![\w:.])", "IP")
FILE_PATH = _t(r"(?<![\w/.:~-])(?:~|\.{1,2})?(?:/[\w.$@+~%=-]+)+/?(?=[\s,;:'\")\]]|$)", "PATH")
WINDOWS_PATH = _t(r"\b[A-Za-z]:\\[^\s\"',;]*", "PATH")
UUID = _t(rf"{_B}{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}{_E}", "UUID")
MAC = _t(rf"{_B}{_HEX}{{2}}(?::{_HEX}{{2}}){{5}}{_E}", "MAC")
HEX_NUMBER = _t(rf"{_B}0[xX]{_HEX}+{_E}", "HEX")
# A bare hex string of 8+ digits mixing letters and digits: trace/span ids, hashes, register dumps.
HEX_ID = _t(rf"{_B}(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*[0-9]){_HEX}{{8,}}{_E}", "HEX")
# snake_case ids carrying numbers: rdd_2_0, broadcast_9_piece0, attempt_2017..._m_000004_1026.
SNAKE_ID = _t(r"\b[A-Za-z]+_(?=\w*\d)\w+\b", "ID")
# Durations: 150ms, 1.5s, 2m30s.
DURATION = _t(rf"{_B}(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+{_E}", "DURATION")
# A number with optional sign, decimals and unit: 12, -3, 0.25, 1.2.3, 9.2KB, 80%.
NUMBER = _t(rf"{_B}[-+]?\d+(?:\.\d+)*(?:[kKMGT]?i?[bB]|%)?{_E}", "NUM")
# true/false/null as the value of key=value or key:value.
KV_BOOLEAN = _t(r"(?<=[=:])(?:true|false|null|True|False|None)(?![\w])", "BOOL")
HDFS_BLOCK = _t(r"\bblk_-?\d+\b", "BLK")
OPENSTACK_REQUEST = _t(rf"{_B}req-{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}{_E}", "REQ")
# Kubernetes pod names: <deployment>-<replicaset hash>-<5 chars>.
K8S_POD = _t(r"\b[a-z0-9](?:[-a-z0-9]*[a-z0-9])?-[a-z0-9]{8,10}-[a-z0-9]{5}\b", "POD")
# Line-level, Proxifier: "lifetime <1 sec", "lifetime 00:39".
PROXY_LIFETIME = GatedMaskingInstruction(
    r"(?<=lifetime )(?:<\d+ sec|\d+(?::\d+)+)", "DURATION", needs=("lifetime ",)
)
# Proxifier: any host name with a port, "wpad:80", "BAYMSGR2012806.gateway.messenger.live.com:443".
PROXY_ENDPOINT = _t(r"(?<![\w.])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*:\d{1,5}(?![\w.])", "ADDR")

DEFAULT_RULES: tuple[MaskingInstruction, ...] = (
    DATETIME_WITH_SPACES,
    DATA_SIZE,
    ISO_TIMESTAMP,
    URL,
    ENDPOINT,
    IPV4,
    MAC,
    IPV6,
    FILE_PATH,
    WINDOWS_PATH,
    UUID,
    CLOCK,
    HEX_NUMBER,
    HEX_ID,
    SNAKE_ID,
    DURATION,
    NUMBER,
    KV_BOOLEAN,
)


@dataclass(frozen=True)
class Preset:
    """A masking preset: rules in application order plus Drain parameters tuned for that kind of log.

    ``sim_th`` is Drain's similarity threshold (share of equal tokens needed to join a cluster),
    ``depth`` its prefix-tree depth, ``extra_delimiters`` characters split like whitespace.
    """

    name: str
    rules: tuple[MaskingInstruction, ...]
    sim_th: float = 0.4
    depth: int = 4
    extra_delimiters: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        _check_token_rules_last(self.name, self.rules)


def _check_token_rules_last(name: str, rules: Sequence[MaskingInstruction]) -> None:
    seen_token_rule = False
    for rule in rules:
        if isinstance(rule, TokenMaskingInstruction):
            seen_token_rule = True
        elif seen_token_rule:
            raise ValueError(f"preset {name!r}: line-level rule {rule.pattern!r} after a token rule")


def _replace(rules: tuple[MaskingInstruction, ...], old: MaskingInstruction, *new: MaskingInstruction):
    """``rules`` with ``old`` replaced by ``new`` (several rules, or none to drop it)."""
    i = rules.index(old)
    return rules[:i] + new + rules[i + 1 :]


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "default", DEFAULT_RULES, sim_th=0.7, description="generic: times, ids, addresses, paths, numbers"
        ),
        Preset(
            "hdfs",
            _replace(DEFAULT_RULES, FILE_PATH, FILE_PATH, HDFS_BLOCK),
            sim_th=0.5,
            description="Hadoop HDFS: block ids blk_-123, host:port, paths",
        ),
        Preset("bgl", DEFAULT_RULES, sim_th=0.5, description="Blue Gene/L RAS events: registers, hex dumps"),
        Preset(
            "thunderbird",
            DEFAULT_RULES,
            sim_th=0.6,
            depth=5,
            description="Thunderbird syslog: hosts, daemons",
        ),
        Preset(
            "openstack",
            _replace(DEFAULT_RULES, UUID, OPENSTACK_REQUEST, UUID),
            sim_th=0.9,
            depth=5,
            description="OpenStack: request ids, instance UUIDs, HTTP request lines",
        ),
        Preset(
            "hadoop",
            DEFAULT_RULES,
            sim_th=0.6,
            description="Hadoop MapReduce/YARN: attempt/container/job ids",
        ),
        Preset(
            "spark",
            DEFAULT_RULES,
            sim_th=0.6,
            depth=8,
            description="Spark: task/stage numbers, broadcast blocks, sizes",
        ),
        Preset(
            "linux",
            DEFAULT_RULES,
            sim_th=0.8,
            depth=5,
            description="Linux syslog: sshd/pam, kernel, dates inside messages",
        ),
        Preset(
            "kubernetes",
            _replace(DEFAULT_RULES, UUID, UUID, K8S_POD),
            sim_th=0.7,
            # A JSON body has no spaces: split fields so Drain can wildcard one value at a time.
            extra_delimiters=(",",),
            description="Kubernetes / JSON app logs: pod names, UUIDs, trace ids, durations",
        ),
        Preset(
            "proxifier",
            (PROXY_LIFETIME, *_replace(DEFAULT_RULES, ENDPOINT, ENDPOINT, PROXY_ENDPOINT)),
            sim_th=0.9,
            description="Proxifier-style proxy logs: endpoints, byte counts, lifetimes",
        ),
        Preset("android", DEFAULT_RULES, sim_th=0.7, description="Android logcat: key=value state dumps"),
        Preset("hpc", DEFAULT_RULES, sim_th=0.95, description="HPC cluster events: node names, states"),
        Preset("mac", DEFAULT_RULES, sim_th=0.9, depth=3, description="macOS system log: daemons, kexts"),
    )
}


def preset_names() -> list[str]:
    """The valid preset names, sorted."""
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; raises ``ValueError`` naming the valid presets when unknown."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown masking preset {name!r}; valid presets: {', '.join(preset_names())}"
        ) from None


def custom_rules(custom: Sequence[dict] | None) -> list[MaskingInstruction]:
    """Rules from YAML-style dicts ``{"regex": ..., "mask_with": ...}``.

    Raises ``ValueError`` (saying which rule) on a missing key or an invalid regular expression.
    """
    rules: list[MaskingInstruction] = []
    for i, entry in enumerate(custom or ()):
        if not isinstance(entry, dict) or not entry.get("regex") or not entry.get("mask_with"):
            raise ValueError(f"custom masking rule #{i} needs non-empty 'regex' and 'mask_with': {entry!r}")
        try:
            rules.append(MaskingInstruction(str(entry["regex"]), str(entry["mask_with"])))
        except re.error as exc:
            raise ValueError(f"custom masking rule #{i}: invalid regex {entry['regex']!r}: {exc}") from None
    return rules


def masking_for(preset: str, custom: list[dict] | None = None) -> list[MaskingInstruction]:
    """Custom rules first, then the preset's rules, ready for ``TemplateMinerConfig.masking_instructions``.

    Raises ``ValueError`` for an unknown preset (naming the valid ones) or a bad custom rule.
    """
    return custom_rules(custom) + list(get_preset(preset).rules)


@dataclass(frozen=True)
class SplitMasking:
    """Rules split for fast masking: ``line`` rules apply to the whole text, then ``token`` per token."""

    line: tuple[MaskingInstruction, ...]
    token: tuple[MaskingInstruction, ...] = field(default=())


def split_for_tokens(rules: Sequence[MaskingInstruction]) -> SplitMasking:
    """Split ``rules`` at the start of their longest all-token-local tail, keeping the order."""
    start = len(rules)
    while start > 0 and isinstance(rules[start - 1], TokenMaskingInstruction):
        start -= 1
    return SplitMasking(line=tuple(rules[:start]), token=tuple(rules[start:]))
