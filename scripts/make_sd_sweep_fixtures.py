#!/usr/bin/env python3
"""Generate a sweep of Stable Diffusion parity fixtures at diffusers' *default* settings.

Writes models/tests/fixtures/sd_sweep/: random-weight UNets, a VAE and CLIP text
encoders whose configs keep the library defaults (32 GroupNorm groups,
`attention_head_dim` 8 read as a head count, the default block types, two resnets
per level in the four-level point, transformers 5's serialisation) with float32
reference outputs, so that the Rust tests (models/tests/sd_sweep.rs) catch bugs that
the hand-picked tiny configs of scripts/make_sd_fixtures.py (4 groups, 4 heads, one
resnet per level) cannot. To keep the folder small (under 5 MB):

* each distinct UNet weight set is stored once, under `weights/`, and every UNet
  point is a folder holding only its `config.json`; a test assembles the diffusers
  folder (config + weights) in a temporary directory. Points that differ only in
  settings without parameters (groups, heads) share one weight set; the SD 2.x style
  point uses the same set with `proj_in` / `proj_out` squeezed from [C, C, 1, 1] to
  [C, C] (the same numbers; a linear projection is a 1x1 convolution);
* the CLIP text encoders have a 1000-token vocabulary;
* only the key layout transformers 5 writes is stored for `CLIPTextModel`
  (`text_encoder_t5/`); the transformers 4 layout is the same tensors with a
  `text_model.` prefix, which a test derives (see `t4_key`).

Also writes pipeline/: full txt2img pipelines (StableDiffusionPipeline) assembled from
those parts at 32 and at 16 GroupNorm groups -- the reported bug was about whole images --
with a tokenizer cut to the encoders' vocabulary, SD 1.5's scheduler config, the LDM
single-file key names, and float32 reference latents and images of Euler and DPM++ 2M runs
(models/tests/sd_sweep_pipeline.rs); only the small files are stored, the test assembles
each folder from the weight files above.

See the README.md in that folder for what each point covers and the tensor names.
The shared helpers (weight perturbation and float16 rounding, JSON output) come
from scripts/make_sd_fixtures.py.

Deterministic and offline: every model is built from its config class with random
weights from fixed torch seeds (HF_HUB_OFFLINE=1, nothing is downloaded), every
parameter is perturbed and rounded to float16, and all references are computed in
float32 on the CPU with one thread. Every folder, as a test assembles it, is
reloaded with diffusers / transformers `from_pretrained` and must give bit-identical
outputs.

Usage (from the repository root, in the venv of scripts/requirements-sd-fixtures.txt):

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_sd_sweep_fixtures.py
    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_sd_sweep_fixtures.py --check   # compare only

Optionally, `--transformers4 SITE` (a folder with transformers 4.x installed in it,
e.g. `pip install --target SITE transformers==4.57.3`) also runs transformers 4 on
the fixtures in a subprocess: it checks that transformers 4's own `save_pretrained`
writes the `text_model.`-prefixed layout the tests derive, that it loads the derived
folder exactly, and shows that it cannot load `text_encoder_t5/` (random weights).

This script only *calls* diffusers and transformers; it contains no code of theirs.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no scripts/__pycache__ from importing the sibling script
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Importing make_sd_fixtures first sets HF_HUB_OFFLINE and friends before diffusers loads.
from make_sd_fixtures import (  # noqa: E402
    LDM_CLIP,
    LDM_UNET,
    LDM_VAE,
    PERTURB_STD,
    SD15_SCHEDULER_CONFIG,
    _is_vae_attn_linear,
    byte_symbols,
    exact_list,
    find_bpe,
    generator_info,
    perturb_and_round,
    randn,
    resolved_config,
    sanitize,
    scheduler_from,
    to_f16,
    unet_key_to_ldm,
    vae_key_to_ldm,
    write_json,
)

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from diffusers.models.attention_processor import Attention  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
)

FORMAT_VERSION = 2
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "models" / "tests" / "fixtures" / "sd_sweep"

SEED = {
    "unet_2lvl": 11,
    "unet_4lvl": 12,
    "vae": 21,
    "clip": 31,
    "clip2": 32,
    "unet_latent": 200,
    "unet_latent16": 201,
    "unet_context": 202,
    "vae_image": 203,
}


UNET_TIMESTEPS = [999.0, 500.0]   # one per batch element
CONTEXT_TOKENS = 7
CROSS_DIM = 32
UNET_WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

TWO_LEVELS = dict(block_out_channels=(32, 64), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=CROSS_DIM, sample_size=8)

# Distinct UNet weight sets: the constructor overrides they are drawn with and a seed.
# Every setting not listed is UNet2DConditionModel's default.
UNET_WEIGHTS = {
    "unet_2lvl": dict(seed=SEED["unet_2lvl"], overrides=dict(TWO_LEVELS)),
    "unet_4lvl": dict(seed=SEED["unet_4lvl"],
                      overrides=dict(block_out_channels=(32, 32, 32, 32), cross_attention_dim=CROSS_DIM)),
}

# Each point: its weight set, constructor overrides, and optionally how its config.json
# is written and how the set's tensors are stored for it ("squeeze_projections").
UNET_POINTS = {
    "groups32_2lvl": dict(
        weights="unet_2lvl",
        overrides=dict(TWO_LEVELS, norm_num_groups=32, attention_head_dim=8),
        why="The reported bug: SD 1.5 architecture (CrossAttnDownBlock2D + DownBlock2D, attention_head_dim 8 "
            "= 8 heads) with the default 32 GroupNorm groups on 32/64 channels: 1, 2 and 3 channels per group.",
    ),
    "groups16_2lvl": dict(
        weights="unet_2lvl",
        overrides=dict(TWO_LEVELS, norm_num_groups=16, attention_head_dim=8),
        why="Control for groups32_2lvl: the same weights (GroupNorm parameters are per channel), only "
            "norm_num_groups differs (2, 4 and 6 channels per group).",
    ),
    "heads_2_8_2lvl": dict(
        weights="unet_2lvl",
        overrides=dict(TWO_LEVELS, norm_num_groups=32, attention_head_dim=(2, 8)),
        why="Same weights as groups32_2lvl, per-level head counts: level 0 (down block 0 and up block 1) "
            "has 2 heads of 16, the mid block takes the last entry, 8 heads of 8. Catches a head count "
            "taken from the wrong level (up blocks index the reversed list).",
    ),
    "groups32_linear": dict(
        weights="unet_2lvl",
        transform="squeeze_projections",
        overrides=dict(TWO_LEVELS, norm_num_groups=32, attention_head_dim=(2, 4), use_linear_projection=True),
        why="SD 2.x style: linear proj_in/proj_out (the unet_2lvl weights with the 1x1 kernels squeezed to "
            "[C, C]), per-level head counts (2 heads of 16 at level 0, 4 heads of 16 in the mid block), "
            "32 groups.",
    ),
    "default_4lvl": dict(
        weights="unet_4lvl",
        overrides=dict(UNET_WEIGHTS["unet_4lvl"]["overrides"]),
        why="The true defaults: four levels (3 CrossAttnDownBlock2D + DownBlock2D, UpBlock2D + 3 "
            "CrossAttnUpBlock2D), 2 resnets per level, 8 heads (of 4), 32 groups (1 and 2 channels per group); "
            "only the widths are shrunk. At an 8x8 latent the deepest level is 1x1.",
    ),
    "default_4lvl_minimal_config": dict(
        weights="unet_4lvl",
        overrides=dict(UNET_WEIGHTS["unet_4lvl"]["overrides"]),
        minimal_config=True,
        why="default_4lvl (identical weights and outputs) with a config.json that states only "
            "block_out_channels and cross_attention_dim: every other setting must come from the "
            "loader's defaults, as diffusers' do.",
    ),
}

VAE_OVERRIDES = dict(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                     up_block_types=("UpDecoderBlock2D",) * 2)

# CLIP text encoders with a 1000-token vocabulary whose last two ids stand for BOS / EOS.
# text_encoder (CLIP-L style): quick_gelu, eos_token_id 999 stated in the config, so
# transformers pools at the first position holding 999. text_encoder_2 (bigG style,
# SDXL's second encoder): gelu, a projection, and the legacy bos/eos/pad 0 / 2 / 1 that
# older transformers-written CLIP configs carry (SD 1.5's text_encoder among them):
# transformers then pools at argmax(input_ids), here the first 999 (the id 2 inside row 2
# of the ids must not be taken for EOS).
VOCAB = 1000
BOS, EOS = 998, 999
CLIP_CONFIG = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                   bos_token_id=BOS, eos_token_id=EOS, pad_token_id=1)
CLIP2_CONFIG = dict(CLIP_CONFIG, hidden_act="gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1)

# Row 0: ordinary ids standing in for a prompt; row 1: the empty prompt; row 2: edge ids
# (0 = what SD 2.x / SDXL's tokenizer_2 pads with, 1 = the configs' pad_token_id, 2 = the
# legacy eos_token_id, 997 = the last ordinary id).
TOKEN_ROWS = [
    [320, 853, 539, 550, 376, 765, 320, 558],
    [],
    [2, 0, 1, 997, 500],
]
PAD_CLIP_L = EOS   # SD 1.x / SDXL `tokenizer`: pads with its end token
PAD_BIGG = 0       # SD 2.x / SDXL `tokenizer_2`: pads with "!" (id 0)

TEXT_ENCODERS = {
    # folder: (class, config, seed, pad id, reference prefix)
    "text_encoder_t5": (CLIPTextModel, CLIP_CONFIG, SEED["clip"], PAD_CLIP_L, "text_encoder"),
    "text_encoder_2": (CLIPTextModelWithProjection, CLIP2_CONFIG, SEED["clip2"], PAD_BIGG, "text_encoder_2"),
}

# Full txt2img pipelines (StableDiffusionPipeline) assembled from the sweep's parts: the
# 2-level UNet weight set with a UNet point's config.json, vae_default/, text_encoder_t5/, a
# CLIP tokenizer cut to the encoders' 1000-token vocabulary (the first 486 merges of OpenAI's
# BPE, so <|startoftext|> / <|endoftext|> are 998 / 999, the ids the encoders were made for)
# and SD 1.5's scheduler config. Only the small files live in pipeline/; a test assembles the
# folder (see PIPELINE_PARTS).
PIPELINE_DIR = "pipeline"
PIPELINE_POINTS = {"groups32": "groups32_2lvl", "groups16": "groups16_2lvl"}
PIPELINE_PROMPT = "a photograph of an astronaut riding a horse"
PIPELINE_NEGATIVE = ""
PIPELINE_STEPS = 10
PIPELINE_GUIDANCE = 7.5
PIPELINE_SCHEDULERS = {
    "euler": lambda: scheduler_from(EulerDiscreteScheduler, SD15_SCHEDULER_CONFIG),
    "dpmpp_2m": lambda: scheduler_from(DPMSolverMultistepScheduler, SD15_SCHEDULER_CONFIG,
                                       algorithm_type="dpmsolver++", solver_order=2),
}
# Runs: (scheduler, pixels, points). The 2-level VAE halves the size: 16x16 latents at 32
# pixels; at 72 pixels 36x36 ones, whose 1296 self-attention tokens are more than the 1024
# that weft's attention takes as one block of queries (it splits them in two). The larger run
# is for the reported case only: it takes most of the test's time in a debug build.
PIPELINE_RUNS = {
    "euler": ("euler", 32, ("groups32", "groups16")),
    "dpmpp_2m": ("dpmpp_2m", 32, ("groups32", "groups16")),
    "euler_72px": ("euler", 72, ("groups32",)),
}
# Initial latents per size: randn with these seeds (kept out of SEED so reference.json stays
# as it was).
PIPELINE_LATENTS_SEEDS = {32: 204, 72: 205}
TOKENIZER_MERGES = VOCAB - 512 - 2
# destination in the assembled folder <- source in the fixture folder ({point}: the UNet point)
PIPELINE_PARTS = {
    "model_index.json": "pipeline/model_index.json",
    "scheduler/scheduler_config.json": "pipeline/scheduler/scheduler_config.json",
    "tokenizer/vocab.json": "pipeline/tokenizer/vocab.json",
    "tokenizer/merges.txt": "pipeline/tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json": "pipeline/tokenizer/tokenizer_config.json",
    "unet/config.json": "unet_{point}/config.json",
    "unet/diffusion_pytorch_model.safetensors": "weights/unet_2lvl.safetensors",
    "vae/config.json": "vae_default/config.json",
    "vae/diffusion_pytorch_model.safetensors": "vae_default/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json": "text_encoder_t5/config.json",
    "text_encoder/model.safetensors": "text_encoder_t5/model.safetensors",
}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stats(t: torch.Tensor) -> dict:
    t = t.detach().double()
    return {"mean": float(t.mean()), "std": float(t.std()), "min": float(t.min()), "max": float(t.max()),
            "abs_mean": float(t.abs().mean())}


def model_config(model) -> dict:
    """The resolved diffusers config (what save_config writes), without private keys."""
    return {k: v for k, v in sanitize(dict(model.config)).items() if not k.startswith("_")}


def norms_and_heads(model) -> dict:
    """What diffusers actually built: every GroupNorm (groups, channels, eps), summarised by
    the module's own name, and every attention's head count and head width."""
    norms: dict[tuple, int] = {}
    attns = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.GroupNorm):
            key = (name.rsplit(".", 1)[-1], m.num_groups, m.num_channels, m.eps)
            norms[key] = norms.get(key, 0) + 1
        elif isinstance(m, Attention):
            inner = m.to_q.out_features
            attns.append({"module": name, "heads": m.heads, "head_dim": inner // m.heads,
                          "query_dim": m.to_q.in_features, "kv_dim": m.to_k.in_features})
    return {
        "group_norms": [{"kind": k[0], "groups": k[1], "channels": k[2], "channels_per_group": k[2] // k[1],
                         "eps": k[3], "count": n} for k, n in sorted(norms.items())],
        "attention": attns,
    }


def squeeze_projections(sd: dict) -> dict:
    """The tensors a `use_linear_projection` UNet stores for the same numbers: the
    Transformer2DModel's proj_in / proj_out kernels [C, C, 1, 1] as matrices [C, C]."""
    out = {}
    for k, v in sd.items():
        if k.endswith(("proj_in.weight", "proj_out.weight")):
            if v.dim() != 4 or v.shape[2:] != (1, 1):
                raise RuntimeError(f"{k}: expected a 1x1 kernel, got {tuple(v.shape)}")
            v = v[:, :, 0, 0].contiguous()
        out[k] = v
    return out


def write_minimal_unet_config(folder: Path, overrides: dict) -> None:
    cfg = {"_class_name": "UNet2DConditionModel", "_diffusers_version": diffusers.__version__}
    cfg.update(sanitize(overrides))
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# UNets
# --------------------------------------------------------------------------
def unet_points(out: Path, refs: dict, files: list) -> dict:
    latent = randn((2, 4, 8, 8), SEED["unet_latent"])
    latent16 = randn((2, 4, 16, 16), SEED["unet_latent16"])
    context = randn((2, CONTEXT_TOKENS, CROSS_DIM), SEED["unet_context"])
    timestep = torch.tensor(UNET_TIMESTEPS, dtype=torch.float32)
    refs["unet.latent"] = latent
    refs["unet.latent16"] = latent16
    refs["unet.timestep"] = timestep
    refs["unet.context"] = context

    # The weight sets, each drawn once and stored once.
    weights = {}
    sets_info = {}
    for name, w in UNET_WEIGHTS.items():
        torch.manual_seed(w["seed"])
        model = UNet2DConditionModel(**w["overrides"])
        perturb_and_round(model, 1000 + w["seed"])
        sd = to_f16(model.state_dict())
        path = out / "weights" / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(path), metadata={"format": "pt"})
        files.append(path)
        weights[name] = {k: v.float() for k, v in sd.items()}
        sets_info[name] = {
            "file": f"weights/{name}.safetensors",
            "seed": w["seed"],
            "overrides": sanitize(w["overrides"]),
            "param_count": sum(v.numel() for v in sd.values()),
            "bytes": path.stat().st_size,
            "sha256": sha256(path),
        }

    info = {}
    for name, point in UNET_POINTS.items():
        sd = weights[point["weights"]]
        if point.get("transform") == "squeeze_projections":
            sd = squeeze_projections(sd)
        unet = UNet2DConditionModel(**point["overrides"])
        unet.load_state_dict(sd, strict=True)
        unet.eval()
        folder = out / f"unet_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        if point.get("minimal_config"):
            write_minimal_unet_config(folder, point["overrides"])
        else:
            unet.save_config(folder)
        files.append(folder / "config.json")

        with torch.no_grad():
            out8 = unet(latent, timestep, encoder_hidden_states=context).sample
            out16 = unet(latent16, timestep, encoder_hidden_states=context).sample
            # The folder as the tests assemble it (config.json + the set's tensors,
            # transformed as the point says), loaded by diffusers itself, must give
            # exactly the same outputs.
            with tempfile.TemporaryDirectory() as tmp:
                t = Path(tmp)
                (t / "config.json").write_bytes((folder / "config.json").read_bytes())
                save_file(to_f16(sd), str(t / UNET_WEIGHTS_FILE), metadata={"format": "pt"})
                again = UNet2DConditionModel.from_pretrained(tmp, dtype=torch.float32, local_files_only=True).eval()
                if model_config(again) != model_config(unet):
                    raise RuntimeError(f"unet_{name}: config.json does not reload to the same config")
                if not (torch.equal(again(latent, timestep, encoder_hidden_states=context).sample, out8)
                        and torch.equal(again(latent16, timestep, encoder_hidden_states=context).sample, out16)):
                    raise RuntimeError(f"unet_{name}: the folder loaded by diffusers gives different outputs")
        p = f"unet_{name}"
        refs[f"{p}.sample"] = out8
        refs[f"{p}.sample16"] = out16
        info[name] = {
            "folder": f"unet_{name}",
            "weights": sets_info[point["weights"]]["file"],
            "weights_transform": point.get("transform"),
            "why": point["why"],
            "overrides": sanitize(point["overrides"]),
            "config_json": "minimal (only the overrides)" if point.get("minimal_config") else "full (save_config)",
            "config": model_config(unet),
            "built": norms_and_heads(unet),
            "sample_stats": stats(out8),
            "sample16_stats": stats(out16),
            "tensors": [f"{p}.sample", f"{p}.sample16"],
        }
    # The sweep only means something if the points really differ.
    for a, b in (("groups32_2lvl", "groups16_2lvl"), ("groups32_2lvl", "heads_2_8_2lvl"),
                 ("heads_2_8_2lvl", "groups32_linear")):
        d = (refs[f"unet_{a}.sample"] - refs[f"unet_{b}.sample"]).abs().max().item()
        if d < 1e-2:
            raise RuntimeError(f"unet_{a} and unet_{b} outputs barely differ ({d})")
        info[b].setdefault("max_abs_diff_vs", {})[a] = d
    if not torch.equal(refs["unet_default_4lvl.sample"], refs["unet_default_4lvl_minimal_config.sample"]):
        raise RuntimeError("the minimal config does not reproduce default_4lvl")
    return {"weight_sets": sets_info, "points": info}


# --------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------
def vae_point(out: Path, refs: dict, files: list) -> dict:
    torch.manual_seed(SEED["vae"])
    vae = AutoencoderKL(**VAE_OVERRIDES)
    perturb_and_round(vae, 1000 + SEED["vae"])
    folder = out / "vae_default"
    folder.mkdir(parents=True, exist_ok=True)
    vae.save_config(folder)
    wfile = folder / UNET_WEIGHTS_FILE
    save_file(to_f16(vae.state_dict()), str(wfile), metadata={"format": "pt"})
    files += [folder / "config.json", wfile]
    gen = torch.Generator().manual_seed(SEED["vae_image"])
    image = torch.rand((1, 3, 16, 16), generator=gen, dtype=torch.float32) * 2.0 - 1.0
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
        mean, logvar = dist.mean, dist.logvar
        decoded = vae.decode(mean).sample
        again = AutoencoderKL.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True).eval()
        d2 = again.encode(image).latent_dist
        if not (torch.equal(d2.mean, mean) and torch.equal(again.decode(mean).sample, decoded)):
            raise RuntimeError("vae_default: the folder loaded by diffusers gives different outputs")
    refs["vae_default.image"] = image
    refs["vae_default.mean"] = mean
    refs["vae_default.logvar"] = logvar
    refs["vae_default.decoded"] = decoded
    return {
        "folder": "vae_default",
        "seed": SEED["vae"],
        "overrides": sanitize(VAE_OVERRIDES),
        "config": model_config(vae),
        "param_count": sum(t.numel() for t in vae.parameters()),
        "weights_bytes": wfile.stat().st_size,
        "weights_sha256": sha256(wfile),
        "built": norms_and_heads(vae),
        "tensors": ["vae_default.image", "vae_default.mean", "vae_default.logvar", "vae_default.decoded"],
    }


# --------------------------------------------------------------------------
# CLIP text encoders
# --------------------------------------------------------------------------
def token_ids(pad: int) -> torch.Tensor:
    rows = []
    for r in TOKEN_ROWS:
        ids = [BOS] + list(r) + [EOS]
        rows.append(ids + [pad] * (77 - len(ids)))
    return torch.tensor(rows, dtype=torch.int64)


def t4_key(k: str) -> str:
    """transformers 4 layout: CLIPTextModel and CLIPTextModelWithProjection both keep the
    text tower under "text_model."; the projection sits at the top level."""
    if k.startswith(("text_model.", "text_projection.")):
        return k
    return "text_model." + k


def expected_t5_keys(cls, n_layers: int) -> set:
    layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
             "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"]
    keys = {"embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
            "final_layer_norm.weight", "final_layer_norm.bias"}
    for i in range(n_layers):
        for m in layer:
            keys |= {f"encoder.layers.{i}.{m}.weight", f"encoder.layers.{i}.{m}.bias"}
    if cls is CLIPTextModelWithProjection:
        keys = {"text_model." + k for k in keys} | {"text_projection.weight"}
    return keys


def run_clip(model, ids: torch.Tensor) -> dict:
    o = model(input_ids=ids, output_hidden_states=True)
    core = getattr(model, "text_model", model)
    r = {
        "last": o.last_hidden_state,
        "penultimate": o.hidden_states[-2],
        "penultimate_normed": core.final_layer_norm(o.hidden_states[-2]),
    }
    if isinstance(model, CLIPTextModelWithProjection):
        r["text_embeds"] = o.text_embeds
        r["pooled"] = core(input_ids=ids).pooler_output
    else:
        r["pooled"] = o.pooler_output
    return r


def check_reload(cls, folder: Path, ids: torch.Tensor, r: dict, what: str) -> None:
    m, loading = cls.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True,
                                     output_loading_info=True)
    bad = {k: v for k, v in loading.items() if v}
    if bad:
        raise RuntimeError(f"{what}: loading info {bad}")
    with torch.no_grad():
        r2 = run_clip(m.eval(), ids)
    for k in r:
        if not torch.equal(r[k], r2[k]):
            raise RuntimeError(f"{what}: {k} differs after reloading")


def clip_points(out: Path, refs: dict, files: list) -> dict:
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise RuntimeError("run with transformers 5 (scripts/requirements-sd-fixtures.txt): the stored "
                           "text_encoder_t5 layout is what transformers 5 writes")
    info = {}
    for name, (cls, cfg_kw, seed, pad, prefix) in TEXT_ENCODERS.items():
        torch.manual_seed(seed)
        model = cls(CLIPTextConfig(**cfg_kw))
        perturb_and_round(model, 1000 + seed)
        ids = token_ids(pad)
        with torch.no_grad():
            r = run_clip(model, ids)
        # Independent check of the pooling position: the first EOS of each row.
        first_eos = (ids == EOS).int().argmax(-1)
        if not torch.equal(r["pooled"], r["last"][torch.arange(ids.shape[0]), first_eos]):
            raise RuntimeError(f"{name}: pooled output is not the state at the first EOS")

        # Exactly what transformers' save_pretrained writes.
        folder = out / name
        copy.deepcopy(model).half().save_pretrained(str(folder))
        written = sorted(p.name for p in folder.iterdir())
        if written != ["config.json", "model.safetensors"]:
            raise RuntimeError(f"{name}: unexpected files {written}")
        sd5 = load_file(str(folder / "model.safetensors"))
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            meta = f.metadata()
        if set(sd5) != expected_t5_keys(cls, cfg_kw["num_hidden_layers"]):
            raise RuntimeError(f"{name}: transformers wrote unexpected keys {sorted(sd5)[:6]}...")
        own = model.state_dict()
        for k, v in sd5.items():
            src = own[k if k in own else k[len("text_model."):]]
            if v.dtype != torch.float16 or not torch.equal(v.float(), src):
                raise RuntimeError(f"{name}: {k} is not the model's float16 weight")
        files += [folder / "config.json", folder / "model.safetensors"]

        # The folder, and the transformers 4 layout a test derives from it (keys with
        # t4_key), as transformers loads them, give exactly the references.
        check_reload(cls, folder, ids, r, name)
        sd4 = {t4_key(k): v for k, v in sd5.items()}
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.json").write_bytes((folder / "config.json").read_bytes())
            save_file(sd4, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
            check_reload(cls, Path(tmp), ids, r, f"{name} in the transformers 4 layout")

        refs[f"{prefix}.ids"] = ids
        for k, v in r.items():
            refs[f"{prefix}.{k}"] = v
        info[prefix] = {
            "folder": name,
            "class": cls.__name__,
            "seed": seed,
            "config_overrides": cfg_kw,
            "pad_id_in_ids": pad,
            "param_count": sum(t.numel() for t in model.parameters()),
            "weights_bytes": (folder / "model.safetensors").stat().st_size,
            "weights_sha256": sha256(folder / "model.safetensors"),
            "safetensors_metadata": meta,
            "keys_stored_example": sorted(k for k in sd5 if ".layers.1." not in k),
            "keys_transformers4_example": sorted(k for k in sd4 if ".layers.1." not in k),
            "tensors": [f"{prefix}.{k}" for k in ["ids", *r]],
        }
    return info


# The transformers 4 side of the key-layout claim, run in a subprocess with a
# transformers 4 installation first on sys.path (see --transformers4).
T4_CHECK = r"""
import json, sys, tempfile, torch, transformers
from pathlib import Path
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
transformers.utils.logging.set_verbosity_error()
assert transformers.__version__.startswith("4."), transformers.__version__
root = Path(sys.argv[1]); refs = load_file(str(root / "reference.safetensors"))
info = json.loads((root / "reference.json").read_text())["text_encoders"]
report = {"transformers": transformers.__version__}
for prefix, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
    t = info[prefix]; folder = root / t["folder"]
    cfg = {k: v for k, v in t["config_overrides"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        cls(CLIPTextConfig(**cfg)).half().save_pretrained(tmp)
        written = set(load_file(tmp + "/model.safetensors"))
    stored = set(load_file(str(folder / "model.safetensors")))
    derived = {k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k for k in stored}
    def run(path):
        m, li = cls.from_pretrained(str(path), torch_dtype=torch.float32, output_loading_info=True)
        with torch.no_grad():
            o = m.eval()(input_ids=refs[prefix + ".ids"])
        return ({k: len(v) for k, v in li.items() if v},
                (o.last_hidden_state - refs[prefix + ".last"]).abs().max().item())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_bytes((folder / "config.json").read_bytes())
        sd = load_file(str(folder / "model.safetensors"))
        save_file({(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v
                   for k, v in sd.items()}, tmp + "/model.safetensors", metadata={"format": "pt"})
        derived_load = run(tmp)
    report[prefix] = {"writes_derived_layout": written == derived, "writes_stored_layout": written == stored,
                      "load_derived": derived_load, "load_stored": run(folder)}
print(json.dumps(report))
"""


def check_transformers4(out: Path, site: Path) -> int:
    env = dict(os.environ, PYTHONPATH=str(site))
    res = subprocess.run([sys.executable, "-c", T4_CHECK, str(out)], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        print(res.stderr)
        return 1
    report = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=2))
    ok = all(report[p]["writes_derived_layout"] and not report[p]["load_derived"][0]
             and report[p]["load_derived"][1] == 0.0 for p in ("text_encoder", "text_encoder_2"))
    print("transformers", report["transformers"], "check:", "ok" if ok else "FAILED")
    return 0 if ok else 1


# --------------------------------------------------------------------------
# Full txt2img pipelines
# --------------------------------------------------------------------------
def write_tokenizer(folder: Path, bpe_path: Path) -> list[Path]:
    """vocab.json / merges.txt / tokenizer_config.json of a CLIPTokenizer with the first
    TOKENIZER_MERGES merges of OpenAI's BPE: the 512 byte symbols, the merges, then the two
    special tokens (998, 999) -- the order (and so the ids) weft's tokenizer gives a merges
    file of that length."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = bpe_path.read_text(encoding="utf-8").split("\n")
    merges = lines[1:1 + TOKENIZER_MERGES]
    assert len(merges) == TOKENIZER_MERGES and all(len(m.split(" ")) == 2 for m in merges)
    base = byte_symbols()
    vocab = base + [s + "</w>" for s in base] + ["".join(m.split(" ")) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB and len(set(vocab)) == VOCAB
    files = [folder / "vocab.json", folder / "merges.txt", folder / "tokenizer_config.json"]
    files[0].write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    files[1].write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    files[2].write_text(json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77}, indent=2)
                        + "\n", encoding="utf-8")
    return files


def assemble_pipeline(out: Path, point: str, dest: Path) -> None:
    """The StableDiffusionPipeline folder of a UNet point, as the test assembles it."""
    for to, src in PIPELINE_PARTS.items():
        (dest / to).parent.mkdir(parents=True, exist_ok=True)
        (dest / to).write_bytes((out / src.format(point=point)).read_bytes())


def ldm_key_map(out: Path, point: str) -> dict:
    """diffusers / transformers key -> LDM single-file key, per component, for the parts of
    PIPELINE_PARTS (the mapping of scripts/make_sd_fixtures.py, written from the original
    checkpoints' layout)."""
    cfg = json.loads((out / f"unet_{point}/config.json").read_text())
    vcfg = json.loads((out / "vae_default/config.json").read_text())
    unet = sorted(load_file(str(out / "weights/unet_2lvl.safetensors")))
    vae = sorted(load_file(str(out / "vae_default/diffusion_pytorch_model.safetensors")))
    clip = sorted(load_file(str(out / "text_encoder_t5/model.safetensors")))
    return {
        "unet": {k: LDM_UNET + unet_key_to_ldm(k, cfg) for k in unet},
        "vae": {k: LDM_VAE + vae_key_to_ldm(k, vcfg) for k in vae},
        # transformers 5 drops CLIPTextModel's "text_model." prefix; the checkpoints keep it.
        "text_encoder": {k: LDM_CLIP + t4_key(k) for k in clip},
    }


def single_file(out: Path, point: str, keys: dict) -> dict:
    """The assembled pipeline's weights as an LDM single file (float16), as the test writes
    it: every tensor renamed by `keys`, the VAE attention's linear weights as 1x1 kernels."""
    ckpt = {}
    for comp, src in (("unet", "weights/unet_2lvl.safetensors"),
                      ("vae", "vae_default/diffusion_pytorch_model.safetensors"),
                      ("text_encoder", "text_encoder_t5/model.safetensors")):
        for k, v in load_file(str(out / src)).items():
            lk = keys[comp][k]
            if comp == "vae" and _is_vae_attn_linear(lk[len(LDM_VAE):]):
                v = v.reshape(*v.shape, 1, 1)
            ckpt[lk] = v
    return ckpt


def check_single_file(ckpt: dict, pipe, what: str) -> None:
    """diffusers' own LDM converters turn the single file back into the pipeline's weights."""
    f = {k: v.float() for k, v in ckpt.items()}
    for name, conv, model in (
        ("unet", sfu.convert_ldm_unet_checkpoint(f, dict(pipe.unet.config)), pipe.unet),
        ("vae", sfu.convert_ldm_vae_checkpoint(f, dict(pipe.vae.config)), pipe.vae),
    ):
        own = model.state_dict()
        if set(conv) != set(own) or any(not torch.equal(conv[k], own[k]) for k in own):
            raise RuntimeError(f"{what}: the single file's {name} does not convert back exactly")
    conv = sfu.convert_ldm_clip_checkpoint(f)
    own = {("text_model." + k if not k.startswith("text_model.") else k): v
           for k, v in pipe.text_encoder.state_dict().items()}
    if set(conv) != set(own) or any(not torch.equal(conv[k], own[k]) for k in own):
        raise RuntimeError(f"{what}: the single file's text encoder does not convert back exactly")


def run_sd(pipe, scheduler, latents: torch.Tensor, output_type: str):
    """The pipeline's output (latents or image) and the prompt embeddings it used."""
    pipe.scheduler = scheduler
    embeds = {}

    def on_step_end(p, i, t, kw):
        if i == 0:
            embeds["prompt_embeds"] = kw["prompt_embeds"].detach().clone()
        return kw

    size = latents.shape[-1] * pipe.vae_scale_factor
    out = pipe(prompt=PIPELINE_PROMPT, negative_prompt=PIPELINE_NEGATIVE, guidance_scale=PIPELINE_GUIDANCE,
               num_inference_steps=PIPELINE_STEPS, height=size, width=size,
               latents=latents.clone(), output_type=output_type, return_dict=True,
               callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    return out.images.detach().clone(), embeds["prompt_embeds"]


def scheduler_meta(sched) -> dict:
    meta = {
        "scheduler": type(sched).__name__,
        "config": resolved_config(sched.config),
        "init_noise_sigma": float(sched.init_noise_sigma),
        "timesteps": exact_list(sched.timesteps),
    }
    if isinstance(getattr(sched, "sigmas", None), torch.Tensor):
        meta["sigmas"] = exact_list(sched.sigmas)
    return meta


def to255(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = (a.double() - b.double()).abs() * 255.0
    return {"max": float(d.max()), "mean": float(d.mean())}


def pipeline_points(out: Path, bpe_path: Path, files: list) -> None:
    """pipeline/: the small files of the txt2img pipelines and their references (own
    reference.safetensors / reference.json, so the component references stay as they are)."""
    root = out / PIPELINE_DIR
    root.mkdir(parents=True, exist_ok=True)
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", SD15_SCHEDULER_CONFIG["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    p = root / "model_index.json"
    p.write_text(json.dumps(model_index, indent=2) + "\n", encoding="utf-8")
    files.append(p)
    p = root / "scheduler" / "scheduler_config.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    sc = {"_class_name": SD15_SCHEDULER_CONFIG["_class_name"], "_diffusers_version": diffusers.__version__}
    sc.update({k: v for k, v in SD15_SCHEDULER_CONFIG.items() if k != "_class_name"})
    p.write_text(json.dumps(sc, indent=2) + "\n", encoding="utf-8")
    files.append(p)
    files += write_tokenizer(root / "tokenizer", bpe_path)

    refs: dict[str, torch.Tensor] = {}
    info: dict = {}
    latents = {}
    for size, seed in PIPELINE_LATENTS_SEEDS.items():
        latents[size] = randn((1, 4, size // 2, size // 2), seed)
        refs[f"latents_{size}px"] = latents[size]
    keys_by_point = {}
    for name, point in PIPELINE_POINTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            assemble_pipeline(out, point, Path(tmp))
            pipe = StableDiffusionPipeline.from_pretrained(tmp, dtype=torch.float32, local_files_only=True)
            pipe.set_progress_bar_config(disable=True)
            # the same pipeline with every model in float64: how far float32 rounding alone
            # moves the images
            pipe64 = StableDiffusionPipeline.from_pretrained(tmp, dtype=torch.float64, local_files_only=True)
            pipe64.set_progress_bar_config(disable=True)
        if type(pipe.scheduler).__name__ != SD15_SCHEDULER_CONFIG["_class_name"]:
            raise RuntimeError(f"{name}: the folder's scheduler is {type(pipe.scheduler).__name__}")
        if pipe.unet.config.norm_num_groups != int(name[len("groups"):]):
            raise RuntimeError(f"{name}: built with {pipe.unet.config.norm_num_groups} groups")
        if pipe.vae_scale_factor != 2:
            raise RuntimeError(f"{name}: VAE scale factor {pipe.vae_scale_factor}")
        tok = pipe.tokenizer
        if (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.model_max_length) != (BOS, EOS, EOS, 77):
            raise RuntimeError(f"{name}: tokenizer special ids {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}")
        ids = tok([PIPELINE_PROMPT, PIPELINE_NEGATIVE], padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids.to(torch.int64)
        if int(ids.max()) >= VOCAB:
            raise RuntimeError(f"{name}: token id {int(ids.max())} outside the vocabulary")
        refs["ids"] = ids

        keys = ldm_key_map(out, point)
        check_single_file(single_file(out, point, keys), pipe, name)
        keys_by_point[point] = keys

        point_info: dict = {"unet_point": point, "norm_num_groups": pipe.unet.config.norm_num_groups,
                            "runs": {}}
        for run, (sched, size, points) in PIPELINE_RUNS.items():
            if name not in points:
                continue
            key = f"{name}.{run}"
            make = PIPELINE_SCHEDULERS[sched]
            lat, emb = run_sd(pipe, make(), latents[size], "latent")
            meta = scheduler_meta(pipe.scheduler)
            img, _ = run_sd(pipe, make(), latents[size], "pt")
            with torch.no_grad():
                raw = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
            if not torch.equal((raw * 0.5 + 0.5).clamp(0, 1), img):
                raise RuntimeError(f"{key}: the image is not decode(latents / scaling_factor) * 0.5 + 0.5, clamped")
            # the 8-bit image output_type="pil" / "np" users save: numpy_to_pil's (x * 255).round()
            u8 = (img * 255.0).round().to(torch.uint8)
            img64, _ = run_sd(pipe64, make(), latents[size].double(), "pt")
            if "prompt_embeds" not in refs:
                refs["prompt_embeds"] = emb
            elif not torch.equal(refs["prompt_embeds"], emb):
                raise RuntimeError(f"{key}: prompt embeddings differ between runs")
            refs[f"{key}.latents"] = lat
            refs[f"{key}.image"] = img
            refs[f"{key}.image_u8"] = u8
            point_info["runs"][run] = dict(
                meta,
                height=size,
                width=size,
                initial_latents=f"latents_{size}px",
                num_inference_steps=PIPELINE_STEPS,
                guidance_scale=PIPELINE_GUIDANCE,
                latents_stats=stats(lat),
                raw_image_stats=stats(raw),
                float64_vs_float32_image_255=to255(img64, img),
                tensors=[f"{key}.{t}" for t in ("latents", "image", "image_u8")],
            )
        info[name] = point_info
    for run, (_, _, points) in PIPELINE_RUNS.items():
        if "groups16" not in points:
            continue
        info.setdefault("groups32_vs_groups16_image_255", {})[run] = to255(
            refs[f"groups32.{run}.image"], refs[f"groups16.{run}.image"])

    # Both points share the weight set and so the key mapping.
    if keys_by_point["groups32_2lvl"] != keys_by_point["groups16_2lvl"]:
        raise RuntimeError("the two points map to different single-file keys")
    p = root / "ldm_keys.json"
    write_json(p, keys_by_point["groups32_2lvl"])
    files.append(p)

    refs = {k: (v.detach().cpu().contiguous().to(torch.float32) if v.is_floating_point()
                else v.detach().cpu().contiguous()) for k, v in refs.items()}
    for k, v in refs.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise RuntimeError(f"pipeline {k} has non-finite values")
    p = root / "reference.safetensors"
    save_file(refs, str(p))
    files.append(p)
    p = root / "reference.json"
    write_json(p, sanitize({
        "format_version": FORMAT_VERSION,
        "generator": dict(generator_info(), script="scripts/make_sd_sweep_fixtures.py"),
        "prompt": PIPELINE_PROMPT,
        "negative_prompt": PIPELINE_NEGATIVE,
        "steps": PIPELINE_STEPS,
        "guidance_scale": PIPELINE_GUIDANCE,
        "initial_latents": {f"latents_{size}px": f"randn [1, 4, {size // 2}, {size // 2}], seed {seed}, passed "
                                                  "as the pipeline's `latents`"
                            for size, seed in PIPELINE_LATENTS_SEEDS.items()},
        "parts": PIPELINE_PARTS,
        "tokenizer_merges": TOKENIZER_MERGES,
        "scheduler_config": SD15_SCHEDULER_CONFIG,
        "points": info,
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in refs.items()},
    }))
    files.append(p)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def generate(out: Path, bpe_path: Path) -> list[Path]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    refs: dict[str, torch.Tensor] = {}

    unets = unet_points(out, refs, files)
    vae = vae_point(out, refs, files)
    clips = clip_points(out, refs, files)
    # after the parts it assembles (weights/, unet_*/, vae_default/, text_encoder_t5/)
    pipeline_points(out, bpe_path, files)

    for k, v in refs.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise RuntimeError(f"{k} has non-finite values")
    refs = {k: (v.detach().cpu().contiguous().to(torch.float32) if v.is_floating_point()
                else v.detach().cpu().contiguous()) for k, v in refs.items()}
    p = out / "reference.safetensors"
    save_file(refs, str(p))
    files.append(p)

    info = {
        "format_version": FORMAT_VERSION,
        "generator": dict(generator_info(), script="scripts/make_sd_sweep_fixtures.py"),
        "perturb_std": PERTURB_STD,
        "seeds": SEED,
        "unet_inputs": {
            "timestep": UNET_TIMESTEPS,
            "latent": "randn [2, 4, 8, 8], seed unet_latent",
            "latent16": "randn [2, 4, 16, 16], seed unet_latent16",
            "context": f"randn [2, {CONTEXT_TOKENS}, {CROSS_DIM}], seed unet_context",
            "note": "every UNet point gets the same unet.latent / unet.latent16 / unet.timestep / unet.context",
        },
        "unet_weight_sets": unets["weight_sets"],
        "unets": unets["points"],
        "vae": vae,
        "text_encoders": clips,
        "token_rows": [[BOS, *r, EOS] for r in TOKEN_ROWS],
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in refs.items()},
    }
    p = out / "reference.json"
    write_json(p, sanitize(info))
    files.append(p)
    return files


def summary(out: Path) -> None:
    info = json.loads((out / "reference.json").read_text(encoding="utf-8"))
    for name, w in info["unet_weight_sets"].items():
        print(f"{name:30s} {w['param_count']:9d} params {w['bytes']:9d} bytes")
    print(f"{'UNet point':30s} {'weights':24s} sample mean / std / min / max")
    for name, u in info["unets"].items():
        s = u["sample_stats"]
        print(f"{name:30s} {u['weights']:24s} {s['mean']:+.4f} / {s['std']:.4f} / {s['min']:+.3f} / {s['max']:+.3f}")
    v = info["vae"]
    print(f"{'vae_default':30s} {v['param_count']:9d} params {v['weights_bytes']:9d} bytes")
    for prefix, t in info["text_encoders"].items():
        print(f"{t['folder']:30s} {t['param_count']:9d} params {t['weights_bytes']:9d} bytes")
    pipe = json.loads((out / PIPELINE_DIR / "reference.json").read_text(encoding="utf-8"))
    print("pipeline image differences in 0..255 units (max / mean)")
    for name in PIPELINE_POINTS:
        for run, m in pipe["points"][name]["runs"].items():
            d = m["float64_vs_float32_image_255"]
            print(f"  {name} {run:10s} diffusers float64 vs float32: {d['max']:.4f} / {d['mean']:.5f}")
    for run, d in pipe["points"]["groups32_vs_groups16_image_255"].items():
        print(f"  groups32 vs groups16 {run:10s}: {d['max']:.1f} / {d['mean']:.1f}")


def main() -> int:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare byte-for-byte with --out")
    ap.add_argument("--bpe", type=Path, default=None,
                    help="path to OpenAI's bpe_simple_vocab_16e6.txt (default: the instant-clip-tokenizer "
                         "crate's copy in the cargo registry)")
    ap.add_argument("--transformers4", type=Path, metavar="SITE",
                    help="also check the text encoders against the transformers 4.x installed in SITE")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            files = generate(Path(tmp), find_bpe(args.bpe))
            bad = []
            for f in files:
                rel = f.relative_to(tmp)
                target = args.out / rel
                if not target.exists() or target.read_bytes() != f.read_bytes():
                    bad.append(str(rel))
            stale = sorted(str(p.relative_to(args.out)) for p in args.out.rglob("*")
                           if p.is_file() and p.name != "README.md"
                           and Path(tmp, p.relative_to(args.out)) not in files)
            if stale:
                print("files the script does not write: " + ", ".join(stale))
            if bad:
                print("fixtures differ from a fresh run: " + ", ".join(bad))
                if "reference.safetensors" in bad and (args.out / "reference.safetensors").exists():
                    # Tell float noise (another CPU's kernels) from a real change.
                    old = load_file(str(args.out / "reference.safetensors"))
                    new = load_file(str(Path(tmp) / "reference.safetensors"))
                    for k in sorted(set(old) | set(new)):
                        if k not in old or k not in new or old[k].shape != new[k].shape:
                            print(f"  {k}: missing or reshaped")
                        elif not torch.equal(old[k], new[k]):
                            d = (old[k].double() - new[k].double()).abs().max().item()
                            print(f"  {k}: max abs diff {d:.3g}")
            if bad or stale:
                return 1
            print(f"{len(files)} fixture files match a fresh run")
        return check_transformers4(args.out, args.transformers4) if args.transformers4 else 0
    files = generate(args.out, find_bpe(args.bpe))
    total = 0
    for f in files:
        total += f.stat().st_size
        print(f"{f.stat().st_size:9d}  {f.relative_to(args.out)}")
    print(f"{total:9d}  total")
    summary(args.out)
    return check_transformers4(args.out, args.transformers4) if args.transformers4 else 0


if __name__ == "__main__":
    sys.exit(main())
