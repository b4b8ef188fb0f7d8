"""Triton model repository from a bundle: ``config.pbtxt`` + ``<version>/model.onnx`` per model.

    write_triton_repository("bundles/hdfs-fastlogad", "model_repository")                 # GPU
    write_triton_repository("bundles/hdfs-fastlogad", "model_repository", backend="python")

Layout written (other models already in ``repo_dir`` are left alone; a model's other versions too)::

    <repo_dir>/<model_name>/config.pbtxt
    <repo_dir>/<model_name>/<version>/model.onnx
    <repo_dir>/<model_name>/<version>/model.py        (backend="python" only)

Two backends, one contract (input ``tokens`` int64 [batch, seq], outputs ``score`` float32 [batch]
and ``evidence`` float32 [batch, seq]; the batch axis is Triton's, the sequence axis is ``-1``):

* ``onnxruntime`` (production, GPU): ``platform: "onnxruntime_onnx"``, ``instance_group`` KIND_GPU,
  optionally ONNX Runtime's TensorRT execution accelerator, in FP32 or FP16.
* ``python``: the same ``model.onnx`` run by ``model.py`` with ONNX Runtime on the CPU, for Triton
  builds that have only the python backend (the one the tests and benchmarks run here).

The model name defaults to ``default_model_name(bundle)``: the bundle's model plus the digest of its
weights (``fastlogad-081589a1d583``), stable across exports of the same bundle and distinct across
bundles; the sidecar's ``scoring.triton.model_name: null`` resolves to the same name.

Every config carries the bundle's identity in ``parameters`` (``otel_logbert.model_version``,
``otel_logbert.max_len``) so that ``TritonScorer`` can refuse a model that is not the bundle it
encodes sessions for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from otel_logbert.bundle import CONFIG_FILE, ONNX_FILE, VOCAB_FILE, Bundle, load_bundle
from otel_logbert.errors import UserError

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "python")
CONFIG_NAME = "config.pbtxt"
PYTHON_MODEL_FILE = "model.py"

# Defaults, each a flag of `otel-logbert export` (see docs/triton.md for how to choose them).
DEFAULT_MAX_BATCH_SIZE = 256
# Sessions are already batched by the sidecar (scoring.batch_timeout_ms, 20 ms by default), so
# Triton only has to merge requests that arrive together from several sidecars or lanes: 2 ms adds
# a tenth of the sidecar's own wait and lets concurrent requests of the same padded length meet.
DEFAULT_MAX_QUEUE_DELAY_US = 2000
# A batch that reaches one of these sizes runs at once, without waiting for the queue delay.
DEFAULT_PREFERRED_BATCH_SIZES = (64, 128, 256)
DEFAULT_INSTANCES = 1
DEFAULT_VERSION = 1
# Versions Triton serves at once (version_policy latest): 1 = only the newest directory.
DEFAULT_KEEP_VERSIONS = 1
# ONNX Runtime intra-op threads per instance of the python backend (the CPU path).
DEFAULT_THREADS = 1
# TensorRT's scratch space per engine.
TENSORRT_WORKSPACE_BYTES = 1 << 30
# Warm-up shapes (batch, seq); seq -1 = the bundle's max_len. Triton runs them before it reports
# the model ready, so the first real request does not pay for lazy initialisation (and, with
# TensorRT, for building the engine).
WARMUP_SHAPES = ((1, 8), (8, -1))

PARAM_MODEL_VERSION = "otel_logbert.model_version"
PARAM_MAX_LEN = "otel_logbert.max_len"

_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RepositoryOptions:
    """What ``write_triton_repository`` writes besides the bundle's own facts."""

    backend: str = "onnxruntime"
    model_name: str | None = None
    version: int = DEFAULT_VERSION
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = DEFAULT_PREFERRED_BATCH_SIZES
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    instances: int = DEFAULT_INSTANCES
    tensorrt: bool = False
    fp16: bool = False
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    threads: int = DEFAULT_THREADS

    def validate(self) -> None:
        """Raise ``UserError`` (one line, naming the flag) for values Triton would refuse."""
        if self.backend not in BACKENDS:
            raise UserError(f"--triton-backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.model_name is not None and (not self.model_name or _NAME_OK.search(self.model_name)):
            raise UserError(f"--triton-model-name {self.model_name!r}: use letters, digits, '_', '-', '.'")
        for flag, value, low in (
            ("--triton-version", self.version, 1),
            ("--max-batch-size", self.max_batch_size, 1),
            ("--max-queue-delay-us", self.max_queue_delay_us, 0),
            ("--instances", self.instances, 1),
            ("--keep-versions", self.keep_versions, 1),
            ("--triton-threads", self.threads, 0),
        ):
            if value < low:
                raise UserError(f"{flag} {value}: must be >= {low}")
        for size in self.preferred_batch_sizes:
            if not 1 <= size <= self.max_batch_size:
                raise UserError(
                    f"--preferred-batch-sizes {size}: must be between 1 and --max-batch-size {self.max_batch_size}"
                )
        if self.backend == "python" and (self.tensorrt or self.fp16):
            raise UserError("--tensorrt/--fp16: only with --triton-backend onnxruntime (GPU)")


def default_model_name(bundle: Bundle) -> str:
    """``<model>-<digest>``: the bundle's model and the weights digest from its model version, or a
    digest of ``config.json`` + ``vocab.json`` when the version carries none."""
    prefix = f"{bundle.model}-"
    if bundle.model_version.startswith(prefix) and len(bundle.model_version) > len(prefix):
        suffix = bundle.model_version[len(prefix):]
    else:
        digest = hashlib.sha256()
        for name in (CONFIG_FILE, VOCAB_FILE):
            digest.update((bundle.path / name).read_bytes())
        suffix = digest.hexdigest()[:12]
    return _NAME_OK.sub("_", f"{bundle.model}-{suffix}")


def write_triton_repository(
    bundle_dir: str | Path,
    repo_dir: str | Path,
    backend: str = "onnxruntime",
    *,
    model_name: str | None = None,
    version: int = DEFAULT_VERSION,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    dynamic_batching: bool = True,
    preferred_batch_sizes: Sequence[int] = DEFAULT_PREFERRED_BATCH_SIZES,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instances: int = DEFAULT_INSTANCES,
    tensorrt: bool = False,
    fp16: bool = False,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    threads: int = DEFAULT_THREADS,
) -> Path:
    """Write the bundle's model into the Triton repository ``repo_dir``; returns the model directory.

    The bundle must hold ``model.onnx`` (run ``export_onnx`` first). ``fp16`` implies ``tensorrt``
    (ONNX Runtime reaches FP16 through TensorRT's ``precision_mode``). The default preferred batch
    sizes above ``max_batch_size`` are dropped; given ones must fit. Raises ``BundleError`` for a
    bundle without ``model.onnx`` and ``UserError`` for options Triton would refuse. The config is
    checked against Triton's model config schema when tritonclient is installed (``triton.checks``).
    """
    options = RepositoryOptions(
        backend=backend,
        model_name=model_name,
        version=version,
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        preferred_batch_sizes=_preferred(preferred_batch_sizes, max_batch_size),
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        tensorrt=tensorrt or fp16,
        fp16=fp16,
        keep_versions=keep_versions,
        threads=threads,
    )
    options.validate()
    bundle = load_bundle(bundle_dir, require_onnx=True)
    name = options.model_name or default_model_name(bundle)
    model_dir = Path(repo_dir) / name
    version_dir = model_dir / str(options.version)
    staging = model_dir / f".{options.version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(bundle.onnx_path, staging / ONNX_FILE)
    if options.backend == "python":
        shutil.copy2(Path(__file__).with_name(PYTHON_MODEL_FILE), staging / PYTHON_MODEL_FILE)
    # Replace the version directory in one step, so a polling Triton never sees half of it.
    if version_dir.exists():
        shutil.rmtree(version_dir)
    os.replace(staging, version_dir)
    config_path = model_dir / CONFIG_NAME
    tmp = config_path.with_suffix(".pbtxt.tmp")
    tmp.write_text(render_config(name, bundle, options))
    os.replace(tmp, config_path)
    _check_if_possible(model_dir)
    log.info("triton model written", extra={"model_dir": str(model_dir), "backend": options.backend})
    return model_dir


def _preferred(sizes: Sequence[int], max_batch_size: int) -> tuple[int, ...]:
    if tuple(sizes) == DEFAULT_PREFERRED_BATCH_SIZES:
        sizes = [s for s in sizes if s <= max_batch_size]
    return tuple(sorted(set(sizes)))


def _check_if_possible(model_dir: Path) -> None:
    try:
        from otel_logbert.triton.checks import check_model_dir
    except ImportError:  # pragma: no cover - checks import tritonclient lazily; kept for safety
        return
    try:
        check_model_dir(model_dir)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("tritonclient"):
            log.debug("tritonclient not installed: config.pbtxt not checked against the schema")
            return
        raise


def render_config(name: str, bundle: Bundle, options: RepositoryOptions) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``), commented."""
    max_len = bundle.max_len
    lines = [
        f"# Generated by `otel-logbert export` from bundle {bundle.model_version} ({bundle.model}).",
        "# Contract: tokens int64 [batch, seq] -> score float32 [batch], evidence float32 [batch, seq].",
        f'name: "{name}"',
    ]
    if options.backend == "onnxruntime":
        lines += ['platform: "onnxruntime_onnx"']
    else:
        lines += ['backend: "python"']
    lines += [
        f"max_batch_size: {options.max_batch_size}",
        "",
        "# Dims exclude the batch axis; -1 = any sequence length (the client pads to multiples of 8, up to",
        f"# max_len {max_len}, so requests of similar length share a shape and can be batched together).",
        "input [",
        '  { name: "tokens", data_type: TYPE_INT64, dims: [ -1 ] }',
        "]",
        "output [",
        '  { name: "score", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] } },',
        '  { name: "evidence", data_type: TYPE_FP32, dims: [ -1 ] }',
        "]",
        "",
        f"version_policy: {{ latest: {{ num_versions: {options.keep_versions} }} }}",
        "",
    ]
    if options.dynamic_batching:
        sizes = ", ".join(str(s) for s in options.preferred_batch_sizes)
        lines += [
            "# Requests waiting together (same padded length) are merged up to max_batch_size. A batch that",
            "# reaches a preferred size runs at once; otherwise the oldest request waits at most",
            f"# max_queue_delay_microseconds ({options.max_queue_delay_us} us) for company.",
            "dynamic_batching {",
        ]
        if sizes:
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines += [f"  max_queue_delay_microseconds: {options.max_queue_delay_us}", "}", ""]
    kind = "KIND_GPU" if options.backend == "onnxruntime" else "KIND_CPU"
    lines += [
        "# Copies of the model that run at once (per GPU for KIND_GPU).",
        f"instance_group [ {{ count: {options.instances}, kind: {kind} }} ]",
        "",
    ]
    if options.tensorrt:
        precision = "FP16" if options.fp16 else "FP32"
        opt_batch = max(options.preferred_batch_sizes or (options.max_batch_size,))
        lines += [
            "# ONNX Runtime hands the graph to TensorRT (CUDA for what TensorRT cannot run). One optimisation",
            "# profile covers every shape the client sends (batch 1..max_batch_size, seq 1..max_len), so the",
            "# engine is built once, at load time by the warm-up below, and never rebuilt for a new shape.",
            "optimization { execution_accelerators {",
            "  gpu_execution_accelerator: [ {",
            '    name: "tensorrt"',
            f'    parameters {{ key: "precision_mode", value: "{precision}" }}',
            f'    parameters {{ key: "max_workspace_size_bytes", value: "{TENSORRT_WORKSPACE_BYTES}" }}',
            '    parameters { key: "trt_profile_min_shapes", value: "tokens:1x1" }',
            f'    parameters {{ key: "trt_profile_opt_shapes", value: "tokens:{opt_batch}x{max_len}" }}',
            f'    parameters {{ key: "trt_profile_max_shapes", value: "tokens:{options.max_batch_size}x{max_len}" }}',
            "  } ]",
            "} }",
            "",
        ]
    parameters = {PARAM_MODEL_VERSION: bundle.model_version, PARAM_MAX_LEN: str(max_len)}
    if options.backend == "python":
        parameters["intra_op_thread_count"] = str(options.threads)
    lines.append("parameters [")
    lines.append(",\n".join(
        f'  {{ key: "{key}", value: {{ string_value: "{value}" }} }}' for key, value in parameters.items()
    ))
    lines += ["]", "", "# Run before the model is reported ready (all-padding tokens; only the shapes matter).",
              "model_warmup ["]
    warmups = []
    for batch, seq in WARMUP_SHAPES:
        batch = min(batch, options.max_batch_size)
        seq = max_len if seq == -1 else min(seq, max_len)
        warmups.append(
            f'  {{ name: "b{batch}_l{seq}", batch_size: {batch}, inputs: {{ key: "tokens", value: '
            f"{{ data_type: TYPE_INT64, dims: [ {seq} ], zero_data: true }} }} }}"
        )
    lines.append(",\n".join(warmups))
    lines += ["]", ""]
    return "\n".join(lines)
