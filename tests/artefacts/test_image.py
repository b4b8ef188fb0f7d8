"""The serving image, built by scripts/build-image.sh (`make image`) with buildah and run with
`buildah run` (chroot isolation, host network; `podman run` does not work on these machines):

* its metadata: numeric non-root user, the `otel-logbert serve` entrypoint, OCI labels;
* its contents: ONNX Runtime but no torch / matplotlib in site-packages, no compiler, under 400 MB;
* it serves: the image's entrypoint with a real bundle and config mounted read-only scores OTLP
  records sent from the host and forwards them to a receiver on the host, writing nothing into the
  image's root filesystem (so it runs with `readOnlyRootFilesystem`).

The first build takes minutes (a Debian base by mmdebstrap, cached in /var/tmp; pip downloads);
later ones reuse buildah's layer cache. Skipped, with the reason, where buildah cannot be installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_logbert import __version__
from tests.artefacts.conftest import EXTRA_ONLY_MODULES, run
from tests.artefacts.serving import assert_scores_traffic, sidecar_config
from tests.conftest import REPO_ROOT, OtlpSink, SidecarProcess

pytestmark = [pytest.mark.image, pytest.mark.integration]

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-image.sh"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-image-tools.sh"
MAX_SERVING_MB = 400
RUN = ("buildah", "run", "--isolation", "chroot", "--network", "host")


@pytest.fixture(scope="session")
def serving_image() -> str:
    """The tag of the serving image, built now (layer cache permitting, quickly)."""
    if not shutil.which("buildah"):
        tried = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
        if tried.returncode != 0:
            pytest.skip(f"buildah not available: {tried.stderr.strip()}")
    run(["bash", str(BUILD_SCRIPT), "serve"], timeout_s=1800)
    return run(["bash", str(BUILD_SCRIPT), "tags"]).stdout.split()[0]


@pytest.fixture
def container(serving_image: str) -> Iterator[str]:
    """A working container of the serving image (removed afterwards)."""
    name = run(["buildah", "from", "--pull=never", serving_image]).stdout.strip()
    yield name
    run(["buildah", "rm", name], check=False)


def inspect(image: str) -> dict:
    return json.loads(run(["buildah", "inspect", "--type", "image", image]).stdout)["OCIv1"]


def in_container(container: str, script: str) -> str:
    return run([*RUN, container, "--", "sh", "-c", script]).stdout


def innermost_child(pid: int) -> int:
    """The deepest descendant of ``pid``: the command `buildah run` started (chroot isolation shares
    the host's PID namespace)."""
    children: dict[int, list[int]] = {}
    for line in run(["ps", "-eo", "pid=,ppid="]).stdout.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    while children.get(pid):
        pid = children[pid][-1]
    return pid


def stop_inside(sidecar: SidecarProcess) -> int:
    """SIGTERM to the sidecar inside the container, as a kubelet sends it to PID 1 (`buildah run`
    itself answers SIGTERM by killing its child, which would test buildah, not the image)."""
    assert sidecar.process is not None
    if sidecar.process.poll() is None:
        os.kill(innermost_child(sidecar.process.pid), signal.SIGTERM)
    try:
        return sidecar.wait(60)
    except subprocess.TimeoutExpired:
        sidecar.stop()  # kills it through buildah
        raise


def test_serving_image_runs_as_numeric_non_root_with_the_serve_entrypoint_and_labels(serving_image: str) -> None:
    config = inspect(serving_image)["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["otel-logbert", "serve"]
    assert config["Cmd"] == ["--config", "/etc/otel-logbert/sidecar.yaml"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_serving_image_has_onnxruntime_but_no_torch_no_compiler_and_is_small(
    serving_image: str, container: str
) -> None:
    site = in_container(container, "ls /opt/otel-logbert/lib/python3*/site-packages").split()
    assert "onnxruntime" in site and "otel_logbert" in site
    assert not [name for name in site if name.split("-")[0] in EXTRA_ONLY_MODULES], site
    assert in_container(container, "id -u; command -v gcc cc c++ clang make || true").split() == ["10001"]
    size_mb = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", serving_image]).stdout) / 1e6
    assert size_mb < MAX_SERVING_MB, f"serving image is {size_mb:.0f} MB"


def test_serving_image_scores_otlp_from_the_host_and_writes_nothing_into_its_root_fs(
    serving_image: str, container: str, fastlogad_bundle: Path, otlp_sink: OtlpSink, tmp_path: Path
) -> None:
    rootfs = Path(run(["buildah", "mount", container]).stdout.strip())
    in_container(container, "true")  # let buildah create its mount points before the baseline
    baseline = tmp_path / "baseline"
    baseline.touch()
    time.sleep(1.1)  # mtime granularity
    # Config and bundle mounted read-only at their host paths, readable by the image's uid 10001 (as a
    # ConfigMap and a volume are in the chart).
    bundle = Path(shutil.copytree(fastlogad_bundle, tmp_path / "models" / "shop"))
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    mounts = ("-v", f"{tmp_path}:{tmp_path}:ro")
    entrypoint = tuple(inspect(serving_image)["config"]["Entrypoint"])
    sidecar = SidecarProcess(sidecar_config(otlp_sink, bundle), tmp_path,
                             program=(*RUN, *mounts, container, "--", *entrypoint))
    try:
        sidecar.start(timeout_s=120)
        assert_scores_traffic(sidecar, otlp_sink, bundle)
    finally:
        assert stop_inside(sidecar) == 0, sidecar.stderr()
    # Files only: `buildah run` itself makes and removes mount points under /run (its mtime changes).
    changed = run(["find", str(rootfs), "-xdev", "-newer", str(baseline), "-not", "-type", "d",
                   "-not", "-path", f"{rootfs}/tmp/*"]).stdout
    assert changed.split() == [], "the sidecar wrote into the image's root filesystem"
    run(["buildah", "umount", container])
