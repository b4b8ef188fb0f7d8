"""Stable key ids at serve time (a lane's parser + the bundle's vocabulary), the semantic mapping hook,
and the truncation flag on records whose body was cut for parsing.

The bundle is ``conftest.make_rule_bundle``: trained on ``NORMAL_MESSAGES``; its ONNX graph scores 1.0
for a session holding UNK and 0.0 otherwise, so a score says whether every key had a training id.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.logs.v1 import logs_pb2
from semantic_fakes import BagOfWordsEncoder
from test_sidecar_pipeline import TRACE_A, TRACE_B, attributes, log, request, send, wait

from otel_logbert.bundle import VOCAB_FILE, load_bundle
from otel_logbert.config import config_from_dict
from otel_logbert.errors import UserError
from otel_logbert.parsing.vocabulary import UNK_ID
from otel_logbert.sidecar import wiring
from otel_logbert.sidecar.lanes import Lane
from otel_logbert.sidecar.wiring import build_router
from tests.conftest import NORMAL_MESSAGES, OtlpSink, running_sidecar, sidecar_config

REWORDED = "Receiving new block blk_9 src: /10.0.0.1:5000 dest: /10.0.0.2:50010"  # NORMAL_MESSAGES[0], reworded
FOREIGN = "kernel panic: cannot mount root fs"


def router_for(bundle: Path, **parsing: Any):
    return build_router(config_from_dict(sidecar_config("127.0.0.1:4317", bundle, parsing=parsing), environ={}))


def scores(lane: Lane, *sessions: list[str]) -> list[float]:
    return [s.score for s in lane.score(list(sessions))]


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lanes build their mapper's encoder from ``wiring.MiniLMEncoder``: a bag-of-words stand-in here."""
    monkeypatch.setattr(wiring, "MiniLMEncoder", BagOfWordsEncoder)


def test_a_generalised_training_template_keeps_its_key_and_token_id(rule_bundle: Path) -> None:
    router = router_for(rule_bundle)
    lane = router.default
    trained_key, _ = lane.parse(NORMAL_MESSAGES[3])  # "user 42 logged in from 10.1.2.3"
    trained_id = lane.vocab.id_of(trained_key)
    assert trained_id != UNK_ID
    key, template_attr = lane.parse("user bob logged in from 10.1.2.3")  # Drain generalises the template
    assert key == trained_key and "<*>" in lane.template(key)
    assert b"<*>" in template_attr
    assert lane.vocab.encode([key]) == [trained_id]
    assert scores(lane, [key, trained_key]) == [0.0]
    router.close()


def test_a_cluster_created_while_serving_is_unk_and_the_vocabulary_never_changes(rule_bundle: Path) -> None:
    vocab_file = (rule_bundle / VOCAB_FILE).read_bytes()
    router = router_for(rule_bundle)
    lane = router.default
    before = json.dumps(lane.vocab.to_json())
    known = [lane.parse(m)[0] for m in NORMAL_MESSAGES]
    new_key, _ = lane.parse(FOREIGN)
    assert new_key not in known and new_key not in lane.vocab
    assert lane.key_mapper is None  # semantic mapping is off by default
    assert scores(lane, known, known + [new_key]) == [0.0, 1.0]
    assert json.dumps(lane.vocab.to_json()) == before and len(lane.vocab) == len(load_bundle(rule_bundle).vocab)
    assert (rule_bundle / VOCAB_FILE).read_bytes() == vocab_file
    router.close()


def test_keys_and_ids_survive_a_restart_through_the_parser_state(rule_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "drain3-state.json"
    first = router_for(rule_bundle, state_file=str(state))
    keys = [first.default.parse(m)[0] for m in (*NORMAL_MESSAGES, FOREIGN)]
    first.default.save_state()
    first.close()
    second = router_for(rule_bundle, state_file=str(state))
    lane = second.default
    assert lane.parser.cluster_count == len(set(keys))
    assert [lane.parse(m)[0] for m in (FOREIGN, *NORMAL_MESSAGES)] == [keys[-1], *keys[:-1]]
    assert lane.vocab.encode(keys) == first.default.vocab.encode(keys)
    assert lane.vocab.encode([keys[-1]]) == [UNK_ID]
    second.close()


def test_semantic_mapping_maps_a_reworded_template_and_survives_a_restart(
    rule_bundle: Path, tmp_path: Path, fake_encoder: None
) -> None:
    state = tmp_path / "drain3-state.json"
    parsing = {"state_file": str(state), "semantic_mapping": {"enabled": True, "min_cosine": 0.8}}
    first = router_for(rule_bundle, **parsing)
    lane = first.default
    assert lane.key_mapper is not None
    original_key, _ = lane.parse(NORMAL_MESSAGES[0])
    reworded_key, _ = lane.parse(REWORDED)
    foreign_key, _ = lane.parse(FOREIGN)
    assert reworded_key != original_key and reworded_key not in lane.vocab
    assert lane.key_mapper.wait(10)
    mapped = lane.key_mapper.encode([reworded_key, foreign_key])
    assert mapped == [lane.vocab.id_of(original_key), UNK_ID]
    assert scores(lane, [original_key, reworded_key], [original_key, foreign_key]) == [0.0, 1.0]
    assert reworded_key not in lane.vocab  # the mapping is the mapper's, not the vocabulary's
    lane.save_state()
    first.close()

    second = router_for(rule_bundle, **parsing)  # restarted: the state's serve-time clusters are re-mapped
    assert second.default.key_mapper is not None and second.default.key_mapper.wait(10)
    assert second.default.key_mapper.encode([reworded_key, foreign_key]) == mapped
    second.close()


def test_semantic_mapping_needs_a_raw_log_bundle_and_the_encoder(rule_bundle: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in rule_bundle.iterdir():
        if f.name != "drain3.json":
            (bare / f.name).write_bytes(f.read_bytes())
    with pytest.raises(UserError, match="no drain3.json"):
        router_for(bare, semantic_mapping={"enabled": True})
    monkeypatch.setattr(wiring.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"otel-logbert\[semantic\]"):
        router_for(rule_bundle, semantic_mapping={"enabled": True})


def test_truncated_bodies_are_flagged_and_not_cached(rule_bundle: Path) -> None:
    router = router_for(rule_bundle, max_line_chars=64)
    lane = router.default
    body = "payload " + "A1b2 " * 200_000  # about 1 MB
    key, attrs = lane.parse(body)
    parsed = {kv.key: kv.value for kv in logs_pb2.LogRecord.FromString(attrs).attributes}
    assert parsed["log.anomaly.body_truncated"].bool_value is True
    assert "log.record.template" in parsed
    assert body not in lane._cache  # a 1 MB text must not sit in the per-text cache
    assert lane.parse(body)[0] == key
    _, short_attrs = lane.parse(NORMAL_MESSAGES[0])
    assert [kv.key for kv in logs_pb2.LogRecord.FromString(short_attrs).attributes] == ["log.record.template"]
    router.close()


def test_sidecar_flags_a_one_megabyte_body_and_forwards_it_untouched(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    long_body = "payload " + "x9 " * 350_000 + "end"

    async def scenario() -> list[Any]:
        async with running_sidecar(sidecar_config(otlp_sink.endpoint, rule_bundle)) as sidecar:
            await send(sidecar, request([log(long_body), log(NORMAL_MESSAGES[1])]))
            return await wait(otlp_sink, 2)

    records = [r for _, _, r in asyncio.run(scenario())]
    by_body = {r.body.string_value[:7]: (r.body.string_value, attributes(r)) for r in records}
    body, attrs = by_body["payload"]
    assert body == long_body and attrs["log.anomaly.body_truncated"] is True
    assert "log.anomaly.body_truncated" not in by_body[NORMAL_MESSAGES[1][:7]][1]


def test_sidecar_with_semantic_mapping_does_not_flag_a_reworded_session(
    otlp_sink: OtlpSink, rule_bundle: Path, fake_encoder: None
) -> None:
    rest = list(NORMAL_MESSAGES[1:3])

    async def scenario(enabled: bool) -> list[Any]:
        parsing = {"semantic_mapping": {"enabled": enabled, "min_cosine": 0.8}}
        async with running_sidecar(sidecar_config(otlp_sink.endpoint, rule_bundle, parsing=parsing)) as sidecar:
            mapper = sidecar.router.default.key_mapper
            assert (mapper is not None) == enabled and (mapper is None or mapper.wait(10))
            await send(sidecar, request([log(REWORDED, TRACE_A)] + [log(m, TRACE_A) for m in rest]
                                        + [log(FOREIGN, TRACE_B)]))
            return await wait(otlp_sink, 4)

    for enabled, reworded_flagged in ((False, True), (True, False)):
        otlp_sink.clear()
        verdicts = {r.trace_id: attributes(r)["log.anomaly.is_anomaly"] for _, _, r in asyncio.run(scenario(enabled))}
        assert verdicts == {TRACE_A: reworded_flagged, TRACE_B: True}
