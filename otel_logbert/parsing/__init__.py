"""Log parsing: message -> log key.

- ``masking``: masking presets (drain3 ``MaskingInstruction`` lists) and per-preset Drain parameters;
- ``drain``: ``LogParser`` (Drain3 with a fast serve-time path and plain-JSON state);
- ``raw_sessions``: raw log lines -> sessions of keys, grouped by an id in each line;
- ``vocabulary``: keys -> model token ids;
- ``benchmark``: grouping/parsing accuracy on Loghub-2k (``otel-logbert parse-bench``).
"""
