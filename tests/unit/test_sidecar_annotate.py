"""otlp.annotate: the attributes written on records, by status."""

from __future__ import annotations

from opentelemetry.proto.logs.v1 import logs_pb2

from otel_logbert.otlp.annotate import Annotator, AttributeNames
from otel_logbert.sessions.session import Origin, Record, Session, Verdict

ORIGIN = Origin(None, b"", None, b"", "svc")


def attrs(data: bytes) -> dict[str, object]:
    record = logs_pb2.LogRecord.FromString(data)
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in record.attributes}


def make_session(n: int) -> Session:
    s = Session(key=b"k", serial=26, lane=0, now=0.0)
    s.label = "abc"
    s.keys = [str(i) for i in range(n)]
    base = logs_pb2.LogRecord(body={"string_value": "x"}).SerializeToString()
    s.records = [Record(base, ORIGIN, pos=i) for i in range(n)]
    return s


def test_scored_session_attributes_with_per_record_unexpected() -> None:
    annotator = Annotator(AttributeNames())
    verdict = Verdict("scored", "fastlogad", "v3", score=2.5, threshold=1.0, is_anomaly=True,
                      unexpected=(False, True))
    out = annotator.annotate(make_session(2), verdict)
    first, second = attrs(out[0][1] + out[0][2]), attrs(out[1][1] + out[1][2])
    assert first == {
        "log.anomaly.status": "scored", "log.anomaly.score": 2.5, "log.anomaly.threshold": 1.0,
        "log.anomaly.is_anomaly": True, "log.anomaly.model": "fastlogad", "log.anomaly.model_version": "v3",
        "log.anomaly.session.id": "abc/1a", "log.anomaly.session.length": 2, "log.anomaly.unexpected": False,
    }
    assert second["log.anomaly.unexpected"] is True
    assert out[0][0] is ORIGIN


def test_unscored_session_has_status_reason_and_no_score() -> None:
    annotator = Annotator(AttributeNames(prefix="anomaly", template="tpl"))
    out = annotator.annotate(make_session(1), Verdict.unscored("scoring timed out after 2s", "m", "1"))
    a = attrs(out[0][1] + out[0][2])
    assert a["anomaly.status"] == "unscored" and a["anomaly.reason"] == "scoring timed out after 2s"
    assert "anomaly.score" not in a and "anomaly.unexpected" not in a
    assert a["anomaly.session.length"] == 1


def test_unsessioned_suffix_and_owned_keys() -> None:
    names = AttributeNames()
    a = attrs(Annotator(names).unsessioned("record has no trace id"))
    assert a == {"log.anomaly.status": "unsessioned", "log.anomaly.reason": "record has no trace id"}
    assert names.owns(b"log.anomaly.score") and names.owns(b"log.record.template")
    assert not names.owns(b"log.anomalyx") and not names.owns(b"log.record.templates")
