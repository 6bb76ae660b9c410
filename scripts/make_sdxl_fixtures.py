#!/usr/bin/env python3
"""Generate tiny Stable Diffusion XL parity fixtures with diffusers + transformers + peft.

Writes models/tests/fixtures/sdxl/: tiny random-weight models with exactly the SDXL
class layout -- the base model, the refiner, an SDXL ControlNet -- as diffusers
folders and (base and refiner) as original SGM/LDM single files (A1111 / ComfyUI /
Civitai layout), LoRAs in the kohya, diffusers/PEFT and LyCORIS formats, textual
inversion embeddings, and float32 reference outputs (tokenizer ids, text-encoder
states, UNet / refiner / ControlNet / VAE outputs, LoRA-patched weights and outputs,
and full txt2img / base->refiner / ControlNet / LoRA pipelines) that the Rust test
suite compares against without needing Python. See the README.md in that folder for
the file formats and the diffusers <-> SGM key mapping.

Attention heads are 32 channels wide everywhere (UNet and text encoders; the real
models' are 64) and the text encoders have a 1000-token vocabulary, so the single files
are only meant to be read with their diffusers folder as the config
(`from_single_file(..., config=<folder>)` semantics: tokenizers, model configs and head
counts from the folder; the weights from the single file).

Deterministic and offline, with the conventions of scripts/make_sd_fixtures.py (whose
helpers this script imports): every model is built from its config class with random
weights from fixed torch seeds (nothing is downloaded; HF_HUB_OFFLINE=1), every
parameter is perturbed by 0.05 * N(0, 1) and rounded to float16 and back, all
references are computed in float32 on the CPU with one thread, and the weights are
saved as float16, so a loader that upcasts sees exactly the weights the references
were computed with.

The CLIP tokenizers are transformers CLIPTokenizers built from OpenAI's BPE merges
(bpe_simple_vocab_16e6.txt, taken from the instant-clip-tokenizer crate in the cargo
registry, or --bpe PATH) cut to a 1000-token vocabulary as in
scripts/make_sd_sweep_fixtures.py (the byte symbols, the first 486 merges,
<|startoftext|> 998, <|endoftext|> 999); `tokenizer/` pads with <|endoftext|>,
`tokenizer_2/` with "!" (id 0), as SDXL's do. The prompts are the usual ones: words the
486 merges do not cover split into smaller pieces, which are all in the vocabulary.

Usage (from the repository root, in the venv of scripts/requirements-sd-fixtures.txt):

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_sdxl_fixtures.py
    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_sdxl_fixtures.py --check   # compare only

This script only *calls* diffusers, transformers and peft; it contains no code of
theirs. The diffusers -> SGM single-file key mapping (and the LoRA key names) are
written here from the layout of the original checkpoints and checked against
diffusers' own single-file converters and LoRA loaders.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import re
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no scripts/__pycache__ from importing the sibling script
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Importing make_sd_fixtures first sets HF_HUB_OFFLINE and friends before diffusers loads.
import make_sd_fixtures as sd  # noqa: E402

import diffusers  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    ControlNetModel,
    EulerDiscreteScheduler,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from peft import LoraConfig, get_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

FORMAT_VERSION = 1
DEFAULT_OUT = sd.REPO_ROOT / "models" / "tests" / "fixtures" / "sdxl"

PROMPT = sd.PROMPT
NEGATIVE_PROMPT = "blurry, low quality, watermark"
LONG_PROMPT = sd.LONG_PROMPT
# Rows of the tokenizer / text-encoder references.
TEXT_ROWS = [PROMPT, NEGATIVE_PROMPT, "", LONG_PROMPT]
TEXT_ROW_NAMES = ["prompt", "negative_prompt", "empty", "long_prompt_first_chunk"]

HEIGHT = WIDTH = 64
GUIDANCE_SCALE = 5.0
NUM_STEPS = 10
SHORT_STEPS = 6  # the ControlNet and LoRA pipelines
CONTROLNET_SCALE = 0.8
DENOISING_SPLIT = 0.8
AESTHETIC_SCORE = 6.0
NEGATIVE_AESTHETIC_SCORE = 2.5
MICRO_CONDITIONING = {
    "original_size": (1024, 1024),
    "crops_coords_top_left": (16, 32),
    "target_size": (64, 64),
    "negative_original_size": (1024, 1024),
    "negative_crops_coords_top_left": (16, 32),
    "negative_target_size": (64, 64),
}
LORA_SCALES = (1.0, 0.7)
PATCH_STRENGTHS = (1.0, 0.5)
TI_TOKEN = "<emb>"
TI_PROMPT = f"a photo of {TI_TOKEN}"
TI_FILE = "tiny_sdxl_emb"
SD15_TI_FILE = "tiny_sd15_emb"
PERTURB_STD = sd.PERTURB_STD

SEED = {
    "clip_l": 11,
    "clip_g": 12,
    "unet_base": 13,
    "unet_refiner": 14,
    "vae": 15,
    "controlnet": 16,
    "lora_kohya": 20,
    "lora_peft": 21,
    "loha": 22,
    "lokr": 23,
    "diff": 24,
    "dora": 25,
    "embedding": 26,
    "sd15_embedding": 27,
    "unet_sample": 100,
    "unet_context": 101,
    "unet_text_embeds": 102,
    "refiner_context": 103,
    "refiner_text_embeds": 104,
    "controlnet_cond": 105,
    "vae_latent": 106,
    "pipeline_latents": 107,
    "controlnet_hint": 108,
}

# ---- tokenizers: CLIP's BPE cut to a 1000-token vocabulary, as in scripts/make_sd_sweep_fixtures.py:
# the 512 byte symbols (bare and with </w>), the first 486 merges of OpenAI's merges file, then
# <|startoftext|> / <|endoftext|> as ids 998 / 999 (the order, and so the ids, that a CLIP
# tokenizer gives a merges file of that length). Every text tokenizes inside the vocabulary:
# words the 486 merges do not cover are split into smaller pieces (the prompts take more
# tokens than with the full vocabulary).
VOCAB = 1000
BOS, EOS = 998, 999
TOKENIZER_MERGES = VOCAB - 512 - 2
# tok(PROMPT).input_ids with that vocabulary (a construction check)
PROMPT_IDS = [998, 320, 816, 580, 782, 79, 327, 539, 550, 64, 807, 521, 627, 339, 553, 796, 320, 71, 523, 611,
              999]

# ---- text encoders: CLIP ViT-L (SDXL `text_encoder`) and OpenCLIP bigG (`text_encoder_2`),
# one and two 32-wide heads. bos/eos/pad 0/2/1 are what SDXL's real configs carry (legacy
# values: transformers then pools at argmax(input_ids), i.e. the first <|endoftext|>, the
# largest id of the vocabulary).
CLIP_L_CONFIG = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
    num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
    projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5,
)
CLIP_G_CONFIG = dict(CLIP_L_CONFIG, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                     hidden_act="gelu", projection_dim=64)
ADD_TIME_DIM = 256  # addition_time_embed_dim, as in SDXL


def _unet_json(**over) -> dict:
    """The key set of SDXL base's unet/config.json (stabilityai/stable-diffusion-xl-base-1.0),
    with tiny sizes."""
    cfg = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": diffusers.__version__,
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": ADD_TIME_DIM,
        "attention_head_dim": [1, 1, 2],
        "block_out_channels": [32, 32, 64],
        "center_input_sample": False,
        "class_embed_type": None,
        "class_embeddings_concat": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": CLIP_L_CONFIG["hidden_size"] + CLIP_G_CONFIG["hidden_size"],
        "cross_attention_norm": None,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "encoder_hid_dim": None,
        "encoder_hid_dim_type": None,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": 6 * ADD_TIME_DIM + CLIP_G_CONFIG["projection_dim"],
        "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False,
        "resnet_time_scale_shift": "default",
        "sample_size": HEIGHT // 8,
        "time_cond_proj_dim": None,
        "time_embedding_act_fn": None,
        "time_embedding_dim": None,
        "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": [1, 1, 2],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "upcast_attention": None,
        "use_linear_projection": True,
    }
    assert set(over) <= set(cfg), set(over) - set(cfg)
    cfg.update(over)
    return cfg


UNET_BASE_JSON = _unet_json()
# SDXL refiner: four levels, the last one plain, bigG's states only, 5 time ids (the
# aesthetic score replaces the target size). All levels 32 wide (one 32-wide head) to keep
# the fixtures small; the structure (block types, depth 2, mid block after a plain level,
# aesthetic-score micro-conditioning) is the real refiner's.
UNET_REFINER_JSON = _unet_json(
    attention_head_dim=[1, 1, 1, 1],
    block_out_channels=[32, 32, 32, 32],
    cross_attention_dim=CLIP_G_CONFIG["hidden_size"],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    projection_class_embeddings_input_dim=5 * ADD_TIME_DIM + CLIP_G_CONFIG["projection_dim"],
    transformer_layers_per_block=2,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
)
# SDXL's vae/config.json key set with tiny sizes: four levels (so 64 px are 8x8 latents).
VAE_JSON = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": diffusers.__version__,
    "act_fn": "silu",
    "block_out_channels": [32, 32, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": HEIGHT,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# SDXL base's scheduler/scheduler_config.json (the refiner's is the same).
SDXL_SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
MODEL_INDEX_BASE = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": diffusers.__version__,
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
MODEL_INDEX_REFINER = {
    "_class_name": "StableDiffusionXLImg2ImgPipeline",
    "_diffusers_version": diffusers.__version__,
    "force_zeros_for_empty_prompt": False,
    "requires_aesthetics_score": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": [None, None],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": [None, None],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

# SGM single-file prefixes.
LDM_UNET = sd.LDM_UNET            # model.diffusion_model.
LDM_VAE = sd.LDM_VAE              # first_stage_model.
LDM_CLIP_L = "conditioner.embedders.0.transformer."
LDM_BIGG_BASE = "conditioner.embedders.1.model."
LDM_BIGG_REFINER = "conditioner.embedders.0.model."
ADD_EMBEDDING_TO_LDM = {"add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}

CLIP_SPECIAL = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def model_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def write_text_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def f16_round(t: torch.Tensor) -> torch.Tensor:
    return t.half().float()


def generator_info() -> dict:
    info = sd.generator_info()
    info["script"] = "scripts/make_sdxl_fixtures.py"
    info["peft"] = peft.__version__
    return info


# --------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------
def write_tokenizer(folder: Path, bpe_path: Path, pad_token: str) -> list[Path]:
    """vocab.json / merges.txt (CLIP's BPE cut to VOCAB tokens: the byte symbols, the first
    TOKENIZER_MERGES merges, <|startoftext|>, <|endoftext|>), special_tokens_map.json and
    tokenizer_config.json as SDXL's tokenizer folders have them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = bpe_path.read_text(encoding="utf-8").split("\n")
    merges = lines[1:1 + TOKENIZER_MERGES]
    assert len(merges) == TOKENIZER_MERGES and all(len(m.split(" ")) == 2 for m in merges)
    base = sd.byte_symbols()
    vocab = base + [s + "</w>" for s in base] + ["".join(m.split(" ")) for m in merges]
    vocab += [CLIP_SPECIAL["bos_token"], CLIP_SPECIAL["eos_token"]]
    assert len(vocab) == VOCAB and len(set(vocab)) == VOCAB
    assert vocab.index(CLIP_SPECIAL["bos_token"]) == BOS and vocab.index(CLIP_SPECIAL["eos_token"]) == EOS
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = {k: {"content": v, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
             for k, v in CLIP_SPECIAL.items()}
    special = {"bos_token": added["bos_token"], "eos_token": added["eos_token"], "pad_token": pad_token,
               "unk_token": added["unk_token"]}
    config = {
        "add_prefix_space": False,
        "bos_token": CLIP_SPECIAL["bos_token"],
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": CLIP_SPECIAL["eos_token"],
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": CLIP_SPECIAL["unk_token"],
    }
    return [folder / "vocab.json", folder / "merges.txt",
            write_text_json(folder / "special_tokens_map.json", special),
            write_text_json(folder / "tokenizer_config.json", config)]


def load_tokenizers(root: Path):
    tok_l = CLIPTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    tok_g = CLIPTokenizer.from_pretrained(str(root / "tokenizer_2"), local_files_only=True)
    for tok, pad in ((tok_l, EOS), (tok_g, 0)):
        assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, len(tok)) == (BOS, EOS, pad, VOCAB), \
            (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, len(tok))
        ids = tok(PROMPT).input_ids
        assert ids == PROMPT_IDS, ids
    return tok_l, tok_g


def tokenize(tok, texts, vocab: int = VOCAB) -> torch.Tensor:
    ids = tok(texts, padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids.to(torch.int64)
    if int(ids.max()) >= vocab:
        raise RuntimeError(f"token id {int(ids.max())} outside the {vocab}-token vocabulary: {texts}")
    return ids


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
def build_clip(cls, cfg: dict, seed: int):
    """A random CLIP text encoder (VOCAB-token vocabulary)."""
    torch.manual_seed(seed)
    model = cls(CLIPTextConfig(**cfg))
    sd.perturb_and_round(model, 1000 + seed)
    return model


def build_unet(cfg_json: dict, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**model_config(cfg_json))
    sd.perturb_and_round(unet, 1000 + seed)
    return unet


def build_vae() -> AutoencoderKL:
    torch.manual_seed(SEED["vae"])
    vae = AutoencoderKL(**model_config(VAE_JSON))
    sd.perturb_and_round(vae, 1000 + SEED["vae"])
    return vae


def build_controlnet(unet) -> ControlNetModel:
    torch.manual_seed(SEED["controlnet"])
    cn = ControlNetModel.from_unet(unet)
    sd.perturb_and_round(cn, 1000 + SEED["controlnet"])
    return cn


# --------------------------------------------------------------------------
# diffusers -> SGM single-file layout (and an independently written inverse)
# --------------------------------------------------------------------------
def unet_key_to_sgm(k: str, cfg) -> str:
    """SDXL's UNet is LDM's with the added-conditioning MLP (diffusers `add_embedding`)
    stored as `label_emb.0` (a Sequential: Linear, SiLU, Linear)."""
    for a, b in ADD_EMBEDDING_TO_LDM.items():
        if k.startswith(a):
            return b + k[len(a):]
    return sd.unet_key_to_ldm(k, cfg)


def unet_key_from_sgm(k: str, cfg) -> str:
    for a, b in ADD_EMBEDDING_TO_LDM.items():
        if k.startswith(b):
            return a + k[len(b):]
    return sd.unet_key_from_ldm(k, cfg)


def unet_to_sgm(state: dict, cfg) -> dict:
    return {LDM_UNET + unet_key_to_sgm(k, cfg): v for k, v in state.items()}


def unet_from_sgm(ckpt: dict, cfg) -> dict:
    return {unet_key_from_sgm(k[len(LDM_UNET):], cfg): v for k, v in ckpt.items() if k.startswith(LDM_UNET)}


def reprefix(state: dict, old: str, new: str) -> dict:
    assert all(k.startswith(old) for k in state), old
    return {new + k[len(old):]: v for k, v in state.items()}


def bigg_to_sgm(state: dict, prefix: str) -> dict:
    """CLIPTextModelWithProjection -> OpenCLIP text tower (fused in_proj, text_projection
    stored [in, out]), under `prefix` (conditioner.embedders.N.model.)."""
    return reprefix(sd.openclip_to_ldm(state), sd.LDM_OPENCLIP, prefix)


def bigg_from_sgm(ckpt: dict, prefix: str) -> dict:
    part = {k: v for k, v in ckpt.items() if k.startswith(prefix)}
    return sd.openclip_from_ldm(reprefix(part, prefix, sd.LDM_OPENCLIP))


def base_single_file(unet, vae, clip_l, clip_g) -> dict:
    ckpt = {}
    ckpt.update(unet_to_sgm(unet.state_dict(), unet.config))
    ckpt.update(sd.vae_to_ldm(vae.state_dict(), vae.config))
    ckpt.update({LDM_CLIP_L + k: v for k, v in sd.state_of(clip_l).items()})
    ckpt.update(bigg_to_sgm(sd.state_of(clip_g), LDM_BIGG_BASE))
    return ckpt


def refiner_single_file(unet, vae, clip_g) -> dict:
    ckpt = {}
    ckpt.update(unet_to_sgm(unet.state_dict(), unet.config))
    ckpt.update(sd.vae_to_ldm(vae.state_dict(), vae.config))
    ckpt.update(bigg_to_sgm(sd.state_of(clip_g), LDM_BIGG_REFINER))
    return ckpt


# --------------------------------------------------------------------------
# Writing folders
# --------------------------------------------------------------------------
def save_model_weights(model, folder: Path, config_json: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    c = write_text_json(folder / "config.json", config_json)
    w = folder / "diffusion_pytorch_model.safetensors"
    save_file(sd.to_f16(model.state_dict()), str(w), metadata={"format": "pt"})
    return [c, w]


def save_xl_folder(root: Path, bpe: Path, model_index: dict, unet, unet_json: dict, vae,
                   clip_l=None, clip_g=None) -> list[Path]:
    files = [write_text_json(root / "model_index.json", model_index)]
    sc = {"_class_name": SDXL_SCHEDULER_CONFIG["_class_name"], "_diffusers_version": diffusers.__version__}
    sc.update({k: v for k, v in SDXL_SCHEDULER_CONFIG.items() if k != "_class_name"})
    files.append(write_text_json(root / "scheduler" / "scheduler_config.json", sc))
    files += save_model_weights(unet, root / "unet", unet_json)
    files += save_model_weights(vae, root / "vae", VAE_JSON)
    if clip_l is not None:
        files += sd.save_text_encoder(clip_l, root / "text_encoder", "CLIPTextModel")
        files += write_tokenizer(root / "tokenizer", bpe, CLIP_SPECIAL["eos_token"])
    files += sd.save_text_encoder(clip_g, root / "text_encoder_2", "CLIPTextModelWithProjection")
    files += write_tokenizer(root / "tokenizer_2", bpe, "!")
    return files


def minimal_unet_config(full: dict) -> dict:
    """Only the keys whose values differ from UNet2DConditionModel's defaults."""
    defaults = {n: p.default for n, p in inspect.signature(UNet2DConditionModel.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    out = {"_class_name": "UNet2DConditionModel"}
    for k, v in full.items():
        if k.startswith("_"):
            continue
        d = defaults[k]
        norm = (lambda x: list(x) if isinstance(x, (list, tuple)) else x)
        if norm(v) == norm(d) or (v is None and d is False):
            continue
        out[k] = v
    return out


# --------------------------------------------------------------------------
# Checks of what was written
# --------------------------------------------------------------------------
def _float(ckpt: dict) -> dict:
    return {k: v.float() for k, v in ckpt.items()}


def verify_single_files(out: Path, m: dict) -> None:
    """Exact round trip of both single files through the independently written inverse
    mapping, a cross-check against diffusers' own SGM converters, and diffusers'
    from_single_file(config=<folder>) giving exactly the models."""
    base = load_file(str(out / "tiny_sdxl.safetensors"))
    ref = load_file(str(out / "tiny_sdxl_refiner.safetensors"))
    for name, ck, prefixes in (("base", base, (LDM_UNET, LDM_VAE, LDM_CLIP_L, LDM_BIGG_BASE)),
                               ("refiner", ref, (LDM_UNET, LDM_VAE, LDM_BIGG_REFINER))):
        stray = [k for k in ck if not k.startswith(prefixes)]
        assert not stray, (name, stray[:5])
        assert all(v.dtype == torch.float16 for v in ck.values()), name

    for what, ck, unet, cfg_json in (("base", base, m["unet"], UNET_BASE_JSON),
                                     ("refiner", ref, m["refiner"], UNET_REFINER_JSON)):
        cfg = dict(unet.config)
        sd.fresh_load(lambda: UNet2DConditionModel(**model_config(cfg_json)), unet_from_sgm(ck, cfg),
                      unet.state_dict(), f"{what} unet round trip")
        conv = sfu.convert_ldm_unet_checkpoint(_float(ck), cfg)
        sd._assert_same_state(unet.state_dict(), conv, f"{what} unet vs diffusers converter")
        sd.fresh_load(lambda: AutoencoderKL(**model_config(VAE_JSON)), sd.vae_from_ldm(ck, m["vae"].config),
                      m["vae"].state_dict(), f"{what} vae round trip")
        conv = sfu.convert_ldm_vae_checkpoint(_float(ck), dict(m["vae"].config))
        sd._assert_same_state(m["vae"].state_dict(), conv, f"{what} vae vs diffusers converter")
        assert sum(k.startswith(LDM_UNET) for k in ck) == len(unet.state_dict()), what
        assert sum(k.startswith(LDM_VAE) for k in ck) == len(m["vae"].state_dict()), what

    clip_l_state = {k[len(LDM_CLIP_L):]: v for k, v in base.items() if k.startswith(LDM_CLIP_L)}
    sd.fresh_load(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L_CONFIG)), clip_l_state,
                  sd.state_of(m["clip_l"]), "clip-l round trip")
    conv = sfu.convert_ldm_clip_checkpoint(_float(base), remove_prefix=LDM_CLIP_L)
    sd._assert_same_state(sd.state_of(m["clip_l"]), conv, "clip-l vs diffusers converter")
    g_state = sd.state_of(m["clip_g"])
    for what, ck, prefix in (("base", base, LDM_BIGG_BASE), ("refiner", ref, LDM_BIGG_REFINER)):
        sd.fresh_load(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G_CONFIG)), bigg_from_sgm(ck, prefix),
                      g_state, f"{what} bigG round trip")
        conv = sfu.convert_open_clip_checkpoint(m["clip_g"], _float(ck), prefix=prefix)
        sd._assert_same_state(g_state, conv, f"{what} bigG vs diffusers open_clip converter")
        # q/k/v weight+bias (6 tensors) -> in_proj_weight/bias (2) per layer; + logit_scale
        n = CLIP_G_CONFIG["num_hidden_layers"]
        assert sum(k.startswith(prefix) for k in ck) == len(g_state) - 4 * n + 1, what

    # diffusers' own single-file loader, with the folder as config, gives the models.
    pipe = StableDiffusionXLPipeline.from_single_file(
        str(out / "tiny_sdxl.safetensors"), config=str(out / "tiny_sdxl"), local_files_only=True,
        dtype=torch.float32)
    for comp, model in (("unet", m["unet"]), ("vae", m["vae"]), ("text_encoder", m["clip_l"]),
                        ("text_encoder_2", m["clip_g"])):
        sd._assert_same_state(sd.state_of(model), {k: v.float() for k, v in sd.state_of(getattr(pipe, comp)).items()},
                              f"from_single_file base {comp}")
    pipe = StableDiffusionXLImg2ImgPipeline.from_single_file(
        str(out / "tiny_sdxl_refiner.safetensors"), config=str(out / "tiny_sdxl_refiner"),
        local_files_only=True, dtype=torch.float32)
    assert pipe.text_encoder is None and pipe.config.requires_aesthetics_score
    for comp, model in (("unet", m["refiner"]), ("vae", m["vae"]), ("text_encoder_2", m["clip_g"])):
        sd._assert_same_state(sd.state_of(model), {k: v.float() for k, v in sd.state_of(getattr(pipe, comp)).items()},
                              f"from_single_file refiner {comp}")


def verify_folders(out: Path, m: dict, tok_l, tok_g) -> None:
    """diffusers' from_pretrained on the written folders gives exactly the models and tokenizers."""
    pipe = StableDiffusionXLPipeline.from_pretrained(str(out / "tiny_sdxl"), local_files_only=True,
                                                     dtype=torch.float32)
    for comp, model in (("unet", m["unet"]), ("vae", m["vae"]), ("text_encoder", m["clip_l"]),
                        ("text_encoder_2", m["clip_g"])):
        sd._assert_same_state(sd.state_of(model), sd.state_of(getattr(pipe, comp)), f"folder base {comp}")
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    for a, b in ((pipe.tokenizer, tok_l), (pipe.tokenizer_2, tok_g)):
        assert torch.equal(tokenize(a, TEXT_ROWS), tokenize(b, TEXT_ROWS))
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(out / "tiny_sdxl_refiner"), local_files_only=True,
                                                            dtype=torch.float32)
    assert pipe.text_encoder is None and pipe.config.requires_aesthetics_score
    for comp, model in (("unet", m["refiner"]), ("vae", m["vae"]), ("text_encoder_2", m["clip_g"])):
        sd._assert_same_state(sd.state_of(model), sd.state_of(getattr(pipe, comp)), f"folder refiner {comp}")
    cn = ControlNetModel.from_pretrained(str(out / "controlnet_sdxl"), local_files_only=True,
                                         dtype=torch.float32)
    sd._assert_same_state(m["controlnet"].state_dict(), cn.state_dict(), "folder controlnet")
    for name, model in (("tiny_sdxl/unet", m["unet"]), ("tiny_sdxl_refiner/unet", m["refiner"])):
        loaded = UNet2DConditionModel.from_pretrained(str(out / name), local_files_only=True,
                                                      dtype=torch.float32)
        assert model_config(dict(loaded.config)) == model_config(dict(model.config)), name


# --------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------
def scheduler():
    return sd.scheduler_from(EulerDiscreteScheduler, SDXL_SCHEDULER_CONFIG)


def base_pipe(m: dict, tok_l, tok_g, unet=None, clip_l=None, clip_g=None):
    pipe = StableDiffusionXLPipeline(
        vae=m["vae"], text_encoder=clip_l or m["clip_l"], text_encoder_2=clip_g or m["clip_g"],
        tokenizer=tok_l, tokenizer_2=tok_g, unet=unet or m["unet"], scheduler=scheduler(),
        force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_xl(pipe, steps: int, output_type: str, **kw):
    """Run a pipeline from fixed inputs; record the latents after every step, the
    conditioning the UNet got (at the first step) and the scheduler's state."""
    pipe.scheduler = scheduler()
    latents, ts, first = [], [], {}
    names = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]

    def on_step_end(p, i, t, d):
        latents.append(d["latents"].detach().clone())
        ts.append(t)
        if i == 0:
            first.update({k: d[k].detach().clone() for k in names[1:]})
        return {}

    out = pipe(num_inference_steps=steps, guidance_scale=GUIDANCE_SCALE, output_type=output_type,
               return_dict=True, callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=names, **kw)
    s = pipe.scheduler
    info = {
        "pipeline": type(pipe).__name__,
        "scheduler": type(s).__name__,
        "config": sd.resolved_config(s.config),
        "num_inference_steps": steps,
        "guidance_scale": GUIDANCE_SCALE,
        "output_type": output_type,
        "init_noise_sigma": float(s.init_noise_sigma),
        "timesteps": sd.exact_list(s.timesteps),
        "sigmas": sd.exact_list(s.sigmas),
        "timesteps_run": [float(t) for t in ts],
        "steps_run": len(ts),
    }
    if getattr(s, "begin_index", None) is not None:
        info["begin_index"] = int(s.begin_index)
    return out.images.detach().clone(), torch.stack(latents), first, info


def record_run(refs: dict, runs: dict, name: str, result, **settings) -> None:
    images, steps, first, info = result
    refs[f"pipe.{name}.steps"] = steps
    for k, v in first.items():
        refs[f"pipe.{name}.{k}"] = v
    if info["output_type"] != "latent":
        refs[f"pipe.{name}.image"] = images
    else:
        assert torch.equal(images, steps[-1])
    info.update(settings)
    runs[name] = info


def check_image(vae, steps, image) -> torch.Tensor:
    with torch.no_grad():
        raw = vae.decode(steps[-1] / vae.config.scaling_factor).sample
    if not torch.equal((raw / 2 + 0.5).clamp(0, 1), image):
        raise RuntimeError("pipeline image is not decode(latents / scaling_factor) / 2 + 0.5, clamped")
    return raw


# --------------------------------------------------------------------------
# LoRAs and other weight patches
# --------------------------------------------------------------------------
def module_weight_names(unet) -> dict:
    """diffusers module name -> weight tensor for the UNet modules the kohya LoRA covers:
    every linear layer of the transformer blocks, every proj_in / proj_out, and two 3x3
    resnet convolutions (LoCon)."""
    sdict = unet.state_dict()
    pat = re.compile(r"^(.*\.transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))"
                     r"|.*\.attentions\.\d+\.(proj_in|proj_out)"
                     r"|down_blocks\.0\.resnets\.0\.conv1|up_blocks\.0\.resnets\.0\.conv1)\.weight$")
    return {k[:-len(".weight")]: v for k, v in sorted(sdict.items()) if pat.match(k)}


def te_module_names(model) -> dict:
    s = sd.state_of(model)
    pat = re.compile(r"^text_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.weight$")
    return {k[:-len(".weight")]: v for k, v in sorted(s.items()) if pat.match(k)}


def kohya_name(prefix: str, module: str) -> str:
    return prefix + module.replace(".", "_")


def sgm_module(unet_cfg, module: str) -> str:
    return unet_key_to_sgm(module + ".weight", unet_cfg)[:-len(".weight")]


def lora_factors(g: torch.Generator, weight: torch.Tensor, rank: int):
    """(down, up) for a linear [out, in] or a conv [out, in, kh, kw] weight (LoCon: the down
    convolution has the layer's kernel, the up one is 1x1), rounded to float16."""
    out_c, in_c = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    fan_in = in_c * math.prod(kernel)
    down = torch.randn((rank, in_c, *kernel), generator=g) / math.sqrt(fan_in)
    up = torch.randn((out_c, rank, *([1] * len(kernel))), generator=g) * 0.1
    return f16_round(down), f16_round(up)


def lora_delta(down: torch.Tensor, up: torch.Tensor, shape) -> torch.Tensor:
    return (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(shape)


# kind of module -> (rank, alpha) of the kohya LoRA (alpha != rank everywhere)
KOHYA_RANKS = {"attn": (4, 3.0), "ff": (2, 1.5), "proj": (4, 2.0), "conv": (4, 1.0), "te": (4, 2.0)}


def _kohya_kind(module: str) -> str:
    if ".attn" in module:
        return "attn"
    if ".ff." in module:
        return "ff"
    if module.endswith(("proj_in", "proj_out")):
        return "proj"
    return "conv"


def make_kohya_lora(m: dict):
    """A kohya / A1111 SDXL LoRA (SGM module names for the UNet, HF names for both text
    encoders) and, per module, the diffusers parameter it patches and its delta at scale 1."""
    g = gen(SEED["lora_kohya"])
    state, deltas = {}, {}
    cfg = m["unet"].config
    targets = [("lora_unet_", "unet", name, w, _kohya_kind(name), sgm_module(cfg, name))
               for name, w in module_weight_names(m["unet"]).items()]
    targets += [("lora_te1_", "text_encoder", name, w, "te", name) for name, w in te_module_names(m["clip_l"]).items()]
    targets += [("lora_te2_", "text_encoder_2", name, w, "te", name) for name, w in te_module_names(m["clip_g"]).items()]
    for prefix, comp, name, w, kind, ldm_name in targets:
        rank, alpha = KOHYA_RANKS[kind]
        down, up = lora_factors(g, w, rank)
        key = kohya_name(prefix, ldm_name)
        state[key + ".lora_down.weight"] = down
        state[key + ".lora_up.weight"] = up
        state[key + ".alpha"] = torch.tensor(alpha)
        deltas[(comp, name + ".weight")] = lora_delta(down, up, w.shape) * (alpha / rank)
    return state, deltas


PEFT_UNET_TARGETS = (r"^(down_blocks|mid_block|up_blocks)\..*\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$"
                     r"|^down_blocks\.0\.resnets\.0\.conv1$|^up_blocks\.1\.attentions\.0\.proj_in$")
PEFT_TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1"]
PEFT_RANK = 4
PEFT_ALPHA = 4  # scale 1: a diffusers/PEFT file stores no alpha


def make_peft_lora(m: dict, path: Path):
    """A diffusers/PEFT-format SDXL LoRA made by diffusers and peft themselves (add_adapter,
    get_peft_model_state_dict, StableDiffusionXLPipeline.save_lora_weights), with random
    factors rounded to float16. Returns the per-parameter deltas at scale 1."""
    g = gen(SEED["lora_peft"])
    layers, deltas = {}, {}
    for comp, model, cfg in (
        ("unet", m["unet"], LoraConfig(r=PEFT_RANK, lora_alpha=PEFT_ALPHA, target_modules=PEFT_UNET_TARGETS,
                                       init_lora_weights=False)),
        ("text_encoder", m["clip_l"], LoraConfig(r=PEFT_RANK, lora_alpha=PEFT_ALPHA, target_modules=PEFT_TE_TARGETS,
                                                 init_lora_weights=False)),
        ("text_encoder_2", m["clip_g"], LoraConfig(r=PEFT_RANK, lora_alpha=PEFT_ALPHA,
                                                   target_modules=PEFT_TE_TARGETS, init_lora_weights=False)),
    ):
        model = copy.deepcopy(model)
        model.add_adapter(cfg)
        with torch.no_grad():
            for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
                if "lora_A" in name:
                    fan_in = math.prod(p.shape[1:])
                    p.copy_(f16_round(torch.randn(p.shape, generator=g) / math.sqrt(fan_in)))
                elif "lora_B" in name:
                    p.copy_(f16_round(torch.randn(p.shape, generator=g) * 0.1))
        state = get_peft_model_state_dict(model)
        if comp == "text_encoder" and sd._flat_text_model(m["clip_l"]):
            # transformers 5's flat CLIPTextModel; files in the wild (transformers 4) say text_model.*
            state = {"text_model." + k: v for k, v in state.items()}
        layers[comp] = sd.to_f16(state)
        base = sd.state_of(m["clip_l"]) if comp == "text_encoder" else (
            sd.state_of(m["clip_g"]) if comp == "text_encoder_2" else m[comp].state_dict())
        for k, a in state.items():
            if ".lora_A." not in k:
                continue
            b = state[k.replace(".lora_A.", ".lora_B.")]
            target = k.replace(".lora_A.weight", ".weight")
            deltas[(comp, target)] = lora_delta(a, b, base[target].shape) * (PEFT_ALPHA / PEFT_RANK)
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        save_directory=str(path.parent), unet_lora_layers=layers["unet"],
        text_encoder_lora_layers=layers["text_encoder"], text_encoder_2_lora_layers=layers["text_encoder_2"],
        weight_name=path.name, safe_serialization=True)
    return deltas


def lora_models(m: dict, tok_l, tok_g, state: dict, scale: float, deltas: dict):
    """A pipeline with `state` loaded by diffusers' load_lora_weights and fused at `scale`;
    every fused weight is checked against the closed form W + scale * delta."""
    unet, clip_l, clip_g = (copy.deepcopy(m[k]) for k in ("unet", "clip_l", "clip_g"))
    pipe = base_pipe(m, tok_l, tok_g, unet=unet, clip_l=clip_l, clip_g=clip_g)
    pipe.load_lora_weights({k: v.float() for k, v in state.items()}, adapter_name="fixture")
    pipe.fuse_lora(components=["unet", "text_encoder", "text_encoder_2"], lora_scale=scale)
    pipe.unload_lora_weights()
    fused = {"unet": unet.state_dict(), "text_encoder": sd.state_of(clip_l), "text_encoder_2": sd.state_of(clip_g)}
    orig = {"unet": m["unet"].state_dict(), "text_encoder": sd.state_of(m["clip_l"]),
            "text_encoder_2": sd.state_of(m["clip_g"])}
    for comp in fused:
        for k, w in fused[comp].items():
            want = orig[comp][k] + scale * deltas[(comp, k)] if (comp, k) in deltas else orig[comp][k]
            if w.shape != want.shape or not torch.allclose(w, want, rtol=0, atol=2e-6):
                raise RuntimeError(f"LoRA fused by diffusers differs from the closed form at {comp}.{k}")
    return pipe


def te_outputs(clip_l, clip_g, ids_l, ids_g):
    with torch.no_grad():
        ol = clip_l(input_ids=ids_l, output_hidden_states=True)
        og = clip_g(input_ids=ids_g, output_hidden_states=True)
    return ol.hidden_states[-2], og.hidden_states[-2], og.text_embeds


def unet_forward(unet, inputs: dict, prefix: str, **kw):
    with torch.no_grad():
        return unet(inputs[f"{prefix}.sample"], inputs[f"{prefix}.timestep"],
                    encoder_hidden_states=inputs[f"{prefix}.context"],
                    added_cond_kwargs={"text_embeds": inputs[f"{prefix}.text_embeds"],
                                       "time_ids": inputs[f"{prefix}.time_ids"]}, **kw).sample


# LyCORIS / diff / DoRA patches on UNet linear layers: (diffusers module, settings)
LOHA_MODULES = [
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", dict(rank=4, alpha=2.0)),
    ("mid_block.attentions.0.transformer_blocks.1.ff.net.2", dict(rank=4, alpha=3.0)),
    ("up_blocks.0.attentions.1.proj_in", dict(rank=2, alpha=1.0)),
]
LOKR_MODULES = [
    # kron(w1 [4, 4], w2_a [16, 4] @ w2_b [4, 24]) = [64, 96]; scale alpha / w2_b rows
    ("down_blocks.2.attentions.0.transformer_blocks.1.attn2.to_k", dict(w1=(4, 4), rank=4, alpha=2.0)),
    # kron(w1 [2, 2], w2 [32, 32]) = [64, 64]; no decomposed factor: scale 1, alpha ignored
    ("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0", dict(w1=(2, 2), rank=None, alpha=8.0)),
]
DIFF_MODULES = ["up_blocks.1.attentions.1.proj_out"]  # a weight and a bias patch (`diff`, `diff_b`)
DORA_MODULES = [("down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_q", dict(rank=4, alpha=2.0))]


def make_patches(m: dict):
    """LoHa, LoKr, full-weight diff and DoRA files, and the patched weights they imply.
    Returns {kind: (state dict, [module records], {ref name: tensor})}."""
    unet = m["unet"]
    cfg = unet.config
    sdict = unet.state_dict()
    result = {}

    def record(kind, i, module, param, orig, patched_by_strength, extra):
        refs = {f"patch.{kind}.{i}.orig": orig}
        for s, w in patched_by_strength.items():
            refs[f"patch.{kind}.{i}.strength_{s}"] = w
        rec = {"index": i, "lora_key": kohya_name("lora_unet_", sgm_module(cfg, module)),
               "diffusers_param": f"{module}.{param}", "ldm_param": LDM_UNET + unet_key_to_sgm(f"{module}.{param}", cfg),
               "shape": list(orig.shape)}
        rec.update(extra)
        return rec, refs

    # LoHa: dW = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank, rank = w1_b rows
    g = gen(SEED["loha"])
    state, recs, refs = {}, [], {}
    for i, (module, o) in enumerate(LOHA_MODULES):
        w = sdict[module + ".weight"]
        out_c, in_c = w.shape
        r = o["rank"]
        w1a = f16_round(torch.randn((out_c, r), generator=g) * 0.3)
        w1b = f16_round(torch.randn((r, in_c), generator=g) * 0.3)
        w2a = f16_round(torch.randn((out_c, r), generator=g) * 0.3)
        w2b = f16_round(torch.randn((r, in_c), generator=g) * 0.3)
        key = kohya_name("lora_unet_", sgm_module(cfg, module))
        state.update({f"{key}.hada_w1_a": w1a, f"{key}.hada_w1_b": w1b, f"{key}.hada_w2_a": w2a,
                      f"{key}.hada_w2_b": w2b, f"{key}.alpha": torch.tensor(o["alpha"])})
        delta = (w1a @ w1b) * (w2a @ w2b) * (o["alpha"] / r)
        rec, rr = record("loha", i, module, "weight", w, {s: w + s * delta for s in PATCH_STRENGTHS},
                         {"rank": r, "alpha": o["alpha"], "scale": o["alpha"] / r})
        recs.append(rec)
        refs.update(rr)
    result["loha"] = (state, recs, refs)

    # LoKr: dW = kron(w1, w2) * scale; w2 = w2_a @ w2_b (scale alpha / w2_b rows) or full (scale 1)
    g = gen(SEED["lokr"])
    state, recs, refs = {}, [], {}
    for i, (module, o) in enumerate(LOKR_MODULES):
        w = sdict[module + ".weight"]
        out_c, in_c = w.shape
        a, b = o["w1"]
        w1 = f16_round(torch.randn((a, b), generator=g) * 0.5)
        key = kohya_name("lora_unet_", sgm_module(cfg, module))
        state[f"{key}.lokr_w1"] = w1
        state[f"{key}.alpha"] = torch.tensor(o["alpha"])
        if o["rank"] is None:
            w2 = f16_round(torch.randn((out_c // a, in_c // b), generator=g) * 0.05)
            state[f"{key}.lokr_w2"] = w2
            scale = 1.0
        else:
            r = o["rank"]
            w2a = f16_round(torch.randn((out_c // a, r), generator=g) * 0.2)
            w2b = f16_round(torch.randn((r, in_c // b), generator=g) * 0.2)
            state[f"{key}.lokr_w2_a"] = w2a
            state[f"{key}.lokr_w2_b"] = w2b
            w2 = w2a @ w2b
            scale = o["alpha"] / r
        delta = torch.kron(w1, w2) * scale
        assert delta.shape == w.shape
        rec, rr = record("lokr", i, module, "weight", w, {s: w + s * delta for s in PATCH_STRENGTHS},
                         {"rank": o["rank"], "alpha": o["alpha"], "scale": scale, "w1_shape": [a, b],
                          "w2": "full" if o["rank"] is None else "w2_a @ w2_b"})
        recs.append(rec)
        refs.update(rr)
    result["lokr"] = (state, recs, refs)

    # diff: W' = W + strength * diff (and the bias with diff_b)
    g = gen(SEED["diff"])
    state, recs, refs = {}, [], {}
    i = 0
    for module in DIFF_MODULES:
        key = kohya_name("lora_unet_", sgm_module(cfg, module))
        for param, suffix in (("weight", "diff"), ("bias", "diff_b")):
            w = sdict[f"{module}.{param}"]
            d = f16_round(torch.randn(w.shape, generator=g) * 0.02)
            state[f"{key}.{suffix}"] = d
            rec, rr = record("diff", i, module, param, w, {s: w + s * d for s in PATCH_STRENGTHS},
                             {"key": f"{key}.{suffix}"})
            recs.append(rec)
            refs.update(rr)
            i += 1
    result["diff"] = (state, recs, refs)

    # DoRA (kohya LoRA + dora_scale [out, 1]):
    #   W1 = (W + dW) * dora_scale / ||W + dW||, the norm over the input dimension of each
    #   output row; at strength s: W + s * (W1 - W).
    g = gen(SEED["dora"])
    state, recs, refs = {}, [], {}
    for i, (module, o) in enumerate(DORA_MODULES):
        w = sdict[module + ".weight"]
        r, alpha = o["rank"], o["alpha"]
        down, up = lora_factors(g, w, r)
        key = kohya_name("lora_unet_", sgm_module(cfg, module))
        row_norm = w.norm(dim=1, keepdim=True)
        dora_scale = f16_round(row_norm * (1.0 + 0.2 * torch.randn(row_norm.shape, generator=g)))
        state.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                      f"{key}.alpha": torch.tensor(alpha), f"{key}.dora_scale": dora_scale})
        merged = w + lora_delta(down, up, w.shape) * (alpha / r)
        full = merged * (dora_scale / merged.norm(dim=1, keepdim=True))
        rec, rr = record("dora", i, module, "weight", w, {s: w + s * (full - w) for s in PATCH_STRENGTHS},
                         {"rank": r, "alpha": alpha, "scale": alpha / r, "dora_scale_shape": list(dora_scale.shape)})
        recs.append(rec)
        refs.update(rr)
    result["dora"] = (state, recs, refs)
    return result


# --------------------------------------------------------------------------
# Main generation
# --------------------------------------------------------------------------
def generate(out: Path, bpe: Path) -> list[Path]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    refs: dict[str, torch.Tensor] = {}
    info_extra: dict = {}

    # ---- models
    m = {
        "clip_l": build_clip(CLIPTextModel, CLIP_L_CONFIG, SEED["clip_l"]),
        "clip_g": build_clip(CLIPTextModelWithProjection, CLIP_G_CONFIG, SEED["clip_g"]),
        "unet": build_unet(UNET_BASE_JSON, SEED["unet_base"]),
        "refiner": build_unet(UNET_REFINER_JSON, SEED["unet_refiner"]),
        "vae": build_vae(),
    }
    m["controlnet"] = build_controlnet(m["unet"])

    # ---- diffusers folders
    files += save_xl_folder(out / "tiny_sdxl", bpe, MODEL_INDEX_BASE, m["unet"], UNET_BASE_JSON, m["vae"],
                            m["clip_l"], m["clip_g"])
    files += save_xl_folder(out / "tiny_sdxl_refiner", bpe, MODEL_INDEX_REFINER, m["refiner"], UNET_REFINER_JSON,
                            m["vae"], None, m["clip_g"])
    files += sd.save_diffusers_model(m["controlnet"], out / "controlnet_sdxl")
    minimal = minimal_unet_config(UNET_BASE_JSON)
    files.append(write_text_json(out / "unet_sdxl_minimal" / "config.json", minimal))
    tok_l, tok_g = load_tokenizers(out / "tiny_sdxl")

    # ---- SGM single files
    for name, ck in (("tiny_sdxl.safetensors", base_single_file(m["unet"], m["vae"], m["clip_l"], m["clip_g"])),
                     ("tiny_sdxl_refiner.safetensors", refiner_single_file(m["refiner"], m["vae"], m["clip_g"]))):
        p = out / name
        save_file(sd.to_f16(ck), str(p))
        files.append(p)
    verify_single_files(out, m)
    verify_folders(out, m, tok_l, tok_g)

    # ---- tokens and text encoders
    ids_l = tokenize(tok_l, TEXT_ROWS)
    ids_g = tokenize(tok_g, TEXT_ROWS)
    long_ids = torch.tensor(tok_l(LONG_PROMPT, add_special_tokens=False, truncation=False).input_ids,
                            dtype=torch.int64)
    assert long_ids.numel() > 100 and torch.equal(ids_l[3, 1:76], long_ids[:75])
    refs["tokens.clip_l"] = ids_l
    refs["tokens.clip_g"] = ids_g
    refs["tokens.long_ids"] = long_ids
    pen_l, pen_g, pooled = te_outputs(m["clip_l"], m["clip_g"], ids_l, ids_g)
    refs["te.clip_l.penultimate"] = pen_l
    refs["te.clip_g.penultimate"] = pen_g
    refs["te.context"] = torch.cat([pen_l, pen_g], dim=-1)
    refs["te.clip_g.text_embeds"] = pooled
    # the pipelines' own encode_prompt agrees with the above
    pipe = base_pipe(m, tok_l, tok_g)
    with torch.no_grad():
        pe, npe, pp, npp = pipe.encode_prompt(PROMPT, negative_prompt=NEGATIVE_PROMPT,
                                              do_classifier_free_guidance=True)
    assert torch.equal(pe[0], refs["te.context"][0]) and torch.equal(npe[0], refs["te.context"][1])
    # (the projection of a batch of one rounds differently from a batch of four)
    assert torch.allclose(pp[0], pooled[0], rtol=0, atol=1e-5) and torch.allclose(npp[0], pooled[1], rtol=0, atol=1e-5)

    # ---- UNet / refiner / ControlNet / VAE
    inputs = {
        "unet.sample": sd.randn((2, 4, 8, 8), SEED["unet_sample"]),
        "unet.timestep": torch.tensor([999.0, 321.0]),
        "unet.context": sd.randn((2, 77, UNET_BASE_JSON["cross_attention_dim"]), SEED["unet_context"]),
        "unet.text_embeds": sd.randn((2, CLIP_G_CONFIG["projection_dim"]), SEED["unet_text_embeds"]),
        "unet.time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0],
                                       [1024.0, 1024.0, 16.0, 32.0, 64.0, 64.0]]),
    }
    inputs.update({
        "refiner.sample": inputs["unet.sample"],
        "refiner.timestep": inputs["unet.timestep"],
        "refiner.context": sd.randn((2, 77, UNET_REFINER_JSON["cross_attention_dim"]), SEED["refiner_context"]),
        "refiner.text_embeds": sd.randn((2, CLIP_G_CONFIG["projection_dim"]), SEED["refiner_text_embeds"]),
        "refiner.time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, AESTHETIC_SCORE],
                                          [1024.0, 1024.0, 16.0, 32.0, NEGATIVE_AESTHETIC_SCORE]]),
    })
    refs.update({k: v for k, v in inputs.items() if k not in ("refiner.sample", "refiner.timestep")})
    refs["unet.out"] = unet_forward(m["unet"], inputs, "unet")
    refs["refiner.out"] = unet_forward(m["refiner"], inputs, "refiner")
    minimal_unet = UNet2DConditionModel.from_config(minimal)
    sd.load_into(minimal_unet, m["unet"].state_dict())
    minimal_unet.eval()
    same = {**model_config(dict(m["unet"].config)), "upcast_attention": False}  # null (SDXL's) = false
    if model_config(dict(minimal_unet.config)) != same or not torch.equal(
            unet_forward(minimal_unet, inputs, "unet"), refs["unet.out"]):
        raise RuntimeError("unet_sdxl_minimal does not reproduce the full config")

    cond = torch.rand((2, 3, HEIGHT, WIDTH), generator=gen(SEED["controlnet_cond"]))
    refs["controlnet.cond"] = cond
    added = {"text_embeds": inputs["unet.text_embeds"], "time_ids": inputs["unet.time_ids"]}
    with torch.no_grad():
        down, mid = m["controlnet"](inputs["unet.sample"], inputs["unet.timestep"],
                                    encoder_hidden_states=inputs["unet.context"], controlnet_cond=cond,
                                    conditioning_scale=1.0, added_cond_kwargs=added, return_dict=False)
    for i, d in enumerate(down):
        refs[f"controlnet.down.{i}"] = d
    refs["controlnet.mid"] = mid
    refs["unet.out_controlled"] = unet_forward(m["unet"], inputs, "unet", down_block_additional_residuals=list(down),
                                               mid_block_additional_residual=mid)

    image = sd.make_vae_image()
    latent = sd.randn((1, 4, 8, 8), SEED["vae_latent"])
    with torch.no_grad():
        dist = m["vae"].encode(image).latent_dist
        refs["vae.image"] = image
        refs["vae.mean"] = dist.mean
        refs["vae.logvar"] = dist.logvar
        refs["vae.latent"] = latent
        refs["vae.decoded"] = m["vae"].decode(latent / VAE_JSON["scaling_factor"]).sample

    # ---- pipelines
    runs: dict = {}
    lat = sd.randn((1, 4, 8, 8), SEED["pipeline_latents"])
    refs["pipe.latents"] = lat
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=HEIGHT, width=WIDTH)

    pipe = base_pipe(m, tok_l, tok_g)
    res = run_xl(pipe, NUM_STEPS, "pt", latents=lat.clone(), **common)
    refs["pipe.txt2img.image_raw"] = check_image(m["vae"], res[1], res[0])
    record_run(refs, runs, "txt2img", res, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT,
               height=HEIGHT, width=WIDTH, micro_conditioning="default (original = target = 64x64, crop 0,0)")

    res = run_xl(pipe, NUM_STEPS, "pt", latents=lat.clone(), **common, **MICRO_CONDITIONING)
    check_image(m["vae"], res[1], res[0])
    record_run(refs, runs, "micro", res, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=HEIGHT,
               width=WIDTH, micro_conditioning={k: list(v) for k, v in MICRO_CONDITIONING.items()})

    res = run_xl(pipe, NUM_STEPS, "latent", latents=lat.clone(), denoising_end=DENOISING_SPLIT, **common)
    record_run(refs, runs, "base_split", res, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=HEIGHT,
               width=WIDTH, denoising_end=DENOISING_SPLIT)
    handoff = res[1][-1]
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=m["vae"], text_encoder=None, text_encoder_2=m["clip_g"], tokenizer=None, tokenizer_2=tok_g,
        unet=m["refiner"], scheduler=scheduler(), requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False, add_watermarker=False)
    refiner.set_progress_bar_config(disable=True)
    res = run_xl(refiner, NUM_STEPS, "pt", image=handoff.clone(), denoising_start=DENOISING_SPLIT,
                 aesthetic_score=AESTHETIC_SCORE, negative_aesthetic_score=NEGATIVE_AESTHETIC_SCORE,
                 prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT)
    check_image(m["vae"], res[1], res[0])
    record_run(refs, runs, "refiner_split", res, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT,
               denoising_start=DENOISING_SPLIT, aesthetic_score=AESTHETIC_SCORE,
               negative_aesthetic_score=NEGATIVE_AESTHETIC_SCORE, input="pipe.base_split.steps[-1]")

    hint = torch.rand((1, 3, HEIGHT, WIDTH), generator=gen(SEED["controlnet_hint"]))
    refs["pipe.controlnet.hint"] = hint
    cpipe = StableDiffusionXLControlNetPipeline(
        vae=m["vae"], text_encoder=m["clip_l"], text_encoder_2=m["clip_g"], tokenizer=tok_l, tokenizer_2=tok_g,
        unet=m["unet"], controlnet=m["controlnet"], scheduler=scheduler(), force_zeros_for_empty_prompt=True,
        add_watermarker=False)
    cpipe.set_progress_bar_config(disable=True)
    res = run_xl(cpipe, SHORT_STEPS, "pt", latents=lat.clone(), image=hint.clone(),
                 controlnet_conditioning_scale=CONTROLNET_SCALE, **common)
    check_image(m["vae"], res[1], res[0])
    record_run(refs, runs, "controlnet", res, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, height=HEIGHT,
               width=WIDTH, controlnet_conditioning_scale=CONTROLNET_SCALE, hint="pipe.controlnet.hint")

    # ---- LoRAs
    loras = out / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    kohya, kohya_deltas = make_kohya_lora(m)
    p = loras / "sdxl_kohya.safetensors"
    save_file(sd.to_f16(kohya), str(p), metadata={"format": "pt"})
    files.append(p)
    p = loras / "sdxl_peft.safetensors"
    peft_deltas = make_peft_lora(m, p)
    files.append(p)
    lora_info = {}
    for name, path, deltas in (("kohya", loras / "sdxl_kohya.safetensors", kohya_deltas),
                               ("peft", loras / "sdxl_peft.safetensors", peft_deltas)):
        state = load_file(str(path))
        for scale in LORA_SCALES:
            lp = lora_models(m, tok_l, tok_g, state, scale, deltas)
            refs[f"lora.{name}.unet.scale_{scale}"] = unet_forward(lp.unet, inputs, "unet")
            if scale == 1.0:
                pl, pg, pooled_l = te_outputs(lp.text_encoder, lp.text_encoder_2, ids_l[:2], ids_g[:2])
                refs[f"lora.{name}.te.context"] = torch.cat([pl, pg], dim=-1)
                refs[f"lora.{name}.te.clip_g.text_embeds"] = pooled_l
                if name == "kohya":
                    res = run_xl(lp, SHORT_STEPS, "pt", latents=lat.clone(), **common)
                    check_image(m["vae"], res[1], res[0])
                    record_run(refs, runs, "lora_kohya", res, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT,
                               height=HEIGHT, width=WIDTH, lora="loras/sdxl_kohya.safetensors", lora_scale=scale)
        lora_info[name] = {
            "file": f"loras/{path.name}",
            "scales": list(LORA_SCALES),
            "num_tensors": len(state),
            "patched_params": sorted(f"{c}.{k}" for c, k in deltas),
        }
    lora_info["kohya"]["ranks_alphas"] = {k: {"rank": r, "alpha": a} for k, (r, a) in KOHYA_RANKS.items()}
    lora_info["peft"].update(rank=PEFT_RANK, lora_alpha=PEFT_ALPHA, unet_target_modules=PEFT_UNET_TARGETS,
                             text_encoder_target_modules=PEFT_TE_TARGETS)
    if torch.allclose(refs["lora.kohya.unet.scale_1.0"], refs["unet.out"], atol=1e-3):
        raise RuntimeError("the kohya LoRA has no effect")

    patches = make_patches(m)
    patch_info = {}
    for kind, (state, recs, prefs) in patches.items():
        p = loras / f"sdxl_{kind}.safetensors"
        save_file(sd.to_f16(state), str(p), metadata={"format": "pt"})
        files.append(p)
        refs.update(prefs)
        patch_info[kind] = {"file": f"loras/{p.name}", "strengths": list(PATCH_STRENGTHS), "modules": recs}
    patch_info["dora"]["check"] = check_dora_with_peft(m, loras / "sdxl_dora.safetensors", patches["dora"][1], refs)

    # ---- textual inversion
    emb_dir = out / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    g = gen(SEED["embedding"])
    emb = {"clip_g": f16_round(torch.randn((2, CLIP_G_CONFIG["hidden_size"]), generator=g) * 0.02),
           "clip_l": f16_round(torch.randn((2, CLIP_L_CONFIG["hidden_size"]), generator=g) * 0.02)}
    p = emb_dir / f"{TI_FILE}.safetensors"
    save_file(sd.to_f16(emb), str(p))
    files.append(p)
    ti_info = textual_inversion_refs(m, tok_l, tok_g, emb, refs)
    files += sd15_embedding(emb_dir, bpe, refs)

    # ---- sanity
    for k, v in refs.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise RuntimeError(f"{k} has non-finite values")
    if torch.equal(refs["unet.out"], refs["unet.out_controlled"]):
        raise RuntimeError("ControlNet residuals have no effect")
    if torch.equal(refs["pipe.txt2img.steps"], refs["pipe.micro.steps"]):
        raise RuntimeError("micro-conditioning has no effect")

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
        "text_rows": TEXT_ROW_NAMES,
        "text_rows_text": TEXT_ROWS,
        "seeds": SEED,
        "perturb_std": PERTURB_STD,
        "height": HEIGHT,
        "width": WIDTH,
        "models": {
            "clip_l": CLIP_L_CONFIG,
            "clip_g": CLIP_G_CONFIG,
            "unet_base": model_config(UNET_BASE_JSON),
            "unet_refiner": model_config(UNET_REFINER_JSON),
            "vae": model_config(VAE_JSON),
            "controlnet": "ControlNetModel.from_unet(base unet), default conditioning_embedding_out_channels",
        },
        "tokenizer": {
            "vocab_size": VOCAB,
            "merges": TOKENIZER_MERGES,
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "pad_token_id_clip_l": EOS,
            "pad_token_id_clip_g": 0,
            "construction": ("OpenAI's bpe_simple_vocab_16e6.txt cut as in scripts/make_sd_sweep_fixtures.py: "
                             "256 byte symbols, the same with </w>, the first 486 merges, <|startoftext|>, "
                             "<|endoftext|>"),
        },
        "single_files_need_config": ("tiny_sdxl.safetensors / tiny_sdxl_refiner.safetensors are read with "
                                     "tiny_sdxl/ / tiny_sdxl_refiner/ as the config (tokenizers, configs, "
                                     "head counts): 32-wide heads, 1000-token vocabulary"),
        "scheduler_config": SDXL_SCHEDULER_CONFIG,
        "unet_inputs": {
            "time_ids_layout": "original_h, original_w, crop_top, crop_left, target_h, target_w",
            "refiner_time_ids_layout": "original_h, original_w, crop_top, crop_left, aesthetic_score",
            "note": "refiner.sample / refiner.timestep are unet.sample / unet.timestep",
        },
        "unet_sdxl_minimal": {
            "config": "unet_sdxl_minimal/config.json",
            "weights": "tiny_sdxl/unet/diffusion_pytorch_model.safetensors",
            "note": ("only the keys that differ from UNet2DConditionModel's defaults; with the base UNet's "
                     "weights it must give exactly unet.out (diffusers builds the same model from it)"),
            "keys": sorted(k for k in minimal if not k.startswith("_")),
        },
        "vae_decoded_input": "vae.decoded = vae.decode(vae.latent / scaling_factor)",
        "pipelines": runs,
        "loras": lora_info,
        "patches": patch_info,
        "textual_inversion": ti_info,
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in refs.items()},
    }
    p = out / "reference.json"
    sd.write_json(p, sd.sanitize(info))
    files.append(p)
    return files


def check_dora_with_peft(m: dict, path: Path, recs: list, refs: dict) -> dict:
    """diffusers 0.42 drops a kohya file's `dora_scale` (with a warning) and applies the plain
    LoRA, so the DoRA closed form is checked against peft's own DoRA instead: a Linear with
    the layer's weight, the file's factors as lora_A / lora_B (scaling alpha / rank) and
    dora_scale as the magnitude, merged by peft at strength 1."""
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    sdict = m["unet"].state_dict()
    worst = 0.0
    for rec in recs:
        key = rec["lora_key"]
        w = sdict[rec["diffusers_param"]]
        down, up = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"]
        rank = down.shape[0]
        holder = torch.nn.Module()
        holder.lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            holder.lin.weight.copy_(w)
        model = peft.get_peft_model(holder, LoraConfig(r=rank, lora_alpha=float(state[f"{key}.alpha"]),
                                                       target_modules=["lin"], use_dora=True))
        layer = model.base_model.model.lin
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(down)
            layer.lora_B["default"].weight.copy_(up)
            layer.lora_magnitude_vector["default"].weight.copy_(state[f"{key}.dora_scale"].reshape(-1))
        merged = model.merge_and_unload().lin.weight.detach()
        err = (merged - refs[f"patch.dora.{rec['index']}.strength_1.0"]).abs().max().item()
        worst = max(worst, err)
        if err > 1e-6:
            raise RuntimeError(f"peft's DoRA differs from the closed form at {rec['diffusers_param']} by {err}")
    return {"checked_against": f"peft {peft.__version__} use_dora=True merge at strength 1",
            "max_abs_diff": worst,
            "diffusers_note": "diffusers' load_lora_weights drops kohya dora_scale keys and applies the plain LoRA"}


def textual_inversion_refs(m, tok_l, tok_g, emb: dict, refs: dict) -> dict:
    """Prompt embeddings of TI_PROMPT with the embedding loaded by diffusers'
    load_textual_inversion into both encoders (one token expanding to two vectors)."""
    tl, tg = copy.deepcopy(tok_l), copy.deepcopy(tok_g)
    cl, cg = copy.deepcopy(m["clip_l"]), copy.deepcopy(m["clip_g"])
    pipe = base_pipe(m, tl, tg, clip_l=cl, clip_g=cg)
    pipe.load_textual_inversion(emb["clip_l"].float(), token=TI_TOKEN, text_encoder=cl, tokenizer=tl)
    pipe.load_textual_inversion(emb["clip_g"].float(), token=TI_TOKEN, text_encoder=cg, tokenizer=tg)
    converted_l = pipe.maybe_convert_prompt(TI_PROMPT, tl)
    converted_g = pipe.maybe_convert_prompt(TI_PROMPT, tg)
    ids_l = tokenize(tl, [converted_l], vocab=len(tl))
    ids_g = tokenize(tg, [converted_g], vocab=len(tg))
    with torch.no_grad():
        pe, _, pooled, _ = pipe.encode_prompt(TI_PROMPT, do_classifier_free_guidance=False)
        pl, pg, pooled2 = te_outputs(cl, cg, ids_l, ids_g)
        og = cg(input_ids=ids_g)
        eos = int((ids_g[0] == EOS).nonzero()[0])
        at_eos = cg.text_projection(og.last_hidden_state[:, eos])
    assert torch.equal(pe, torch.cat([pl, pg], dim=-1)) and torch.equal(pooled, pooled2)
    n = emb["clip_l"].shape[0]
    new_ids = list(range(VOCAB, VOCAB + n))
    plain = tok_l(TI_PROMPT.replace(TI_TOKEN, "").strip()).input_ids[:-1]  # BOS + "a photo of"
    for ids in (ids_l, ids_g):
        row = ids[0].tolist()
        assert row[:len(plain) + n + 1] == plain + new_ids + [EOS], row[:12]
    assert eos == len(plain) + n
    with torch.no_grad():
        for c, e in ((cl, emb["clip_l"]), (cg, emb["clip_g"])):
            assert torch.equal(c.get_input_embeddings().weight[VOCAB:VOCAB + n], e.float())
    refs["ti.ids_clip_l"] = ids_l
    refs["ti.ids_clip_g"] = ids_g
    refs["ti.context"] = pe
    refs["ti.clip_g.text_embeds"] = pooled
    refs["ti.clip_g.text_embeds_at_eos"] = at_eos
    # without the embedding, the same prompt text ("a photo of" + nothing) differs
    return {
        "file": f"embeddings/{TI_FILE}.safetensors",
        "token": TI_TOKEN,
        "prompt": TI_PROMPT,
        "weft_prompt": f"a photo of embedding:{TI_FILE}",
        "prompt_as_tokenized_clip_l": converted_l,
        "prompt_as_tokenized_clip_g": converted_g,
        "vectors": n,
        "added_token_ids": new_ids,
        "embedding_positions": list(range(eos - n, eos)),
        "pooled_note": ("ti.clip_g.text_embeds is transformers' pooling with SDXL's legacy eos_token_id 2: "
                        f"argmax(input_ids), which here is the last added embedding token (id {new_ids[-1]}, "
                        f"position {eos - 1}), not <|endoftext|>; ti.clip_g.text_embeds_at_eos pools at the "
                        f"first <|endoftext|> (position {eos}, as ComfyUI does)"),
        "eos_position": eos,
    }


def sd15_embedding(emb_dir: Path, bpe: Path, refs: dict) -> list[Path]:
    """An A1111-style SD 1.x embedding ({"emb_params": [2, 16]}) for the tiny SD 1.5 of
    fixtures/sd/ (whose CLIP is 16 wide), with the CLIP output diffusers gives for TI_PROMPT."""
    g = gen(SEED["sd15_embedding"])
    clip = sd.build_clip_sd1()
    # the rebuilt encoder is the committed one
    committed = sd.DEFAULT_OUT / "tiny_sd15" / "text_encoder" / "model.safetensors"
    if committed.exists():
        sd._assert_same_state(sd.state_of(clip), {k: v.float() for k, v in load_file(str(committed)).items()},
                              "rebuilt tiny SD 1.5 CLIP")
    width = sd.CLIP_SD1_CONFIG["hidden_size"]
    emb = f16_round(torch.randn((2, width), generator=g) * 0.02)
    p = emb_dir / f"{SD15_TI_FILE}.safetensors"
    save_file({"emb_params": emb.half()}, str(p))
    tok1, _ = sd.build_tokenizers(bpe)
    pipe = StableDiffusionPipeline(vae=sd.build_vae(), text_encoder=clip, tokenizer=tok1,
                                   unet=sd.build_unet(sd.UNET_SD1_CONFIG, sd.SEED["unet_sd1"]),
                                   scheduler=sd.scheduler_from(EulerDiscreteScheduler, sd.SD15_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.load_textual_inversion(load_file(str(p)), token=TI_TOKEN)
    ids = tokenize(tok1, [pipe.maybe_convert_prompt(TI_PROMPT, tok1)], vocab=len(tok1))
    with torch.no_grad():
        hidden = clip(input_ids=ids).last_hidden_state
    refs["sd15_ti.ids"] = ids
    refs["sd15_ti.hidden"] = hidden
    return [p]


def main() -> int:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--bpe", type=Path, default=None, help="path to bpe_simple_vocab_16e6.txt")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare byte-for-byte with --out")
    args = ap.parse_args()
    bpe = sd.find_bpe(args.bpe)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            files = generate(Path(tmp), bpe)
            bad = [str(f.relative_to(tmp)) for f in files
                   if not (args.out / f.relative_to(tmp)).exists()
                   or (args.out / f.relative_to(tmp)).read_bytes() != f.read_bytes()]
            if bad:
                print("fixtures differ from a fresh run: " + ", ".join(bad))
                return 1
            print(f"{len(files)} fixture files match a fresh run")
            return 0
    files = generate(args.out, bpe)
    total = 0
    for f in files:
        total += f.stat().st_size
        print(f"{f.stat().st_size:10d}  {f.relative_to(args.out)}")
    print(f"{total:10d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
