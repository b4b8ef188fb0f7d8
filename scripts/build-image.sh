#!/usr/bin/env bash
# Builds the otel-logbert images from the Containerfile with buildah, on a machine without a registry
# of base images (see DEVELOPERS.md, "Images"):
#
#   1. a local Debian base image: `mmdebstrap --variant=minbase --include=python3,python3-venv,
#      ca-certificates bookworm` (without docs, man pages, translations) into a tar, cached in
#      $IMAGE_CACHE and reused by every clone (delete it to rebuild), then `podman import` as
#      $BASE_REF (skipped when that image exists);
#   2. `buildah bud --isolation chroot --network host --layers` with the Containerfile's BASE_IMAGE
#      pointing at it, the user pip configuration (`pip config debug`) mounted read-only onto
#      /etc/pip.conf, the system CA certificates, and the pip configuration's local wheel directories
#      (find-links: the CPU torch wheel for the training image) mounted read-only.
#
# Usage: scripts/build-image.sh [serve|train|all]     (default: all)
#        scripts/build-image.sh tags                 prints the two tags, builds nothing
# Tags:  ghcr.io/otel-logbert/otel-logbert:<version>        serving image (the Helm chart's default)
#        ghcr.io/otel-logbert/otel-logbert-train:<version>  training / export image
#        <version> is otel_logbert.__version__.
# Env:   IMAGE_REPOSITORY (ghcr.io/otel-logbert/otel-logbert), IMAGE_CACHE (/var/tmp/otel-logbert-image),
#        BASE_REF (localhost/otel-logbert-base:bookworm), DEBIAN_SUITE (bookworm)
# Prints one `built <tag> in <s>s, <MB> MB` line per image.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGETS="${1:-all}"
IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-ghcr.io/otel-logbert/otel-logbert}"
IMAGE_CACHE="${IMAGE_CACHE:-/var/tmp/otel-logbert-image}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
BASE_REF="${BASE_REF:-localhost/otel-logbert-base:$DEBIAN_SUITE}"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/otel_logbert/__init__.py")"
[[ -n "$VERSION" ]] || { echo "build-image: no __version__ in otel_logbert/__init__.py" >&2; exit 1; }

tag_of() {  # target -> image tag
  if [[ "$1" == train ]]; then echo "$IMAGE_REPOSITORY-train:$VERSION"; else echo "$IMAGE_REPOSITORY:$VERSION"; fi
}

case "$TARGETS" in
  tags) tag_of serve; tag_of train; exit 0 ;;
  all) TARGETS="serve train" ;;
  serve|train) ;;
  *) echo "build-image: unknown target '$TARGETS' (serve, train, all or tags)" >&2; exit 2 ;;
esac

bash "$ROOT/scripts/install-image-tools.sh"

make_base() {
  local tar="$IMAGE_CACHE/debian-$DEBIAN_SUITE-python3-nodoc.tar"
  mkdir -p "$IMAGE_CACHE"
  if [[ ! -s "$tar" ]]; then
    local started=$SECONDS
    # Documentation, manual pages and translations are left out (about 50 MB); licences stay.
    mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      "$DEBIAN_SUITE" "$tar.partial"
    mv "$tar.partial" "$tar"
    echo "base: $tar made in $((SECONDS - started))s"
  fi
  if ! buildah inspect --type image "$BASE_REF" >/dev/null 2>&1; then
    podman import --quiet "$tar" "$BASE_REF" >/dev/null
    echo "base: imported $tar as $BASE_REF"
  fi
}

# The pip configuration files `pip config debug` lists as existing (user scope first), and the
# directories they name as find-links.
pip_conf() {
  python3 -m pip config debug 2>/dev/null | awk '/^user:/{u=1} u && /exists: True/{sub(/^ +/, ""); sub(/, exists: True$/, ""); print; exit}'
}

volumes=()
conf="$(pip_conf || true)"
if [[ -n "$conf" ]]; then
  volumes+=(-v "$conf:/etc/pip.conf:ro")
  for dir in $(python3 -m pip config get global.find-links 2>/dev/null || true); do
    [[ -d "$dir" ]] && volumes+=(-v "$dir:$dir:ro")
  done
fi
[[ -d /etc/ssl/certs ]] && volumes+=(-v /etc/ssl/certs:/etc/ssl/certs:ro)

make_base
for target in $TARGETS; do
  tag="$(tag_of "$target")"
  started=$SECONDS
  buildah bud --quiet --isolation chroot --network host --layers "${volumes[@]}" \
    --build-arg "BASE_IMAGE=$BASE_REF" --build-arg "VERSION=$VERSION" \
    --target "$target" -t "$tag" -f "$ROOT/Containerfile" "$ROOT" >/dev/null
  mb=$(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f", $1 / 1e6}')
  echo "built $tag in $((SECONDS - started))s, $mb MB"
done
