#!/usr/bin/env bash
# Runs `buf breaking` against the protos of a git ref (default: main, or the previous commit when on main).
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:-}
if [ -z "$ref" ]; then
  if [ "$(git rev-parse --abbrev-ref HEAD)" != main ] && git rev-parse -q --verify main >/dev/null; then ref=main; else ref=HEAD~1; fi
fi
if ! git rev-parse -q --verify "$ref^{commit}" >/dev/null || ! git cat-file -e "$ref:protos" 2>/dev/null; then
  echo "buf breaking: $ref has no protos; nothing to compare"
  exit 0
fi
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git archive "$ref" protos buf.yaml | tar -x -C "$old"
mkdir -p "$old/build" && cp -r build/proto-deps "$old/build/"
.venv/bin/buf build "$old" -o "$old/old.binpb"
.venv/bin/buf build . -o "$old/new.binpb"
# UpdateModelConfigRequest.expected_version gained explicit presence (leaving it out is refused as
# missing); its wire and JSON forms are unchanged, so that cardinality change is allowed.
# textgen.proto and ocr.proto are internal (only the router and the admin service call them, and
# they ship in the same release): their lifecycle RPCs and messages moved to aigw.backend.v1's
# BackendService. Deleting an RPC or a message in these two internal files is allowed; every other
# rule still holds for them, and nothing is waived for the public protos (docs/architecture.md).
internal='"aigw/textgen/v1/textgen.proto","aigw/ocr/v1/ocr.proto"'
allowed='"ignore_only":{"FIELD_SAME_CARDINALITY":["aigw/admin/v1/admin.proto"],"RPC_NO_DELETE":['"$internal"'],"MESSAGE_NO_DELETE":['"$internal"']}'
# admin.proto no longer imports queue.proto: its fields that named queue types name admin's own copies.
# buf flags each as FIELD_SAME_TYPE; tools/buf_moved_types.py lets through only those whose old and
# new types have the same wire and JSON forms, and reports everything else (docs/architecture.md).
config='{"version":"v2","breaking":{"use":["FILE"],'"$allowed"'}}'
status=0
.venv/bin/buf breaking "$old/new.binpb" --against "$old/old.binpb" --config "$config" --error-format json >"$old/findings.json" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 100 ]; then exit "$status"; fi
.venv/bin/python tools/buf_moved_types.py "$old/new.binpb" <"$old/findings.json"
echo "buf breaking: no breaking change against $ref"
