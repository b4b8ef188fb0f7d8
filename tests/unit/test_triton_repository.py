"""``write_triton_repository`` and the offline model-config checks.

The generated ``config.pbtxt`` is parsed into Triton's own ``ModelConfig`` protobuf
(``tritonclient.grpc.model_config_pb2``: unknown fields or enum values fail the parse) and checked
against the load-time rules of ``otel_logbert.triton.checks``, including the ONNX graph's signature.
The bundle is ``tests/conftest.py``'s ``rule_bundle`` (a real, hand-built ONNX graph with the
models' contract). Broken variants of a good config show that each rule can fail.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as pb  # a dev dependency: missing = failing, never skipped

from otel_logbert.bundle import load_bundle
from otel_logbert.errors import BundleError, UserError
from otel_logbert.triton.checks import TritonConfigError, check_config, check_model_dir, parse_config
from otel_logbert.triton.cli import add_triton_arguments, write_triton_from_args
from otel_logbert.triton.repository import (
    DEFAULT_MAX_QUEUE_DELAY_US,
    PARAM_MODEL_VERSION,
    default_model_name,
    write_triton_repository,
)


@pytest.fixture
def gpu_model(rule_bundle: Path, tmp_path: Path) -> Path:
    return write_triton_repository(rule_bundle, tmp_path / "repo", instances=2)


def test_gpu_config_follows_the_model_config_schema(gpu_model: Path, rule_bundle: Path) -> None:
    config = check_model_dir(gpu_model)  # parses with ModelConfig and applies every rule
    bundle = load_bundle(rule_bundle)
    assert config.name == gpu_model.name == default_model_name(bundle)
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 256
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("tokens", "TYPE_INT64", [-1])
    ]
    outputs = {t.name: t for t in config.output}
    assert pb.DataType.Name(outputs["score"].data_type) == "TYPE_FP32"
    assert list(outputs["score"].dims) == [1] and list(outputs["score"].reshape.shape) == []
    assert list(outputs["evidence"].dims) == [-1]
    assert config.dynamic_batching.max_queue_delay_microseconds == DEFAULT_MAX_QUEUE_DELAY_US
    assert list(config.dynamic_batching.preferred_batch_size) == [64, 128, 256]
    assert [(g.kind, g.count) for g in config.instance_group] == [(pb.ModelInstanceGroup.KIND_GPU, 2)]
    assert config.version_policy.latest.num_versions == 1
    assert [(w.batch_size, list(w.inputs["tokens"].dims)) for w in config.model_warmup] == [(1, [8]), (8, [64])]
    assert config.parameters[PARAM_MODEL_VERSION].string_value == bundle.model_version
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (gpu_model / "1" / "model.onnx").read_bytes() == bundle.onnx_path.read_bytes()
    assert not (gpu_model / "1" / "model.py").exists()


def test_tensorrt_fp16_accelerator(rule_bundle: Path, tmp_path: Path) -> None:
    config = check_model_dir(write_triton_repository(rule_bundle, tmp_path / "repo", fp16=True))
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert int(accelerator.parameters["max_workspace_size_bytes"]) > 0
    assert accelerator.parameters["trt_profile_max_shapes"] == "tokens:256x64"  # max_batch_size x max_len


def test_tensorrt_profile_must_fit_the_batch_size(rule_bundle: Path, tmp_path: Path) -> None:
    model_dir = write_triton_repository(rule_bundle, tmp_path / "repo", tensorrt=True)
    problem = _problems(model_dir, "tokens:256x64", "tokens:512x64")
    assert "max batch 512 > max_batch_size" in problem


def test_python_backend_repository(rule_bundle: Path, tmp_path: Path) -> None:
    model_dir = write_triton_repository(rule_bundle, tmp_path / "repo", "python", model_name="rule", threads=2)
    config = check_model_dir(model_dir)
    assert model_dir.name == config.name == "rule"
    assert config.backend == "python" and not config.platform
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    source = (model_dir / "1" / "model.py").read_text()
    assert "class TritonPythonModel" in source and "otel_logbert" not in source.split('"""', 2)[2]


def test_rewriting_a_version_replaces_it_and_keeps_the_others(rule_bundle: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_triton_repository(rule_bundle, repo, version=1)
    model_dir = write_triton_repository(rule_bundle, repo, version=2, keep_versions=2)
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.pbtxt"]
    assert check_model_dir(model_dir).version_policy.latest.num_versions == 2


def test_batching_off(rule_bundle: Path, tmp_path: Path) -> None:
    config = check_model_dir(write_triton_repository(rule_bundle, tmp_path / "repo", dynamic_batching=False))
    assert not config.HasField("dynamic_batching") and config.max_batch_size == 256


def test_default_model_name_is_stable_and_names_the_bundle(rule_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(rule_bundle)
    name = default_model_name(bundle)
    assert name.startswith("fastlogad-") and name == default_model_name(load_bundle(rule_bundle))
    bundle.model_version = "fastlogad-0123456789ab"
    assert default_model_name(bundle) == "fastlogad-0123456789ab"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preferred_batch_sizes": (64, 512)}, "--preferred-batch-sizes 512"),
        ({"max_batch_size": 0}, "--max-batch-size 0"),
        ({"backend": "python", "fp16": True}, "--tensorrt/--fp16"),
        ({"backend": "tensorflow"}, "--triton-backend"),
        ({"model_name": "a/b"}, "--triton-model-name"),
        ({"instances": 0}, "--instances 0"),
    ],
)
def test_options_triton_would_refuse_are_user_errors(
    rule_bundle: Path, tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        write_triton_repository(rule_bundle, tmp_path / "repo", **options)
    assert not (tmp_path / "repo").exists()


def test_bundle_without_onnx_is_refused(rule_bundle: Path, tmp_path: Path) -> None:
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    for p in rule_bundle.iterdir():
        if p.name != "model.onnx":
            (bundle_dir / p.name).write_bytes(p.read_bytes())
    with pytest.raises(BundleError, match="model.onnx"):
        write_triton_repository(bundle_dir, tmp_path / "repo")


def test_export_flags(rule_bundle: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path)
    add_triton_arguments(parser)
    args = parser.parse_args([
        "--bundle", str(rule_bundle), "--triton-repo", str(tmp_path / "repo"), "--max-queue-delay-us", "500",
        "--preferred-batch-sizes", "16,32", "--instances", "3", "--fp16", "--triton-model-name", "m",
    ])
    config = check_model_dir(write_triton_from_args(args))
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 32]
    assert config.instance_group[0].count == 3
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["precision_mode"] == "FP16"
    with pytest.raises(SystemExit):
        parser.parse_args(["--preferred-batch-sizes", "a,b"])


# --- each rule can fail ---------------------------------------------------------------------------


def _problems(model_dir: Path, old: str, new: str) -> str:
    path = model_dir / "config.pbtxt"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    with pytest.raises(TritonConfigError) as caught:
        check_model_dir(model_dir)
    return str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("max_queue_delay_microseconds: 2000", "max_queue_delay_microsecond: 2000", "not a Triton ModelConfig"),
        ("kind: KIND_GPU", "kind: KIND_TPU", "not a Triton ModelConfig"),
        ("preferred_batch_size: [ 64, 128, 256 ]", "preferred_batch_size: [ 64, 512 ]", "preferred_batch_size 512"),
        ('name: "tokens", data_type: TYPE_INT64', 'name: "tokens", data_type: TYPE_INT32', "TYPE_INT32 but the ONNX"),
        ('name: "tokens"', 'name: "token_ids"', "ONNX graph's"),
        ('name: "evidence", data_type: TYPE_FP32, dims: [ -1 ]', 'name: "evidence", data_type: TYPE_FP32, dims: [ 64 ]',
         "dynamic"),
        ('{ name: "evidence", data_type: TYPE_FP32, dims: [ -1 ] }',
         '{ name: "evidence", data_type: TYPE_FP32, dims: [ -1, 2 ] }', "rank 2"),
        ("version_policy: { latest: { num_versions: 1 } }", "", "version_policy"),
        ("count: 2", "count: 0", "count 0"),
        ("max_batch_size: 256", "max_batch_size: 0", "needs max_batch_size > 0"),
        ("dims: [ 8 ], zero_data: true", "dims: [ -1 ], zero_data: true", "do not fit"),
    ],
)
def test_broken_configs_are_caught(gpu_model: Path, old: str, new: str, problem: str) -> None:
    assert problem in _problems(gpu_model, old, new)


def test_name_must_match_the_directory(gpu_model: Path) -> None:
    renamed = gpu_model.rename(gpu_model.with_name("other"))
    with pytest.raises(TritonConfigError, match="differs from its directory"):
        check_model_dir(renamed)


def test_missing_model_file_is_caught(gpu_model: Path) -> None:
    (gpu_model / "1" / "model.onnx").unlink()
    with pytest.raises(TritonConfigError, match="1/model.onnx: missing"):
        check_model_dir(gpu_model)


def test_accelerator_rules() -> None:
    config = parse_config("""
        name: "m" platform: "onnxruntime_onnx" max_batch_size: 8
        input { name: "tokens" data_type: TYPE_INT64 dims: [ -1 ] }
        output { name: "score" data_type: TYPE_FP32 dims: [ 1 ] }
        instance_group { kind: KIND_GPU count: 1 }
        version_policy { latest { num_versions: 1 } }
        optimization { execution_accelerators { gpu_execution_accelerator {
          name: "tensorrt" parameters { key: "precision_mode" value: "FP8" } } } }
    """)
    assert any("precision_mode 'FP8'" in p for p in check_config(config, "m"))
    config.optimization.execution_accelerators.gpu_execution_accelerator[0].name = "openvino"
    assert any("'openvino' is not one of" in p for p in check_config(config, "m"))
