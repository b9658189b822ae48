#!/bin/sh
# Builds the stand-in image used by the Docker tests (tests/stack_docker.rs):
#   tests/stack-images/build.sh [TAG]     (default TAG: claude-telemetry-standin:test)
# It also builds "<TAG>-crash": the same image with an entry point that exits at once.
# Needs a running Docker engine and a static busybox (Debian: busybox-static). Nothing is pulled.
set -eu
tag="${1:-claude-telemetry-standin:test}"
here="$(cd "$(dirname "$0")" && pwd)"
busybox="${BUSYBOX:-$(command -v busybox || true)}"
if [ -z "$busybox" ]; then
    echo "build.sh: busybox not found (install busybox-static)" >&2
    exit 1
fi
if ! file "$busybox" 2>/dev/null | grep -q 'statically linked'; then
    if command -v file >/dev/null 2>&1; then
        echo "build.sh: $busybox is not statically linked (install busybox-static)" >&2
        exit 1
    fi
fi
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"
cp "$here/Dockerfile" "$here/serve.sh" "$ctx/"
cp -R "$here/www" "$ctx/www"
DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$ctx" >/dev/null
cp "$here/Dockerfile.crash" "$ctx/"
DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE=$tag" --tag "$tag-crash" \
    --file "$ctx/Dockerfile.crash" "$ctx" >/dev/null
echo "$tag"
