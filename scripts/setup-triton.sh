#!/usr/bin/env bash
# Installs what the Triton tests and benchmarks need, idempotently, without touching torch or CUDA:
#
#   tritonclient      the gRPC client (scoring.scorer: triton). Installed with --no-deps because its
#                     grpc extra pins protobuf<7 and would downgrade this project's protobuf; its
#                     real dependencies (grpcio, numpy, packaging, protobuf, python-rapidjson) are
#                     the project's own or listed here. tritonclient 2.73's generated code runs on
#                     the newer protobuf runtime (the unit tests parse config.pbtxt with it).
#   tritonserver      Triton 2.51 with only the python backend, shipped inside the nvidia-pytriton
#                     wheel. Unpacked with --no-deps into $TRITON_HOME (default .venv/triton): the
#                     wheel's own pins (numpy<2, ...) must not reach the project's venv, and only its
#                     binaries are used (otel_logbert/triton/server.py starts them).
#   python-env        $TRITON_HOME/python-env: the venv the python-backend stub runs model.py in:
#                     numpy<2 (the stub is built against numpy 1.x; with numpy 2 outputs come back
#                     with the wrong size) and the same onnxruntime version as the project's venv, so
#                     Triton and the embedded scorer run the same kernels.
#
# Usage: scripts/setup-triton.sh            (does nothing when everything is there)
# Env:   VENV=.venv  TRITON_HOME=$VENV/triton
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TRITON_HOME="${TRITON_HOME:-$VENV/triton}"
PY="$VENV/bin/python"
TRITONCLIENT_VERSION="2.73.0"
PYTRITON_VERSION="0.7.0"

[[ -x "$PY" ]] || { echo "setup-triton: $PY not found; run 'make' (or create the venv) first" >&2; exit 1; }
pip_quiet() { "$@" -q --disable-pip-version-check; }

if "$PY" -c "import tritonclient.grpc, rapidjson" 2>/dev/null; then
  echo "tritonclient: $("$PY" -c 'import importlib.metadata as m; print(m.version("tritonclient"))') (already installed)"
else
  pip_quiet "$PY" -m pip install "python-rapidjson>=0.9.1"
  pip_quiet "$PY" -m pip install --no-deps "tritonclient==$TRITONCLIENT_VERSION"
  echo "tritonclient: $TRITONCLIENT_VERSION installed"
fi

if [[ -x "$TRITON_HOME/pytriton/tritonserver/bin/tritonserver" ]]; then
  echo "tritonserver: $TRITON_HOME (already installed)"
else
  pip_quiet "$PY" -m pip install --no-deps --target "$TRITON_HOME" "nvidia-pytriton==$PYTRITON_VERSION"
  echo "tritonserver: nvidia-pytriton $PYTRITON_VERSION unpacked into $TRITON_HOME"
fi

ORT_VERSION="$("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)')"
MODEL_ENV="$TRITON_HOME/python-env"
if [[ -x "$MODEL_ENV/bin/python3" ]] && "$MODEL_ENV/bin/python3" -c "
import numpy, onnxruntime, sys
sys.exit(not (numpy.__version__.startswith('1.') and onnxruntime.__version__ == '$ORT_VERSION'))" 2>/dev/null; then
  echo "python-env: $MODEL_ENV (already installed)"
else
  # Same interpreter as the project's venv: the stub links against its libpython.
  "$PY" -m venv --clear "$MODEL_ENV"
  pip_quiet "$MODEL_ENV/bin/python" -m pip install "numpy<2" "onnxruntime==$ORT_VERSION"
  echo "python-env: numpy<2 + onnxruntime $ORT_VERSION in $MODEL_ENV"
fi
