"""A toy log grammar for model tests: normal sessions follow two flows; anomalies break them."""

from __future__ import annotations

import random


def normal_sessions(n: int, seed: int = 0) -> list[list[str]]:
    """Flow A: 10 11 12{1,3} 13 14; flow B: 10 11 15 16 14 (keys as strings, like event ids)."""
    rng = random.Random(seed)
    sessions = []
    for _ in range(n):
        if rng.random() < 0.6:
            sessions.append(["10", "11"] + ["12"] * rng.randint(1, 3) + ["13", "14"])
        else:
            sessions.append(["10", "11", "15", "16", "14"])
    return sessions


def anomalous_sessions(n: int, seed: int = 1) -> list[list[str]]:
    """Reversed flows, a key from the other flow injected, and a never-seen key (UNK)."""
    rng = random.Random(seed)
    out = []
    for i, session in enumerate(normal_sessions(n, seed)):
        kind = i % 3
        if kind == 0:
            out.append(list(reversed(session)))
        elif kind == 1:
            s = list(session)
            s.insert(rng.randint(1, len(s) - 1), "16" if "12" in s else "12")
            out.append(s)
        else:
            s = list(session)
            s[rng.randint(1, len(s) - 2)] = "99"
            out.append(s)
    return out


def varied_normal_sessions(n: int, seed: int = 0) -> list[list[str]]:
    """Normal sessions with hundreds of distinct orderings (so normal scores spread out, as on HDFS):
    ``10``, then two replicas ``20 21`` and one ``22 23`` interleaved at random (each keeps its own
    order), ``12`` repeated 1-5 times, ``14``."""
    rng = random.Random(seed)
    sessions = []
    for _ in range(n):
        pending = [["20", "21"], ["20", "21"], ["22", "23"]]
        body: list[str] = []
        while pending:
            replica = rng.choice(pending)
            body.append(replica.pop(0))
            if not replica:
                pending.remove(replica)
        sessions.append(["10", *body, *["12"] * rng.randint(1, 5), "14"])
    return sessions
