"""Triton python-backend model: runs the bundle's ``model.onnx`` with ONNX Runtime on the CPU.

``otel-logbert export --triton-backend python`` copies this file to ``<repo>/<model>/<version>/model.py``
beside ``model.onnx``. It is for Triton builds that have only the python backend (such as the one
inside the nvidia-pytriton wheel); a Triton with the ONNX Runtime backend should use the
``onnxruntime`` repository instead, which needs no Python at all.

Contract (the same as the ONNX graph and the onnxruntime repository):

    input   tokens    int64    [batch, seq]   (seq: any length, padded with 0)
    outputs score     float32  [batch]
            evidence  float32  [batch, seq]   (1 = the key was unexpected)

Triton's dynamic batcher hands ``execute`` several requests at once but, unlike the ONNX Runtime
backend, the python backend does not concatenate them: this file does. Requests whose ``tokens``
have the same sequence length (the client pads to length buckets, so most do) run as one ONNX
Runtime call; every other length is its own call. A request that fails gets an error response of
its own; the others in the same ``execute`` are answered normally.

This file runs inside Triton's python-backend stub: it imports only the standard library, numpy,
onnxruntime and ``triton_python_backend_utils`` (provided by the stub), never ``otel_logbert``.
Model config ``parameters`` read here: ``intra_op_thread_count`` (ONNX Runtime threads per model
instance, default 1).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by Triton's python-backend stub

INPUT = "tokens"
OUTPUTS = ("score", "evidence")
MODEL_FILE = "model.onnx"


class TritonPythonModel:
    """One instance per ``instance_group`` entry (``count``); each holds its own ONNX session."""

    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        threads = int(parameters.get("intra_op_thread_count", {}).get("string_value", "1"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = os.path.join(args["model_repository"], args["model_version"], MODEL_FILE)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order."""
        tokens: list[np.ndarray | None] = []
        responses: list[Any] = [None] * len(requests)
        for i, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
            array = tensor.as_numpy() if tensor is not None else None
            if array is None or array.ndim != 2 or array.dtype != np.int64:
                shape = None if array is None else (array.shape, str(array.dtype))
                responses[i] = _error(f"input {INPUT!r} must be int64 [batch, seq], got {shape}")
                tokens.append(None)
            else:
                tokens.append(array)
        by_length: dict[int, list[int]] = {}
        for i, array in enumerate(tokens):
            if array is not None:
                by_length.setdefault(array.shape[1], []).append(i)
        for members in by_length.values():
            batch = np.concatenate([tokens[i] for i in members])  # (sum of batches, seq)
            try:
                score, evidence = self.session.run(list(OUTPUTS), {INPUT: batch})
            except Exception as exc:  # ONNX Runtime raises its own types; answer, never crash
                for i in members:
                    responses[i] = _error(f"ONNX Runtime failed: {exc}")
                continue
            start = 0
            for i in members:
                end = start + tokens[i].shape[0]
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("score", np.ascontiguousarray(score[start:end], dtype=np.float32)),
                    pb_utils.Tensor("evidence", np.ascontiguousarray(evidence[start:end], dtype=np.float32)),
                ])
                start = end
        return responses

    def finalize(self) -> None:
        self.session = None


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
