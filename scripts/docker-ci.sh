#!/usr/bin/env bash
# Prepare a Docker engine and build the ckpt-guard action image on a machine that reaches no
# container registry (CI here). Steps, each skipped when already done:
#   1. install Debian's docker.io, debootstrap and git-lfs (apt-get) when missing;
#   2. start dockerd when no engine answers;
#   3. build a stand-in for `python:3.12-slim` with debootstrap + `docker import` (Debian's
#      python3 + pip, the machine's CA bundle so pip reaches PyPI through this machine's TLS
#      setup); cached as an image and as a tarball under $CKPT_GUARD_CACHE;
#   4. build our Dockerfile with --build-arg BASE_IMAGE=<stand-in>.
# Never fails the caller because Docker is unavailable: it says so loudly, writes the reason to
# $CKPT_GUARD_CACHE/docker-unavailable (tests/docker reads it and skips) and exits 0.
# Set CKPT_GUARD_DOCKER_STRICT=1 to exit non-zero instead.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${CKPT_GUARD_CACHE:-/var/cache/ckpt-guard}
SUITE=${CKPT_GUARD_SUITE:-bookworm}
BASE_TAG=${CKPT_GUARD_BASE_IMAGE:-ckpt-guard-ci-base:$SUITE}
IMAGE_TAG=${CKPT_GUARD_IMAGE:-ckpt-guard-action:ci}
REASON_FILE=$CACHE_DIR/docker-unavailable

log() { printf '[docker-ci] %s\n' "$*" >&2; }

unavailable() {
  log "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  log "DOCKER UNAVAILABLE: $*"
  log "the container test (tests/docker) will be SKIPPED"
  log "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  printf '%s\n' "$*" > "$REASON_FILE"
  if [ "${CKPT_GUARD_DOCKER_STRICT:-0}" = 1 ]; then exit 1; fi
  exit 0
}

mkdir -p "$CACHE_DIR"
rm -f "$REASON_FILE"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

# 1. packages
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v git-lfs >/dev/null || missing+=(git-lfs)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
         "${missing[@]}" >"$CACHE_DIR/apt.log" 2>&1 \
    || unavailable "apt-get install ${missing[*]} failed (see $CACHE_DIR/apt.log)"
fi
export PATH="$PATH:/usr/sbin:/sbin"

# 2. engine
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || unavailable "dockerd is not installed"
  log "starting dockerd (log: $CACHE_DIR/dockerd.log)"
  as_root sh -c "nohup dockerd >'$CACHE_DIR/dockerd.log' 2>&1 &" || unavailable "cannot start dockerd (not root?)"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 \
    || unavailable "dockerd did not come up in 60 s: $(tail -n 3 "$CACHE_DIR/dockerd.log" | tr '\n' ' ')"
fi
log "engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"

# 3. stand-in base image
mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
  [ -n "$uri" ] || uri=$(awk '$1=="deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  log "base image $BASE_TAG cached"
else
  TARBALL=$CACHE_DIR/base-$SUITE.tar
  if [ ! -s "$TARBALL" ]; then
    MIRROR=$(mirror)
    ROOTFS=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    log "debootstrap $SUITE from $MIRROR (a few minutes; log: $CACHE_DIR/debootstrap.log)"
    as_root debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
      || { rm -rf "$ROOTFS"; unavailable "debootstrap failed (see $CACHE_DIR/debootstrap.log)"; }
    # The machine's CAs (TLS-intercepting egress included) so pip inside reaches PyPI, kept
    # across a later update-ca-certificates by also installing them as local CAs.
    if [ -d /usr/local/share/ca-certificates ]; then
      cp -a /usr/local/share/ca-certificates/. "$ROOTFS/usr/local/share/ca-certificates/" 2>/dev/null || true
      chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1 || true
    fi
    for bundle in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
      if [ -n "$bundle" ] && [ -s "$bundle" ]; then cp "$bundle" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"; break; fi
    done
    # Like the official python images: pip may install into the system interpreter.
    rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf python3 "$ROOTFS/usr/bin/python"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$ROOTFS"
  fi
  log "docker import $TARBALL as $BASE_TAG"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    "$TARBALL" "$BASE_TAG" >/dev/null || unavailable "docker import failed"
fi

# 4. our image. pip inside uses this machine's index when one is configured (file:// indexes
#    are local to the host and cannot be used in the build).
build_args=(--build-arg "BASE_IMAGE=$BASE_TAG")
index=${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}
case "$index" in
  http://*|https://*) build_args+=(--build-arg "PIP_INDEX_URL=$index") ;;
esac
log "docker build -t $IMAGE_TAG (${build_args[*]})"
if ! docker build --network host "${build_args[@]}" -t "$IMAGE_TAG" "$ROOT" >"$CACHE_DIR/build.log" 2>&1; then
  tail -n 30 "$CACHE_DIR/build.log" >&2
  log "docker build of the action image FAILED (log: $CACHE_DIR/build.log)"
  exit 1
fi
log "built $IMAGE_TAG ($(docker image inspect "$IMAGE_TAG" --format '{{.Size}}') bytes)"
printf '%s\n' "$BASE_TAG" > "$CACHE_DIR/base-image"
