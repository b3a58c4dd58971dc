#!/usr/bin/env bash
# One command: builds what is missing and serves the playground on http://127.0.0.1:8080/
# (PORT=… to change). The page runs the component embedded in target/release/hereabouts
# (or $HEREABOUTS_BIN); everything is bundled from npm packages, nothing is loaded from a CDN.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${HEREABOUTS_BIN:-target/release/hereabouts}
if [ ! -x "$bin" ]; then
  rustup target add wasm32-unknown-unknown
  cargo build --release --locked -p hereabouts
fi
[ -d host-web/node_modules ] || npm ci --prefix host-web --no-audit --no-fund
[ -d playground/node_modules ] || npm ci --prefix playground --no-audit --no-fund
node host-web/build.mjs --bin "$bin"
node playground/build.mjs
exec node playground/serve.mjs
