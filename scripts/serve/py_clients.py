#!/usr/bin/env python3
"""Drive ComfyUI clients from PyPI, unmodified, against `weft serve`.

  api-client       comfyui-api-client 0.1.0: websocket_api.queue_prompt / get_history /
                   get_image over a websocket-client socket. The published wheel is
                   broken: its __init__ imports a package `api` that it lacks, so
                   `import comfyui_api_client` fails; websocket_api.py itself is
                   fine and is loaded from its file, unmodified.
  workflow-async   comfyui-workflow-client 0.1.0: ComfyUIClientAsync (aiohttp websocket,
                   waits for `executing {node: null}`, then /history/{id} and /view)
  workflow-sync    comfyui-workflow-client 0.1.0: ComfyUIClient (polls /history/{id})

Each queues scripts/serve/workflow_api.json and checks that a PNG comes back.
usage: py_clients.py [NAME ...]   (default: all)
env: WEFT_URL (default http://127.0.0.1:8188), WEFT_CKPT (default tiny_sd15),
     CLIENT_TIMEOUT_S (default 120)
"""
import asyncio
import io
import json
import os
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
URL = os.environ.get("WEFT_URL", "http://127.0.0.1:8188").rstrip("/")
HOST = URL.split("://", 1)[1]
CKPT = os.environ.get("WEFT_CKPT", "tiny_sd15")
TIMEOUT = float(os.environ.get("CLIENT_TIMEOUT_S", "120"))
PNG = b"\x89PNG\r\n\x1a\n"


def workflow(seed):
    with open(os.path.join(HERE, "workflow_api.json")) as f:
        w = json.load(f)
    w["4"]["inputs"]["ckpt_name"] = CKPT
    w["3"]["inputs"]["seed"] = seed
    return w


def check_pngs(blobs):
    if not blobs:
        raise AssertionError("no images came back")
    for b in blobs:
        if not b.startswith(PNG):
            raise AssertionError(f"not a PNG: {b[:16]!r}")
    from PIL import Image  # pinned Pillow, from the clients' own requirements

    sizes = [Image.open(io.BytesIO(b)).size for b in blobs]
    return f"{len(blobs)} PNG(s), sizes {sizes}"


def load_api_client_module():
    import importlib.util

    pkg = importlib.util.find_spec("comfyui_api_client")  # does not run the broken __init__
    path = os.path.join(list(pkg.submodule_search_locations)[0], "websocket_api.py")
    spec = importlib.util.spec_from_file_location("comfyui_api_client_websocket_api", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def api_client():
    import websocket  # websocket-client, as comfyui-api-client uses it
    capi = load_api_client_module()

    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(f"ws://{HOST}/ws?clientId={client_id}", timeout=TIMEOUT)
    try:
        prompt_id = capi.queue_prompt(workflow(201), client_id, HOST)["prompt_id"]
        # the loop of the package's api_helpers.track_progress, whose module cannot be imported
        deadline = time.time() + TIMEOUT
        while True:
            if time.time() > deadline:
                raise TimeoutError("no `executing {node: null}` for the prompt")
            out = ws.recv()
            if isinstance(out, str):
                msg = json.loads(out)
                if msg["type"] == "execution_error":
                    raise AssertionError(f"execution_error: {msg['data']}")
                if (
                    msg["type"] == "executing"
                    and msg["data"]["node"] is None
                    and msg["data"].get("prompt_id") == prompt_id
                ):
                    break
        history = capi.get_history(prompt_id, HOST)[prompt_id]
        blobs = []
        for node_output in history["outputs"].values():
            for img in node_output.get("images", []):
                blobs.append(capi.get_image(img["filename"], img["subfolder"], img["type"], HOST))
        return f"prompt {prompt_id}: " + check_pngs(blobs)
    finally:
        ws.close()


def write_workflow(seed):
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"weft-py-clients-{os.getpid()}-{seed}.json")
    with open(path, "w") as f:
        json.dump(workflow(seed), f)
    return path


def workflow_async():
    from comfyuiclient import ComfyUIClientAsync

    async def go():
        c = ComfyUIClientAsync(HOST, write_workflow(202))
        await c.connect()
        try:
            images, _text = await asyncio.wait_for(c.get_images(c.comfyui_prompt), TIMEOUT)
            # and the package's own high-level call, by node title, giving PIL images
            c.comfyui_prompt["3"]["inputs"]["seed"] = 203
            res = await asyncio.wait_for(c.generate(["Save Image"]), TIMEOUT)
            if "Save Image" not in res:
                raise AssertionError(f"generate() returned {res}")
        finally:
            await c.close()
        return check_pngs([b for bs in images.values() for b in bs]) + f", generate(): {res['Save Image'].size}"

    return asyncio.run(go())


def workflow_sync():
    from comfyuiclient import ComfyUIClient

    c = ComfyUIClient(HOST, write_workflow(204))
    c.connect()
    try:
        result = {}

        def run():
            try:
                result["images"] = c.get_images(c.comfyui_prompt)[0]
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(TIMEOUT)
        if t.is_alive():
            raise TimeoutError(f"no history entry after {TIMEOUT}s")
        if "error" in result:
            raise result["error"]
        return check_pngs([b for bs in result["images"].values() for b in bs])
    finally:
        c.close()


CLIENTS = {"api-client": api_client, "workflow-async": workflow_async, "workflow-sync": workflow_sync}


def main():
    names = sys.argv[1:] or list(CLIENTS)
    failed = 0
    for name in names:
        t0 = time.time()
        try:
            msg = CLIENTS[name]()
            print(f"PASS py {name} ({(time.time() - t0) * 1000:.0f} ms): {msg}", flush=True)
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL py {name} ({(time.time() - t0) * 1000:.0f} ms): {type(e).__name__}: {e}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
