"""``export``: write a bundle's ``model.onnx`` (dynamic batch and sequence axes).

The graph is the model's detection forward: ``tokens`` int64 [batch, seq] -> ``score`` float32
[batch], ``evidence`` float32 [batch, seq]. For LogBERT/BERT-LogAnom the top-g test runs inside the
graph, so the output is [B, L] flags, never [B, L, V] logits; for FastLogAD only the discriminator is
exported. Scores of the exported graph are checked against PyTorch before the file is kept.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from otel_logbert.bundle import ONNX_FILE, load_bundle
from otel_logbert.errors import BundleError
from otel_logbert.training.trainer import load_model

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4


def export_onnx(bundle_dir: str | Path) -> Path:
    """Export the bundle's model to ``<bundle>/model.onnx`` and verify it with ONNX Runtime."""
    bundle = load_bundle(bundle_dir)
    model = load_model(bundle)
    out = bundle.path / ONNX_FILE
    tmp = out.with_suffix(".onnx.tmp")
    example = torch.tensor([[bundle.vocab.id_of(k) for k in bundle.vocab.keys[:4]] or [1]], dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=["tokens"],
            output_names=["score", "evidence"],
            dynamic_axes={"tokens": {0: "batch", 1: "seq"}, "score": {0: "batch"}, "evidence": {0: "batch", 1: "seq"}},
            opset_version=OPSET,
            dynamo=False,
        )
    _check_parity(model, tmp, bundle.max_len, len(bundle.vocab))
    tmp.replace(out)
    return out


def _check_parity(model: torch.nn.Module, onnx_path: Path, max_len: int, vocab_size: int) -> None:
    """Random padded batches through both runtimes must agree to ``PARITY_TOLERANCE``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, length in ((1, 1), (3, 17), (5, min(max_len, 64))):
        tokens = rng.integers(1, vocab_size, size=(batch, length), dtype=np.int64)
        tokens[-1, length // 2 :] = 0  # padding
        tokens[:, 0] = np.maximum(tokens[:, 0], 4)
        with torch.no_grad():
            ref_score, ref_evidence = (t.numpy() for t in model(torch.from_numpy(tokens)))
        score, evidence = session.run(["score", "evidence"], {"tokens": tokens})
        if not (np.allclose(score, ref_score, atol=PARITY_TOLERANCE, rtol=PARITY_TOLERANCE)
                and np.allclose(evidence, ref_evidence, atol=PARITY_TOLERANCE)):
            onnx_path.unlink(missing_ok=True)
            raise BundleError(f"{onnx_path}: ONNX and PyTorch scores disagree (max diff "
                              f"{float(np.abs(score - ref_score).max()):.2e}); not exported")
