"""The chart's images: the sidecar's default is exactly the serving image `make image` tags
(scripts/build-image.sh), `image.repository` / `image.tag` move it to another registry, and Triton
keeps the stock NVIDIA image with the model repository brought by the chart's PVC or init container."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import REPO
from .test_helm_chart import by_kind, docs, render

BUILD_SCRIPT = REPO / "scripts" / "build-image.sh"


def built_tags() -> list[str]:
    """The tags `make image` gives (serving first), from the build script itself."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT), "tags"], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.split()


def containers(objs: list[dict], name: str) -> dict[str, dict]:
    """Containers (init containers too) of the Deployment called ``name``, by container name."""
    (deployment,) = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == name]
    spec = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def pod_volumes(objs: list[dict], name: str) -> dict[str, dict]:
    (deployment,) = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == name]
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_default_values_use_the_serving_image_make_image_tags(tools) -> None:
    serving, training = built_tags()
    assert serving.startswith("ghcr.io/otel-logbert/otel-logbert:")
    sidecar = containers(docs(render(tools, None)), "rel-otel-logbert")["otel-logbert"]
    assert sidecar["image"] == serving
    assert training == serving.replace(":", "-train:", 1)
    assert sidecar["command"] + sidecar["args"] == [
        "otel-logbert", "serve", "--config", "/etc/otel-logbert/sidecar.yaml"]


def test_collector_pod_mode_uses_the_same_image(tools) -> None:
    objs = docs(render(tools, REPO / "helm" / "ci" / "sidecar-in-collector-pod.yaml"))
    images = {c["image"] for d in by_kind(objs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    assert built_tags()[0] in images


def test_image_repository_and_tag_are_values(tools) -> None:
    objs = docs(render(tools, None, "--set", "image.repository=registry.example.com/obs/otel-logbert"))
    assert containers(objs, "rel-otel-logbert")["otel-logbert"]["image"] == (
        "registry.example.com/obs/otel-logbert:" + built_tags()[0].rsplit(":", 1)[1])
    objs = docs(render(tools, None, "--set", "image.repository=r.example.com/x", "--set", "image.tag=dev-1"))
    assert containers(objs, "rel-otel-logbert")["otel-logbert"]["image"] == "r.example.com/x:dev-1"


@pytest.mark.parametrize("source", ["pvc", "init"])
def test_triton_keeps_the_nvidia_image_and_gets_the_repository_from_the_models_volume(tools, source: str) -> None:
    objs = docs(render(tools, None, "--set", "triton.enabled=true", "--set", f"models.source={source}"))
    triton_pod = containers(objs, "rel-otel-logbert-triton")
    triton = triton_pod["triton"]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:25.01-py3"
    assert "--model-repository=/models/model_repository" in triton["args"]
    (mount,) = [m for m in triton["volumeMounts"] if m["name"] == "models"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/models", True)
    models = pod_volumes(objs, "rel-otel-logbert-triton")["models"]
    if source == "pvc":  # the claim the sidecar reads its bundle from, read-only in both pods
        assert models["persistentVolumeClaim"] == {"claimName": "rel-otel-logbert-models", "readOnly": True}
        assert set(triton_pod) == {"triton"}
        assert pod_volumes(objs, "rel-otel-logbert")["models"] == models
    else:  # an emptyDir the init container fills before Triton starts
        assert "emptyDir" in models
        fetch = triton_pod["fetch-models"]
        assert fetch["image"] == "curlimages/curl:8.11.1"
        assert {"name": "models", "mountPath": "/models"} in fetch["volumeMounts"]
