"""Vocabulary: log keys (event ids or Drain3 cluster ids, as strings) to model token ids.

Token ids 0..3 are reserved (PAD, UNK, MASK, CLS); keys start at ``FIRST_KEY_ID``. A key never seen in
training encodes to UNK, which every model treats as unexpected. The mapping is frozen once trained:
serving never adds keys to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD_ID = 0
UNK_ID = 1
MASK_ID = 2
CLS_ID = 3
FIRST_KEY_ID = 4
SPECIAL_TOKENS = {"[PAD]": PAD_ID, "[UNK]": UNK_ID, "[MASK]": MASK_ID, "[CLS]": CLS_ID}


class Vocabulary:
    """An immutable key -> id mapping. ``len(vocab)`` counts the special tokens too."""

    def __init__(self, keys: Sequence[str]) -> None:
        if len(set(keys)) != len(keys):
            raise ValueError("vocabulary keys must be unique")
        self.keys: tuple[str, ...] = tuple(keys)
        self._ids = {key: FIRST_KEY_ID + i for i, key in enumerate(self.keys)}

    @classmethod
    def from_sessions(cls, sessions: Iterable[Sequence[str]]) -> Vocabulary:
        """Keys ordered by descending frequency, ties by key, so ids are deterministic."""
        counts = Counter(key for session in sessions for key in session)
        return cls([key for key, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))])

    def __len__(self) -> int:
        return FIRST_KEY_ID + len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def id_of(self, key: str) -> int:
        return self._ids.get(key, UNK_ID)

    def encode(self, session: Sequence[str]) -> list[int]:
        """Session of keys -> token ids; unknown keys become ``UNK_ID``."""
        ids = self._ids
        return [ids.get(key, UNK_ID) for key in session]

    def key_of(self, token_id: int) -> str:
        if token_id >= FIRST_KEY_ID:
            return self.keys[token_id - FIRST_KEY_ID]
        return next(name for name, i in SPECIAL_TOKENS.items() if i == token_id)

    def to_json(self) -> dict:
        return {"special_tokens": SPECIAL_TOKENS, "first_key_id": FIRST_KEY_ID, "keys": list(self.keys)}

    @classmethod
    def from_json(cls, data: dict) -> Vocabulary:
        if data.get("first_key_id") != FIRST_KEY_ID or data.get("special_tokens") != SPECIAL_TOKENS:
            raise ValueError("vocabulary uses a different special-token layout")
        return cls([str(k) for k in data["keys"]])
