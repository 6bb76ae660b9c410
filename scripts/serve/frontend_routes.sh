#!/usr/bin/env bash
# List the HTTP routes a comfyui-frontend-package version calls, from the
# TypeScript sources inside its source maps. Used to write FRONTEND_NOTES.md.
# usage: scripts/serve/frontend_routes.sh [VERSION]   (default 1.28.9)
set -euo pipefail
ver="${1:-1.28.9}"
work="${TMPDIR:-/tmp}/weft-frontend-$ver"
mkdir -p "$work"
if [ ! -d "$work/wheel" ]; then
  python3 -m pip download --no-deps -q "comfyui-frontend-package==$ver" -d "$work"
  python3 -m zipfile -e "$work"/comfyui_frontend_package-"$ver"-*.whl "$work/wheel"
fi
python3 - "$work" <<'PY'
import json, os, re, sys
work = sys.argv[1]
assets = os.path.join(work, "wheel/comfyui_frontend_package/static/assets")
out = os.path.join(work, "src")
for m in os.listdir(assets):
    if not m.endswith(".map"):
        continue
    d = json.load(open(os.path.join(assets, m)))
    for s, c in zip(d["sources"], d.get("sourcesContent") or []):
        if c is None or "node_modules" in s:
            continue
        p = os.path.normpath(os.path.join(out, s.replace("../", "")))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "w").write(c)
api = os.path.join(out, "src/scripts/api.ts")
print("static folder:", os.path.join(work, "wheel/comfyui_frontend_package/static"))
print("routes in", api)
for n, line in enumerate(open(api), 1):
    if re.search(r"fetchApi\(|apiURL\(|internalURL\(|fileURL\(", line) and re.search(r"['`]/", line):
        print(f"  {n}: {line.strip()}")
PY
