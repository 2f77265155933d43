#!/usr/bin/env bash
# Build the libcni driver offline from Debian's golang-go and golang-github-appc-cni-dev, statically linked
# (it also runs in a test "node" that holds no libraries at all).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/cnidriver"
cp "$here/cnidriver.go" "$work/src/cnidriver/"
cd "$work/src/cnidriver"
CGO_ENABLED=0 GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOCACHE="$work/cache" GOFLAGS= \
  go build -o "$here/cnidriver" .
echo "$here/cnidriver"
