#!/usr/bin/env bash
# Runs ComfyUI clients that no one here wrote against `weft serve`, and prints
# PASS/FAIL for each:
#   comfy-cli        `comfy run --workflow workflow_api.json --wait` (PyPI comfy-cli)
#   py api-client    comfyui-api-client's websocket_api           (PyPI)
#   py workflow-*    comfyui-workflow-client, async and sync        (PyPI)
#   npm stable-*     @stable-canvas/comfyui-client, ws and polling  (npm)
#   npm saintno      @saintno/comfyui-sdk                           (npm)
#   browser          ComfyUI's own web UI (PyPI comfyui-frontend-package) in
#                    Debian's headless Chromium, driven by playwright-core
# All versions are pinned: requirements.txt, npm/package-lock.json.
#
# usage: scripts/serve/clients.sh [CLIENT ...]   CLIENT: comfy-cli py npm browser (default: all)
# env:
#   WEFT_BIN          the weft binary (default target/debug/weft)
#   WEFT_MODELS_ARGS  model roots for weft (default: --models DIR with the tiny SD 1.5 fixture
#                     copied to DIR/checkpoints/tiny_sd15)
#   WEFT_URL          where the server listens (default http://127.0.0.1:8188)
#   WEFT_START=0      use a server already running at WEFT_URL instead of starting one
#                     (it must serve the frontend for the browser test)
#   WEFT_SERVE_ARGS   more arguments for `weft serve`
#   WEFT_VENV         the venv for the Python clients (default /tmp/weft-serve-venv)
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

export WEFT_URL="${WEFT_URL:-http://127.0.0.1:8188}"
PORT="${WEFT_URL##*:}"; PORT="${PORT%%/*}"
WANT=("$@"); [ ${#WANT[@]} -gt 0 ] || WANT=(comfy-cli py npm browser)
wants() { local w; for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

ensure_venv || { echo "FAIL setup: pip install -r requirements.txt"; exit 1; }
if wants npm || wants browser; then ensure_npm || { echo "FAIL setup: npm ci"; exit 1; }; fi
if wants browser; then ensure_chromium || { echo "FAIL setup: apt-get install chromium"; exit 1; }; fi
ensure_models
FRONTEND="$(frontend_dir)"

SERVER_PID_main=""
cleanup() { stop_pid "$SERVER_PID_main"; }
trap cleanup EXIT
if [ "${WEFT_START:-1}" != 0 ]; then
  if curl -fsS -o /dev/null "$WEFT_URL/object_info" 2>/dev/null; then
    echo "FAIL setup: something already answers at $WEFT_URL (stop it, or set WEFT_START=0 to use it)"; exit 1
  fi
  start_weft "$PORT" main --frontend "$FRONTEND" || { echo "FAIL setup: weft serve did not start"; exit 1; }
fi

RESULTS=()
record() { # record NAME RC OUTPUT-FILE: keeps the PASS/FAIL lines, else one from the exit code
  local name="$1" rc="$2" out="$3" lines
  # the PASS/FAIL lines, with the indented lines that follow a FAIL
  lines="$(awk '/^(PASS|FAIL) /{keep=1; print; next} keep && /^  /{print; next} {keep=0}' "$out")"
  if [ -z "$lines" ]; then
    if [ "$rc" = 0 ]; then lines="PASS $name"; else lines="FAIL $name (exit $rc): $(tail -n 5 "$out" | tr '\n' ' ')"; fi
  elif [ "$rc" != 0 ] && ! grep -q '^FAIL ' <<<"$lines"; then
    lines+=$'\n'"FAIL $name (exit $rc)"
  fi
  RESULTS+=("$lines")
}
LOGS="$WEFT_WORK/client-logs"; mkdir -p "$LOGS"

if wants comfy-cli; then
  log "comfy-cli: comfy run --workflow workflow_api.json --wait"
  out="$LOGS/comfy-cli.log"
  (
    export HOME="$WEFT_WORK/comfy-cli-home"; mkdir -p "$HOME"   # its config and job files, and no telemetry prompt
    "$WEFT_VENV/bin/comfy" --skip-prompt tracking disable >/dev/null 2>&1
    wf="$WEFT_WORK/comfy-cli-workflow.json"
    "$WEFT_VENV/bin/python" - "$SERVE_DIR/workflow_api.json" "$wf" <<'PY'
import json, os, sys
w = json.load(open(sys.argv[1])); w["4"]["inputs"]["ckpt_name"] = os.environ["WEFT_CKPT"]; w["3"]["inputs"]["seed"] = 301
json.dump(w, open(sys.argv[2], "w"))
PY
    host="${WEFT_URL#*://}"; host="${host%%:*}"
    timeout 300 "$WEFT_VENV/bin/comfy" --skip-prompt --json run --workflow "$wf" --host "$host" --port "$PORT" --wait --timeout 120 >"$LOGS/comfy-cli.json" 2>"$LOGS/comfy-cli.stderr"
    rc=$?
    "$WEFT_VENV/bin/python" - "$LOGS/comfy-cli.json" "$rc" <<'PY'
import json, sys, urllib.request
path, rc = sys.argv[1], sys.argv[2]
text = open(path).read()
try:
    env = json.loads(text.strip().splitlines()[-1])
except Exception:
    print(f"FAIL comfy-cli (exit {rc}): no JSON envelope: {text[-500:]!r}"); sys.exit(1)
if not env.get("ok"):
    print(f"FAIL comfy-cli (exit {rc}): {json.dumps(env.get('error'))[:800]}"); sys.exit(1)
urls = env["data"].get("outputs") or []
if not urls:
    print(f"FAIL comfy-cli: completed but no outputs: {json.dumps(env['data'])[:500]}"); sys.exit(1)
for u in urls:
    body = urllib.request.urlopen(u, timeout=30).read()
    if not body.startswith(b"\x89PNG\r\n\x1a\n"):
        print(f"FAIL comfy-cli: {u} is not a PNG"); sys.exit(1)
d = env["data"]
print(f"PASS comfy-cli ({d.get('elapsed_seconds', 0) * 1000:.0f} ms): prompt {d['prompt_id']}, {len(urls)} image(s), executed {d.get('executed_node_ids')}")
PY
  ) >"$out" 2>&1
  record comfy-cli $? "$out"
fi

if wants py; then
  log "Python clients: comfyui-api-client, comfyui-workflow-client"
  out="$LOGS/py.log"
  timeout 600 "$WEFT_VENV/bin/python" "$SERVE_DIR/py_clients.py" >"$out" 2>&1
  record py $? "$out"
fi

if wants npm; then
  log "npm clients: @stable-canvas/comfyui-client, @saintno/comfyui-sdk"
  out="$LOGS/npm.log"
  (cd "$SERVE_DIR/npm" && timeout 600 node sdk_clients.mjs) >"$out" 2>&1
  record npm $? "$out"
fi

if wants browser; then
  log "browser: ComfyUI's frontend $("$WEFT_VENV/bin/python" -c 'import comfyui_frontend_package as p; print(p.__version__)') in headless Chromium"
  out="$LOGS/browser.log"
  (cd "$SERVE_DIR/npm" && SCREENSHOT="${SCREENSHOT:-/tmp/weft-browser.png}" timeout 600 node browser.mjs) >"$out" 2>&1
  record browser $? "$out"
fi

echo "== weft serve against real ComfyUI clients ($WEFT_URL); logs in $LOGS"
fail=0
for r in "${RESULTS[@]}"; do
  echo "$r"
  grep -q '^FAIL ' <<<"$r" && fail=1
done
exit $fail
