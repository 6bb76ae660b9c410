#!/usr/bin/env python3
"""Generate LoRA fixtures for the tiny SD3.5-large and Flux.1-dev transformers (issue #15).

Writes models/tests/fixtures/flow_lora/ (with a README.md, written by this script, that
lists every file):

* `flux_peft.safetensors`, `sd35_large_peft.safetensors` -- a random rank-4 LoRA
  (lora_alpha 8, i.e. scale 2) on every attention projection (the context ones included),
  every feed-forward and, for Flux, the single blocks' `proj_mlp` / `proj_out` and every
  adaLN `*.norm*.linear`, in diffusers' own `save_lora_weights` format (made by peft's
  `add_adapter` / `get_peft_model_state_dict` and `<Pipeline>.save_lora_weights`, the
  LoraConfig in the safetensors metadata as diffusers' training scripts write it).
* `flux_kohya.safetensors` -- the same Flux LoRA in kohya sd-scripts' Flux format
  (`lora_unet_<BFL module>`, `lora_down` / `lora_up` / `alpha`), BFL's fused modules
  (`img_attn.qkv`, `txt_attn.qkv`, `single_blocks.N.linear1`) as ONE exactly equivalent
  pair: downs stacked, ups block-diagonal, alpha scaled with the rank.
* `flux_aitoolkit.safetensors` -- the same Flux LoRA as ostris' ai-toolkit writes Flux.1
  LoRAs (`transformer.<diffusers module>.lora_A/B.weight`, no alpha: ai-toolkit forces
  alpha = rank for its "peft format", so the scale 2 is baked into lora_B).
* `reference.safetensors` / `reference.json` -- transformer outputs with the LoRA at
  strength 1.0 and 0.7 on the flow fixtures' `inputs.*`, and merged delta-W's.

The transformers are NOT rebuilt: they are loaded with `from_pretrained` from
models/tests/fixtures/flux/dev/transformer and models/tests/fixtures/sd3/sd35_large/transformer
(written by scripts/make_flow_fixtures.py), and the inputs are read from those folders'
reference.safetensors. Every file is checked by loading it with diffusers'
`load_lora_weights` (the kohya file through diffusers' own kohya-Flux converter with only
its hard-coded FLUX.1 widths replaced by the tiny ones, see `kohya_flux_converter`).

Usage (from the repository root, in the venv of scripts/requirements-sd-fixtures.txt):

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_flow_lora_fixtures.py
    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_flow_lora_fixtures.py --check   # compare only
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import shutil
import sys
import tempfile
import textwrap
import traceback
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_flow_fixtures as flow  # noqa: E402  (imports make_sd_fixtures: HF_HUB_OFFLINE=1)
import make_sd_fixtures as sd  # noqa: E402

import diffusers  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from diffusers.loaders import lora_conversion_utils as lcu  # noqa: E402
from diffusers.loaders import lora_pipeline  # noqa: E402
from peft import LoraConfig, get_peft_model_state_dict  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

FORMAT_VERSION = 1
FIXTURES = flow.FIXTURES
OUT_NAME = "flow_lora"
SCRIPT = "scripts/make_flow_lora_fixtures.py"

RANK = 4
ALPHA = 8                       # scale alpha / rank = 2
SCALE = ALPHA / RANK
STRENGTHS = (1.0, 0.7)
ADAPTER = "fixture"

SEED = {"flux": 60, "sd35_large": 61}

ATTN = r"attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
FF = r"ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)"
# peft matches a string target_modules with re.fullmatch against each module name
FLUX_TARGETS = (rf"transformer_blocks\.\d+\.({ATTN}|{FF}|norm1\.linear|norm1_context\.linear)"
                r"|single_transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v)|proj_mlp|proj_out|norm\.linear)")
SD3_TARGETS = rf"transformer_blocks\.\d+\.({ATTN}|{FF})"

MODELS = {
    # name: (transformer class, pipeline class, source folder, flow fixture folder, key of the base output
    #        in that folder's reference.safetensors, target regex, lora_B std, delta-W layers)
    "flux": dict(cls=FluxTransformer2DModel, pipe=FluxPipeline, src="flux/dev/transformer", refs="flux",
                 base_out="dev.out", targets=FLUX_TARGETS, b_std=0.02,
                 delta_layers=("transformer_blocks.0.attn.to_q",)),
    "sd35_large": dict(cls=SD3Transformer2DModel, pipe=StableDiffusion3Pipeline, src="sd3/sd35_large/transformer",
                       refs="sd3", base_out="sd35_large.out", targets=SD3_TARGETS, b_std=0.04,
                       delta_layers=("transformer_blocks.0.attn.to_q",)),
}

# kohya sd-scripts' Flux module names (BFL's layout with "." -> "_") -> the diffusers modules
# they cover, in the order their rows are concatenated in BFL's fused weights.
KOHYA_DOUBLE = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "img_attn_proj": ("attn.to_out.0",),
    "txt_attn_proj": ("attn.to_add_out",),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
    "img_mod_lin": ("norm1.linear",),
    "txt_mod_lin": ("norm1_context.linear",),
}
KOHYA_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation_lin": ("norm.linear",),
}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def f16_round(t: torch.Tensor) -> torch.Tensor:
    return t.half().float()


def quiet():
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def load_transformer(name: str, src_root: Path):
    spec = MODELS[name]
    return spec["cls"].from_pretrained(str(src_root / spec["src"]), local_files_only=True,
                                       dtype=torch.float32).eval()


def bare_pipe(name: str, transformer):
    """The model's pipeline with only the transformer (enough for load_lora_weights & co.)."""
    cls = MODELS[name]["pipe"]
    kw = {k: None for k in inspect.signature(cls.__init__).parameters if k not in ("self", "transformer")}
    return cls(transformer=transformer, **kw)


def read_inputs(name: str, src_root: Path) -> dict:
    refs = load_file(str(src_root / MODELS[name]["refs"] / "reference.safetensors"))
    inp = {k[len("inputs."):]: v for k, v in refs.items() if k.startswith("inputs.")}
    return inp, refs[MODELS[name]["base_out"]]


def forward(model, inp: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inp).sample


def rms(t: torch.Tensor) -> float:
    return t.float().pow(2).mean().sqrt().item()


def file_metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def save_st(state: dict, path: Path, metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    save_file(out, str(path), metadata=metadata or {"format": "pt"})
    return path


# --------------------------------------------------------------------------
# The LoRA (peft / diffusers) and its deltas
# --------------------------------------------------------------------------
def make_lora(name: str, base):
    """Random PEFT LoRA on `base` (a copy): lora_A ~ N(0, 1/in), lora_B ~ N(0, b_std^2), both
    rounded to float16 (exact in float32 files and after scaling by powers of two).
    Returns (peft state without adapter names, LoraConfig dict, {module: delta-W at strength 1})."""
    spec = MODELS[name]
    model = copy.deepcopy(base)
    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=spec["targets"], init_lora_weights=False)
    model.add_adapter(cfg)
    g = flow.gen(SEED[name])
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if ".lora_A." in pname:
                p.copy_(f16_round(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1])))
            elif ".lora_B." in pname:
                p.copy_(f16_round(torch.randn(p.shape, generator=g) * spec["b_std"]))
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    meta = model.peft_config["default"].to_dict()
    assert meta["r"] == RANK and meta["lora_alpha"] == ALPHA, meta
    base_state = base.state_dict()
    deltas = {}
    for k, a in state.items():
        if ".lora_A." in k:
            mod = k[:-len(".lora_A.weight")]
            b = state[f"{mod}.lora_B.weight"]
            deltas[mod] = SCALE * (b @ a)
            assert deltas[mod].shape == base_state[mod + ".weight"].shape
    assert len(state) == 2 * len(deltas)
    return state, meta, deltas


def check_modules(name: str, deltas: dict, base) -> list[str]:
    """The LoRA covers exactly the modules the brief lists (guards the target regex)."""
    linears = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)]
    want = []
    for n in linears:
        tail = n.split(".", 2)[-1]
        if n.startswith("transformer_blocks."):
            if tail in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                        "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                        "ff_context.net.2") or (name == "flux" and tail in ("norm1.linear", "norm1_context.linear")):
                want.append(n)
        elif n.startswith("single_transformer_blocks."):
            want.append(n)  # every Linear of a Flux single block: to_q/k/v, proj_mlp, proj_out, norm.linear
    if sorted(want) != sorted(deltas):
        raise RuntimeError(f"{name}: LoRA modules {sorted(set(deltas) ^ set(want))} differ from the intended set")
    return sorted(deltas)


def canonical_metadata_order(path: Path) -> None:
    """safetensors keeps `__metadata__` in a hash map, so a file with two metadata entries
    (diffusers writes `format` and `lora_adapter_metadata`) comes out with either order from
    run to run. Rewrite the header with the entries sorted (same bytes otherwise; checked by
    re-serialising the header as written first)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + n]
    text = header.rstrip(b" ")
    obj = json.loads(text, object_pairs_hook=lambda kv: dict(kv))
    dump = lambda o: json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode("utf-8")  # noqa: E731
    if dump(obj) != text:
        raise RuntimeError(f"{path}: cannot re-serialise the safetensors header exactly")
    obj["__metadata__"] = dict(sorted(obj["__metadata__"].items()))
    new = dump(obj)
    assert len(new) == len(text)
    path.write_bytes(raw[:8] + new + header[len(text):] + raw[8 + n:])


def save_peft(name: str, state: dict, meta: dict, path: Path) -> Path:
    """diffusers' own writer, with the adapter config as its training scripts pass it
    (`transformer.peft_config["default"].to_dict()`, cf. diffusers.training_utils._collate_lora_metadata)."""
    MODELS[name]["pipe"].save_lora_weights(
        save_directory=str(path.parent), transformer_lora_layers=state, transformer_lora_adapter_metadata=dict(meta),
        weight_name=path.name, safe_serialization=True)
    canonical_metadata_order(path)
    return path


# --------------------------------------------------------------------------
# kohya sd-scripts Flux format
# --------------------------------------------------------------------------
def flux_kohya(state: dict, cfg) -> tuple[dict, dict]:
    """peft state (diffusers names, scale ALPHA / RANK) -> kohya sd-scripts' Flux LoRA:
    `lora_unet_<BFL module with _>.{lora_down.weight, lora_up.weight, alpha}`. A fused BFL
    module of n parts gets down = the parts' lora_A stacked (rank n*RANK), up = the block
    diagonal of their lora_B, alpha = n*ALPHA (alpha / rank stays SCALE): exactly the sum of
    the separate LoRAs. Returns (kohya state, {kohya module: (BFL weight name, parts)})."""
    s = dict(state)
    out, layout = {}, {}

    def put(kname: str, bfl: str, mods: list[str]):
        downs = [s.pop(f"{m}.lora_A.weight") for m in mods]
        ups = [s.pop(f"{m}.lora_B.weight") for m in mods]
        key = f"lora_unet_{kname}"
        out[f"{key}.lora_down.weight"] = torch.cat(downs, dim=0)
        out[f"{key}.lora_up.weight"] = torch.block_diag(*ups)
        out[f"{key}.alpha"] = torch.tensor(float(ALPHA * len(mods)), dtype=torch.float32)
        layout[key] = (bfl + ".weight", mods)

    for i in range(cfg["num_layers"]):
        for k, parts in KOHYA_DOUBLE.items():
            bfl = f"double_blocks.{i}." + {"img_attn_qkv": "img_attn.qkv", "txt_attn_qkv": "txt_attn.qkv",
                                           "img_attn_proj": "img_attn.proj", "txt_attn_proj": "txt_attn.proj",
                                           "img_mlp_0": "img_mlp.0", "img_mlp_2": "img_mlp.2",
                                           "txt_mlp_0": "txt_mlp.0", "txt_mlp_2": "txt_mlp.2",
                                           "img_mod_lin": "img_mod.lin", "txt_mod_lin": "txt_mod.lin"}[k]
            put(f"double_blocks_{i}_{k}", bfl, [f"transformer_blocks.{i}.{p}" for p in parts])
    for i in range(cfg["num_single_layers"]):
        for k, parts in KOHYA_SINGLE.items():
            bfl = f"single_blocks.{i}." + {"linear1": "linear1", "linear2": "linear2",
                                           "modulation_lin": "modulation.lin"}[k]
            put(f"single_blocks_{i}_{k}", bfl, [f"single_transformer_blocks.{i}.{p}" for p in parts])
    assert not s, sorted(s)[:6]
    return out, layout


def kohya_deltas_bfl(kohya: dict, layout: dict) -> dict:
    """BFL weight name -> (alpha / rank) * up @ down, computed from the kohya file alone."""
    d = {}
    for key, (bfl, _) in layout.items():
        down, up, alpha = (kohya[f"{key}.{p}"] for p in ("lora_down.weight", "lora_up.weight", "alpha"))
        d[bfl] = (alpha.item() / down.shape[0]) * (up @ down)
    return d


def kohya_flux_converter(cfg):
    """diffusers' _convert_kohya_flux_lora_to_diffusers hard-codes FLUX.1's widths for the
    split of single_blocks.N.linear1 (`dims=[3072, 3072, 3072, 12288]`); re-run its own source
    with the tiny widths substituted (nothing else changed)."""
    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    src = textwrap.dedent(inspect.getsource(lcu._convert_kohya_flux_lora_to_diffusers))
    old = "dims=[3072, 3072, 3072, 12288]"
    assert src.count(old) == 1, "diffusers' kohya Flux converter changed"
    src = src.replace(old, f"dims=[{inner}, {inner}, {inner}, {4 * inner}]")
    ns = dict(vars(lcu))
    exec(compile(src, "<diffusers _convert_kohya_flux_lora_to_diffusers>", "exec"), ns)
    return ns["_convert_kohya_flux_lora_to_diffusers"]


# --------------------------------------------------------------------------
# ai-toolkit
# --------------------------------------------------------------------------
def flux_aitoolkit(state: dict) -> dict:
    """ai-toolkit's Flux.1 LoRA files: `transformer.` + diffusers module + `.lora_A/B.weight`,
    no alpha (ai-toolkit's "peft format", forced for Flux, sets alpha = rank: scale 1); our
    scale 2 is baked into lora_B (exact: a power of two)."""
    out = {}
    for k, v in state.items():
        out[f"transformer.{k}"] = v * SCALE if ".lora_B." in k else v
    return out


# --------------------------------------------------------------------------
# loading with diffusers
# --------------------------------------------------------------------------
def with_lora(name: str, src_root: Path, lora, strength: float, fuse: bool = False, converter=None):
    """A fresh transformer with `lora` (a path) loaded by the pipeline's load_lora_weights,
    at `strength` via set_adapters (or fused with fuse_lora(lora_scale=strength))."""
    t = load_transformer(name, src_root)
    pipe = bare_pipe(name, t)
    saved = lora_pipeline._convert_kohya_flux_lora_to_diffusers
    if converter is not None:
        lora_pipeline._convert_kohya_flux_lora_to_diffusers = converter
    try:
        pipe.load_lora_weights(str(lora), adapter_name=ADAPTER)
    finally:
        lora_pipeline._convert_kohya_flux_lora_to_diffusers = saved
    if fuse:
        pipe.fuse_lora(components=["transformer"], lora_scale=strength, adapter_names=[ADAPTER])
        pipe.unload_lora_weights()
    else:
        pipe.set_adapters(ADAPTER, adapter_weights=strength)
    return t


def check_fused(name: str, fused, base, deltas: dict, strength: float) -> None:
    got, orig = fused.state_dict(), base.state_dict()
    assert set(got) == set(orig), sorted(set(got) ^ set(orig))[:6]
    for k, w in got.items():
        mod = k[:-len(".weight")] if k.endswith(".weight") else None
        want = orig[k] + strength * deltas[mod] if mod in deltas else orig[k]
        if not torch.allclose(w, want, rtol=0, atol=2e-6):
            raise RuntimeError(f"{name}: LoRA fused by diffusers differs from W + {strength} dW at {k}")


# --------------------------------------------------------------------------
def gen_model(name: str, src_root: Path, out: Path, refs: dict, info: dict) -> list[Path]:
    spec = MODELS[name]
    files = []
    base = load_transformer(name, src_root)
    inp, base_out_file = read_inputs(name, src_root)
    base_out = forward(base, inp)
    d_base = flow.max_diff(base_out, base_out_file)
    if d_base > 1e-5:
        raise RuntimeError(f"{name}: the loaded transformer does not reproduce {spec['base_out']} ({d_base})")
    state, meta, deltas = make_lora(name, base)
    modules = check_modules(name, deltas, base)

    mi = {"source_transformer": f"models/tests/fixtures/{spec['src']}",
          "inputs": f"models/tests/fixtures/{spec['refs']}/reference.safetensors inputs.*",
          "base_output_key": f"{spec['refs']}/reference.safetensors {spec['base_out']}",
          "base_output_max_abs_diff_vs_file": d_base,
          "seed": SEED[name], "rank": RANK, "lora_alpha": ALPHA, "scale": SCALE,
          "lora_A_init": "f16(N(0,1) / sqrt(in_features))", "lora_B_init": f"f16(N(0,1) * {spec['b_std']})",
          "target_modules_regex": spec["targets"], "num_modules": len(modules), "modules": modules,
          "files": {}}

    # ---- diffusers / peft file
    p_peft = save_peft(name, state, meta, out / f"{name}_peft.safetensors")
    files.append(p_peft)
    md = file_metadata(p_peft)
    packed = json.loads(md[diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY])
    assert packed["transformer.r"] == RANK and packed["transformer.lora_alpha"] == ALPHA, packed
    on_disk = load_file(str(p_peft))
    assert set(on_disk) == {f"transformer.{k}" for k in state}, sorted(on_disk)[:4]
    assert all(torch.equal(on_disk[f"transformer.{k}"], v) for k, v in state.items())
    mi["files"][p_peft.name] = {"format": "diffusers save_lora_weights (peft)", "num_tensors": len(on_disk),
                                "alpha": "safetensors metadata `lora_adapter_metadata` (JSON of the LoraConfig, "
                                         "keys prefixed `transformer.`: transformer.r, transformer.lora_alpha)",
                                "metadata_keys": sorted(md)}

    # ---- references: strength 1.0 and 0.7 (set_adapters), checked against fuse_lora and W + s dW
    outs = {}
    for s in STRENGTHS:
        outs[s] = forward(with_lora(name, src_root, p_peft, s), inp)
        fused = with_lora(name, src_root, p_peft, s, fuse=True)
        check_fused(name, fused, base, deltas, s)
        d = flow.max_diff(forward(fused, inp), outs[s])
        if d > 1e-5:
            raise RuntimeError(f"{name}: fused and unfused LoRA outputs differ by {d} at strength {s}")
        mi.setdefault("fused_vs_set_adapters_max_abs_diff", {})[str(s)] = d
        refs[f"{name}.lora_{s}"] = outs[s]
    refs[f"{name}.out_base"] = base_out
    mi["relative_change_strength_1"] = {
        "max_abs": flow.max_diff(outs[1.0], base_out) / base_out.abs().max().item(),
        "rms": rms(outs[1.0] - base_out) / rms(base_out)}
    if not 0.01 <= mi["relative_change_strength_1"]["rms"] <= 0.1:
        raise RuntimeError(f"{name}: LoRA changes the output by {mi['relative_change_strength_1']}")
    for layer in spec["delta_layers"]:
        refs[f"{name}.delta.{layer}"] = deltas[layer]

    if name == "flux":
        cfg = base.config
        # ---- kohya sd-scripts
        kohya, layout = flux_kohya(state, cfg)
        p_k = save_st(kohya, out / "flux_kohya.safetensors")
        files.append(p_k)
        # delta-W's in BFL's layout, from the kohya file alone == the diffusers deltas concatenated
        # in BFL's row order (what flux_to_original does to the weights)
        kd = kohya_deltas_bfl(load_file(str(p_k)), layout)
        for key, (bfl, parts) in layout.items():
            want = torch.cat([deltas[m] for m in parts], dim=0)
            if not torch.allclose(kd[bfl], want, rtol=0, atol=1e-7):
                raise RuntimeError(f"kohya {key}: dW differs from the separate LoRAs' ({flow.max_diff(kd[bfl], want)})")
        for bfl in ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"):
            refs[f"flux.delta_bfl.{bfl[:-len('.weight')]}"] = kd[bfl]
        # diffusers as released cannot convert it (FLUX.1 widths hard-coded) ...
        try:
            lora_pipeline.FluxLoraLoaderMixin.lora_state_dict(str(p_k))
            unpatched = "loaded (unexpected)"
        except Exception as e:  # noqa: BLE001
            fr = traceback.extract_tb(e.__traceback__)[-1]
            unpatched = f"{type(e).__name__} in {fr.name}: {(fr.line or '').strip()}"
        # ... its own converter with the tiny widths gives back exactly (2 * lora_A, lora_B)
        conv = kohya_flux_converter(cfg)
        converted = conv({k: v.clone() for k, v in load_file(str(p_k)).items()})
        expect = {f"transformer.{k}": (v * SCALE if ".lora_A." in k else v) for k, v in state.items()}
        same = set(converted) == set(expect) and all(torch.equal(converted[k], expect[k]) for k in expect)
        if not same:
            raise RuntimeError("kohya file converted by diffusers differs from the peft LoRA")
        kinfo = {"unpatched_diffusers": unpatched}
        for s in STRENGTHS:
            o = forward(with_lora(name, src_root, p_k, s, converter=conv), inp)
            d = flow.max_diff(o, outs[s])
            if d > 1e-5:
                raise RuntimeError(f"kohya-loaded output differs from the peft-loaded one by {d} at {s}")
            kinfo[f"max_abs_diff_vs_peft_strength_{s}"] = d
        mi["files"][p_k.name] = {
            "format": "kohya sd-scripts Flux (lora_unet_<BFL module>)", "num_tensors": len(kohya),
            "alpha": "0-dim float32 `<module>.alpha` tensors: 8 per part (8 plain, 24 qkv, 32 linear1), rank 4 per part",
            "fused_modules": {k: {"bfl_weight": b, "parts": p} for k, (b, p) in layout.items() if len(p) > 1},
            "diffusers_load": ("FluxPipeline.load_lora_weights fails as released; loaded through diffusers' own "
                               "_convert_kohya_flux_lora_to_diffusers with only dims=[3072, 3072, 3072, 12288] "
                               "replaced by the tiny widths, which gives back exactly (2 * lora_A, lora_B) of the "
                               "peft file"),
            **kinfo}

        # ---- ai-toolkit
        ait = flux_aitoolkit(state)
        p_a = save_st(ait, out / "flux_aitoolkit.safetensors")
        files.append(p_a)
        ainfo = {}
        for s in STRENGTHS:
            o = forward(with_lora(name, src_root, p_a, s), inp)
            d = flow.max_diff(o, outs[s])
            if d > 1e-5:
                raise RuntimeError(f"ai-toolkit-loaded output differs from the peft-loaded one by {d} at {s}")
            ainfo[f"max_abs_diff_vs_peft_strength_{s}"] = d
        mi["files"][p_a.name] = {
            "format": "ai-toolkit Flux.1 (transformer.<diffusers module>.lora_A/B.weight)", "num_tensors": len(ait),
            "alpha": "none (ai-toolkit forces alpha = rank: scale 1); lora_B = 2 * the peft file's lora_B",
            "diffusers_load": "FluxPipeline.load_lora_weights as released", **ainfo}
    info[name] = mi
    return files


def generate(out_root: Path, src_root: Path) -> list[Path]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = out_root / OUT_NAME
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    refs, info = {}, {}
    files = []
    for name in MODELS:
        files += gen_model(name, src_root, out, refs, info)
    files.append(flow.save_refs(refs, out / "reference.safetensors"))
    info = {"format_version": FORMAT_VERSION, "generator": dict(sd.generator_info(), script=SCRIPT,
                                                                peft=peft.__version__),
            "strengths": list(STRENGTHS), "models": info}
    p = out / "reference.json"
    sd.write_json(p, sd.sanitize(info))
    files.append(p)
    files.append(write_readme(out, info))
    return sorted(set(files))


# --------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------
def examples(path: Path, n: int = 3, want=None) -> str:
    keys = list(load_file(str(path)))
    if want:
        keys = [k for k in want if k in keys] + [k for k in keys if k not in want]
    return "\n".join(keys[:n])


def write_readme(out: Path, info: dict) -> Path:
    fx, sx = info["models"]["flux"], info["models"]["sd35_large"]
    desc = {
        "flux_peft.safetensors": f"Flux dev LoRA, diffusers `save_lora_weights` format ({fx['files']['flux_peft.safetensors']['num_tensors']} tensors)",
        "flux_kohya.safetensors": f"the same LoRA in kohya sd-scripts' Flux format ({fx['files']['flux_kohya.safetensors']['num_tensors']} tensors)",
        "flux_aitoolkit.safetensors": f"the same LoRA as ai-toolkit writes Flux.1 LoRAs ({fx['files']['flux_aitoolkit.safetensors']['num_tensors']} tensors)",
        "sd35_large_peft.safetensors": f"SD3.5-large LoRA, diffusers `save_lora_weights` format ({sx['files']['sd35_large_peft.safetensors']['num_tensors']} tensors)",
        "reference.safetensors": "float32 references (below)",
        "reference.json": "seeds, module lists, formats, the checks' max differences, generator versions",
    }
    md = file_metadata(out / "flux_peft.safetensors")
    lam = json.loads(md["lora_adapter_metadata"])
    fused = "\n".join(f"| `{k}` | `{v['bfl_weight']}` | {', '.join(f'`{p}`' for p in v['parts'])} |"
                      for k, v in fx["files"]["flux_kohya.safetensors"]["fused_modules"].items())
    kohya_ex = ["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
                "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight",
                "lora_unet_double_blocks_0_img_attn_qkv.alpha",
                "lora_unet_single_blocks_0_linear1.lora_down.weight"]
    peft_ex = ["transformer.transformer_blocks.0.attn.to_q.lora_A.weight",
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight",
               "transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight"]
    sd3_ex = ["transformer.transformer_blocks.0.attn.add_q_proj.lora_A.weight",
              "transformer.transformer_blocks.0.ff_context.net.2.lora_B.weight",
              "transformer.transformer_blocks.2.attn.to_out.0.lora_A.weight"]
    text = f"""# LoRA fixtures for the tiny SD3.5-large and Flux.1-dev transformers (generated with diffusers + peft)

One random LoRA per model — rank {RANK}, `lora_alpha` {ALPHA} (scale alpha / rank = {SCALE:g}) —
saved in the formats LoRAs for these models come in, with float32 references computed by
diffusers, so that `cargo test` can check LoRA loading / patching for SD3 and Flux without
Python. The base transformers are the flow fixtures' (`../flux/dev/transformer`,
`../sd3/sd35_large/transformer`, loaded with `from_pretrained`), and the inputs are
`inputs.*` of `../flux/reference.safetensors` and `../sd3/reference.safetensors`.

LoRA factors: `lora_A` = f16(N(0,1)/√in), `lora_B` = f16(N(0,1)·0.02) (float16-representable
values, stored as float32); torch seeds {SEED['flux']} (Flux) and {SEED['sd35_large']} (SD3.5-large). ΔW = scale · lora_B @ lora_A; at strength s the
patched weight is W + s · ΔW. Changes the output by ~{fx['relative_change_strength_1']['rms']:.1%}
(Flux) / ~{sx['relative_change_strength_1']['rms']:.1%} (SD3.5-large) in RMS at strength 1.

Targets (every `nn.Linear` of these, {fx['num_modules']} modules in Flux, {sx['num_modules']} in SD3.5-large):

* both: `transformer_blocks.N.attn.{{to_q,to_k,to_v,to_out.0,add_q_proj,add_k_proj,add_v_proj,to_add_out}}`,
  `transformer_blocks.N.ff.net.{{0.proj,2}}`, `transformer_blocks.N.ff_context.net.{{0.proj,2}}` (the last
  SD3 block is context-pre-only: it has no `to_add_out` / `ff_context`);
* Flux also: `transformer_blocks.N.norm1.linear`, `transformer_blocks.N.norm1_context.linear` (adaLN),
  and every `single_transformer_blocks.N.{{attn.to_q,attn.to_k,attn.to_v,proj_mlp,proj_out,norm.linear}}`.

(Not targeted: embedders, `norm_out.linear`, `proj_out` of the model.)

{flow.files_table(out.parent, out, desc)}

## Formats

### diffusers / PEFT (`flux_peft.safetensors`, `sd35_large_peft.safetensors`)

Written by `FluxPipeline.save_lora_weights` / `StableDiffusion3Pipeline.save_lora_weights`
from peft's `get_peft_model_state_dict`. Keys: `transformer.<diffusers module>.lora_A.weight`
[rank, in] and `.lora_B.weight` [out, rank]; **no alpha tensors**. The alpha is in the
safetensors **metadata** (header `__metadata__`), key `lora_adapter_metadata`: a JSON string
of the LoraConfig (`peft_config["default"].to_dict()`, as diffusers' training scripts pass
it) with every key prefixed `transformer.` — here `"transformer.r": {lam['transformer.r']}`,
`"transformer.lora_alpha": {lam['transformer.lora_alpha']}` (also `transformer.alpha_pattern` /
`transformer.rank_pattern`, empty here, `transformer.use_rslora` false, and
`transformer.target_modules`, here a regex string — training scripts usually give a list);
plus `"format": "pt"`. Without that metadata diffusers takes alpha = rank (scale 1).
(safetensors keeps `__metadata__` in a hash map, so its two entries come out in either order;
the script rewrites the header with them sorted so that the file is reproducible.) Flux:

```
{chr(10).join(peft_ex)}
```

SD3.5-large:

```
{chr(10).join(sd3_ex)}
```

### kohya sd-scripts Flux (`flux_kohya.safetensors`)

`lora_unet_<BFL module with "." → "_">` + `.lora_down.weight` [rank, in], `.lora_up.weight`
[out, rank], `.alpha` (0-dim float32 here; sd-scripts writes it in the save dtype, e.g.
bf16; scale = alpha / rank, rank = lora_down rows):

```
{chr(10).join(kohya_ex)}
```

BFL's fused weights (`flux_to_original` in `scripts/make_flow_fixtures.py`) get ONE pair that
is exactly the separate LoRAs: `lora_down` = the parts' `lora_A` stacked (rank {RANK}·parts),
`lora_up` = the block diagonal of their `lora_B` (rows in BFL's q, k, v[, mlp] order),
`alpha` = {ALPHA}·parts (so alpha / rank stays {SCALE:g}); unfused modules have rank {RANK}, alpha {ALPHA}:

| kohya module | BFL weight | diffusers parts |
| --- | --- | --- |
{fused}

Other names: `double_blocks_N_{{img,txt}}_attn_proj` (`attn.to_out.0` / `attn.to_add_out`),
`double_blocks_N_{{img,txt}}_mlp_{{0,2}}` (`ff` / `ff_context` `.net.0.proj` / `.net.2`),
`double_blocks_N_{{img,txt}}_mod_lin` (`norm1.linear` / `norm1_context.linear`, same chunk order
in both layouts), `single_blocks_N_linear2` (`proj_out`), `single_blocks_N_modulation_lin`
(`norm.linear`). The fused pairs apply directly to the BFL-layout weights of
`../flux/dev_original.safetensors`: `W_bfl + s · (alpha / rank) · up @ down`. (sd-scripts'
default LoRA on the fused `Linear` has one rank-r down shared by q, k, v and a dense up; the
same formula covers it, whereas splitting into diffusers' q / k / v then needs the down copied
to each part — diffusers' converter does both.)

**diffusers**: `FluxPipeline.load_lora_weights` cannot load this file as released
(diffusers {diffusers.__version__}: `{fx['files']['flux_kohya.safetensors']['unpatched_diffusers']}` —
its kohya-Flux converter hard-codes FLUX.1's `linear1` split `dims=[3072, 3072, 3072, 12288]`).
With only those widths replaced by the tiny ones (`kohya_flux_converter` in the script), its
converter returns exactly (2·`lora_A`, `lora_B`) of the PEFT file (it recognises the
block-diagonal up and splits the stacked down), and the loaded transformer's output equals the
PEFT-loaded one (max abs diff {fx['files']['flux_kohya.safetensors']['max_abs_diff_vs_peft_strength_1.0']:.3g} at
strength 1, {fx['files']['flux_kohya.safetensors']['max_abs_diff_vs_peft_strength_0.7']:.3g} at 0.7). ΔW computed from the
kohya file alone also equals the separate ΔW's concatenated (checked in torch for every module).

### ai-toolkit (`flux_aitoolkit.safetensors`)

ostris' ai-toolkit writes Flux.1 LoRAs in its forced "peft format": `transformer.` prefix
(set in its `LoRASpecialNetwork`; it rewrites the prefix to `diffusion_model.` only for newer models such as FLUX.2), diffusers module
names, `lora_A` / `lora_B`, and **no alpha** (it sets alpha = rank, scale 1). So the scale
{SCALE:g} is baked in: `lora_B` here = {SCALE:g}·`lora_B` of `flux_peft.safetensors`, `lora_A` the
same; metadata only `"format": "pt"` (real files carry training metadata that loaders ignore).
Same key names as `flux_peft.safetensors`, e.g. `transformer.transformer_blocks.0.attn.to_q.lora_B.weight`.
diffusers loads it as released (max abs diff vs the PEFT-loaded output
{fx['files']['flux_aitoolkit.safetensors']['max_abs_diff_vs_peft_strength_1.0']:.3g}).

## References (`reference.safetensors`)

{flow.tensor_table(out / "reference.safetensors")}

* `<model>.out_base` = the transformer's output without LoRA on the inputs (equal to `dev.out` of
  `../flux/reference.safetensors` / `sd35_large.out` of `../sd3/reference.safetensors`).
* `<model>.lora_<s>` = `transformer(**inputs).sample` with `<model>_peft.safetensors` loaded by
  `load_lora_weights` and `set_adapters("{ADAPTER}", adapter_weights=s)` (LoRA forward unmerged,
  scale s · {SCALE:g}); the same within 1e-5 as `fuse_lora(lora_scale=s)` (whose fused weights are
  checked against W + s·ΔW within 2e-6), and as the kohya and ai-toolkit files (Flux).
* `<model>.delta.<module>` = ΔW (scale {SCALE:g} · lora_B @ lora_A, strength 1) of that diffusers module
  (shape of its weight).
* `flux.delta_bfl.double_blocks.0.img_attn.qkv` [96, 32] / `flux.delta_bfl.single_blocks.0.linear1`
  [224, 32]: ΔW at strength 1 in BFL's fused layout, from `flux_kohya.safetensors`
  (= the q, k, v[, proj_mlp] ΔW's concatenated).

## Regenerating

From the repository root (Python 3.11, PyPI only; `scripts/requirements-sd-fixtures.txt`),
after the flow fixtures (`scripts/make_flow_fixtures.py`) exist:

```sh
/tmp/weft-sd-fixtures-venv/bin/python {SCRIPT}           # (re)writes {OUT_NAME}/
/tmp/weft-sd-fixtures-venv/bin/python {SCRIPT} --check   # compares a fresh run byte-for-byte
```

Offline, one CPU thread. Float32 references may differ in the last bits on another CPU;
compare with a tolerance (1e-4 relative to the tensor's scale is ample). **Do not edit these
files by hand**: this README is written by the script too.
"""
    return flow.write_text(out / "README.md", text)


# --------------------------------------------------------------------------
def main() -> int:
    quiet()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=FIXTURES, help="fixtures root (default: %(default)s)")
    ap.add_argument("--src", type=Path, default=FIXTURES,
                    help="where the flow fixtures (flux/, sd3/) are read from (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare byte-for-byte with --out")
    args = ap.parse_args()
    for name, spec in MODELS.items():
        if not (args.src / spec["src"]).exists():
            raise SystemExit(f"{args.src / spec['src']} not found: run scripts/make_flow_fixtures.py first")
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            files = generate(Path(tmp), args.src)
            bad = [str(f.relative_to(tmp)) for f in files
                   if not (args.out / f.relative_to(tmp)).exists()
                   or (args.out / f.relative_to(tmp)).read_bytes() != f.read_bytes()]
            extra = [str(p.relative_to(args.out)) for p in (args.out / OUT_NAME).rglob("*")
                     if p.is_file() and not (Path(tmp) / p.relative_to(args.out)).exists()] \
                if (args.out / OUT_NAME).exists() else []
            if bad or extra:
                print("fixtures differ from a fresh run: " + ", ".join(bad + [f"{e} (not written)" for e in extra]))
                return 1
            print(f"{len(files)} fixture files match a fresh run")
            return 0
    files = generate(args.out, args.src)
    total = 0
    for f in files:
        total += f.stat().st_size
        print(f"{f.stat().st_size:10d}  {f.relative_to(args.out)}")
    print(f"{total:10d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
