#!/usr/bin/env bash
# The proto as a contract: `buf lint` (proto/buf.yaml), and `buf breaking`
# (WIRE_JSON: what a compiled v1 client sees on the wire and in JSON)
# against the previous commit's proto/. buf comes from npm
# (@bufbuild/buf, pinned) into target/buf; Node.js and npm must be there.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF_VERSION=1.75.0
buf="$PWD/target/buf/node_modules/.bin/buf"
if ! [ -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "proto_check: npm (Node.js) is needed to install @bufbuild/buf@$BUF_VERSION" >&2
    exit 1
  fi
  echo "proto_check: installing @bufbuild/buf@$BUF_VERSION from npm into target/buf" >&2
  npm install --silent --no-audit --no-fund --prefix target/buf "@bufbuild/buf@$BUF_VERSION" >/dev/null
fi
cd proto
"$buf" lint
echo "proto_check: buf lint clean"
# The previous commit, when this checkout has one (a shallow clone of one
# commit has nothing to compare with, and says so).
if git rev-parse -q --verify HEAD~1 >/dev/null 2>&1; then
  "$buf" breaking --against "$(git rev-parse --show-toplevel)/.git#subdir=proto,ref=HEAD~1"
  echo "proto_check: no breaking change against $(git rev-parse --short HEAD~1) (WIRE_JSON)"
else
  echo "proto_check: no previous commit in this checkout; breaking check not run" >&2
fi
