#!/usr/bin/env bash
# host-web and playground tests (suite `web` of ../test.sh): installs the npm packages, builds the
# component module and the playground from BIN, runs in Node the store contract, the shared vectors
# through the component, the parity with BIN's `plan`, the artifact and API tests, then drives the
# served playground in headless Chromium (Debian's /usr/bin/chromium), vectors included.
#
#   bash host-web/test.sh target/release/hereabouts
#
# Ends with "N passed, N failed" (node:test cases plus setup steps); exits non-zero on failure.
# The browser test leaves a screenshot at test-artifacts/playground.png.
set -uo pipefail
bin=${1:?usage: host-web/test.sh PATH/TO/hereabouts}
bin=$(realpath "$bin")
cd "$(dirname "$0")/.."
export HEREABOUTS_BIN=$bin
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

passed=0 failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

step() { # name command…: a setup step counts as one test
  local name=$1; shift
  echo "--- $name"
  if "$@" >"$log/step" 2>&1; then passed=$((passed+1)); tail -n 2 "$log/step"
  else failed=$((failed+1)); cat "$log/step"; echo "--- $name: FAILED"; return 1; fi
}

tests() { # name files…: node:test files; counts their cases
  local name=$1; shift
  echo "--- $name"
  node --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$log/$name.tap" "$@"
  local p f
  p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log/$name.tap" | tail -1)
  f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log/$name.tap" | tail -1)
  [ -z "$p" ] && { p=0; f=$((${f:-0}+1)); echo "--- $name: no test summary"; }
  passed=$((passed+p)); failed=$((failed+${f:-0}))
  grep -o 'browser update.*' "$log/$name.tap" || true
}

finish() { echo; echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

step "npm ci host-web" npm ci --prefix host-web || finish
step "npm ci playground" npm ci --prefix playground || finish
step "build host-web from $bin" node host-web/build.mjs --bin "$bin" || finish
step "build playground" node playground/build.mjs || finish
tests node host-web/test/*.test.mjs
if [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  mkdir -p test-artifacts
  tests browser playground/test/*.test.mjs
  [ -f test-artifacts/playground.png ] && echo "screenshot: test-artifacts/playground.png"
else
  echo "--- browser: ${CHROMIUM:-/usr/bin/chromium} not found (apt-get install chromium)"; failed=$((failed+1))
fi
finish
