#!/usr/bin/env bash
# Builds the daemon image without Docker and without a registry (`make image`):
#
#   deploy/image/image.sh engine       podman, runc, mmdebstrap (Debian packages; installed with
#                                      apt-get when missing and run as root)
#   deploy/image/image.sh base         the base image: Debian bookworm minbase + python3,
#                                      python3-venv, ca-certificates by mmdebstrap, imported as
#                                      $IMAGE_BASE (once per machine)
#   deploy/image/image.sh wheelhouse   build/image/wheelhouse: the venv's runtime dependencies
#                                      as wheels (deploy/image/wheelhouse.py; once per lock)
#   deploy/image/image.sh build        all of the above, then `podman build` of $IMAGE with no
#                                      network (layer cache: seconds when only code changed)
#   deploy/image/image.sh podman ARGS  podman with the project's configuration (below)
#
# Podman reads only deploy/image/containers.conf (CONTAINERS_CONF): runc, cgroupfs and explicit
# nofile/nproc limits. Nothing is written to /etc; images live in podman's default store
# (/var/lib/containers/storage for root).
#
# Variables: IMAGE (localhost/lensnet:<version>), IMAGE_BASE (localhost/lensnet-base:bookworm-2),
# PYTHON (.venv/bin/python, which wheelhouse.py runs with), TORCH_INDEX (an index with torch's
# CPU-only wheels, e.g. https://download.pytorch.org/whl/cpu; default: PyPI's CUDA build).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)"
IMAGE="${IMAGE:-localhost/lensnet:$version}"
# The tag changes with the package list below, so a machine holding an older base makes a new one.
IMAGE_BASE="${IMAGE_BASE:-localhost/lensnet-base:bookworm-2}"
PYTHON="${PYTHON:-$repo/.venv/bin/python}"
TORCH_INDEX="${TORCH_INDEX:-}"
WHEELHOUSE="$repo/build/image/wheelhouse"
export CONTAINERS_CONF="$here/containers.conf"

die() { echo "deploy/image/image.sh: $*" >&2; exit 1; }
say() { echo "image: $*" >&2; }

engine() {
  local missing=()
  for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
      die "${missing[*]} not found: install Debian's podman, runc and mmdebstrap" \
        "(apt-get install --no-install-recommends podman runc mmdebstrap) and run again."
    fi
    say "installing ${missing[*]} with apt-get (Debian packages podman runc mmdebstrap)"
    # runc named explicitly: podman depends on crun | runc, and crun refuses hybrid cgroups.
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
      die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      podman runc mmdebstrap >&2 || die "apt-get install podman runc mmdebstrap failed"
  fi
  # The limits of containers.conf must fit under this shell's hard limits, or runc fails.
  local nofile nproc
  nofile="$(sed -n 's/.*"nofile=\([0-9]*\):\([0-9]*\)".*/\2/p' "$CONTAINERS_CONF")"
  nproc="$(sed -n 's/.*"nproc=\([0-9]*\):\([0-9]*\)".*/\2/p' "$CONTAINERS_CONF")"
  [[ -n $nofile && -n $nproc ]] || die "$CONTAINERS_CONF sets no nofile/nproc limits"
  for pair in "nofile $nofile $(ulimit -Hn)" "nproc $nproc $(ulimit -Hu)"; do
    set -- $pair
    if [[ $3 != unlimited && $2 -gt $3 ]]; then
      die "$CONTAINERS_CONF sets $1=$2 above this machine's hard limit $3: lower it there."
    fi
  done
  podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null 2>&1 ||
    die "podman does not work here: $(podman info 2>&1 | tail -n 3)"
}

base() {
  if podman image exists "$IMAGE_BASE"; then
    return
  fi
  say "making $IMAGE_BASE with mmdebstrap (Debian bookworm minbase + python3, python3-venv, libgomp1)"
  local started=$SECONDS
  # Documentation, manual pages and translations are left out (copyright files kept), as in
  # the official slim images. A stable suite gets its -updates and -security archives too.
  # libgomp1: LightGBM's library (the second opinion) links the system's OpenMP runtime.
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --format=tar bookworm - |
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      - "$IMAGE_BASE" >/dev/null || die "making $IMAGE_BASE failed"
  say "$IMAGE_BASE made in $((SECONDS - started)) s"
}

wheelhouse() {
  [[ -x $PYTHON ]] || die "$PYTHON not found: run make install first"
  "$PYTHON" "$here/wheelhouse.py" "$WHEELHOUSE" ${TORCH_INDEX:+--torch-index "$TORCH_INDEX"}
}

build() {
  engine
  base
  wheelhouse
  say "building $IMAGE from $IMAGE_BASE (no network; log: build/image/build.log)"
  local started=$SECONDS log="$repo/build/image/build.log"
  # --network none: the build must need nothing but the context; --pull never: the base is
  # local. --layers (podman's default) keeps the cache a warm rebuild uses.
  # build/image/image.id: the ID of what was just built, for callers that must not run
  # another clone's build of the same tag (the store is shared by the machine).
  if ! (cd "$repo" && podman build --layers --pull=never --network=none \
    --iidfile build/image/image.id \
    -f deploy/image/Dockerfile --ignorefile deploy/image/Dockerfile.dockerignore \
    --build-arg PYTHON_IMAGE="$IMAGE_BASE" -t "$IMAGE" . >"$log" 2>&1); then
    tail -n 40 "$log" >&2
    die "podman build failed (whole log: $log)"
  fi
  say "$IMAGE built in $((SECONDS - started)) s," \
    "$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')"
}

case "${1:-}" in
  engine) engine ;;
  base) engine && base ;;
  wheelhouse) wheelhouse ;;
  build) build ;;
  podman) shift && exec podman "$@" ;;
  *) die "usage: deploy/image/image.sh engine|base|wheelhouse|build|podman ARGS..." ;;
esac
