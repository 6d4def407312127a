#!/usr/bin/env bash
# Build the embedded FerretDB (SQLite) binary into tools/ferretdb/bin/ferretdb; no-op when up to date.
# Needs Go >= 1.24 and access to the Go module proxy (GOPROXY); go.sum pins every module.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$here/bin/ferretdb"
sources=("$here/main.go" "$here/go.mod" "$here/go.sum" "$here/build.sh")

if [[ -x "$bin" && "${FORCE:-0}" != 1 ]]; then
    stale=0
    for src in "${sources[@]}"; do
        [[ "$src" -nt "$bin" ]] && stale=1
    done
    if [[ $stale == 0 ]]; then
        echo "ferretdb: $bin is up to date"
        exit 0
    fi
fi

go_cmd="$(command -v go || true)"
if [[ -z "$go_cmd" && -x /usr/local/go/bin/go ]]; then
    go_cmd=/usr/local/go/bin/go
fi
if [[ -z "$go_cmd" ]]; then
    echo "ferretdb: Go >= 1.24 is required (https://go.dev/dl/)" >&2
    exit 1
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
mkdir -p "$here/bin"
tmp="$(mktemp "$here/bin/.ferretdb.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
echo "ferretdb: building with $("$go_cmd" version)"
(cd "$here" && "$go_cmd" build -trimpath -o "$tmp" .)
chmod 755 "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "ferretdb: built $bin"
