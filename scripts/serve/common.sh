# Shared by clients.sh and balance.sh: installs the pinned clients, lays out a
# model root with the tiny SD 1.5 fixture, and starts/stops `weft serve`.
# shellcheck shell=bash

SERVE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SERVE_DIR/../.." && pwd)"
WEFT_BIN="${WEFT_BIN:-$REPO/target/debug/weft}"
case "$WEFT_BIN" in /*) ;; *) WEFT_BIN="$REPO/$WEFT_BIN" ;; esac
WEFT_VENV="${WEFT_VENV:-${TMPDIR:-/tmp}/weft-serve-venv}"
WEFT_WORK="${WEFT_WORK:-${TMPDIR:-/tmp}/weft-serve-work}"
# The tiny random-weight SD 1.5 (diffusers layout) that cli/tests/sd_graphs.rs runs,
# put under checkpoints/ so that ckpt_name "tiny_sd15" names it.
WEFT_MODELS_ROOT="${WEFT_MODELS_ROOT:-$WEFT_WORK/models}"
WEFT_MODELS_ARGS="${WEFT_MODELS_ARGS:---models $WEFT_MODELS_ROOT}"
export WEFT_CKPT="${WEFT_CKPT:-tiny_sd15}"

log() { printf '[serve] %s\n' "$*" >&2; }

# The venv with the pinned Python clients and the frontend; reinstalled when
# requirements.txt changes.
ensure_venv() {
  local stamp="$WEFT_VENV/.requirements.sha256" want
  want="$(sha256sum "$SERVE_DIR/requirements.txt" | cut -d' ' -f1)"
  if [ ! -x "$WEFT_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing the pinned Python clients into $WEFT_VENV"
    python3 -m venv "$WEFT_VENV"
    "$WEFT_VENV/bin/pip" install -q --disable-pip-version-check -r "$SERVE_DIR/requirements.txt"
    echo "$want" >"$stamp"
  fi
}

# The frontend's static folder inside the venv (pip package comfyui-frontend-package).
frontend_dir() {
  "$WEFT_VENV/bin/python" -c 'import comfyui_frontend_package as p, os; print(os.path.join(os.path.dirname(p.__file__), "static"))'
}

ensure_npm() {
  if [ ! -d "$SERVE_DIR/npm/node_modules/playwright-core" ] || [ "$SERVE_DIR/npm/package-lock.json" -nt "$SERVE_DIR/npm/node_modules/.package-lock.json" ]; then
    log "installing the pinned npm clients (npm ci)"
    (cd "$SERVE_DIR/npm" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

ensure_chromium() {
  if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    log "installing Debian's chromium"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq chromium >&2
  fi
}

ensure_models() {
  local dst="$WEFT_MODELS_ROOT/checkpoints/tiny_sd15"
  if [ ! -f "$dst/model_index.json" ]; then
    mkdir -p "$WEFT_MODELS_ROOT/checkpoints"
    cp -r "$REPO/models/tests/fixtures/sd/tiny_sd15" "$dst"
  fi
}

# start_weft PORT NAME [extra serve args...]: starts `weft serve` on 127.0.0.1:PORT in
# the folder SERVE_CWD (default: its own, $WEFT_WORK/NAME), logging to NAME.log there;
# waits until /object_info answers; sets SERVER_PID_<NAME>.
start_weft() {
  local port="$1" name="$2"; shift 2
  local dir="${SERVE_CWD:-$WEFT_WORK/$name}"
  mkdir -p "$dir"
  if [ ! -x "$WEFT_BIN" ]; then log "no weft binary at $WEFT_BIN (set WEFT_BIN)"; return 1; fi
  # shellcheck disable=SC2086 # WEFT_MODELS_ARGS and WEFT_SERVE_ARGS are word lists
  (cd "$dir" && exec "$WEFT_BIN" $WEFT_MODELS_ARGS serve --port "$port" ${WEFT_SERVE_ARGS:-} "$@" >"$dir/$name.log" 2>&1) &
  local pid=$!
  printf -v "SERVER_PID_$name" '%s' "$pid"
  log "weft serve ($name) pid $pid on :$port, log $dir/$name.log"
  local i
  for i in $(seq 1 240); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/object_info" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "weft serve ($name) exited:"; tail -n 30 "$dir/$name.log" >&2; return 1
    fi
    sleep 0.5
  done
  log "weft serve ($name) did not answer /object_info in 120 s"; tail -n 30 "$dir/$name.log" >&2
  return 1
}

stop_pid() {
  local pid="$1"
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null
  fi
  return 0
}
