"""Raw log lines -> sessions of log keys, grouped by an id found in each line (an HDFS block id, say).

A line belongs to every distinct id the session regex finds in it (an HDFS replication line names
two blocks and belongs to both); a line naming no id is skipped and counted. Only the message part
of a line is parsed when a content regex strips the header (date, time, pid, level, component).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from otel_logbert.parsing.drain import LogParser

logger = logging.getLogger(__name__)

# HDFS: "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block ..."
HDFS_CONTENT_REGEX = r"^\d{6} \d{6} \d+ [A-Z]+ [\w.$]+: (?P<content>.*)$"
HDFS_SESSION_REGEX = r"blk_-?\d+"

# BGL: "<alert label or -> <unix s> <date> <node> <time> <node> RAS KERNEL INFO <message>". The label
# field must never reach the parser (it is the anomaly label).
BGL_CONTENT_REGEX = r"^\S+ \d+ \S+ \S+ \S+ \S+ \S+ \S+ \S+ ?(?P<content>.*)$"

# Presets for ``content_regex``, by log format name.
CONTENT_REGEX_PRESETS: dict[str, str] = {"hdfs": HDFS_CONTENT_REGEX, "bgl": BGL_CONTENT_REGEX}


@dataclass
class GroupedSessions:
    """Sessions in first-seen order as ``(session_id, keys)``, with line counts."""

    sessions: list[tuple[str, list[str]]]
    lines: int = 0
    skipped: int = 0  # lines in which the session regex found no id


class ContentExtractor:
    """Cuts the message out of a raw line with ``content_regex``.

    The message is the group named ``content`` if the regex has one, else its first group, else the
    whole match. A line the regex does not match is used whole. Raises ``ValueError`` for a bad regex.
    """

    def __init__(self, content_regex: str) -> None:
        pattern = CONTENT_REGEX_PRESETS.get(content_regex, content_regex)
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid content regex {content_regex!r}: {exc}") from None
        if "content" in self.regex.groupindex:
            self.group: int | str = "content"
        else:
            self.group = 1 if self.regex.groups else 0

    def __call__(self, line: str) -> str:
        match = self.regex.search(line)
        return line if match is None else (match.group(self.group) or "")


_hdfs_extractor = ContentExtractor(HDFS_CONTENT_REGEX)


def hdfs_content(line: str) -> str:
    """The message of an HDFS line, without its ``date time pid level component:`` header."""
    return _hdfs_extractor(line)


def session_ids(line: str, regex: re.Pattern[str]) -> list[str]:
    """Distinct ids ``regex`` finds in ``line``, in order (first group if the regex has one)."""
    group = 1 if regex.groups else 0
    found = (m.group(group) for m in regex.finditer(line))
    return list(dict.fromkeys(i for i in found if i))


def group_raw_lines(
    lines: Iterable[str],
    session_regex: str,
    parser: LogParser,
    content_regex: str | None = None,
) -> GroupedSessions:
    """Parse each line's message once with ``parser`` (mining) and append its key to each id's session.

    ``content_regex`` is a regex or a preset name from ``CONTENT_REGEX_PRESETS`` (``"hdfs"``).
    Raises ``ValueError`` for an invalid regex.
    """
    try:
        id_regex = re.compile(session_regex)
    except re.error as exc:
        raise ValueError(f"invalid session regex {session_regex!r}: {exc}") from None
    extract = ContentExtractor(content_regex) if content_regex else None
    sessions: dict[str, list[str]] = {}
    result = GroupedSessions(sessions=[])
    for raw in lines:
        line = raw.rstrip("\r\n")
        result.lines += 1
        ids = session_ids(line, id_regex)
        if not ids:
            result.skipped += 1
            continue
        key = parser.parse(extract(line) if extract else line).key
        for session_id in ids:
            sessions.setdefault(session_id, []).append(key)
    result.sessions = list(sessions.items())
    return result


def sessions_from_raw_lines(
    lines: Iterable[str],
    session_regex: str,
    parser: LogParser,
    content_regex: str | None = None,
) -> list[tuple[str, list[str]]]:
    """``(session_id, keys)`` in first-seen order; see ``group_raw_lines``. Logs the skipped-line count."""
    grouped = group_raw_lines(lines, session_regex, parser, content_regex)
    if grouped.skipped:
        logger.info("%d of %d lines name no session id and were skipped", grouped.skipped, grouped.lines)
    return grouped.sessions
