"""The demo's simulator: determinism, trace structure, ground truth, and faults that show in the logs."""

from __future__ import annotations

from collections import Counter

import pytest

from otel_logbert.parsing.drain import LogParser
from otel_logbert.simulate import FAULTS, SERVICES, ServiceSystem, Trace, interleave


@pytest.fixture(scope="module")
def normal() -> list[Trace]:
    return ServiceSystem(seed=3).traces(600, stream="train")


@pytest.fixture(scope="module")
def mixed() -> list[Trace]:
    return ServiceSystem(seed=3).traces(500, stream="live", fault_rate=0.2)


def test_same_seed_same_traffic_other_seed_or_stream_differs() -> None:
    a = ServiceSystem(seed=1).traces(50, stream="live", fault_rate=0.2)
    b = ServiceSystem(seed=1).traces(50, stream="live", fault_rate=0.2)
    assert a == b
    assert a != ServiceSystem(seed=2).traces(50, stream="live", fault_rate=0.2)
    assert a != ServiceSystem(seed=1).traces(50, stream="train", fault_rate=0.2)


def test_fault_count_and_even_spread(mixed: list[Trace]) -> None:
    faults = Counter(t.fault for t in mixed)
    assert faults[None] == 400
    assert {faults[f] for f in FAULTS} == {20}
    assert all(t.fault_detail for t in mixed if t.fault)
    assert not any(t.fault_detail for t in mixed if t.fault is None)


def test_traces_are_trace_correlated_and_time_ordered(mixed: list[Trace]) -> None:
    ids = [t.trace_id for t in mixed]
    assert len(set(ids)) == len(ids)
    for trace in mixed:
        assert trace.records and all(r.trace_id == trace.trace_id for r in trace.records)
        times = [r.time_unix_nano for r in trace.records]
        assert times == sorted(times)
        assert all(r.service in SERVICES and r.span_id for r in trace.records)
        assert trace.records[0].service == "frontend"
        assert len(trace.trace_id_hex) == 32
    # A trace crossing services has one span per hop, not one per trace.
    checkout = next(t for t in mixed if t.flow == "checkout" and t.fault is None)
    assert len({r.span_id for r in checkout.records}) >= 4


def test_normal_traffic_varies(normal: list[Trace]) -> None:
    assert {t.flow for t in normal} == {"browse", "product", "login", "cart", "checkout", "order_status"}
    lengths = Counter(len(t.records) for t in normal)
    assert len(lengths) >= 15
    bodies = " ".join(r.body for t in normal for r in t.records)
    for rare_but_normal in ("cache hit", "cache miss", "gateway timeout", "card declined", "invalid password",
                            "digital goods", "not found"):
        assert rare_but_normal in bodies
    assert all(t.fault is None for t in normal)


def test_masking_normalises_variables(normal: list[Trace]) -> None:
    parser = LogParser(masking="default")
    records = [r for t in normal for r in t.records]
    for r in records:
        parser.parse(r.body)
    assert len({r.body for r in records}) > 0.7 * len(records)  # most bodies are unique ...
    assert parser.cluster_count < 60  # ... but they fall into a few dozen templates
    templates = " ".join(parser.templates().values())
    for mask in ("<IP>", "<UUID>", "<NUM>", "<DURATION>", "<HEX>"):
        assert mask in templates


def _keys(traces: list[Trace], parser: LogParser) -> list[list[str]]:
    return [[parser.parse(r.body).key for r in t.records] for t in traces]


def test_faults_are_visible_in_the_log_keys(normal: list[Trace], mixed: list[Trace]) -> None:
    """Each faulty trace's key sequence is one normal traffic never produced, in the way its type says."""
    parser = LogParser(masking="default")
    normal_sequences = {tuple(s) for s in _keys(normal, parser)}
    known = {k for s in normal_sequences for k in s}
    templates = parser.templates()
    by_text = {v: k for k, v in templates.items()}

    def key_of(fragment: str) -> str:
        return next(k for text, k in by_text.items() if fragment in text)

    for trace, keys in zip(mixed, _keys(mixed, parser), strict=True):
        if trace.fault is None:
            continue
        assert tuple(keys) not in normal_sequences, trace.fault_detail
        new = [k for k in keys if k not in known]
        if trace.fault in ("unseen_message", "error_path"):
            assert new, trace.fault_detail
        else:
            assert not new, f"{trace.fault} must reuse known messages: {trace.fault_detail}"
        if trace.fault == "retry_storm":
            retry = key_of("gateway timeout") if trace.flow == "checkout" else key_of("refused, retrying")
            assert keys.count(retry) >= 6
        if trace.fault == "missing_step" and trace.flow == "checkout":
            assert key_of("payment authorized") not in keys
        if trace.fault == "reordering" and trace.flow == "checkout":
            services = [r.service for r in trace.records]
            paid = next(i for i, r in enumerate(trace.records) if "payment authorized" in r.body)
            assert services.index("shipping") < paid


def test_normal_retries_stay_within_limits(normal: list[Trace]) -> None:
    for trace in normal:
        retries = sum("gateway timeout" in r.body or "refused, retrying" in r.body for r in trace.records)
        assert retries <= 2


def test_interleave_merges_in_time_order(mixed: list[Trace]) -> None:
    system = ServiceSystem(seed=3)
    background = system.background(mixed)
    assert background and all(r.trace_id == 0 for r in background)
    merged = list(interleave(mixed, background))
    assert len(merged) == sum(len(t.records) for t in mixed) + len(background)
    times = [r.time_unix_nano for r in merged]
    assert times == sorted(times)
    # Requests overlap: some trace's records are not contiguous in the merged stream.
    owners = [r.trace_id for r in merged if r.trace_id]
    switches = sum(a != b for a, b in zip(owners, owners[1:], strict=False))
    assert switches > len(mixed)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ServiceSystem().traces(-1)
    with pytest.raises(ValueError):
        ServiceSystem().traces(10, fault_rate=1.5)
    assert ServiceSystem().traces(0) == []
