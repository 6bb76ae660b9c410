#!/usr/bin/env python3
"""Generate tiny Stable Diffusion 1.x / 2.x parity fixtures with diffusers + transformers.

Writes models/tests/fixtures/sd/: tiny random-weight models with exactly the SD 1.5
(and SD 2.x v-prediction) class layout, both as diffusers folders and as original
LDM single files (A1111 / ComfyUI layout), a ControlNet, and float32 reference
outputs (tokenizer ids, CLIP hidden states, UNet / ControlNet / VAE outputs and
full 10-step txt2img pipelines) that the Rust test suite compares against without
needing Python. See the README.md in that folder for the file formats and the
diffusers <-> LDM key mapping.

Deterministic and offline: every model is built from its config class with random
weights from fixed torch seeds (nothing is downloaded; HF_HUB_OFFLINE=1), every
parameter is perturbed (so zero-initialised layers matter) and rounded to float16
and back, and all references are computed in float32 on the CPU with one thread.
The weights are saved as float16, so a loader that upcasts to float32 sees exactly
the weights the references were computed with.

The CLIP tokenizer is a transformers CLIPTokenizer built from the standard OpenAI
BPE merges (bpe_simple_vocab_16e6.txt, taken from the instant-clip-tokenizer crate
in the cargo registry, or --bpe PATH); its vocab.json/merges.txt are written to a
temporary folder only.

Usage (from the repository root):

    python -m venv .venv-sd-fixtures
    .venv-sd-fixtures/bin/pip install -r scripts/requirements-sd-fixtures.txt
    .venv-sd-fixtures/bin/python scripts/make_sd_fixtures.py
    .venv-sd-fixtures/bin/python scripts/make_sd_fixtures.py --check   # compare only

This script only *calls* diffusers and transformers; it contains no diffusers or
transformers code. The diffusers -> LDM single-file key mapping is written here
from the layout of the original checkpoints and checked against diffusers' own
single-file converters.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

# Never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

FORMAT_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "models" / "tests" / "fixtures" / "sd"

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE_PROMPT = ""
PROMPT_IDS_PREFIX = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
# More than 100 tokens; plain ASCII (no ftfy/html-unescape sensitive text), with
# digits (CLIP splits every digit), punctuation runs, apostrophes, mixed case and
# irregular spacing.
LONG_PROMPT = (
    "A highly detailed  oil painting of an old lighthouse keeper's cottage on a rocky cliff at dusk, "
    "waves crashing below, seagulls circling overhead; warm lantern light spilling from the windows, "
    "moss-covered stone walls, a weathered wooden door, a red bicycle leaning against the fence. "
    "Dramatic clouds, golden hour, volumetric fog, cinematic lighting, 35mm film grain, f/1.8, "
    "ISO 400, shot on a Hasselblad in 1987!!! Trending on ArtStation, masterpiece, best quality, "
    "ultra-detailed, 8k, sharp focus, intricate textures, by Ivan Aivazovsky and J.M.W. Turner; "
    "we'll see the storm roll in, won't we? (Extra: blue hour, reflections, 100% realism.)"
)
GUIDANCE_SCALE = 7.5
NUM_STEPS = 10
HEIGHT = WIDTH = 64
PERTURB_STD = 0.05

# Seeds (torch.manual_seed for construction, torch.Generator for everything else).
SEED = {
    "clip_sd1": 1,
    "clip_sd2": 2,
    "unet_sd1": 3,
    "vae": 4,
    "controlnet": 5,
    "unet_sd2": 6,
    "unet_sample": 100,
    "unet_context": 101,
    "controlnet_cond": 102,
    "vae_image": 103,
    "vae_latent": 104,
    "pipeline_latents": 105,
}

# Stable Diffusion 1.5 scheduler/scheduler_config.json (plus an explicit
# prediction_type); SD 2.1-v's is a DDIMScheduler with prediction_type v_prediction.
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SD2V_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

CLIP_SD1_CONFIG = dict(
    vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
    projection_dim=16, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    layer_norm_eps=1e-5,
)
# SD 2.x (OpenCLIP ViT-H text tower): gelu. The diffusers text encoder has one layer
# fewer than the OpenCLIP tower stored in the single file.
CLIP_SD2_CONFIG = dict(CLIP_SD1_CONFIG, hidden_act="gelu")
CLIP_SD2_OPENCLIP_LAYERS = CLIP_SD2_CONFIG["num_hidden_layers"] + 1
OPENCLIP_LOGIT_SCALE = math.log(1.0 / 0.07)

UNET_COMMON = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
    layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
    norm_num_groups=4,
)
UNET_SD1_CONFIG = dict(UNET_COMMON, attention_head_dim=4, use_linear_projection=False)
UNET_SD2_CONFIG = dict(UNET_COMMON, attention_head_dim=(2, 4), use_linear_projection=True)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16),
    layers_per_block=1, norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215, sample_size=64,
)
CONTROLNET_CONDITIONING_CHANNELS = (4, 8, 8, 16)

LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."
LDM_CLIP = "cond_stage_model.transformer."
LDM_OPENCLIP = "cond_stage_model.model."


# --------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------
def f32(x) -> float:
    """Shortest decimal that round-trips the float32 value (as parsed via f64 -> f32)."""
    v = np.float32(x)
    if not np.isfinite(v):
        raise ValueError(f"non-finite float32: {v}")
    short = float(str(v))
    return short if np.float32(short) == v else float(v)


def exact_list(t) -> list:
    """Exact values of a tensor as Python floats (float32 shortest form, others exact)."""
    t = t.detach().cpu()
    if t.dtype == torch.float32:
        return [f32(v) for v in t.numpy().reshape(-1)]
    return [float(v) for v in t.to(torch.float64).reshape(-1).tolist()]


def sanitize(obj):
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return sanitize(obj.tolist())
    return str(obj)


def resolved_config(cfg) -> dict:
    """scheduler.config as JSON; `_use_default_values` comes from a set, so sort it."""
    d = sanitize(dict(cfg))
    if isinstance(d.get("_use_default_values"), list):
        d["_use_default_values"] = sorted(d["_use_default_values"])
    return d


def _is_scalar(v):
    return v is None or isinstance(v, (bool, int, float, str))


def dumps(obj, indent=0) -> str:
    """Pretty JSON with lists of scalars kept on one line."""
    pad = "  " * (indent + 1)
    end = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(obj, list):
        if all(_is_scalar(v) for v in obj):
            return "[" + ", ".join(json.dumps(v, allow_nan=False) for v in obj) + "]"
        items = [pad + dumps(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + end + "]"
    return json.dumps(obj, allow_nan=False)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(obj) + "\n", encoding="utf-8")


def generator_info() -> dict:
    return {
        "script": "scripts/make_sd_fixtures.py",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------
def find_bpe(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    pattern = os.path.expanduser(
        "~/.cargo/registry/src/*/instant-clip-tokenizer-*/bpe_simple_vocab_16e6.txt")
    hits = sorted(glob.glob(pattern))
    if not hits:
        raise SystemExit("bpe_simple_vocab_16e6.txt not found; pass --bpe PATH "
                         "(e.g. `cargo fetch` the instant-clip-tokenizer crate first)")
    return Path(hits[-1])


def byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE uses for the bytes, in vocabulary order:
    printable Latin-1 bytes map to themselves (in byte order), then every remaining byte
    (in byte order) maps to chr(256 + k)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
                 + list(range(0xAE, 0xFF + 1)))
    symbols = [chr(b) for b in printable]
    k = 0
    for b in range(256):
        if b not in printable:
            symbols.append(chr(256 + k))
            k += 1
    assert len(symbols) == 256
    return symbols


def build_tokenizer_files(bpe_path: Path, folder: Path) -> None:
    lines = bpe_path.read_text(encoding="utf-8").split("\n")
    # Line 0 is a header; the CLIP vocabulary uses the first 49152 - 256 - 2 merges.
    merges = lines[1:49152 - 256 - 2 + 1]
    assert all(len(m.split(" ")) == 2 for m in merges)
    base = byte_symbols()
    vocab = base + [s + "</w>" for s in base] + ["".join(m.split(" ")) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == len(vocab)
    (folder / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def build_tokenizers(bpe_path: Path):
    """(SD1 tokenizer: pads with <|endoftext|>, SD2 tokenizer: pads with "!" = id 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer_files(bpe_path, Path(tmp))
        tok1 = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
        tok2 = CLIPTokenizer.from_pretrained(tmp, model_max_length=77, pad_token="!")
    ids = tok1(PROMPT).input_ids
    if ids[:len(PROMPT_IDS_PREFIX)] != PROMPT_IDS_PREFIX:
        raise RuntimeError(f"tokenizer construction is wrong: {ids} != {PROMPT_IDS_PREFIX}")
    assert tok1.pad_token_id == 49407 and tok2.pad_token_id == 0, (tok1.pad_token_id, tok2.pad_token_id)
    return tok1, tok2


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
@torch.no_grad()
def perturb_and_round(model: torch.nn.Module, seed: int, std: float = PERTURB_STD) -> None:
    """Add std*N(0,1) to every parameter (so zero-initialised layers such as conv_out,
    proj_out and the ControlNet zero convolutions matter), then round to float16."""
    gen = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if std:
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=torch.float32))
        p.copy_(p.half().float())
    model.eval()


def _flat_text_model(model) -> bool:
    """transformers >= 5 builds CLIPTextModel without the `text_model` wrapper module (and
    its save_pretrained drops the "text_model." prefix); every real SD checkpoint, and
    CLIPTextModelWithProjection, keeps it."""
    return isinstance(model, CLIPTextModel) and not hasattr(model, "text_model")


def state_of(model) -> dict:
    """State dict with canonical checkpoint key names ("text_model.*" for CLIP)."""
    sd = model.state_dict()
    if _flat_text_model(model):
        sd = {"text_model." + k: v for k, v in sd.items()}
    return sd


def load_into(model, sd: dict) -> None:
    if _flat_text_model(model):
        assert all(k.startswith("text_model.") for k in sd)
        sd = {k[len("text_model."):]: v for k, v in sd.items()}
    res = model.load_state_dict(sd, strict=True)
    if getattr(res, "missing_keys", None) or getattr(res, "unexpected_keys", None):
        raise RuntimeError(f"{type(model).__name__}: {res}")


def text_core(model):
    return getattr(model, "text_model", model)


def make_clip_config(base: dict, **over) -> CLIPTextConfig:
    cfg = CLIPTextConfig(**dict(base, **over))
    return cfg


def build_clip_sd1():
    torch.manual_seed(SEED["clip_sd1"])
    cfg = make_clip_config(CLIP_SD1_CONFIG)
    model = CLIPTextModel(cfg)
    perturb_and_round(model, 1000 + SEED["clip_sd1"])
    return model


def build_clip_sd2():
    """(OpenCLIP-like tower with one layer more, diffusers CLIPTextModel, CLIPTextModelWithProjection)."""
    torch.manual_seed(SEED["clip_sd2"])
    full_cfg = make_clip_config(CLIP_SD2_CONFIG, num_hidden_layers=CLIP_SD2_OPENCLIP_LAYERS)
    full = CLIPTextModelWithProjection(full_cfg)
    perturb_and_round(full, 1000 + SEED["clip_sd2"])
    n = CLIP_SD2_CONFIG["num_hidden_layers"]
    drop = re.compile(rf"^text_model\.encoder\.layers\.({'|'.join(str(i) for i in range(n, CLIP_SD2_OPENCLIP_LAYERS))})\.")
    sd = {k: v for k, v in full.state_dict().items() if not drop.match(k)}
    cfg = make_clip_config(CLIP_SD2_CONFIG)
    with_proj = CLIPTextModelWithProjection(cfg)
    load_into(with_proj, sd)
    te = CLIPTextModel(cfg)
    load_into(te, {k: v for k, v in sd.items() if k.startswith("text_model.")})
    return full.eval(), te.eval(), with_proj.eval()


def build_unet(config: dict, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config)
    perturb_and_round(unet, 1000 + seed)
    return unet


def build_vae() -> AutoencoderKL:
    torch.manual_seed(SEED["vae"])
    vae = AutoencoderKL(**VAE_CONFIG)
    perturb_and_round(vae, 1000 + SEED["vae"])
    return vae


def build_controlnet(unet: UNet2DConditionModel) -> ControlNetModel:
    torch.manual_seed(SEED["controlnet"])
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_CONDITIONING_CHANNELS)
    perturb_and_round(cn, 1000 + SEED["controlnet"])
    return cn


# --------------------------------------------------------------------------
# diffusers -> LDM single-file layout (and an independently written inverse)
# --------------------------------------------------------------------------
UNET_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET_TO_LDM = {"conv_shortcut": "nin_shortcut"}  # norm1/conv1/norm2/conv2 keep their names
VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _sub(rest: str, table: dict) -> str:
    """Rename the leading module of `rest` ("conv1.weight" -> "in_layers.2.weight")."""
    for a, b in table.items():
        if rest.startswith(a + "."):
            return b + rest[len(a):]
    return rest


def _unet_has_attn(block_type: str) -> bool:
    return "CrossAttn" in block_type


def unet_key_to_ldm(k: str, cfg) -> str:
    L = cfg["layers_per_block"]
    if isinstance(L, (list, tuple)):
        raise NotImplementedError("per-level layers_per_block")
    m = re.match(r"^time_embedding\.linear_([12])\.(.*)$", k)
    if m:
        return f"time_embed.{0 if m[1] == '1' else 2}.{m[2]}"
    if k.startswith("conv_in."):
        return "input_blocks.0.0." + k[len("conv_in."):]
    if k.startswith("conv_norm_out."):
        return "out.0." + k[len("conv_norm_out."):]
    if k.startswith("conv_out."):
        return "out.2." + k[len("conv_out."):]
    m = re.match(r"^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$", k)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        b = 1 + i * (L + 1) + j
        if kind == "resnets":
            return f"input_blocks.{b}.0.{_sub(rest, UNET_RESNET_TO_LDM)}"
        return f"input_blocks.{b}.1.{rest}"
    m = re.match(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$", k)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (L + 1)}.0.op.{m[2]}"
    m = re.match(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", k)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_sub(rest, UNET_RESNET_TO_LDM)}"
        assert j == 0
        return f"middle_block.1.{rest}"
    m = re.match(r"^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$", k)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        b = i * (L + 1) + j
        if kind == "resnets":
            return f"output_blocks.{b}.0.{_sub(rest, UNET_RESNET_TO_LDM)}"
        return f"output_blocks.{b}.1.{rest}"
    m = re.match(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", k)
    if m:
        i = int(m[1])
        slot = 2 if _unet_has_attn(cfg["up_block_types"][i]) else 1
        return f"output_blocks.{i * (L + 1) + L}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM mapping for UNet key {k}")


def unet_key_from_ldm(k: str, cfg) -> str:
    """LDM UNet key (without prefix) -> diffusers; parses the LDM structure."""
    L = cfg["layers_per_block"]
    inv_res = {v: k2 for k2, v in UNET_RESNET_TO_LDM.items()}
    m = re.match(r"^time_embed\.([02])\.(.*)$", k)
    if m:
        return f"time_embedding.linear_{1 if m[1] == '0' else 2}.{m[2]}"
    m = re.match(r"^out\.([02])\.(.*)$", k)
    if m:
        return ("conv_norm_out." if m[1] == "0" else "conv_out.") + m[2]
    m = re.match(r"^input_blocks\.(\d+)\.(\d+)\.(.*)$", k)
    if m:
        b, s, rest = int(m[1]), int(m[2]), m[3]
        if b == 0:
            assert s == 0
            return "conv_in." + rest
        i, j = divmod(b - 1, L + 1)
        if j == L:  # the level's Downsample
            assert s == 0 and rest.startswith("op.")
            return f"down_blocks.{i}.downsamplers.0.conv.{rest[3:]}"
        if s == 0:
            return f"down_blocks.{i}.resnets.{j}.{_sub(rest, inv_res)}"
        assert s == 1
        return f"down_blocks.{i}.attentions.{j}.{rest}"
    m = re.match(r"^middle_block\.(\d)\.(.*)$", k)
    if m:
        s, rest = int(m[1]), m[2]
        if s == 1:
            return f"mid_block.attentions.0.{rest}"
        return f"mid_block.resnets.{s // 2}.{_sub(rest, inv_res)}"
    m = re.match(r"^output_blocks\.(\d+)\.(\d+)\.(.*)$", k)
    if m:
        b, s, rest = int(m[1]), int(m[2]), m[3]
        i, j = divmod(b, L + 1)
        if s == 0:
            return f"up_blocks.{i}.resnets.{j}.{_sub(rest, inv_res)}"
        if rest.startswith("conv."):  # Upsample (slot 1 without attention, 2 with)
            assert j == L
            return f"up_blocks.{i}.upsamplers.0.conv.{rest[5:]}"
        assert s == 1
        return f"up_blocks.{i}.attentions.{j}.{rest}"
    raise KeyError(f"unknown LDM UNet key {k}")


def vae_key_to_ldm(k: str, cfg) -> str:
    n = len(cfg["block_out_channels"])
    if k.startswith(("quant_conv.", "post_quant_conv.")):
        return k
    m = re.match(r"^(encoder|decoder)\.(.*)$", k)
    if not m:
        raise KeyError(f"no LDM mapping for VAE key {k}")
    side, rest = m[1], m[2]
    if rest.startswith(("conv_in.", "conv_out.")):
        return f"{side}.{rest}"
    if rest.startswith("conv_norm_out."):
        return f"{side}.norm_out." + rest[len("conv_norm_out."):]
    m = re.match(r"^mid_block\.resnets\.(\d+)\.(.*)$", rest)
    if m:
        return f"{side}.mid.block_{int(m[1]) + 1}.{_sub(m[2], VAE_RESNET_TO_LDM)}"
    m = re.match(r"^mid_block\.attentions\.0\.(.*)$", rest)
    if m:
        return f"{side}.mid.attn_1.{_sub(m[1], VAE_ATTN_TO_LDM)}"
    m = re.match(r"^down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", rest)
    if m and side == "encoder":
        return f"encoder.down.{m[1]}.block.{m[2]}.{_sub(m[3], VAE_RESNET_TO_LDM)}"
    m = re.match(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$", rest)
    if m and side == "encoder":
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    m = re.match(r"^up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", rest)
    if m and side == "decoder":
        return f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{_sub(m[3], VAE_RESNET_TO_LDM)}"
    m = re.match(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", rest)
    if m and side == "decoder":
        return f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}"
    raise KeyError(f"no LDM mapping for VAE key {k}")


def vae_key_from_ldm(k: str, cfg) -> str:
    n = len(cfg["block_out_channels"])
    inv_res = {v: k2 for k2, v in VAE_RESNET_TO_LDM.items()}
    inv_attn = {v: k2 for k2, v in VAE_ATTN_TO_LDM.items()}
    if k.startswith(("quant_conv.", "post_quant_conv.")):
        return k
    side, rest = k.split(".", 1)
    assert side in ("encoder", "decoder"), k
    if rest.startswith(("conv_in.", "conv_out.")):
        return k
    if rest.startswith("norm_out."):
        return f"{side}.conv_norm_out." + rest[len("norm_out."):]
    m = re.match(r"^mid\.block_(\d)\.(.*)$", rest)
    if m:
        return f"{side}.mid_block.resnets.{int(m[1]) - 1}.{_sub(m[2], inv_res)}"
    m = re.match(r"^mid\.attn_1\.(.*)$", rest)
    if m:
        return f"{side}.mid_block.attentions.0.{_sub(m[1], inv_attn)}"
    m = re.match(r"^(down|up)\.(\d+)\.(block\.(\d+)|downsample|upsample)\.(.*)$", rest)
    if m:
        lvl = int(m[2])
        i = lvl if m[1] == "down" else n - 1 - lvl
        blk = "down_blocks" if m[1] == "down" else "up_blocks"
        if m[4] is not None:
            return f"{side}.{blk}.{i}.resnets.{m[4]}.{_sub(m[5], inv_res)}"
        sampler = "downsamplers" if m[3] == "downsample" else "upsamplers"
        assert m[5].startswith("conv.")
        return f"{side}.{blk}.{i}.{sampler}.0.{m[5]}"
    raise KeyError(f"unknown LDM VAE key {k}")


def _is_vae_attn_linear(ldm_key: str) -> bool:
    return bool(re.match(r"^(encoder|decoder)\.mid\.attn_1\.(q|k|v|proj_out)\.weight$", ldm_key))


def unet_to_ldm(sd: dict, cfg) -> dict:
    return {LDM_UNET + unet_key_to_ldm(k, cfg): v for k, v in sd.items()}


def unet_from_ldm(ckpt: dict, cfg) -> dict:
    return {unet_key_from_ldm(k[len(LDM_UNET):], cfg): v for k, v in ckpt.items() if k.startswith(LDM_UNET)}


def vae_to_ldm(sd: dict, cfg) -> dict:
    out = {}
    for k, v in sd.items():
        lk = vae_key_to_ldm(k, cfg)
        if _is_vae_attn_linear(lk):
            v = v.reshape(*v.shape, 1, 1)  # LDM's AttnBlock uses 1x1 convolutions
        out[LDM_VAE + lk] = v
    return out


def vae_from_ldm(ckpt: dict, cfg) -> dict:
    out = {}
    for k, v in ckpt.items():
        if not k.startswith(LDM_VAE):
            continue
        lk = k[len(LDM_VAE):]
        if _is_vae_attn_linear(lk):
            assert v.shape[2:] == (1, 1), (lk, v.shape)
            v = v[:, :, 0, 0]
        out[vae_key_from_ldm(lk, cfg)] = v
    return out


def clip_to_ldm(sd: dict) -> dict:
    return {LDM_CLIP + k: v for k, v in sd.items()}


def clip_from_ldm(ckpt: dict) -> dict:
    return {k[len(LDM_CLIP):]: v for k, v in ckpt.items() if k.startswith(LDM_CLIP)}


OPENCLIP_LAYER_TO_LDM = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def openclip_to_ldm(sd: dict) -> dict:
    """CLIPTextModelWithProjection state dict -> OpenCLIP text tower (prefix cond_stage_model.model.)."""
    out = {}
    qkv: dict = {}
    for k, v in sd.items():
        if k == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = v
        elif k == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = v
        elif k.startswith("text_model.final_layer_norm."):
            out["ln_final." + k.split(".")[-1]] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.t().contiguous()  # [hidden, proj]; OpenCLIP computes x @ P
        else:
            m = re.match(r"^text_model\.encoder\.layers\.(\d+)\.(.*)$", k)
            if not m:
                raise KeyError(f"no OpenCLIP mapping for {k}")
            n, rest = int(m[1]), m[2]
            mm = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
            if mm:
                qkv.setdefault((n, mm[2]), {})[mm[1]] = v
                continue
            out[f"transformer.resblocks.{n}.{_sub(rest, OPENCLIP_LAYER_TO_LDM)}"] = v
    for (n, kind), parts in qkv.items():
        out[f"transformer.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    out["logit_scale"] = torch.tensor(OPENCLIP_LOGIT_SCALE, dtype=torch.float32).half().float()  # unused
    return {LDM_OPENCLIP + k: v for k, v in out.items()}


def openclip_from_ldm(ckpt: dict) -> dict:
    inv = {v: k for k, v in OPENCLIP_LAYER_TO_LDM.items()}
    out = {}
    for key, v in ckpt.items():
        if not key.startswith(LDM_OPENCLIP):
            continue
        k = key[len(LDM_OPENCLIP):]
        if k == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = v
        elif k == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = v
        elif k.startswith("ln_final."):
            out["text_model.final_layer_norm." + k[len("ln_final."):]] = v
        elif k == "text_projection":
            out["text_projection.weight"] = v.t().contiguous()
        elif k == "logit_scale":
            continue
        else:
            m = re.match(r"^transformer\.resblocks\.(\d+)\.(.*)$", k)
            assert m, k
            n, rest = int(m[1]), m[2]
            mm = re.match(r"^attn\.in_proj_(weight|bias)$", rest)
            if mm:
                q, kk, vv = v.chunk(3, dim=0)
                for name, part in (("q", q), ("k", kk), ("v", vv)):
                    out[f"text_model.encoder.layers.{n}.self_attn.{name}_proj.{mm[1]}"] = part.contiguous()
                continue
            out[f"text_model.encoder.layers.{n}.{_sub(rest, inv)}"] = v
    return out


def to_f16(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        v = v.detach().cpu().contiguous()
        if v.is_floating_point():
            h = v.half()
            assert torch.equal(h.float(), v.float()), f"{k} is not float16-representable"
            v = h
        out[k] = v
    return out


def _assert_same_state(expected: dict, got: dict, what: str) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise RuntimeError(f"{what}: missing {missing[:5]}..., unexpected {unexpected[:5]}...")
    for k in expected:
        a, b = expected[k].float(), got[k].float()
        if a.shape != b.shape or not torch.equal(a, b):
            raise RuntimeError(f"{what}: tensor {k} differs")


def fresh_load(cls_or_factory, state: dict, expected: dict, what: str) -> None:
    """Load `state` strictly into a freshly built model and compare with `expected`."""
    model = cls_or_factory()
    load_into(model, {k: v.float() for k, v in state.items()})
    _assert_same_state(expected, state_of(model), what)


# --------------------------------------------------------------------------
# Writing folders
# --------------------------------------------------------------------------
def save_diffusers_model(model, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    w = folder / "diffusion_pytorch_model.safetensors"
    save_file(to_f16(model.state_dict()), str(w), metadata={"format": "pt"})
    return [folder / "config.json", w]


def save_text_encoder(model, folder: Path, arch: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [arch]
    model.config.save_pretrained(folder)
    w = folder / "model.safetensors"
    save_file(to_f16(state_of(model)), str(w), metadata={"format": "pt"})
    return [folder / "config.json", w]


def save_pipeline_folder(root: Path, sched_cfg: dict, unet, vae, te) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", sched_cfg["_class_name"]],
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
    sc = {"_class_name": sched_cfg["_class_name"], "_diffusers_version": diffusers.__version__}
    sc.update({k: v for k, v in sched_cfg.items() if k != "_class_name"})
    p.write_text(json.dumps(sc, indent=2) + "\n", encoding="utf-8")
    files.append(p)
    files += save_diffusers_model(unet, root / "unet")
    files += save_diffusers_model(vae, root / "vae")
    files += save_text_encoder(te, root / "text_encoder", "CLIPTextModel")
    return files


def scheduler_from(cls, cfg: dict, **over):
    d = {k: v for k, v in cfg.items() if k != "_class_name"}
    return cls.from_config(d, **over)


# --------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------
def randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def make_vae_image() -> torch.Tensor:
    """Smooth colour pattern plus a little noise, in [-1, 1], [1, 3, 64, 64]."""
    y = torch.linspace(0.0, 1.0, HEIGHT, dtype=torch.float64)[:, None]
    x = torch.linspace(0.0, 1.0, WIDTH, dtype=torch.float64)[None, :]
    r = torch.sin(2 * math.pi * (1.5 * x + 0.25 * y))
    g = torch.cos(2 * math.pi * (x * y * 2.0)) * 0.8
    b = 1.6 * ((x - 0.5) ** 2 + (y - 0.4) ** 2).sqrt() - 0.6
    img = torch.stack([r, g, b])[None].to(torch.float32) * 0.8
    img = img + 0.1 * randn((1, 3, HEIGHT, WIDTH), SEED["vae_image"])
    return img.clamp(-1.0, 1.0)


def run_pipeline(pipe, scheduler, latents, output_type):
    pipe.scheduler = scheduler
    steps = []
    embeds = {}

    def on_step_end(p, i, t, kw):
        steps.append(kw["latents"].detach().clone())
        if i == 0:
            embeds["prompt_embeds"] = kw["prompt_embeds"].detach().clone()
        return kw

    out = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, guidance_scale=GUIDANCE_SCALE,
        num_inference_steps=NUM_STEPS, height=HEIGHT, width=WIDTH, latents=latents.clone(),
        output_type=output_type, return_dict=True,
        callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    )
    sched = pipe.scheduler
    info = {
        "scheduler": type(sched).__name__,
        "config": resolved_config(sched.config),
        "num_inference_steps": NUM_STEPS,
        "guidance_scale": GUIDANCE_SCALE,
        "output_type": output_type,
        "init_noise_sigma": (exact_list(sched.init_noise_sigma.reshape(1))[0]
                             if isinstance(sched.init_noise_sigma, torch.Tensor) else float(sched.init_noise_sigma)),
        "timesteps": exact_list(sched.timesteps),
    }
    sig = getattr(sched, "sigmas", None)
    if isinstance(sig, torch.Tensor):
        info["sigmas"] = exact_list(sig)
    return out.images.detach().clone(), torch.stack(steps), embeds["prompt_embeds"], info


# --------------------------------------------------------------------------
# Main generation
# --------------------------------------------------------------------------
def generate(out: Path, bpe_path: Path, verify_load: bool = True) -> list[Path]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    refs: dict[str, torch.Tensor] = {}

    tok1, tok2 = build_tokenizers(bpe_path)

    # ---- models
    clip1 = build_clip_sd1()
    clip2_full, clip2, clip2_proj = build_clip_sd2()
    unet1 = build_unet(UNET_SD1_CONFIG, SEED["unet_sd1"])
    vae = build_vae()
    controlnet = build_controlnet(unet1)
    unet2 = build_unet(UNET_SD2_CONFIG, SEED["unet_sd2"])

    # ---- diffusers folders
    files += save_pipeline_folder(out / "tiny_sd15", SD15_SCHEDULER_CONFIG, unet1, vae, clip1)
    files += save_pipeline_folder(out / "tiny_sd2v", SD2V_SCHEDULER_CONFIG, unet2, vae, clip2)
    files += save_diffusers_model(controlnet, out / "controlnet")

    # ---- LDM single files
    ckpt1 = {}
    ckpt1.update(unet_to_ldm(unet1.state_dict(), unet1.config))
    ckpt1.update(vae_to_ldm(vae.state_dict(), vae.config))
    ckpt1.update(clip_to_ldm(state_of(clip1)))
    ckpt2 = {}
    ckpt2.update(unet_to_ldm(unet2.state_dict(), unet2.config))
    ckpt2.update(vae_to_ldm(vae.state_dict(), vae.config))
    ckpt2.update(openclip_to_ldm(state_of(clip2_full)))
    for name, ck in (("tiny_sd15.safetensors", ckpt1), ("tiny_sd2v.safetensors", ckpt2)):
        p = out / name
        save_file(to_f16(ck), str(p))
        files.append(p)
    verify_single_files(out, unet1, unet2, vae, clip1, clip2_full, clip2)

    # ---- tokens
    ids = tok1([PROMPT, NEGATIVE_PROMPT], padding="max_length", max_length=77, truncation=True,
               return_tensors="pt").input_ids.to(torch.int64)
    ids2 = tok2([PROMPT, NEGATIVE_PROMPT], padding="max_length", max_length=77, truncation=True,
                return_tensors="pt").input_ids.to(torch.int64)
    long_ids = torch.tensor(tok1(LONG_PROMPT, add_special_tokens=False, truncation=False).input_ids,
                            dtype=torch.int64)
    assert long_ids.numel() > 100, long_ids.numel()
    assert ids[0, :10].tolist() == PROMPT_IDS_PREFIX
    refs["tokens.ids"] = ids
    refs["tokens.ids_sd2"] = ids2
    refs["tokens.long_ids"] = long_ids

    with torch.no_grad():
        # ---- CLIP
        o = clip1(input_ids=ids, output_hidden_states=True)
        refs["clip.last_hidden"] = o.last_hidden_state
        refs["clip.penultimate"] = text_core(clip1).final_layer_norm(o.hidden_states[-2])
        refs["clip.pooled"] = o.pooler_output
        o2 = clip2(input_ids=ids2)
        refs["clip_sd2.hidden"] = o2.last_hidden_state
        refs["clip_sd2.text_embeds"] = clip2_proj(input_ids=ids2).text_embeds
        # The single file's extra final OpenCLIP layer is exactly what SD2 skips.
        of = clip2_full(input_ids=ids2, output_hidden_states=True)
        pen = text_core(clip2_full).final_layer_norm(of.hidden_states[-2])
        if not torch.allclose(pen, refs["clip_sd2.hidden"], rtol=0, atol=1e-6):
            raise RuntimeError("OpenCLIP penultimate layer != diffusers SD2 text encoder output")

        # ---- UNet / ControlNet
        sample = randn((2, 4, 8, 8), SEED["unet_sample"])
        timestep = torch.tensor([999.0, 321.0], dtype=torch.float32)
        context = randn((2, 77, 16), SEED["unet_context"])
        cond = torch.rand((2, 3, HEIGHT, WIDTH), generator=torch.Generator().manual_seed(SEED["controlnet_cond"]))
        refs["unet.sample"] = sample
        refs["unet.timestep"] = timestep
        refs["unet.context"] = context
        refs["unet.out"] = unet1(sample, timestep, encoder_hidden_states=context).sample
        down, mid = controlnet(sample, timestep, encoder_hidden_states=context, controlnet_cond=cond,
                               conditioning_scale=1.0, return_dict=False)
        refs["controlnet.cond"] = cond
        for i, d in enumerate(down):
            refs[f"controlnet.down.{i}"] = d
        refs["controlnet.mid"] = mid
        refs["unet.out_controlled"] = unet1(sample, timestep, encoder_hidden_states=context,
                                            down_block_additional_residuals=list(down),
                                            mid_block_additional_residual=mid).sample
        refs["unet_sd2.out"] = unet2(sample, timestep, encoder_hidden_states=context).sample

        # ---- VAE
        image = make_vae_image()
        dist = vae.encode(image).latent_dist
        refs["vae.image"] = image
        refs["vae.mean"] = dist.mean
        refs["vae.logvar"] = dist.logvar
        latent = randn((1, 4, 8, 8), SEED["vae_latent"])
        refs["vae.latent"] = latent
        refs["vae.decoded"] = vae.decode(latent).sample

    # ---- pipelines
    lat = randn((1, 4, 8, 8), SEED["pipeline_latents"])
    refs["pipeline.latents"] = lat
    pipe1 = StableDiffusionPipeline(vae=vae, text_encoder=clip1, tokenizer=tok1, unet=unet1,
                                    scheduler=scheduler_from(EulerDiscreteScheduler, SD15_SCHEDULER_CONFIG),
                                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe1.set_progress_bar_config(disable=True)
    pipes = {}
    for key, make in (
        ("pipeline.euler", lambda: scheduler_from(EulerDiscreteScheduler, SD15_SCHEDULER_CONFIG)),
        ("pipeline.dpmpp_2m", lambda: scheduler_from(DPMSolverMultistepScheduler, SD15_SCHEDULER_CONFIG,
                                                    algorithm_type="dpmsolver++", solver_order=2)),
        ("pipeline.ddim", lambda: scheduler_from(DDIMScheduler, SD15_SCHEDULER_CONFIG)),
    ):
        res, steps, emb, meta = run_pipeline(pipe1, make(), lat, "latent")
        refs[key] = res
        refs[key + ".steps"] = steps
        if key == "pipeline.euler":
            refs["pipeline.prompt_embeds"] = emb
        pipes[key] = meta
    img, _, _, meta = run_pipeline(pipe1, scheduler_from(EulerDiscreteScheduler, SD15_SCHEDULER_CONFIG), lat, "pt")
    refs["pipeline.euler_image"] = img
    with torch.no_grad():
        # VAE output before the image processor's (x * 0.5 + 0.5).clamp(0, 1).
        raw = vae.decode(refs["pipeline.euler"] / vae.config.scaling_factor).sample
    if not torch.equal((raw * 0.5 + 0.5).clamp(0, 1), img):
        raise RuntimeError("pipeline.euler_image is not decode(latents / scaling_factor) * 0.5 + 0.5, clamped")
    refs["pipeline.euler_image_raw"] = raw
    pipes["pipeline.euler_image"] = meta

    pipe2 = StableDiffusionPipeline(vae=vae, text_encoder=clip2, tokenizer=tok2, unet=unet2,
                                    scheduler=scheduler_from(EulerDiscreteScheduler, SD2V_SCHEDULER_CONFIG),
                                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe2.set_progress_bar_config(disable=True)
    res, steps, emb, meta = run_pipeline(pipe2, scheduler_from(EulerDiscreteScheduler, SD2V_SCHEDULER_CONFIG),
                                         lat, "latent")
    refs["pipeline_sd2v.euler"] = res
    refs["pipeline_sd2v.euler.steps"] = steps
    refs["pipeline_sd2v.prompt_embeds"] = emb
    pipes["pipeline_sd2v.euler"] = meta

    if verify_load:
        verify_folders(out, tok1, tok2, lat, refs)

    # ---- sanity: everything finite, every path matters
    for k, v in refs.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise RuntimeError(f"{k} has non-finite values")
    if torch.equal(refs["unet.out"], refs["unet.out_controlled"]):
        raise RuntimeError("ControlNet residuals have no effect")

    refs = {k: (v.detach().cpu().contiguous().to(torch.float32) if v.is_floating_point()
                else v.detach().cpu().contiguous()) for k, v in refs.items()}
    p = out / "reference.safetensors"
    save_file(refs, str(p))
    files.append(p)

    info = {
        "format_version": FORMAT_VERSION,
        "generator": generator_info(),
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "long_prompt": LONG_PROMPT,
        "long_prompt_num_tokens": int(long_ids.numel()),
        "seeds": SEED,
        "perturb_std": PERTURB_STD,
        "models": {
            "clip_sd1": CLIP_SD1_CONFIG,
            "clip_sd2": CLIP_SD2_CONFIG,
            "clip_sd2_openclip_layers_in_single_file": CLIP_SD2_OPENCLIP_LAYERS,
            "unet_sd1": UNET_SD1_CONFIG,
            "unet_sd2": UNET_SD2_CONFIG,
            "vae": VAE_CONFIG,
            "controlnet_conditioning_embedding_out_channels": CONTROLNET_CONDITIONING_CHANNELS,
        },
        "scheduler_config_sd15": SD15_SCHEDULER_CONFIG,
        "scheduler_config_sd2v": SD2V_SCHEDULER_CONFIG,
        "pipelines": pipes,
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in refs.items()},
    }
    p = out / "reference.json"
    write_json(p, sanitize(info))
    files.append(p)
    return files


def verify_single_files(out: Path, unet1, unet2, vae, clip1, clip2_full, clip2) -> None:
    """Exact round trip of both single files through the independently written inverse
    mapping, and a cross-check against diffusers' own LDM converters."""
    c1 = load_file(str(out / "tiny_sd15.safetensors"))
    c2 = load_file(str(out / "tiny_sd2v.safetensors"))
    prefixes = (LDM_UNET, LDM_VAE, LDM_CLIP, LDM_OPENCLIP)
    for name, c in (("tiny_sd15", c1), ("tiny_sd2v", c2)):
        stray = [k for k in c if not k.startswith(prefixes)]
        assert not stray, (name, stray)
        assert all(v.dtype == torch.float16 for v in c.values()), name

    for what, c, unet in (("sd15", c1, unet1), ("sd2v", c2, unet2)):
        cfg = dict(unet.config)
        fresh_load(lambda: UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")}),
                   unet_from_ldm(c, cfg), unet.state_dict(), f"{what} unet round trip")
        fresh_load(lambda: AutoencoderKL(**VAE_CONFIG), vae_from_ldm(c, vae.config), vae.state_dict(),
                   f"{what} vae round trip")
        conv = sfu.convert_ldm_unet_checkpoint({k: v.float() for k, v in c.items()}, cfg)
        _assert_same_state(unet.state_dict(), conv, f"{what} unet vs diffusers converter")
        conv = sfu.convert_ldm_vae_checkpoint({k: v.float() for k, v in c.items()}, dict(vae.config))
        _assert_same_state(vae.state_dict(), conv, f"{what} vae vs diffusers converter")
        n_unet = sum(k.startswith(LDM_UNET) for k in c)
        n_vae = sum(k.startswith(LDM_VAE) for k in c)
        assert n_unet == len(unet.state_dict()) and n_vae == len(vae.state_dict()), what

    fresh_load(lambda: CLIPTextModel(make_clip_config(CLIP_SD1_CONFIG)), clip_from_ldm(c1),
               state_of(clip1), "sd15 clip round trip")
    conv = sfu.convert_ldm_clip_checkpoint({k: v.float() for k, v in c1.items()})
    _assert_same_state(state_of(clip1), conv, "sd15 clip vs diffusers converter")
    assert sum(k.startswith("cond_stage_model.") for k in c1) == len(state_of(clip1))

    full_cfg = make_clip_config(CLIP_SD2_CONFIG, num_hidden_layers=CLIP_SD2_OPENCLIP_LAYERS)
    fresh_load(lambda: CLIPTextModelWithProjection(full_cfg), openclip_from_ldm(c2),
               state_of(clip2_full), "sd2v openclip round trip")
    # per layer q/k/v weight+bias (6 tensors) become in_proj_weight/in_proj_bias (2); + logit_scale
    assert sum(k.startswith("cond_stage_model.") for k in c2) == (
        len(state_of(clip2_full)) - 4 * CLIP_SD2_OPENCLIP_LAYERS + 1)
    # diffusers' converter hard-codes the 24-layer OpenCLIP-H ("resblocks.23" is skipped),
    # so for the tiny tower drop the extra layer(s) it converts and compare the rest.
    conv = sfu.convert_open_clip_checkpoint(clip2, {k: v.float() for k, v in c2.items()})
    n = CLIP_SD2_CONFIG["num_hidden_layers"]
    conv = {k: v for k, v in conv.items()
            if not (m := re.match(r"^text_model\.encoder\.layers\.(\d+)\.", k)) or int(m[1]) < n}
    _assert_same_state(state_of(clip2), conv, "sd2v clip vs diffusers open_clip converter")


def verify_folders(out: Path, tok1, tok2, lat, refs) -> None:
    """Load the written diffusers folders with diffusers itself and re-run two pipelines:
    the results must be bit-identical to the in-memory references."""
    for folder in ("tiny_sd15", "tiny_sd2v"):
        keys = load_file(str(out / folder / "text_encoder" / "model.safetensors")).keys()
        assert all(k.startswith("text_model.") for k in keys), folder
    for folder, tok, key, sched_cfg in (
        ("tiny_sd15", tok1, "pipeline.euler", SD15_SCHEDULER_CONFIG),
        ("tiny_sd2v", tok2, "pipeline_sd2v.euler", SD2V_SCHEDULER_CONFIG),
    ):
        pipe = StableDiffusionPipeline.from_pretrained(
            str(out / folder), tokenizer=tok, safety_checker=None, feature_extractor=None,
            dtype=torch.float32, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        assert type(pipe.scheduler).__name__ == sched_cfg["_class_name"]
        res, _, _, _ = run_pipeline(pipe, scheduler_from(EulerDiscreteScheduler, sched_cfg), lat, "latent")
        if not torch.equal(res, refs[key]):
            raise RuntimeError(f"{folder}: pipeline loaded from disk differs from the reference")
    cn = ControlNetModel.from_pretrained(str(out / "controlnet"), dtype=torch.float32, local_files_only=True)
    with torch.no_grad():
        down, mid = cn(refs["unet.sample"], refs["unet.timestep"], encoder_hidden_states=refs["unet.context"],
                       controlnet_cond=refs["controlnet.cond"], conditioning_scale=1.0, return_dict=False)
    if not torch.equal(mid, refs["controlnet.mid"]) or not all(
            torch.equal(d, refs[f"controlnet.down.{i}"]) for i, d in enumerate(down)):
        raise RuntimeError("controlnet loaded from disk differs from the reference")


def main() -> int:
    transformers.utils.logging.set_verbosity_error()  # e.g. "sequence longer than 77" for the long prompt
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--bpe", type=Path, default=None, help="path to bpe_simple_vocab_16e6.txt")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare byte-for-byte with --out")
    args = ap.parse_args()
    bpe = find_bpe(args.bpe)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            files = generate(Path(tmp), bpe)
            bad = []
            for f in files:
                rel = f.relative_to(tmp)
                target = args.out / rel
                if not target.exists() or target.read_bytes() != f.read_bytes():
                    bad.append(str(rel))
            if bad:
                print("fixtures differ from a fresh run: " + ", ".join(bad))
                return 1
            print(f"{len(files)} fixture files match a fresh run")
            return 0
    files = generate(args.out, bpe)
    total = 0
    for f in files:
        total += f.stat().st_size
        print(f"{f.stat().st_size:9d}  {f.relative_to(args.out)}")
    print(f"{total:9d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
