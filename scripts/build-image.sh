#!/usr/bin/env bash
# Build the pycni image (deploy/Containerfile) with podman.
#   --offline: the build reaches no network. Its base images are made here from Debian packages with
#              mmdebstrap (the machine's apt sources), the Python wheels with this machine's pip (its own
#              index and certificate settings); the wheelhouse is mounted into the build, never copied
#              into the image. Base images already built are reused.
set -euo pipefail

usage() {
  echo "usage: $0 [--tag TAG] [--offline] [--python PYTHON]" >&2
  echo "  --python PYTHON  the interpreter whose pip builds the wheelhouse (--offline; Python 3.11," >&2
  echo "                   as the image's)" >&2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")
tag=pycni:$version
offline=0
python=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --offline) offline=1; shift ;;
    --python) python=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage; exit 2 ;;
  esac
done

podman=$repo/scripts/podman.sh
containerfile=$repo/deploy/Containerfile
args=(build --file "$containerfile" --tag "$tag")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

packages_of() {  # the package list an ARG of the Containerfile names
  sed -n "s/^ARG $1=\"\(.*\)\"/\1/p" "$containerfile"
}

base_image() {  # NAME PACKAGES...: a Debian base image holding these packages, made once
  local name=$1
  shift
  local image
  image=localhost/pycni-base-$name:bookworm-$(echo "$*" | sha256sum | cut -c1-12)
  if ! "$podman" image exists "$image"; then
    local sources=/etc/apt/sources.list.d/debian.sources
    [ -f "$sources" ] || sources=/etc/apt/sources.list
    mmdebstrap --quiet --variant=minbase --include="$(echo "$*" | tr ' ' ,)" \
      --aptopt='Acquire::Check-Valid-Until "false"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      bookworm "$work/$name.tar" "$sources" >&2
    "$podman" import --quiet "$work/$name.tar" "$image" >/dev/null
    rm -f "$work/$name.tar"
  fi
  echo "$image"
}

if [ "$offline" = 1 ]; then
  # shellcheck disable=SC2046
  args+=(--network none --volume "$work/wheels:/mnt:ro"
         --build-arg "BASE=$(base_image runtime $(packages_of RUNTIME_PACKAGES))"
         --build-arg "BUILD_BASE=$(base_image build $(packages_of BUILD_PACKAGES))")
  "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" "$repo[devices,cluster]"
fi
started=$(date +%s)
"$podman" "${args[@]}" "$repo"
echo "pycni: built $tag in $(( $(date +%s) - started )) s," \
     "$("$podman" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
