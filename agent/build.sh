#!/bin/sh
# Builds the static agent binary to agent/bin/nullspace-agent and prints its
# path. VERSION (default: git describe) is embedded; GOARCH may be set to
# cross-compile (amd64, arm64).
set -eu
cd "$(dirname "$0")"
VERSION="${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}"
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o bin/nullspace-agent .
echo "$(pwd)/bin/nullspace-agent"
