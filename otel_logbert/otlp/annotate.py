"""The attributes the sidecar writes on records (names from ``attributes:`` in the YAML).

| attribute (default name)        | type   | written on                                          |
| ------------------------------- | ------ | --------------------------------------------------- |
| log.record.template             | string | every parsed record (at ingest)                     |
| log.anomaly.status              | string | every record: scored, unscored or unsessioned       |
| log.anomaly.reason              | string | unscored / unsessioned records: why                 |
| log.anomaly.score, .threshold   | double | records of a scored session                         |
| log.anomaly.is_anomaly          | bool   | same                                                |
| log.anomaly.model, .model_version | string | records of a session of a lane with a model       |
| log.anomaly.session.id          | string | records of a session                                |
| log.anomaly.session.length      | int    | same (keys in the session)                          |
| log.anomaly.unexpected          | bool   | per record, where the model gives per-key evidence  |

The attributes of one session are serialized once and appended to each of its records' bytes.
Attributes a record already carries under these names are removed at ingest (``owns``), so a record
that passes through two sidecars carries the last one's verdict, never duplicate keys.
"""

from __future__ import annotations

from typing import Any

from otel_logbert.otlp.codec import attributes_bytes
from otel_logbert.sessions.session import Origin, Session, Verdict

STATUS_SCORED = "scored"
STATUS_UNSCORED = "unscored"
STATUS_UNSESSIONED = "unsessioned"


class AttributeNames:
    def __init__(self, prefix: str = "log.anomaly", template: str = "log.record.template") -> None:
        self.prefix = prefix
        self.template = template
        self.score = f"{prefix}.score"
        self.threshold = f"{prefix}.threshold"
        self.is_anomaly = f"{prefix}.is_anomaly"
        self.model = f"{prefix}.model"
        self.model_version = f"{prefix}.model_version"
        self.session_id = f"{prefix}.session.id"
        self.session_length = f"{prefix}.session.length"
        self.unexpected = f"{prefix}.unexpected"
        self.status = f"{prefix}.status"
        self.reason = f"{prefix}.reason"
        self._owned_prefix = f"{prefix}.".encode()
        self._template = template.encode()

    def owns(self, key: bytes) -> bool:
        """True for attribute keys the sidecar writes (and so replaces)."""
        return key == self._template or key.startswith(self._owned_prefix)

    def may_own_any(self, data: bytes) -> bool:
        """Cheap pre-test on a serialized record: False means it has no attribute the sidecar owns
        (a substring test on the bytes; True may be a false alarm, ``owns`` decides)."""
        return self._owned_prefix in data or self._template in data


class Annotator:
    """Builds the serialized attribute suffixes appended to forwarded records."""

    def __init__(self, names: AttributeNames) -> None:
        self.names = names
        self._unexpected = {flag: attributes_bytes([(names.unexpected, flag)]) for flag in (False, True)}
        self._unsessioned: dict[str, bytes] = {}

    def record_bytes(self, record: Any) -> bytes:
        """The serialized lenient ``LogRecord`` without the attributes the sidecar owns (rarely
        present, so the record's attributes are walked only when its bytes mention one)."""
        data = record.SerializeToString()
        if not self.names.may_own_any(data):
            return data
        attributes, owns = record.attributes, self.names.owns
        for i in reversed([i for i, kv in enumerate(attributes) if owns(kv.key)]):
            del attributes[i]
        return record.SerializeToString()

    def unsessioned(self, reason: str) -> bytes:
        """Suffix for a record that belongs to no session (cached per reason)."""
        suffix = self._unsessioned.get(reason)
        if suffix is None:
            suffix = attributes_bytes([(self.names.status, STATUS_UNSESSIONED), (self.names.reason, reason)])
            if len(self._unsessioned) < 64:
                self._unsessioned[reason] = suffix
        return suffix

    def session_suffix(self, session: Session, verdict: Verdict) -> bytes:
        n = self.names
        pairs: list[tuple[str, object]] = [(n.status, verdict.status)]
        if verdict.status == STATUS_SCORED:
            pairs += [
                (n.score, float(verdict.score or 0.0)),
                (n.threshold, float(verdict.threshold or 0.0)),
                (n.is_anomaly, bool(verdict.is_anomaly)),
            ]
        if verdict.reason:
            pairs.append((n.reason, verdict.reason))
        if verdict.model:
            pairs += [(n.model, verdict.model), (n.model_version, verdict.model_version)]
        pairs += [(n.session_id, session.id), (n.session_length, len(session.keys))]
        return attributes_bytes(pairs)

    def annotate(self, session: Session, verdict: Verdict) -> list[tuple[Origin, bytes, bytes]]:
        """Every record of ``session`` as ``(origin, serialized record, serialized attributes to
        append to it)``; the forwarder writes the two back to back (no copy here)."""
        suffix = self.session_suffix(session, verdict)
        flags = verdict.unexpected
        stored = session.stored()
        # a record's suffix: its key's attributes (log.record.template), then the session's; built
        # once per distinct (key attributes, unexpected flag)
        suffixes: dict[tuple[bytes, bool], bytes] = {}
        out = []
        if flags is None:
            for origin, data, attr, _, _ in stored:
                whole = suffixes.get((attr, False))
                if whole is None:
                    whole = suffixes[(attr, False)] = attr + suffix
                out.append((origin, data, whole))
            return out
        yes, no = suffix + self._unexpected[True], suffix + self._unexpected[False]
        for origin, data, attr, pos, _ in stored:
            flag = bool(flags[pos])
            whole = suffixes.get((attr, flag))
            if whole is None:
                whole = suffixes[(attr, flag)] = attr + (yes if flag else no)
            out.append((origin, data, whole))
        return out
