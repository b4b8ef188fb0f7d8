"""Bundles and state files from an untrusted place (``safe_files``): real files and real symlinks.

A symlink that leaves the directory, a name that escapes it, a non-regular file and an oversized file
(sparse, so the test is fast) are refused with one line naming the file; symlinks inside stay fine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otel_logbert import safe_files
from otel_logbert.bundle import load_bundle
from otel_logbert.errors import BundleError, UserError
from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.persistence import FilePersistence
from otel_logbert.scoring.onnx import OnnxScorer
from tests.conftest import make_rule_bundle


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return make_rule_bundle(tmp_path / "bundle")


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_good_bundle_loads_and_symlinks_inside_it_are_fine(bundle_dir: Path) -> None:
    # ConfigMap-style layout: the file is a symlink to a hidden folder inside the bundle.
    hidden = bundle_dir / "..data"
    hidden.mkdir()
    (bundle_dir / "vocab.json").rename(hidden / "vocab.json")
    (bundle_dir / "vocab.json").symlink_to(Path("..data") / "vocab.json")
    bundle = load_bundle(bundle_dir, require_onnx=True)
    assert len(bundle.vocab) > 0
    OnnxScorer(bundle)


def test_the_bundle_directory_itself_may_be_a_symlink(bundle_dir: Path, tmp_path: Path) -> None:
    current = tmp_path / "current"
    current.symlink_to(bundle_dir)
    assert load_bundle(current, require_onnx=True).model == "fastlogad"


@pytest.mark.parametrize("name", ["vocab.json", "threshold.json", "drain3.json", "metadata.json"])
def test_a_symlink_out_of_the_bundle_is_refused(bundle_dir: Path, name: str) -> None:
    (bundle_dir / name).unlink()
    (bundle_dir / name).symlink_to("/etc/passwd")
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle_dir)
    text = _one_line(exc)
    assert text.startswith(f"{bundle_dir / name}: symlink resolves to /etc/passwd, outside ")
    assert "root:" not in text  # nothing of the target is read or shown


def test_a_symlinked_model_out_of_the_bundle_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.onnx"
    (bundle_dir / "model.onnx").rename(elsewhere)
    (bundle_dir / "model.onnx").symlink_to(elsewhere)
    with pytest.raises(BundleError, match=r"model.onnx: symlink resolves to .*elsewhere.onnx, outside"):
        load_bundle(bundle_dir)


def test_a_name_with_dotdot_that_escapes_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("{}")
    with pytest.raises(BundleError) as exc:
        safe_files.read_json(bundle_dir, "../x")
    assert "path resolves to" in _one_line(exc) and "outside" in str(exc.value)
    with pytest.raises(BundleError, match="outside"):
        safe_files.read_json(bundle_dir, "/etc/passwd")
    (bundle_dir / "sub").mkdir()
    assert safe_files.read_json(bundle_dir, "sub/../threshold.json")["threshold"] == 0.5


def test_onnx_external_data_naming_a_file_outside_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    """The one bundle file that names other files is the ONNX graph (external data ``location``)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    (tmp_path / "x").write_bytes(b"\0" * 16)
    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../x"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    (bundle_dir / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(BundleError) as exc:
        OnnxScorer(load_bundle(bundle_dir))
    assert "escapes model directory" in _one_line(exc)


def test_oversized_files_are_refused_before_they_are_read(bundle_dir: Path) -> None:
    vocab = bundle_dir / "vocab.json"
    os.truncate(vocab, safe_files.MAX_JSON_BYTES + 1)  # sparse: no disk, no time
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle_dir)
    assert _one_line(exc) == (f"{vocab}: {safe_files.MAX_JSON_BYTES + 1} bytes, larger than the limit of "
                              f"{safe_files.MAX_JSON_BYTES}; refused")


def test_an_oversized_model_is_refused(bundle_dir: Path) -> None:
    os.truncate(bundle_dir / "model.onnx", safe_files.MAX_MODEL_BYTES + 1)
    with pytest.raises(BundleError, match=r"model.onnx: 2147483649 bytes, larger than the limit"):
        load_bundle(bundle_dir)


def test_a_fifo_or_a_directory_is_refused_without_blocking(bundle_dir: Path) -> None:
    (bundle_dir / "metadata.json").unlink()
    os.mkfifo(bundle_dir / "metadata.json")
    with pytest.raises(BundleError, match=r"metadata.json: not a regular file; refused"):
        load_bundle(bundle_dir)
    (bundle_dir / "metadata.json").unlink()
    (bundle_dir / "metadata.json").mkdir()
    with pytest.raises(BundleError, match=r"metadata.json: not a regular file; refused"):
        load_bundle(bundle_dir)


def test_deeply_nested_json_is_refused_not_a_recursion_error(bundle_dir: Path) -> None:
    (bundle_dir / "metadata.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match=r"metadata.json: JSON nested too deeply"):
        load_bundle(bundle_dir)


def test_parser_state_files_are_checked_too(tmp_path: Path) -> None:
    state = tmp_path / "state" / "drain3.json"
    state.parent.mkdir()
    parser = LogParser()
    parser.parse("user 1 logged in")
    parser.save(state)
    assert LogParser.load(state).cluster_count == 1
    assert FilePersistence(state).load_state() is not None
    state.unlink()
    state.symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match=r"drain3.json: symlink resolves to /etc/passwd"):
        LogParser.load(state)
    with pytest.raises(OSError, match=r"drain3.json: symlink resolves to /etc/passwd"):
        FilePersistence(state).load_state()
    state.unlink()
    state.touch()
    os.truncate(state, safe_files.MAX_JSON_BYTES + 1)
    with pytest.raises(ValueError, match=r"larger than the limit"):
        LogParser.load(state)


def test_learn_mode_state_beside_a_session_file_is_checked(tmp_path: Path) -> None:
    from otel_logbert.sessions.learn import parser_state_path
    from otel_logbert.training.data import read_sessions

    sessions = tmp_path / "sessions.txt"
    sessions.write_text("1 2 3\n1 2\n")
    parser_state_path(sessions).symlink_to("/etc/passwd")
    with pytest.raises(UserError, match=r"drain3.json: symlink resolves to /etc/passwd"):
        read_sessions(sessions)


def test_no_pickle_anywhere_in_the_package() -> None:
    root = Path(safe_files.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in ("import pickle", "jsonpickle", "torch.load(", "allow_pickle=True", "import dill",
                       "import joblib", "persistence_handler="):  # drain3 persists with jsonpickle
            assert needle not in text, f"{path}: {needle}"
