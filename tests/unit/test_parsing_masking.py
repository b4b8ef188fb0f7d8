"""Masking presets: names, custom rules, what each rule masks, and token-wise == line-wise masking."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from drain3.masking import LogMasker, MaskingInstruction

from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.masking import (
    PRESETS,
    TokenMaskingInstruction,
    get_preset,
    masking_for,
    preset_names,
    split_for_tokens,
)

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "loghub_2k"
REQUIRED = ["default", "hdfs", "bgl", "thunderbird", "openstack", "hadoop", "spark", "linux", "kubernetes"]


def test_required_presets_exist_and_are_masking_instructions():
    for name in REQUIRED:
        rules = masking_for(name)
        assert rules and all(isinstance(rule, MaskingInstruction) for rule in rules)
        assert 0 < get_preset(name).sim_th <= 1 and get_preset(name).depth >= 3


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown masking preset 'nope'") as err:
        masking_for("nope")
    for name in REQUIRED:
        assert name in str(err.value)
    assert preset_names() == sorted(PRESETS)


def test_custom_rules_come_first():
    rules = masking_for("default", [{"regex": r"order-\d+", "mask_with": "ORDER"}])
    assert rules[0].pattern == r"order-\d+" and rules[0].mask_with == "ORDER"
    assert len(rules) == len(masking_for("default")) + 1
    parser = LogParser("default", custom_masking=[{"regex": r"order-\d+", "mask_with": "ORDER"}])
    assert parser.mask("shipped order-123 in 2 boxes") == "shipped <ORDER> in <NUM> boxes"


@pytest.mark.parametrize(
    "custom, message",
    [
        ([{"regex": "(unclosed", "mask_with": "X"}], "invalid regex"),
        ([{"regex": "x"}], "needs non-empty"),
        (["not a dict"], "needs non-empty"),
    ],
)
def test_bad_custom_rules_raise_value_error(custom, message):
    with pytest.raises(ValueError, match=message):
        masking_for("default", custom)


@pytest.mark.parametrize(
    "preset, text, expected",
    [
        ("default", "from 10.250.19.102:54106 to 10.0.0.1", "from <ADDR> to <IP>"),
        ("default", "fwd 10.11.10.1,10.11.21.138 ok", "fwd <IP> ok"),
        ("default", "addr fe80:0:0:0:c6b3:1ff:fecd:467f up", "addr <IP> up"),
        ("default", "id 70c1714b-c11b-4c88-b300-239afe1f5ff8 done", "id <UUID> done"),
        ("default", "at 0x00e462c0 mask 0x02", "at <HEX> mask <HEX>"),
        ("default", "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7", "trace <HEX> span <HEX>"),
        ("default", "opened /var/log/app.log: ok", "opened <PATH>: ok"),
        ("default", "GET https://example.com/a?b=1 200", "GET <URL> <NUM>"),
        ("default", "took 150ms and 1.5s", "took <DURATION> and <DURATION>"),
        ("default", "size 9.2 KB, 2034 bytes (1.98 KB)", "size <SIZE>, <SIZE>"),
        ("default", "at Sun Jul 24 02:38:22 2005 x", "at <TIME> x"),
        ("default", "at 2017-05-16 00:00:00.008 and 2024-01-02T03:04:05Z", "at <TIME> and <TIME>"),
        ("default", "lease for 255 seconds, -3 left, 80%", "lease for <NUM> seconds, <NUM> left, <NUM>"),
        ("default", "Found block rdd_2_0 locally", "Found block <ID> locally"),
        ("default", "overlap:true ws=null", "overlap:<BOOL> ws=<BOOL>"),
        ("default", "mac 00:1a:2b:3c:4d:5e", "mac <MAC>"),
        ("hdfs", "got blk_-1608999687919862906 src: /10.250.19.102:54106", "got <BLK> src: /<ADDR>"),
        ("hdfs", "rm blk_1 file /mnt/hadoop/dfs/data/current/subdir32/blk_1", "rm <BLK> file <PATH>"),
        ("openstack", "req-38101a0b-2096-447d-96ea-a692162415ae done", "<REQ> done"),
        ("kubernetes", "pod checkout-7d9f8b6c5d-x2x4q restarted", "pod <POD> restarted"),
        ("proxifier", "wpad:80 sent 785 bytes, lifetime <1 sec", "<ADDR> sent <SIZE>, lifetime <DURATION>"),
        ("default", "words stay words", "words stay words"),
    ],
)  # fmt: skip
def test_rule_examples(preset, text, expected):
    assert LogParser(preset).mask(text) == expected


def test_token_rules_come_after_line_rules_in_every_preset():
    for name, preset in PRESETS.items():
        split = split_for_tokens(preset.rules)
        assert not any(isinstance(r, TokenMaskingInstruction) for r in split.line), name
        assert len(split.line) + len(split.token) == len(preset.rules)


def _loghub_contents(limit_per_system: int = 250) -> list[str]:
    contents: list[str] = []
    for path in sorted(LOGHUB.glob("*/*_structured_corrected.csv")):
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            rows = list(csv.DictReader(f))
        contents += [row["Content"] for row in rows[:: max(1, len(rows) // limit_per_system)]]
    return contents


@pytest.mark.skipif(not LOGHUB.is_dir(), reason=f"dataset folder {LOGHUB} absent")
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_token_wise_masking_equals_drain3_line_masking(preset):
    """The fast path's per-token masking must give exactly what drain3's LogMasker gives."""
    parser = LogParser(preset)
    masker = LogMasker(parser.rules, "<", ">")
    for content in _loghub_contents():
        expected = " ".join(parser.drain.get_content_as_tokens(masker.mask(content)))
        assert parser.mask(content) == expected, content
