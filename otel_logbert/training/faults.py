"""Structural log faults: training-time augmentation for FastLogAD's generated anomalies.

FastLogAD's paper generates anomalies by replacing masked keys. Real log faults are also structural:
a step missing or a session cut off (``delete``), steps reordered (``swap``), a key repeated, e.g. a
retry storm (``repeat``). ``with_structural_faults`` gives each session of a batch one op drawn from
the model's ``generated_ops``; the replacement (already computed by the model) is kept for sessions
drawn ``replace``. Used only in training; the exported discriminator never sees this code.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from otel_logbert.parsing.vocabulary import PAD_ID


def structural_fault(session: list[int], op: str, rng: random.Random, ratio: float) -> tuple[list[int], list[int]]:
    """Apply a structural fault to one session of token ids. Returns (faulty session, per-key labels
    with 1 on keys that are out of place). ``session`` has at least 2 keys. Raises ValueError for an
    unknown ``op``."""
    n = len(session)
    labels = [0] * n
    if op == "delete":
        k = max(1, min(n - 1, round(ratio * n)))
        kind = rng.random()
        if kind < 1 / 3 and len(set(session)) > 1:  # a step missing: every record of one key gone
            gone = rng.choice(sorted(set(session)))
            keep = [i for i in range(n) if session[i] != gone]
        elif kind < 2 / 3:  # a contiguous span: several steps missing, or a session cut off
            start = rng.randrange(0, n - k + 1)
            keep = [i for i in range(n) if not start <= i < start + k]
        else:
            keep = sorted(rng.sample(range(n), n - k))
        return [session[i] for i in keep], [0] * len(keep)
    if op == "swap":
        if n >= 4 and rng.random() < 0.5:  # a block of steps moved elsewhere
            k = rng.randint(2, max(2, min(n - 2, round(2 * ratio * n))))
            start = rng.randrange(0, n - k + 1)
            block, rest = session[start : start + k], session[:start] + session[start + k :]
            at = rng.choice([i for i in range(len(rest) + 1) if i != start])
            out = rest[:at] + block + rest[at:]
            return out, [0] * at + [1] * k + [0] * (len(rest) - at)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if session[i] != session[j]]
        if not pairs:
            return session, labels
        i, j = rng.choice(pairs)
        out = list(session)
        out[i], out[j] = out[j], out[i]
        labels[i] = labels[j] = 1
        return out, labels
    if op == "repeat":
        i = rng.randrange(n)
        copies = rng.randint(2, 5)
        faulty = session[: i + 1] + [session[i]] * copies + session[i + 1 :]
        return faulty, labels[: i + 1] + [1] * copies + labels[i + 1 :]
    raise ValueError(f"unknown generated op {op!r}")


def with_structural_faults(
    tokens: torch.Tensor, replaced: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
    ops: Sequence[str], ratio: float, max_len: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Give each session an op drawn from ``ops``; sessions drawn a structural op get it instead of
    the replacement. tokens, replaced, mask: (B, L), the sessions, their key-replaced version and the
    replaced positions. Returns (anomalous tokens (B, L'), per-key labels (B, L')), re-padded to the
    widest result (at most ``max_len``). Draws one integer from ``generator`` to seed the row ops."""
    rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    ops = list(ops)
    rows, labels = [], []
    for b in range(tokens.shape[0]):
        length = int((tokens[b] != PAD_ID).sum())
        op = rng.choice(ops)
        if op == "replace" or length < 2:
            rows.append(replaced[b, :length].tolist())
            labels.append(mask[b, :length].long().tolist())
            continue
        row, label = structural_fault(tokens[b, :length].tolist(), op, rng, ratio)
        rows.append(row[:max_len])
        labels.append(label[:max_len])
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.int64)
    out_labels = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (row, label) in enumerate(zip(rows, labels, strict=True)):
        out[b, : len(row)] = torch.tensor(row, dtype=torch.int64)
        out_labels[b, : len(label)] = torch.tensor(label, dtype=torch.bool)
    return out, out_labels
