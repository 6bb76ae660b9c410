// Headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core over CDP,
// against ComfyUI's own web frontend served by `weft serve --frontend DIR`:
//   1. loads the page with a fresh profile and waits for the graph canvas;
//   2. checks that /api/object_info was loaded: every class it lists is registered
//      in LiteGraph, KSampler among them;
//   3. opens the Node Library sidebar and finds KSampler and one weft-only node by
//      searching its display name;
//   4. puts the tiny checkpoint, 64x64 and 2 steps into the default workflow's widgets
//      and clicks Run;
//   5. waits for an `executed` websocket message with images for that prompt, and for
//      the browser's GET /api/view of that image to return a PNG;
//   6. takes a screenshot (SCREENSHOT, default /tmp/weft-browser.png).
// env: WEFT_URL, WEFT_CKPT (tiny_sd15), CHROMIUM (/usr/bin/chromium), BROWSER_TIMEOUT_S (180),
//      WEFT_ONLY_NODE (a weft node that ComfyUI lacks; default: the first such in /object_info)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = (process.env.WEFT_URL || "http://127.0.0.1:8188").replace(/\/$/, "");
const ckpt = process.env.WEFT_CKPT || "tiny_sd15";
const shot = process.env.SCREENSHOT || "/tmp/weft-browser.png";
const timeout = 1000 * Number(process.env.BROWSER_TIMEOUT_S || 180);
// ComfyUI's core node names that the default workflow and weft share; a node
// outside this list (and outside ComfyUI) shows that weft's own nodes are listed.
const COMFY_CORE = new Set([
  "KSampler", "KSamplerAdvanced", "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage",
  "VAEDecode", "VAEEncode", "SaveImage", "PreviewImage", "LoadImage", "LoraLoader", "VAELoader",
  "CLIPLoader", "UNETLoader", "ControlNetLoader", "ControlNetApply", "ControlNetApplyAdvanced",
  "ImageScale", "LatentUpscale", "ConditioningCombine", "ConditioningSetArea", "CLIPSetLastLayer",
]);

// weft's own nodes, which ComfyUI lacks (its MNIST classifier guidance)
const WEFT_ONLY = ["ClassifierGuidance", "ClassifierLoader"];

const log = (...a) => console.log("[browser]", ...a);
const problems = [];
const started = Date.now();

async function api(path, init) {
  const r = await fetch(base + path, init);
  return r;
}

async function main() {
  // Seed the one setting that makes a fresh profile load the default workflow
  // instead of opening the template browser (what the frontend itself stores).
  const seeded = await api("/api/settings/Comfy.TutorialCompleted", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "true",
  });
  log(`POST /api/settings/Comfy.TutorialCompleted -> ${seeded.status}`);

  const info = await (await api("/api/object_info")).json();
  const classes = Object.keys(info);
  const weftOnly =
    process.env.WEFT_ONLY_NODE ||
    WEFT_ONLY.find((c) => classes.includes(c)) ||
    classes.find((c) => !COMFY_CORE.has(c) && info[c].category && !info[c].deprecated) ||
    "KSampler";
  log(`/api/object_info: ${classes.length} classes; weft-only node to look for: ${weftOnly}`);

  const profile = mkdtempSync(join(tmpdir(), "weft-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1600, height: 1000 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(timeout);

  const bad = [];
  page.on("console", (m) => {
    if (m.type() === "error") bad.push(`console error: ${m.text().slice(0, 300)}`);
  });
  page.on("pageerror", (e) => bad.push(`page error: ${String(e.stack || e).slice(0, 600)}`));
  const apiCalls = [];
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (u.origin !== new URL(base).origin) return;
    if (u.pathname.startsWith("/api/") || u.pathname === "/ws") apiCalls.push(`${r.status()} ${r.request().method()} ${u.pathname}${u.search}`);
    if (r.status() >= 400) bad.push(`HTTP ${r.status()} ${r.request().method()} ${u.pathname}${u.search}`);
  });

  // Every websocket text frame the page receives.
  const frames = [];
  let wsUrl = null;
  page.on("websocket", (ws) => {
    wsUrl = ws.url();
    ws.on("framereceived", ({ payload }) => {
      if (typeof payload !== "string") return frames.push({ type: "<binary>" });
      try {
        frames.push(JSON.parse(payload));
      } catch {
        frames.push({ type: "<not json>", raw: payload.slice(0, 100) });
      }
    });
  });

  try {
    await page.goto(base + "/", { waitUntil: "domcontentloaded" });
    await page.waitForFunction(
      () => window.app?.graph && window.LiteGraph?.registered_node_types && window.app.canvas,
      null,
      { timeout },
    );
    // the spinner goes away when app.setup() finished (node defs registered)
    await page.waitForFunction(() => Object.keys(window.LiteGraph.registered_node_types).length > 0);
    log(`page loaded in ${Date.now() - started} ms; websocket ${wsUrl}`);

    const registered = await page.evaluate(() => Object.keys(window.LiteGraph.registered_node_types));
    const missing = classes.filter((c) => !registered.includes(c));
    if (missing.length) problems.push(`not registered in LiteGraph: ${missing.join(", ")}`);
    if (!registered.includes("KSampler")) throw new Error("KSampler is not registered");
    log(`${registered.length} node types registered (all ${classes.length - missing.length} of /object_info)`);

    // A template/dialog may be open on a fresh profile: close it.
    await page.keyboard.press("Escape");

    // Node library: open it from the side toolbar and search.
    const libButton = page.locator('button[aria-label^="Node Library"]').first();
    if (await libButton.count()) await libButton.click();
    else await page.keyboard.press("n");
    const search = page.getByPlaceholder(/Search Nodes/i).first();
    await search.waitFor({ timeout: 20000 });
    for (const cls of ["KSampler", weftOnly]) {
      const shown = info[cls]?.display_name || cls;
      await search.fill(shown);
      const item = page.locator(".node-lib-node-container, .tree-explorer-node-label").filter({ hasText: shown }).first();
      try {
        await item.waitFor({ timeout: 15000 });
        log(`node library lists ${cls} ("${shown}")`);
      } catch {
        problems.push(`node library search "${shown}" found nothing`);
      }
    }
    await page.screenshot({ path: shot.replace(/\.png$/, "-library.png") });
    await search.fill("");
    await libButton.click().catch(() => {});

    // The default workflow: make it small and point it at the tiny checkpoint.
    const setup = await page.evaluate(
      ({ ckpt }) => {
        const g = window.app.graph;
        if (!g.nodes.some((n) => n.type === "KSampler")) return { error: "no KSampler in the loaded workflow", types: g.nodes.map((n) => n.type) };
        const set = (type, name, v) => {
          for (const n of g.nodes.filter((n) => n.type === type)) {
            const w = n.widgets?.find((w) => w.name === name);
            if (!w) return `no widget ${type}.${name}`;
            w.value = v;
            w.callback?.(v);
          }
        };
        const errs = [
          set("CheckpointLoaderSimple", "ckpt_name", ckpt),
          set("EmptyLatentImage", "width", 64),
          set("EmptyLatentImage", "height", 64),
          set("KSampler", "steps", 2),
          set("KSampler", "sampler_name", "euler"),
          set("KSampler", "scheduler", "normal"),
        ].filter(Boolean);
        const combo = g.nodes.find((n) => n.type === "CheckpointLoaderSimple")?.widgets?.[0]?.options?.values;
        return { errs, nodes: g.nodes.map((n) => `${n.id}:${n.type}`), ckptChoices: Array.isArray(combo) ? combo : null };
      },
      { ckpt },
    );
    if (setup.error) throw new Error(`${setup.error}: ${setup.types}`);
    log(`workflow nodes ${setup.nodes.join(" ")}; ckpt choices ${JSON.stringify(setup.ckptChoices)?.slice(0, 200)}`);
    if (setup.errs.length) problems.push(...setup.errs);
    if (setup.ckptChoices && !setup.ckptChoices.includes(ckpt)) problems.push(`ckpt_name combo lacks ${ckpt}`);

    // Queue it the way a person does: the Run button (Ctrl+Enter as a fallback).
    const promptResp = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST", { timeout: 30000 });
    const run = page.locator('[data-testid="queue-button"] button, button.comfyui-queue-button, [data-testid="queue-button"]').first();
    if (await run.count()) await run.click();
    else await page.keyboard.press("Control+Enter");
    const pr = await promptResp;
    const body = pr.request().postDataJSON();
    const reply = await pr.json().catch(() => null);
    log(`POST /api/prompt -> ${pr.status()} ${JSON.stringify(reply)}; client_id ${JSON.stringify(body.client_id)}, nodes ${Object.keys(body.prompt).join(",")}`);
    for (const [id, n] of Object.entries(body.prompt)) {
      const lits = Object.fromEntries(Object.entries(n.inputs).filter(([, v]) => !Array.isArray(v)));
      log(`  sent ${id} ${n.class_type} ${JSON.stringify(lits).slice(0, 200)}`);
    }
    if (pr.status() !== 200) throw new Error(`POST /api/prompt -> ${pr.status()}: ${JSON.stringify(reply)}`);
    if (!body.client_id) problems.push("the page sent an empty client_id (no `sid` in the first status message?)");
    const promptId = reply.prompt_id;

    // The image: an `executed` frame with images for this prompt, then the page's GET /api/view.
    const viewResp = page.waitForResponse((r) => r.url().includes("/api/view?") && r.status() === 200, { timeout });
    const t0 = Date.now();
    let executed;
    while (!(executed = frames.find((f) => f.type === "executed" && f.data?.prompt_id === promptId && f.data?.output?.images?.length))) {
      const err = frames.find((f) => f.type === "execution_error" && f.data?.prompt_id === promptId);
      if (err) throw new Error(`execution_error: ${JSON.stringify(err.data).slice(0, 500)}`);
      if (Date.now() - t0 > timeout) throw new Error(`no executed message with images; frames: ${frames.map((f) => f.type).join(",")}`);
      await page.waitForTimeout(200);
    }
    log(`executed: ${JSON.stringify(executed.data.output.images)} after ${Date.now() - t0} ms`);
    const vr = await viewResp;
    const png = await vr.body();
    const isPng = png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    log(`the page fetched ${new URL(vr.url()).pathname}${new URL(vr.url()).search} -> ${vr.status()} ${vr.headers()["content-type"]}, ${png.length} bytes`);
    if (!isPng) throw new Error("/api/view did not return a PNG");
    // fit the graph in view, let the canvas draw the image, then a screenshot
    await page.evaluate(() => window.app.extensionManager?.command?.execute?.("Comfy.Canvas.FitView")).catch(() => {});
    await page.waitForTimeout(1500);
    await page.screenshot({ path: shot });
    const order = frames.filter((f) => f.data?.prompt_id === promptId || f.type === "status").map((f) => f.type);
    log(`websocket messages: ${order.join(" ")}`);
    for (const want of ["execution_start", "executing", "executed", "execution_success"]) {
      if (!order.includes(want)) problems.push(`no ${want} message`);
    }
    if (bad.length) log(`browser-side errors (not fatal):\n  ${[...new Set(bad)].join("\n  ")}`);
    log(`API calls seen:\n  ${[...new Set(apiCalls)].join("\n  ")}`);
    log(`screenshots: ${shot}, ${shot.replace(/\.png$/, "-library.png")}`);
    if (problems.length) {
      console.log(`FAIL browser: image came back, but:\n  ${problems.join("\n  ")}`);
      return 1;
    }
    console.log(`PASS browser (${Date.now() - started} ms): prompt ${promptId}, image ${executed.data.output.images[0].filename}, ${png.length} bytes`);
    return 0;
  } catch (e) {
    await page.screenshot({ path: shot }).catch(() => {});
    if (bad.length) log(`browser-side errors:\n  ${[...new Set(bad)].join("\n  ")}`);
    log(`API calls seen:\n  ${[...new Set(apiCalls)].join("\n  ")}`);
    console.log(`FAIL browser (${Date.now() - started} ms): ${e?.message || e}${problems.length ? "\n  " + problems.join("\n  ") : ""} (screenshot ${shot})`);
    return 1;
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

process.exit(await main());
