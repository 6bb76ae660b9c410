// Drives two ComfyUI clients from npm, unmodified, against `weft serve`:
//   @stable-canvas/comfyui-client  Client.enqueue (websocket) and Client.enqueue_polling (REST)
//   @saintno/comfyui-sdk           ComfyApi + PromptBuilder + CallWrapper
// Each queues ../workflow_api.json and checks that a PNG comes back through /view.
// usage: node sdk_clients.mjs [stable-ws|stable-poll|saintno ...]   (default: all)
// env: WEFT_URL (default http://127.0.0.1:8188), WEFT_CKPT (default tiny_sd15),
//      CLIENT_TIMEOUT_S (default 120)
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { Client } from "@stable-canvas/comfyui-client";
import { ComfyApi, CallWrapper, PromptBuilder } from "@saintno/comfyui-sdk";

const here = dirname(fileURLToPath(import.meta.url));
const base = (process.env.WEFT_URL || "http://127.0.0.1:8188").replace(/\/$/, "");
const host = base.replace(/^https?:\/\//, "");
const ckpt = process.env.WEFT_CKPT || "tiny_sd15";
const timeoutMs = 1000 * Number(process.env.CLIENT_TIMEOUT_S || 120);

function workflow(seed) {
  const w = JSON.parse(readFileSync(join(here, "..", "workflow_api.json"), "utf8"));
  w["4"].inputs.ckpt_name = ckpt;
  w["3"].inputs.seed = seed;
  return w;
}

const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
function isPng(buf) {
  const b = new Uint8Array(buf);
  return b.length > 8 && PNG.every((v, i) => b[i] === v);
}

async function fetchPng(url) {
  const r = await fetch(url);
  if (r.status !== 200) throw new Error(`GET ${url} -> ${r.status}`);
  const buf = await r.arrayBuffer();
  if (!isPng(buf)) throw new Error(`GET ${url}: not a PNG (${buf.byteLength} bytes)`);
  return buf.byteLength;
}

function withTimeout(p, what) {
  let t;
  const timer = new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`${what}: no result after ${timeoutMs / 1000}s`)), timeoutMs);
  });
  return Promise.race([p, timer]).finally(() => clearTimeout(t));
}

async function stable(mode) {
  const client = new Client({ api_host: host, WebSocket, fetch });
  try {
    if (mode === "ws") client.connect();
    const wf = workflow(mode === "ws" ? 101 : 102);
    const res =
      mode === "ws"
        ? await withTimeout(client.enqueue(wf, { progress: ({ value, max }) => {} }), "enqueue")
        : await withTimeout(client.enqueue_polling(wf), "enqueue_polling");
    if (!res.images?.length) throw new Error(`no images in ${JSON.stringify(res)}`);
    // "url" images are the saved outputs (from `executed`); "buff" ones are binary
    // websocket frames, which this client also collects: weft's live previews.
    let bytes = 0, urls = 0, buffs = 0;
    for (const img of res.images) {
      if (img.type === "url") { bytes += await fetchPng(img.data); urls++; }
      else buffs++;
    }
    if (!urls) throw new Error(`no saved image (only ${buffs} websocket frame(s)) in ${JSON.stringify(res).slice(0, 300)}`);
    return `prompt ${res.prompt_id}: ${urls} saved PNG(s), ${bytes} bytes` + (buffs ? ` (+${buffs} binary preview frame(s) counted as images by the client)` : "");
  } finally {
    client.close();
  }
}

async function saintno() {
  const api = new ComfyApi(base, undefined, { customWebSocketImpl: WebSocket });
  try {
    await withTimeout(api.init(5, 1000).waitForReady(), "ComfyApi.init");
    const wf = new PromptBuilder(workflow(103), ["checkpoint", "seed"], ["images"])
      .setInputNode("checkpoint", "4.inputs.ckpt_name")
      .setInputNode("seed", "3.inputs.seed")
      .setOutputNode("images", "9")
      .input("checkpoint", ckpt)
      .input("seed", 103);
    const out = await withTimeout(
      new Promise((resolve, reject) => {
        new CallWrapper(api, wf)
          .onFinished((data, promptId) => resolve({ ...data, _promptId: promptId }))
          .onFailed((err) => reject(err instanceof Error ? err : new Error(JSON.stringify(err))))
          .run()
          .then((r) => {
            if (r === false) reject(new Error("CallWrapper.run() returned false"));
          }, reject);
      }),
      "CallWrapper.run",
    );
    const images = out?.images?.images ?? [];
    if (!images.length) throw new Error(`no images in ${JSON.stringify(out).slice(0, 300)}`);
    let bytes = 0;
    for (const img of images) bytes += await fetchPng(api.getPathImage(img));
    return `prompt ${out._promptId ?? "?"}: ${images.length} image(s), ${bytes} bytes`;
  } finally {
    api.destroy();
  }
}

const clients = {
  "stable-ws": () => stable("ws"),
  "stable-poll": () => stable("poll"),
  saintno,
};
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(clients);
let failed = 0;
for (const name of wanted) {
  const t0 = Date.now();
  try {
    const msg = await clients[name]();
    console.log(`PASS npm ${name} (${Date.now() - t0} ms): ${msg}`);
  } catch (e) {
    failed++;
    console.log(`FAIL npm ${name} (${Date.now() - t0} ms): ${e?.stack || e}`);
  }
}
process.exit(failed ? 1 : 0);
