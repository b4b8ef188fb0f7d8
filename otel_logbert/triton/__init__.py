"""Triton Inference Server: model repositories from bundles, offline config checks, a local server.

* ``repository``: ``write_triton_repository(bundle_dir, repo_dir, backend=...)`` - what
  ``otel-logbert export --triton-repo`` writes (onnxruntime backend for GPUs, python backend for
  Triton builds without it).
* ``checks``: ``check_model_dir`` - a generated model checked against Triton's ModelConfig schema and
  load-time rules, without a server.
* ``server``: ``TritonServer`` - the tritonserver binary of the nvidia-pytriton wheel, started on
  loopback ports (tests, benchmarks).
* ``model.py``: the python-backend model copied into python repositories (runs inside Triton).

The client side is ``otel_logbert.scoring.triton.TritonScorer``.
"""

from otel_logbert.triton.repository import default_model_name, write_triton_repository

__all__ = ["default_model_name", "write_triton_repository"]
