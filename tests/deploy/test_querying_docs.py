"""docs/querying.md and docs/dashboards/: the Elasticsearch examples run, the Loki ones use the names
Loki gives OTLP attributes.

Elasticsearch: every `<!-- es-query: NAME -->` block in docs/querying.md is sent as written to
osmem-server (an in-memory OpenSearch-compatible server) holding documents in the shape the
`elasticsearch` exporter writes in `mapping.mode: otel` (see exporter/elasticsearchexporter/internal/
serializer/otelserializer upstream), in an index whose mapping imitates Elasticsearch's
logs-otel@template (attribute strings as keyword). Loki and Grafana cannot run here: their LogQL is
checked for attribute names only (dots -> underscores, as Loki's OTLP ingestion stores them).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from .conftest import REPO

QUERYING = REPO / "docs" / "querying.md"
DASHBOARD = REPO / "docs" / "dashboards" / "otel-logbert-loki.json"
SAVED_SEARCH = REPO / "docs" / "dashboards" / "kibana-anomalous-records.ndjson"
INDEX = "logs-generic.otel-default"
# The attributes the sidecar writes (DESIGN.md, otel_logbert/otlp/annotate.py).
ATTRIBUTES = ["log.record.template", "log.anomaly.score", "log.anomaly.threshold", "log.anomaly.is_anomaly",
              "log.anomaly.model", "log.anomaly.model_version", "log.anomaly.session.id",
              "log.anomaly.session.length", "log.anomaly.unexpected", "log.anomaly.status",
              "log.anomaly.reason"]
LOKI_NAMES = {a.replace(".", "_") for a in ATTRIBUTES}
# Mapping in the spirit of logs-otel@template: dates in nanoseconds, body text, strings as keyword.
MAPPING = {"mappings": {
    "dynamic_templates": [{"strings_as_keyword": {"match_mapping_type": "string",
                                                  "mapping": {"type": "keyword", "ignore_above": 1024}}}],
    "properties": {
        "@timestamp": {"type": "date_nanos", "format": "strict_date_optional_time||epoch_millis"},
        "observed_timestamp": {"type": "date_nanos", "format": "strict_date_optional_time||epoch_millis"},
        "body": {"properties": {"text": {"type": "match_only_text"}}},
    }}}


def es_queries() -> dict[str, tuple[str, str, dict]]:
    """{name: (method, path, body)} from the doc's marked blocks."""
    text = QUERYING.read_text()
    out = {}
    for m in re.finditer(r"<!-- es-query: ([\w-]+) -->\s*```json\n(.*?)```", text, re.S):
        request_line, body = m.group(2).split("\n", 1)
        method, path = request_line.split()
        out[m.group(1)] = (method, "/" + path, json.loads(body))
    return out


def millis(ns: int) -> str:
    """@timestamp as the exporter writes it: epoch milliseconds with the nanoseconds as fraction."""
    return f"{ns // 1_000_000}.{ns % 1_000_000:06d}"


def log_doc(ns: int, service: str, body: str, attributes: dict, trace_id: str = "", span_id: str = "",
            severity: str = "INFO") -> dict:
    """One log record as the otel-mode serializer writes it."""
    doc = {
        "@timestamp": millis(ns), "observed_timestamp": millis(ns),
        "data_stream": {"type": "logs", "dataset": "generic.otel", "namespace": "default"},
        "severity_text": severity, "body": {"text": body},
        "attributes": attributes, "resource": {"attributes": {"service.name": service}}, "scope": {},
    }
    if trace_id:
        doc["trace_id"], doc["span_id"] = trace_id, span_id
    return doc


def verdict(session: str, score: float, anomalous: bool, length: int, template: str, **extra) -> dict:
    return {"log.record.template": template, "log.anomaly.status": "scored", "log.anomaly.score": score,
            "log.anomaly.threshold": 0.41, "log.anomaly.is_anomaly": anomalous,
            "log.anomaly.model": "fastlogad",
            "log.anomaly.model_version": "2024-05-01", "log.anomaly.session.id": session,
            "log.anomaly.session.length": length, **extra}


def seed_documents(now_ns: int) -> list[dict]:
    """checkout: session tA anomalous (3 records, 2 unexpected), tB normal (2), one anomalous record
    of an old session t0 two hours ago; payments: session p1 anomalous (1); hdfs: 2 unscored
    records; plus the span event of tA."""
    minute = 60 * 10**9
    tA, tB = "5b8efff798038103d269b633813fc60c", "0af7651916cd43dd8448eb211c80319c"
    t0 = "11111111111111111111111111111111"
    sA, sB, s0 = f"{tA}/1", f"{tB}/2", f"{t0}/1"  # session ids are "<key>/<n>"
    unexpected = {"log.anomaly.unexpected": True}
    docs = [
        log_doc(now_ns - 5 * minute, "checkout", "order 17 accepted",
                verdict(sA, 0.93, True, 3, "order <*> accepted"), tA, "eee19b7ec3c1b174"),
        log_doc(now_ns - 4 * minute, "checkout", "payment gateway timeout after 30000 ms",
                verdict(sA, 0.93, True, 3, "payment gateway timeout after <*> ms", **unexpected),
                tA, "eee19b7ec3c1b174", "ERROR"),
        log_doc(now_ns - 3 * minute, "checkout", "retrying payment 3",
                verdict(sA, 0.93, True, 3, "retrying payment <*>", **unexpected),
                tA, "eee19b7ec3c1b174", "WARN"),
        log_doc(now_ns - 2 * minute, "checkout", "order 18 accepted",
                verdict(sB, 0.12, False, 2, "order <*> accepted"), tB, "aaaaaaaaaaaaaaaa"),
        log_doc(now_ns - 1 * minute, "checkout", "order 18 shipped",
                verdict(sB, 0.12, False, 2, "order <*> shipped"), tB, "aaaaaaaaaaaaaaaa"),
        log_doc(now_ns - 120 * minute, "checkout", "payment gateway timeout after 31000 ms",
                verdict(s0, 0.88, True, 1, "payment gateway timeout after <*> ms", **unexpected),
                t0, "bbbbbbbbbbbbbbbb"),
        log_doc(now_ns - 2 * minute, "payments", "ledger write failed code 7",
                verdict("p1", 0.77, True, 1, "ledger write failed code <*>", **unexpected)),
        log_doc(now_ns - 1 * minute, "hdfs", "PacketResponder 1 for block blk_1 terminating",
                {"log.record.template": "PacketResponder <*> for block <*> terminating",
                 "log.anomaly.status": "unscored", "log.anomaly.reason": "scorer timeout"}),
        log_doc(now_ns - 1 * minute, "hdfs", "Receiving block blk_2",
                {"log.record.template": "Receiving block <*>", "log.anomaly.status": "unscored",
                 "log.anomaly.reason": "scorer timeout"}),
    ]
    # The span event of tA, as the otel-mode serializer writes span events (traces.go upstream).
    docs.append({
        "@timestamp": millis(now_ns - 3 * minute),
        "data_stream": {"type": "logs", "dataset": "generic.otel", "namespace": "default"},
        "trace_id": tA, "span_id": "00000000000000a1", "event_name": "log.anomaly",
        "attributes": {"event.name": "log.anomaly", "log.anomaly.score": 0.93, "log.anomaly.threshold": 0.41,
                       "log.anomaly.is_anomaly": True, "log.anomaly.model": "fastlogad",
                       "log.anomaly.unexpected_templates": ["payment gateway timeout after <*> ms",
                                                            "retrying payment <*>"]},
        "resource": {"attributes": {"service.name": "otel-logbert"}}, "scope": {},
    })
    return docs


@pytest.fixture(scope="module")
def es(tools):
    """osmem-server seeded with the documents; yields a request function."""
    from osmem_server import OsmemServer  # installed by the tools fixture when missing

    server = OsmemServer.start(japanese=False)
    try:
        server.request("PUT", f"/{INDEX}", MAPPING)
        lines = []
        for doc in seed_documents(time.time_ns()):
            lines += [json.dumps({"create": {}}), json.dumps(doc)]
        import urllib.request  # bulk is NDJSON, which OsmemServer.request (JSON only) cannot send

        req = urllib.request.Request(f"{server.url}/{INDEX}/_bulk?refresh=true",
                                     data=("\n".join(lines) + "\n").encode(), method="POST",
                                     headers={"Content-Type": "application/x-ndjson"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            result = json.loads(resp.read())
        assert not result["errors"], result
        yield server.request
    finally:
        server.close()


def run(es, name: str) -> dict:
    method, path, body = es_queries()[name]
    return es(method, path, body)


def test_doc_has_the_expected_queries():
    assert set(es_queries()) == {"anomalous-records", "anomalous-sessions-per-service",
                                 "anomaly-rate-per-service", "top-unexpected-templates",
                                 "latest-anomalous-sessions", "span-events", "unscored-by-reason"}


def test_anomalous_records(es):
    hits = run(es, "anomalous-records")["hits"]["hits"]
    # checkout's anomalous session, newest first; the 2-hour-old record is outside now-1h
    assert [h["_source"]["body"]["text"] for h in hits] == [
        "retrying payment 3", "payment gateway timeout after 30000 ms", "order 17 accepted"]


def test_anomalous_sessions_per_service(es):
    buckets = run(es, "anomalous-sessions-per-service")["aggregations"]["service"]["buckets"]
    got = {b["key"]: (b["sessions"]["value"], round(b["max_score"]["value"], 2)) for b in buckets}
    assert got == {"checkout": (2, 0.93), "payments": (1, 0.77)}


def test_anomaly_rate_per_service(es):
    buckets = run(es, "anomaly-rate-per-service")["aggregations"]["service"]["buckets"]
    rates = {b["key"]: b["rate"]["value"] for b in buckets}
    assert "otel-logbert" not in rates  # span events are not records
    assert rates["checkout"] == pytest.approx(4 / 6)
    assert rates["payments"] == pytest.approx(1.0)
    assert rates["hdfs"] == 0  # nothing scored there


def test_top_unexpected_templates(es):
    buckets = run(es, "top-unexpected-templates")["aggregations"]["templates"]["buckets"]
    assert buckets[0] == {"key": "payment gateway timeout after <*> ms", "doc_count": 2}
    assert {b["key"] for b in buckets} == {"payment gateway timeout after <*> ms", "retrying payment <*>",
                                           "ledger write failed code <*>"}


def test_latest_anomalous_sessions(es):
    hits = run(es, "latest-anomalous-sessions")["hits"]["hits"]
    sessions = [h["_source"]["attributes"]["log.anomaly.session.id"] for h in hits if "log.anomaly.session.id"
                in h["_source"].get("attributes", {})]
    assert sessions == ["p1", "5b8efff798038103d269b633813fc60c/1", "11111111111111111111111111111111/1"]


def test_span_events(es):
    hits = run(es, "span-events")["hits"]["hits"]
    assert len(hits) == 1
    src = hits[0]["_source"]
    assert src["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert "retrying payment <*>" in src["attributes"]["log.anomaly.unexpected_templates"]


def test_unscored_by_reason(es):
    buckets = run(es, "unscored-by-reason")["aggregations"]["reason"]["buckets"]
    assert buckets == [{"key": "scorer timeout", "doc_count": 2}]


def _logql_blocks() -> list[str]:
    doc = re.findall(r"```logql\n(.*?)```", QUERYING.read_text(), re.S)
    dash = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    assert len(doc) >= 5 and len(dash) >= 4
    return doc + dash


def test_logql_uses_loki_names_for_otlp_attributes():
    for query in _logql_blocks():
        code = "\n".join(line for line in query.splitlines() if not line.lstrip().startswith("#"))
        # dotted names do not exist in Loki
        assert "log.anomaly" not in code and "log.record" not in code, query
        for name in set(re.findall(r"\blog_[a-z_]+", code)):
            assert name in LOKI_NAMES, (name, query)
        assert code.count("(") == code.count(")") and code.count("{") == code.count("}"), query
        assert re.search(r"\{service_name=~?\"[^\"]+\"\}", code), query  # a stream selector on the label


def test_dashboard_has_the_promised_panels():
    dash = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dash["panels"])
    for wanted in ("Anomaly rate per service", "Top unexpected templates", "Latest anomalous sessions"):
        assert wanted in titles
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "service"}
    assert all(t["datasource"]["uid"] == "${datasource}" for p in dash["panels"] for t in p["targets"])


def test_kibana_saved_search_is_importable_shape():
    objects = [json.loads(line) for line in SAVED_SEARCH.read_text().splitlines() if line.strip()]
    kinds = {o["type"]: o for o in objects}
    assert set(kinds) == {"index-pattern", "search"}
    source = json.loads(kinds["search"]["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["query"] == {"query": "attributes.log.anomaly.is_anomaly : true and not event_name : *",
                               "language": "kuery"}
    assert kinds["search"]["references"][0]["id"] == kinds["index-pattern"]["id"]
