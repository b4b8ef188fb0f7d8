#!/usr/bin/env bash
# Installs what scripts/build-image.sh needs: buildah, podman (for `podman import`) and mmdebstrap,
# from Debian's packages, when one of them is missing. Needs root (apt-get); does nothing when all are
# there. Safe to run again.
set -euo pipefail

missing=()
for tool in buildah podman mmdebstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]} == 0)); then
  echo "image tools: buildah podman mmdebstrap already installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "install-image-tools: ${missing[*]} missing; install them (needs root and apt-get)" >&2
  exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "image tools: installed ${missing[*]}"
