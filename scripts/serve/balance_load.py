#!/usr/bin/env python3
"""Send N prompts from C concurrent ComfyUI-style clients and check every result.

Each client is what a ComfyUI API script does (websocket-client, from the pinned
venv): open /ws?clientId=ID, POST /prompt with that client_id, wait on its socket
for `executing {node: null}` of the prompt, then GET /history/{prompt_id} and
GET /view of each image. Checks, for every prompt:
  - POST /prompt answered 200 with a prompt_id;
  - its socket saw execution_start, executed (with images), and the final executing null;
  - no event for another client's prompt reached this client's socket;
  - /history/{id} holds exactly one entry, that prompt, with status success and images;
  - every image is a PNG from /view.
Prints one JSON line with the counts and the throughput.

usage: balance_load.py URL [--prompts 50] [--clients 5] [--label NAME]
env: WEFT_CKPT (tiny_sd15), LOAD_TIMEOUT_S (per prompt, default 300)
"""
import argparse
import json
import os
import threading
import time
import urllib.parse
import urllib.request
import uuid

import websocket  # websocket-client, pinned in requirements.txt

HERE = os.path.dirname(os.path.abspath(__file__))
PNG = b"\x89PNG\r\n\x1a\n"
TIMEOUT = float(os.environ.get("LOAD_TIMEOUT_S", "300"))
SEED_BASE = int(time.time() * 1000) % 10**12 * 10**6


def http(url, data=None):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def client(base, idx, n, label, results, errors):
    host = base.split("://", 1)[1]
    cid = f"{label}-{idx}-{uuid.uuid4()}"
    ws = websocket.WebSocket()
    ws.connect(f"ws://{host}/ws?clientId={cid}", timeout=TIMEOUT)
    # Wait for the greeting `status` with our sid, as the web UI does: a prompt
    # posted before it may start before the server has registered the socket.
    hello = json.loads(ws.recv())
    if hello.get("type") != "status" or hello.get("data", {}).get("sid") != cid:
        errors.append(f"client {idx}: first frame is not status with sid {cid}: {hello}")
    mine = set()
    try:
        for k in range(n):
            with open(os.path.join(HERE, "workflow_api.json")) as f:
                wf = json.load(f)
            wf["4"]["inputs"]["ckpt_name"] = os.environ.get("WEFT_CKPT", "tiny_sd15")
            # a seed no earlier run used, so weft's result cache cannot answer it
            wf["3"]["inputs"]["seed"] = SEED_BASE + 1000 * idx + k
            # distinct prefixes: the two workers share one output folder
            wf["9"]["inputs"]["filename_prefix"] = f"{label}_c{idx}_p{k}"
            t0 = time.time()
            st, body = http(f"{base}/prompt", json.dumps({"prompt": wf, "client_id": cid}).encode())
            if st != 200:
                errors.append(f"client {idx} prompt {k}: POST /prompt -> {st} {body[:300]!r}")
                continue
            pid = json.loads(body)["prompt_id"]
            mine.add(pid)
            seen = []
            while True:
                if time.time() - t0 > TIMEOUT:
                    errors.append(f"client {idx} prompt {pid}: timed out; saw {seen}")
                    break
                msg = ws.recv()
                if not isinstance(msg, str):
                    continue  # binary preview frame
                m = json.loads(msg)
                p = (m.get("data") or {}).get("prompt_id")
                if p is not None and p not in mine:
                    errors.append(f"client {idx}: got {m['type']} of someone else's prompt {p}")
                if p != pid:
                    continue
                seen.append(m["type"])
                if m["type"] == "execution_error":
                    errors.append(f"client {idx} prompt {pid}: execution_error {json.dumps(m['data'])[:300]}")
                if m["type"] == "executing" and m["data"].get("node") is None:
                    break
            for want in ("execution_start", "executed", "execution_success"):
                if want not in seen:
                    errors.append(f"client {idx} prompt {pid}: no {want} on its socket (saw {seen})")
            st, body = http(f"{base}/history/{pid}")
            hist = json.loads(body) if st == 200 else {}
            if list(hist) != [pid]:
                errors.append(f"client {idx} prompt {pid}: /history/{pid} -> {st}, keys {list(hist)[:5]}")
                continue
            entry = hist[pid]
            if not entry.get("status", {}).get("completed"):
                errors.append(f"client {idx} prompt {pid}: history status {entry.get('status')}")
            images = [im for out in entry.get("outputs", {}).values() for im in out.get("images", [])]
            if not images:
                errors.append(f"client {idx} prompt {pid}: no images in history")
            for im in images:
                q = urllib.parse.urlencode({"filename": im["filename"], "subfolder": im.get("subfolder", ""), "type": im.get("type", "output")})
                st, png = http(f"{base}/view?{q}")
                if st != 200 or not png.startswith(PNG):
                    errors.append(f"client {idx} prompt {pid}: /view?{q} -> {st}, {png[:20]!r}")
            results.append({"prompt_id": pid, "images": len(images), "seconds": time.time() - t0})
    finally:
        ws.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--label", default="load")
    a = ap.parse_args()
    base = a.url.rstrip("/")
    per = [a.prompts // a.clients + (1 if i < a.prompts % a.clients else 0) for i in range(a.clients)]
    results, errors = [], []
    t0 = time.time()
    threads = [threading.Thread(target=client, args=(base, i, per[i], a.label, results, errors)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    ids = [r["prompt_id"] for r in results]
    if len(set(ids)) != len(ids):
        errors.append("duplicate prompt ids")
    ok = len(results) == a.prompts and not errors
    print(json.dumps({
        "label": a.label, "url": base, "ok": ok, "prompts": a.prompts, "clients": a.clients,
        "completed": len(results), "errors": errors[:20], "error_count": len(errors),
        "wall_s": round(wall, 2), "prompts_per_s": round(len(results) / wall, 3) if wall else None,
        "mean_latency_s": round(sum(r["seconds"] for r in results) / max(1, len(results)), 2),
    }), flush=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
