"""Offline checks of a Triton model directory against Triton's model-config rules.

``config.pbtxt`` is parsed into Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc.
model_config_pb2``), so unknown field names, wrong value types and bad enum names fail as they would
in the server. On top of the schema, the rules Triton applies when it loads a model and that need no
GPU are checked here (``check_config``); the model files and the ONNX graph's signature are checked
by ``check_model_dir``:

* name: non-empty, equal to the model directory's name;
* platform/backend: ``onnxruntime_onnx``/``onnxruntime`` or ``python``, consistent when both are set;
* max_batch_size >= 0; dynamic batching only with max_batch_size > 0; each preferred batch size in
  1..max_batch_size; max_queue_delay_microseconds set;
* inputs/outputs: unique non-empty names, a data type, rank >= 1, every dim -1 or >= 1; a reshape
  describes the same element count;
* instance_group: count >= 1, kind CPU/GPU/AUTO (python backend: CPU);
* version_policy present; every numbered version directory holds the model file(s);
* model_warmup: batch_size in 1..max_batch_size, one entry per model input with its data type,
  fully specified dims that fit the input's dims, exactly one data source;
* execution accelerators only for onnxruntime, names tensorrt/cuda on GPU, openvino on CPU,
  ``precision_mode`` in FP32/FP16/INT8; TensorRT profile shapes that fit the inputs and batch size;
* the ONNX graph (read with ONNX Runtime): same input/output names and data types as the config,
  rank = config rank + 1 (the batch axis), config dims -1 where the graph's are dynamic.

``tritonclient`` is imported when a check runs (it is in the ``dev`` and ``triton`` extras).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from otel_logbert.errors import UserError

ONNX_PLATFORM = "onnxruntime_onnx"
BACKEND_OF_PLATFORM = {ONNX_PLATFORM: "onnxruntime"}
KNOWN_BACKENDS = ("onnxruntime", "python")
GPU_ACCELERATORS = ("tensorrt", "cuda")
CPU_ACCELERATORS = ("openvino",)
PRECISION_MODES = ("FP32", "FP16", "INT8")
# ONNX Runtime's type names (``NodeArg.type``) for Triton's data types.
ONNX_TYPES = {"TYPE_INT64": "tensor(int64)", "TYPE_FP32": "tensor(float)", "TYPE_FP16": "tensor(float16)",
              "TYPE_INT32": "tensor(int32)", "TYPE_BOOL": "tensor(bool)"}


class TritonConfigError(UserError):
    """A model config Triton would refuse; the message lists every problem found."""


def parse_config(text: str) -> Any:
    """``config.pbtxt`` text -> ``model_config_pb2.ModelConfig``. Raises ``TritonConfigError`` for text
    that is not a valid ModelConfig (unknown field, wrong type, bad enum value)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise TritonConfigError(f"config.pbtxt: not a Triton ModelConfig ({exc})") from None


def check_config(config: Any, directory_name: str | None = None) -> list[str]:
    """Problems of a parsed ``ModelConfig`` under the rules in the module docstring ([] = none)."""
    backend = config.backend or BACKEND_OF_PLATFORM.get(config.platform, "")
    return [
        *_name_and_backend_problems(config, directory_name, backend),
        *_batching_problems(config),
        *_tensor_problems(config),
        *_instance_problems(config, backend),
        *_warmup_problems(config),
        *_accelerator_problems(config, backend),
    ]


def _name_and_backend_problems(config: Any, directory_name: str | None, backend: str) -> list[str]:
    problems: list[str] = []
    if not config.name:
        problems.append("name: empty")
    elif directory_name is not None and config.name != directory_name:
        problems.append(f"name: {config.name!r} differs from its directory {directory_name!r}")
    if config.platform and config.platform not in BACKEND_OF_PLATFORM:
        problems.append(f"platform: {config.platform!r} is not {ONNX_PLATFORM!r}")
    if config.platform and config.backend and BACKEND_OF_PLATFORM.get(config.platform) != config.backend:
        problems.append(f"backend: {config.backend!r} does not match platform {config.platform!r}")
    if backend not in KNOWN_BACKENDS:
        problems.append(f"backend: {backend!r} is not one of {KNOWN_BACKENDS}")
    if not config.HasField("version_policy"):
        problems.append("version_policy: not set")
    return problems


def _batching_problems(config: Any) -> list[str]:
    problems: list[str] = []
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size: {config.max_batch_size} < 0")
    if config.HasField("dynamic_batching"):
        db = config.dynamic_batching
        if config.max_batch_size <= 0:
            problems.append("dynamic_batching: needs max_batch_size > 0")
        for size in db.preferred_batch_size:
            if not 1 <= size <= config.max_batch_size:
                problems.append(f"dynamic_batching.preferred_batch_size {size}: not in 1..max_batch_size "
                                f"({config.max_batch_size})")
        if db.max_queue_delay_microseconds == 0:
            problems.append("dynamic_batching.max_queue_delay_microseconds: not set (0 = never wait)")
    return problems


def _tensor_problems(config: Any) -> list[str]:
    from tritonclient.grpc import model_config_pb2 as pb

    problems: list[str] = []
    for kind, tensors in (("input", config.input), ("output", config.output)):
        names = [t.name for t in tensors]
        if not tensors:
            problems.append(f"{kind}: none")
        if len(set(names)) != len(names):
            problems.append(f"{kind}: duplicate names {names}")
        for t in tensors:
            where = f"{kind} {t.name or '(unnamed)'}"
            if not t.name:
                problems.append(f"{kind}: a tensor without a name")
            if t.data_type == pb.TYPE_INVALID:
                problems.append(f"{where}: data_type missing")
            if not t.dims:
                problems.append(f"{where}: dims empty (rank must be >= 1; use reshape for a scalar)")
            bad = [d for d in t.dims if d == 0 or d < -1]
            if bad:
                problems.append(f"{where}: dims {list(t.dims)} (each must be -1 or >= 1)")
            fixed = t.HasField("reshape") and -1 not in t.dims and -1 not in t.reshape.shape
            if fixed and math.prod(t.dims) != math.prod(t.reshape.shape):
                problems.append(f"{where}: reshape {list(t.reshape.shape)} changes the element count "
                                f"of dims {list(t.dims)}")
    return problems


def _instance_problems(config: Any, backend: str) -> list[str]:
    from tritonclient.grpc import model_config_pb2 as pb

    problems: list[str] = []
    if not config.instance_group:
        problems.append("instance_group: none (Triton would pick one; be explicit)")
    for group in config.instance_group:
        if group.count < 1:
            problems.append(f"instance_group: count {group.count} < 1")
        if backend == "python" and group.kind == pb.ModelInstanceGroup.KIND_GPU:
            problems.append("instance_group: the python model runs ONNX Runtime on the CPU; use KIND_CPU")
        if group.kind == pb.ModelInstanceGroup.KIND_MODEL:
            problems.append("instance_group: KIND_MODEL is not for onnxruntime/python models")
    return problems


def _warmup_problems(config: Any) -> list[str]:
    problems: list[str] = []
    inputs = {t.name: t for t in config.input}
    for warmup in config.model_warmup:
        where = f"model_warmup {warmup.name or '(unnamed)'}"
        if config.max_batch_size > 0 and not 1 <= warmup.batch_size <= config.max_batch_size:
            problems.append(f"{where}: batch_size {warmup.batch_size} not in 1..{config.max_batch_size}")
        if set(warmup.inputs) != set(inputs):
            problems.append(f"{where}: inputs {sorted(warmup.inputs)} != model inputs {sorted(inputs)}")
        for name, data in warmup.inputs.items():
            model_input = inputs.get(name)
            if model_input is None:
                continue
            if data.data_type != model_input.data_type:
                problems.append(f"{where}: {name} data_type differs from the input's")
            if len(data.dims) != len(model_input.dims) or any(
                d < 1 or (m != -1 and d != m) for d, m in zip(data.dims, model_input.dims, strict=False)
            ):
                problems.append(f"{where}: {name} dims {list(data.dims)} do not fit {list(model_input.dims)}")
            if data.WhichOneof("input_data_type") is None:
                problems.append(f"{where}: {name} has no zero_data/random_data/input_data_file")
    return problems


def _accelerator_problems(config: Any, backend: str) -> list[str]:
    problems: list[str] = []
    accelerators = config.optimization.execution_accelerators
    for side, entries, allowed in (
        ("gpu", accelerators.gpu_execution_accelerator, GPU_ACCELERATORS),
        ("cpu", accelerators.cpu_execution_accelerator, CPU_ACCELERATORS),
    ):
        for acc in entries:
            if backend != "onnxruntime":
                problems.append(f"{side}_execution_accelerator {acc.name}: only the onnxruntime backend has them")
            if acc.name not in allowed:
                problems.append(f"{side}_execution_accelerator: {acc.name!r} is not one of {allowed}")
            precision = acc.parameters.get("precision_mode")
            if precision is not None and precision not in PRECISION_MODES:
                problems.append(f"{side}_execution_accelerator {acc.name}: precision_mode {precision!r}")
            workspace = acc.parameters.get("max_workspace_size_bytes")
            if workspace is not None and not workspace.isdigit():
                problems.append(f"{side}_execution_accelerator {acc.name}: max_workspace_size_bytes {workspace!r}")
            problems += _profile_problems(acc.parameters, config)
    return problems


def _profile_problems(parameters: Any, config: Any) -> list[str]:
    """TensorRT optimisation profiles (``trt_profile_{min,opt,max}_shapes``: ``name:AxB,...``): known
    inputs, rank = input rank + batch, min <= opt <= max, max batch <= max_batch_size."""
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    present = [k for k in keys if k in parameters]
    if not present:
        return []
    if len(present) != len(keys):
        return [f"tensorrt: give all of {keys} or none"]
    ranks = {t.name: len(t.dims) + (1 if config.max_batch_size > 0 else 0) for t in config.input}
    shapes: dict[str, list[list[int]]] = {}
    problems = []
    for key in keys:
        for entry in parameters[key].split(","):
            name, _, dims = entry.partition(":")
            try:
                shape = [int(d) for d in dims.split("x")]
            except ValueError:
                problems.append(f"tensorrt {key}: {entry!r} is not name:AxB")
                continue
            if name not in ranks or len(shape) != ranks[name]:
                problems.append(f"tensorrt {key}: {entry!r} does not match an input's rank")
                continue
            shapes.setdefault(name, []).append(shape)
    for name, (low, opt, high) in ((n, s) for n, s in shapes.items() if len(s) == 3):
        if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
            problems.append(f"tensorrt profile of {name}: min {low} <= opt {opt} <= max {high} does not hold")
        if config.max_batch_size > 0 and high[0] > config.max_batch_size:
            problems.append(f"tensorrt profile of {name}: max batch {high[0]} > max_batch_size")
    return problems


def check_onnx_signature(config: Any, onnx_path: Path) -> list[str]:
    """Problems between the config's inputs/outputs and the ONNX graph at ``onnx_path``."""
    import onnxruntime as ort
    from tritonclient.grpc import model_config_pb2 as pb

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph = {arg.name: arg for arg in [*session.get_inputs(), *session.get_outputs()]}
    batch_axis = 1 if config.max_batch_size > 0 else 0
    problems = []
    for kind, tensors, graph_args in (
        ("input", config.input, session.get_inputs()),
        ("output", config.output, session.get_outputs()),
    ):
        if {t.name for t in tensors} != {a.name for a in graph_args}:
            problems.append(f"{kind}s {sorted(t.name for t in tensors)} != ONNX graph's "
                            f"{sorted(a.name for a in graph_args)}")
        for t in tensors:
            arg = graph.get(t.name)
            if arg is None:
                continue
            type_name = pb.DataType.Name(t.data_type)
            if ONNX_TYPES.get(type_name) != arg.type:
                problems.append(f"{kind} {t.name}: {type_name} but the ONNX graph has {arg.type}")
            dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            graph_dims = list(arg.shape)[batch_axis:]
            if len(dims) != len(graph_dims):
                problems.append(f"{kind} {t.name}: rank {len(dims)} (+ batch) but the ONNX graph has "
                                f"shape {list(arg.shape)}")
                continue
            for d, g in zip(dims, graph_dims, strict=True):
                if isinstance(g, int) and d != g:
                    problems.append(f"{kind} {t.name}: dim {d} but the ONNX graph fixes it to {g}")
                if not isinstance(g, int) and d != -1:
                    problems.append(f"{kind} {t.name}: dim {d} but the ONNX graph's is dynamic ({g})")
    return problems


def check_model_dir(model_dir: str | Path) -> Any:
    """Parse and check ``<model_dir>/config.pbtxt`` and its version directories.

    Returns the parsed ``ModelConfig``. Raises ``TritonConfigError`` listing every problem.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.pbtxt"
    if not config_path.exists():
        raise TritonConfigError(f"{config_path}: missing")
    config = parse_config(config_path.read_text())
    problems = check_config(config, model_dir.name)
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        problems.append("no version directory (<model>/1/...)")
    backend = config.backend or BACKEND_OF_PLATFORM.get(config.platform, "")
    for version in versions:
        needed = ["model.onnx"] + (["model.py"] if backend == "python" else [])
        for name in needed:
            if not (version / name).exists():
                problems.append(f"{version.name}/{name}: missing")
        if (version / "model.onnx").exists():
            found = check_onnx_signature(config, version / "model.onnx")
            problems += [f"{version.name}/model.onnx: {p}" for p in found]
    if problems:
        raise TritonConfigError(f"{config_path}: " + "; ".join(problems))
    return config
