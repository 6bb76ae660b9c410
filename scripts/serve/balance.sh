#!/usr/bin/env bash
# The haproxy recipe (scripts/serve/haproxy.cfg), tested: `weft serve` workers on
# 127.0.0.1:8189 and :8190 sharing one working folder, Debian's haproxy on :8188
# in front, sticky on the ComfyUI client id. Sends BALANCE_PROMPTS prompts (50)
# from BALANCE_CLIENTS concurrent websocket clients (5) through haproxy, first
# with one worker behind it, then with two; checks every result (balance_load.py:
# one history entry per prompt, with images, each a PNG from /view, and no event
# on another client's socket), and prints the throughput of one worker against two.
#
# usage: scripts/serve/balance.sh
# env: WEFT_BIN, WEFT_MODELS_ARGS, WEFT_SERVE_ARGS, WEFT_VENV (as clients.sh),
#      BALANCE_PROMPTS (50), BALANCE_CLIENTS (5)
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROMPTS="${BALANCE_PROMPTS:-50}"
CLIENTS="${BALANCE_CLIENTS:-5}"

ensure_venv || { echo "FAIL setup: pip install -r requirements.txt"; exit 1; }
ensure_models
if ! command -v haproxy >/dev/null; then
  log "installing Debian's haproxy"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq haproxy >&2 || { echo "FAIL setup: apt-get install haproxy"; exit 1; }
fi
for p in 8188 8189 8190; do
  if curl -s -o /dev/null "http://127.0.0.1:$p/" 2>/dev/null; then echo "FAIL setup: port $p is in use"; exit 1; fi
done

RUN="$WEFT_WORK/balance"
rm -rf "$RUN"; mkdir -p "$RUN"
export SERVE_CWD="$RUN/shared"   # both workers: one output/ and input/ folder
SERVER_PID_w1=""; SERVER_PID_w2=""; HAPROXY_PID=""
cleanup() { stop_pid "$HAPROXY_PID"; stop_pid "$SERVER_PID_w1"; stop_pid "$SERVER_PID_w2"; }
trap cleanup EXIT

start_haproxy() { # start_haproxy CFG NAME
  haproxy -c -q -f "$1" || return 1
  haproxy -db -f "$1" >"$RUN/haproxy-$2.log" 2>&1 &
  HAPROXY_PID=$!
  for _ in $(seq 1 40); do
    curl -fsS -o /dev/null http://127.0.0.1:8188/prompt 2>/dev/null && return 0
    sleep 0.25
  done
  log "haproxy did not come up:"; cat "$RUN/haproxy-$2.log" >&2; return 1
}

warm() { # one prompt straight to a worker, so model loading is not timed
  "$WEFT_VENV/bin/python" "$SERVE_DIR/balance_load.py" "http://127.0.0.1:$1" --prompts 1 --clients 1 --label "warm$1" >"$RUN/warm-$1.json" \
    || { log "warm-up on :$1 failed: $(cat "$RUN/warm-$1.json")"; return 1; }
}

fail=0
run_phase() { # run_phase NAME CFG: PROMPTS prompts through haproxy
  start_haproxy "$2" "$1" || return 1
  log "$1: $PROMPTS prompts from $CLIENTS clients through haproxy"
  "$WEFT_VENV/bin/python" "$SERVE_DIR/balance_load.py" http://127.0.0.1:8188 --prompts "$PROMPTS" --clients "$CLIENTS" --label "$1" | tee "$RUN/$1.json"
  local rc=${PIPESTATUS[0]}
  stop_pid "$HAPROXY_PID"; HAPROXY_PID=""
  return "$rc"
}

start_weft 8189 w1 || { echo "FAIL setup: worker 1 did not start"; exit 1; }
warm 8189 || exit 1
grep -v '^ *server w2 ' "$SERVE_DIR/haproxy.cfg" >"$RUN/haproxy-one.cfg"
run_phase one "$RUN/haproxy-one.cfg" || fail=1

start_weft 8190 w2 || { echo "FAIL setup: worker 2 did not start"; exit 1; }
warm 8190 || exit 1
run_phase two "$SERVE_DIR/haproxy.cfg" || fail=1

# which worker served what, from haproxy's log
for phase in one two; do
  [ -f "$RUN/haproxy-$phase.log" ] || continue
  printf '%s: POST /prompt per worker: %s\n' "$phase" \
    "$(grep -E 'POST /(api/)?prompt ' "$RUN/haproxy-$phase.log" | awk '{print $5}' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
done

"$WEFT_VENV/bin/python" - "$RUN/one.json" "$RUN/two.json" "$fail" <<'PY'
import json, os, sys
def load(p):
    try:
        return json.loads(open(p).read().strip().splitlines()[-1])
    except Exception:
        return None
one, two, fail = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3] != "0"
print("== haproxy recipe: one worker against two")
for name, r in (("one worker ", one), ("two workers", two)):
    if r is None:
        print(f"FAIL {name}: no result"); continue
    mark = "PASS" if r["ok"] else "FAIL"
    print(f"{mark} {name}: {r['completed']}/{r['prompts']} prompts from {r['clients']} clients in {r['wall_s']} s"
          f" = {r['prompts_per_s']} prompts/s, mean latency {r['mean_latency_s']} s, {r['error_count']} errors")
    for e in r["errors"]:
        print(f"     {e}")
if one and two and one["prompts_per_s"]:
    print(f"speed-up with two workers: {two['prompts_per_s'] / one['prompts_per_s']:.2f}x ({os.cpu_count()} CPU cores)")
sys.exit(1 if fail or not (one and two and one["ok"] and two["ok"]) else 0)
PY
