"""Structural faults (training.faults): what each op does to a session and its labels."""

from __future__ import annotations

import random

import pytest
import torch

from otel_logbert.parsing.vocabulary import PAD_ID
from otel_logbert.training.faults import structural_fault, with_structural_faults

SESSION = [5, 6, 7, 8, 9, 10, 11, 12]


@pytest.mark.parametrize("seed", range(20))
def test_each_op_changes_the_session_and_labels_match_its_length(seed: int) -> None:
    rng = random.Random(seed)
    deleted, labels = structural_fault(SESSION, "delete", rng, 0.3)
    assert len(deleted) < len(SESSION) and len(labels) == len(deleted) and set(deleted) <= set(SESSION)
    swapped, labels = structural_fault(SESSION, "swap", rng, 0.3)
    assert sorted(swapped) == sorted(SESSION) and swapped != SESSION and len(labels) == len(swapped)
    assert sum(labels) >= 2  # the two exchanged keys, or the moved block
    repeated, labels = structural_fault(SESSION, "repeat", rng, 0.3)
    assert len(repeated) > len(SESSION) and sum(labels) == len(repeated) - len(SESSION)


def test_unknown_op_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'shuffle'"):
        structural_fault(SESSION, "shuffle", random.Random(0), 0.3)


def test_replace_rows_keep_the_replacement_and_rows_are_repadded() -> None:
    tokens = torch.tensor([SESSION, SESSION[:3] + [PAD_ID] * 5])
    replaced = tokens.clone()
    replaced[:, 0] = 4
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 0] = True
    out, labels = with_structural_faults(tokens, replaced, mask, torch.Generator().manual_seed(0), ("replace",), 0.3, 8)
    assert torch.equal(out, replaced) and torch.equal(labels, mask)
    out, labels = with_structural_faults(tokens, replaced, mask, torch.Generator().manual_seed(0), ("repeat",), 0.3, 8)
    assert out.shape == labels.shape and out.shape[1] <= 8
    assert int((out[1] != PAD_ID).sum()) > 3  # the short row got a repeat, then padding again
