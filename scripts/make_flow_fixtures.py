#!/usr/bin/env python3
"""Generate tiny SD3 / SD3.5 / Flux.1 / T5-XXL parity fixtures with diffusers + transformers (issue #15).

Writes, under models/tests/fixtures/:

* t5/   -- a tiny T5 v1.1 encoder (`T5EncoderModel`, gated-gelu, relative attention
           buckets 32 / max distance 128) with the real 32128-row vocabulary, its encoder
           outputs for fixed token ids (padding and attention mask included), and the ids
           the real T5 tokenizer gives for ~15 prompts (tokens.json).
* sd3/  -- three tiny `SD3Transformer2DModel`s (SD3-medium, SD3.5-large with RMS qk-norm,
           SD3.5-medium with MMDiT-X dual attention), each as a diffusers folder and in
           Stability's original single-file layout, a tiny SD3 VAE, and a full
           StableDiffusion3Pipeline run (tiny CLIP-L, CLIP-G and T5, the real T5 tokenizer).
* flux/ -- two tiny `FluxTransformer2DModel`s (dev-style with guidance embedding,
           schnell-style without) as diffusers folders and in BFL's original layout, a
           ComfyUI "scaled fp8" single file of the dev one, a tiny Flux VAE and full
           FluxPipeline runs.

Every folder has a README.md (written by this script) listing each file.

Deterministic and offline, with the conventions of scripts/make_sd_fixtures.py (whose
helpers this script imports): every model is built from its config class with random
weights from fixed torch seeds (nothing is downloaded; HF_HUB_OFFLINE=1), every parameter
is perturbed by 0.05 * N(0, 1) and rounded to float16 and back, all references are
computed in float32 on the CPU with one thread, and weights are saved as float16, so a
loader that upcasts sees exactly the weights the references were computed with.

The original-layout single files are made by a mapping written here (diffusers ->
original) and checked against diffusers' own converters
(`convert_sd3_transformer_checkpoint_to_diffusers`,
`convert_flux_transformer_checkpoint_to_diffusers`): converting the written file gives
back every diffusers tensor bit for bit, and nothing is left over.

The T5 tokenizer is read from assets/t5/tokenizer.json (--t5-tokenizer PATH): the
Apache-2.0 T5 v1.1 SentencePiece vocabulary in the HF `tokenizers` format that ComfyUI
ships as comfy/text_encoders/t5_tokenizer/tokenizer.json.

Usage (from the repository root, in the venv of scripts/requirements-sd-fixtures.txt):

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_flow_fixtures.py
    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_flow_fixtures.py --check   # compare only

This script only *calls* diffusers and transformers; it contains no code of theirs
(the Flux converter is re-run with its hard-coded width replaced, see
`diffusers_flux_converter`).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_sd_fixtures as sd  # noqa: E402  (sets HF_HUB_OFFLINE before diffusers loads)

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

FORMAT_VERSION = 1
FIXTURES = sd.REPO_ROOT / "models" / "tests" / "fixtures"
DEFAULT_T5_TOKENIZER = sd.REPO_ROOT / "assets" / "t5" / "tokenizer.json"
SDXL_TOKENIZERS = FIXTURES / "sdxl" / "tiny_sdxl"   # CLIP tokenizers (1000-token vocabulary)
SCRIPT = "scripts/make_flow_fixtures.py"

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE_PROMPT = "blurry, low quality"
HEIGHT, WIDTH = 64, 96            # pixels: 8 x 12 latents (VAE factor 8), 4 x 6 patches / tokens
LAT_H, LAT_W = HEIGHT // 8, WIDTH // 8
SD3_STEPS, SD3_GUIDANCE = 3, 5.0
FLUX_STEPS, FLUX_GUIDANCE = 2, 3.5
SCHNELL_STEPS = 2

SEED = {
    "t5": 31, "clip_l": 32, "clip_g": 33,
    "sd3_medium": 40, "sd35_large": 41, "sd35_medium": 42, "sd3_vae": 43,
    "flux_dev": 50, "flux_schnell": 51, "flux_vae": 52, "flux_clip_l": 53,
    "t5_ids": 100, "sd3_inputs": 101, "flux_inputs": 102, "vae_latent": 103,
    "sd3_pipe_latents": 104, "flux_pipe_latents": 105,
}

# ---- T5 v1.1 (google/t5-v1_1-xxl's config keys) with tiny sizes. The vocabulary is the
# real one (32128 rows: 32100 SentencePiece pieces + 28 unused), so the embedding covers
# every id the real tokenizer produces; d_model 48 keeps the float16 file at ~3 MB.
# heads * d_kv = 64 != d_model (as in T5-XXL: 64 * 64 = 4096 = d_model there, but the
# attention inner width is a separate parameter in T5).
T5_CONFIG = dict(
    vocab_size=32128, d_model=48, d_kv=16, num_heads=4, d_ff=96, num_layers=2,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
    relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dropout_rate=0.1,
    is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)

# ---- CLIP text encoders (the SDXL fixtures' 1000-token tokenizers; legacy ids 0/2/1 as
# in SD3's real configs). SD3 uses both with projection; Flux uses CLIP-L's pooler output.
CLIP_L_CONFIG = dict(
    vocab_size=1000, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
    projection_dim=16, bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5,
)
CLIP_G_CONFIG = dict(CLIP_L_CONFIG, hidden_size=24, intermediate_size=48, num_attention_heads=2,
                     hidden_act="gelu", projection_dim=24)

# ---- SD3: diffusers' defaults with the sizes shrunk. caption_projection_dim must be
# heads * head_dim; joint_attention_dim is T5's d_model (the CLIP states, 16 + 24 = 40
# wide, are zero-padded to it); pooled_projection_dim is 16 + 24.
SD3_BASE = dict(sample_size=LAT_W, patch_size=2, in_channels=16, num_layers=3, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=T5_CONFIG["d_model"], caption_projection_dim=32,
                pooled_projection_dim=CLIP_L_CONFIG["projection_dim"] + CLIP_G_CONFIG["projection_dim"],
                out_channels=16, pos_embed_max_size=8)
SD3_VARIANTS = {
    "sd3_medium": dict(SD3_BASE),
    "sd35_large": dict(SD3_BASE, qk_norm="rms_norm"),
    "sd35_medium": dict(SD3_BASE, qk_norm="rms_norm", dual_attention_layers=(0, 1)),
}
# stabilityai/stable-diffusion-3-medium-diffusers and 3.5's scheduler_config.json
SD3_SCHEDULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                        "shift": 3.0}

# ---- Flux: diffusers' defaults with the sizes shrunk. axes_dims_rope sums to the head dim.
FLUX_BASE = dict(patch_size=1, in_channels=64, out_channels=None, num_layers=2, num_single_layers=2,
                 attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_CONFIG["d_model"],
                 pooled_projection_dim=CLIP_L_CONFIG["hidden_size"], axes_dims_rope=(4, 6, 6))
FLUX_VARIANTS = {"dev": dict(FLUX_BASE, guidance_embeds=True), "schnell": dict(FLUX_BASE, guidance_embeds=False)}
# black-forest-labs/FLUX.1-dev and FLUX.1-schnell scheduler_config.json
FLUX_DEV_SCHEDULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256,
                             "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                             "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
FLUX_SCHNELL_SCHEDULER_CONFIG = dict(FLUX_DEV_SCHEDULER_CONFIG, shift=1.0, use_dynamic_shifting=False)

# ---- VAEs (16 latent channels, no quant convs; SD3's and Flux's shift / scale).
VAE_COMMON = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32, 32, 32, 32),
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  layers_per_block=1, norm_num_groups=32, act_fn="silu", sample_size=HEIGHT,
                  use_quant_conv=False, use_post_quant_conv=False, force_upcast=True)
SD3_VAE_CONFIG = dict(VAE_COMMON, scaling_factor=1.5305, shift_factor=0.0609)
FLUX_VAE_CONFIG = dict(VAE_COMMON, scaling_factor=0.3611, shift_factor=0.1159)

FP8_MAX = 448.0  # float8_e4m3fn

# The tokenizer prompts (tokens.json): (name, text)
T5_PROMPTS = [
    ("empty", ""),
    ("plain", PROMPT),
    ("negative", NEGATIVE_PROMPT),
    ("punctuation", "Hello, world! (really?) -- yes; no: maybe... \"quoted\" 'single' [brackets] {braces}"),
    ("numbers", "In 1987 there were 3.14159 apples, 1,000,000 pears and 42% of 7/8 oranges at 10:30pm"),
    ("accents", "café naïve façade São Paulo Zürich Ærø crème brûlée Łódź"),
    ("cjk_cyrillic_greek", "日本語のテキスト 中文 Привет мир Καλημέρα"),
    ("emoji", "a cat 🐱 on a 🚀 with ✨ sparkles 👍🏽"),
    ("multiple_spaces", "two  spaces   three    four"),
    ("leading_trailing_spaces", "   padded text   "),
    ("tabs_newlines", "line one\nline two\tafter a tab\r\nwindows"),
    ("weighted", "a (red:1.2) car, [blue] sky, ((masterpiece)), (weighted:1.2)"),
    ("special_tokens_text", "</s> <pad> <unk> <extra_id_0> text"),
    ("mixed_case", "ThE QuIcK BrOwN FoX JUMPS over THE lazy dog"),
    ("long", " ".join(["A highly detailed oil painting of an old lighthouse on a rocky cliff at dusk,"
                       " waves crashing below, seagulls circling overhead, warm lantern light."] * 20)),
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=torch.float32)


def defaults_of(cls) -> dict:
    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def shrunk(cls, over: dict) -> dict:
    """diffusers' default config of `cls` with `over` applied (every key must exist)."""
    cfg = defaults_of(cls)
    assert set(over) <= set(cfg), set(over) - set(cfg)
    cfg.update(over)
    return cfg


def build(factory, seed: int):
    torch.manual_seed(seed)
    model = factory()
    sd.perturb_and_round(model, 1000 + seed)
    with torch.no_grad():  # stored buffers (SD3's sin-cos pos_embed table) rounded like the weights
        for _, b in model.named_buffers():
            if b.is_floating_point():
                b.copy_(b.half().float())
    return model.eval()


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def save_st(state: dict, path: Path, f16: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd.to_f16(state) if f16 else {k: v.detach().contiguous() for k, v in state.items()},
              str(path), metadata={"format": "pt"})
    return path


def save_refs(refs: dict, path: Path) -> Path:
    out = {}
    for k, v in refs.items():
        v = v.detach().cpu().contiguous()
        if v.is_floating_point():
            if not torch.isfinite(v).all():
                raise RuntimeError(f"{k} has non-finite values")
            v = v.to(torch.float32)
        out[k] = v
    save_file(out, str(path))
    return path


def tensor_table(path: Path) -> str:
    rows = []
    for k, v in load_file(str(path)).items():
        rows.append(f"| `{k}` | {str(v.dtype).replace('torch.', '')} | {list(v.shape)} |")
    return "| tensor | dtype | shape |\n| --- | --- | --- |\n" + "\n".join(rows)


def same_state(expected: dict, got: dict, what: str) -> None:
    sd._assert_same_state(expected, got, what)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def generator_info() -> dict:
    info = sd.generator_info()
    info["script"] = SCRIPT
    return info


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
def build_t5() -> T5EncoderModel:
    return build(lambda: T5EncoderModel(T5Config(**T5_CONFIG)), SEED["t5"])


def build_clip(cls, cfg: dict, seed: int):
    return build(lambda: cls(CLIPTextConfig(**cfg)), seed)


def build_sd3(name: str) -> SD3Transformer2DModel:
    return build(lambda: SD3Transformer2DModel(**shrunk(SD3Transformer2DModel, SD3_VARIANTS[name])), SEED[name])


def build_flux(name: str) -> FluxTransformer2DModel:
    return build(lambda: FluxTransformer2DModel(**shrunk(FluxTransformer2DModel, FLUX_VARIANTS[name])),
                 SEED[f"flux_{name}"])


def build_vae(cfg: dict, seed: int) -> AutoencoderKL:
    return build(lambda: AutoencoderKL(**shrunk(AutoencoderKL, cfg)), seed)


def t5_tokenizer(path: Path) -> T5TokenizerFast:
    tok = T5TokenizerFast(tokenizer_file=str(path))
    assert (tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 0, 2)
    return tok


def clip_tokenizers():
    tok_l = CLIPTokenizer.from_pretrained(str(SDXL_TOKENIZERS / "tokenizer"), local_files_only=True)
    tok_g = CLIPTokenizer.from_pretrained(str(SDXL_TOKENIZERS / "tokenizer_2"), local_files_only=True)
    assert len(tok_l) == len(tok_g) == CLIP_L_CONFIG["vocab_size"]
    return tok_l, tok_g


# --------------------------------------------------------------------------
# diffusers -> original single-file layouts (checked against diffusers' converters)
# --------------------------------------------------------------------------
SD3_PREFIX = "model.diffusion_model."


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    """(scale, shift) <-> (shift, scale) of an adaLN projection (its own inverse)."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def sd3_to_original(state: dict, cfg) -> dict:
    """diffusers SD3Transformer2DModel -> Stability's MMDiT (sd3_medium.safetensors /
    sd3.5_large.safetensors) layout, under model.diffusion_model."""
    s = dict(state)
    o = {}

    def mv(src, dst):
        o[dst] = s.pop(src)

    def lin(src, dst):
        mv(src + ".weight", dst + ".weight")
        mv(src + ".bias", dst + ".bias")

    def qkv(srcs, dst):
        for p in ("weight", "bias"):
            o[f"{dst}.{p}"] = torch.cat([s.pop(f"{x}.{p}") for x in srcs], dim=0)

    mv("pos_embed.pos_embed", "pos_embed")
    lin("pos_embed.proj", "x_embedder.proj")
    lin("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0")
    lin("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2")
    lin("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0")
    lin("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2")
    lin("context_embedder", "context_embedder")
    n = cfg["num_layers"]
    for i in range(n):
        d, b = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == n - 1
        qkv([d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"], b + "x_block.attn.qkv")
        qkv([d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"], b + "context_block.attn.qkv")
        if cfg["qk_norm"]:
            mv(d + "attn.norm_q.weight", b + "x_block.attn.ln_q.weight")
            mv(d + "attn.norm_k.weight", b + "x_block.attn.ln_k.weight")
            mv(d + "attn.norm_added_q.weight", b + "context_block.attn.ln_q.weight")
            mv(d + "attn.norm_added_k.weight", b + "context_block.attn.ln_k.weight")
        lin(d + "attn.to_out.0", b + "x_block.attn.proj")
        if not last:
            lin(d + "attn.to_add_out", b + "context_block.attn.proj")
        if i in tuple(cfg["dual_attention_layers"]):
            qkv([d + "attn2.to_q", d + "attn2.to_k", d + "attn2.to_v"], b + "x_block.attn2.qkv")
            if cfg["qk_norm"]:
                mv(d + "attn2.norm_q.weight", b + "x_block.attn2.ln_q.weight")
                mv(d + "attn2.norm_k.weight", b + "x_block.attn2.ln_k.weight")
            lin(d + "attn2.to_out.0", b + "x_block.attn2.proj")
        lin(d + "norm1.linear", b + "x_block.adaLN_modulation.1")
        if not last:
            lin(d + "norm1_context.linear", b + "context_block.adaLN_modulation.1")
        else:  # pre-only context block: AdaLayerNormContinuous, (scale, shift) in diffusers
            for p in ("weight", "bias"):
                o[f"{b}context_block.adaLN_modulation.1.{p}"] = swap_halves(s.pop(f"{d}norm1_context.linear.{p}"))
        lin(d + "ff.net.0.proj", b + "x_block.mlp.fc1")
        lin(d + "ff.net.2", b + "x_block.mlp.fc2")
        if not last:
            lin(d + "ff_context.net.0.proj", b + "context_block.mlp.fc1")
            lin(d + "ff_context.net.2", b + "context_block.mlp.fc2")
    lin("proj_out", "final_layer.linear")
    for p in ("weight", "bias"):
        o[f"final_layer.adaLN_modulation.1.{p}"] = swap_halves(s.pop(f"norm_out.linear.{p}"))
    assert not s, sorted(s)[:10]
    return {SD3_PREFIX + k: v for k, v in o.items()}


def flux_to_original(state: dict, cfg) -> dict:
    """diffusers FluxTransformer2DModel -> BFL's flux1-dev.safetensors layout (no prefix)."""
    s = dict(state)
    o = {}

    def lin(src, dst):
        for p in ("weight", "bias"):
            o[f"{dst}.{p}"] = s.pop(f"{src}.{p}")

    def cat(srcs, dst):
        for p in ("weight", "bias"):
            o[f"{dst}.{p}"] = torch.cat([s.pop(f"{x}.{p}") for x in srcs], dim=0)

    def scale(src, dst):
        o[dst] = s.pop(src)

    lin("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer")
    lin("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer")
    lin("time_text_embed.text_embedder.linear_1", "vector_in.in_layer")
    lin("time_text_embed.text_embedder.linear_2", "vector_in.out_layer")
    if cfg["guidance_embeds"]:
        lin("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer")
        lin("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer")
    lin("context_embedder", "txt_in")
    lin("x_embedder", "img_in")
    for i in range(cfg["num_layers"]):
        d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        lin(d + "norm1.linear", b + "img_mod.lin")
        lin(d + "norm1_context.linear", b + "txt_mod.lin")
        cat([d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"], b + "img_attn.qkv")
        cat([d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"], b + "txt_attn.qkv")
        scale(d + "attn.norm_q.weight", b + "img_attn.norm.query_norm.scale")
        scale(d + "attn.norm_k.weight", b + "img_attn.norm.key_norm.scale")
        scale(d + "attn.norm_added_q.weight", b + "txt_attn.norm.query_norm.scale")
        scale(d + "attn.norm_added_k.weight", b + "txt_attn.norm.key_norm.scale")
        lin(d + "ff.net.0.proj", b + "img_mlp.0")
        lin(d + "ff.net.2", b + "img_mlp.2")
        lin(d + "ff_context.net.0.proj", b + "txt_mlp.0")
        lin(d + "ff_context.net.2", b + "txt_mlp.2")
        lin(d + "attn.to_out.0", b + "img_attn.proj")
        lin(d + "attn.to_add_out", b + "txt_attn.proj")
    for i in range(cfg["num_single_layers"]):
        d, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        lin(d + "norm.linear", b + "modulation.lin")
        cat([d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp"], b + "linear1")
        scale(d + "attn.norm_q.weight", b + "norm.query_norm.scale")
        scale(d + "attn.norm_k.weight", b + "norm.key_norm.scale")
        lin(d + "proj_out", b + "linear2")
    lin("proj_out", "final_layer.linear")
    for p in ("weight", "bias"):
        o[f"final_layer.adaLN_modulation.1.{p}"] = swap_halves(s.pop(f"norm_out.linear.{p}"))
    assert not s, sorted(s)[:10]
    return o


def diffusers_flux_converter(inner_dim: int):
    """diffusers' convert_flux_transformer_checkpoint_to_diffusers hard-codes the real
    model's width (`inner_dim = 3072`) to split single_blocks.N.linear1; re-run its own
    source with the tiny width substituted (nothing else changed)."""
    src = textwrap.dedent(inspect.getsource(sfu.convert_flux_transformer_checkpoint_to_diffusers))
    assert src.count("inner_dim = 3072") == 1
    src = src.replace("inner_dim = 3072", f"inner_dim = {inner_dim}")
    ns = dict(vars(sfu))
    exec(compile(src, "<diffusers convert_flux_transformer_checkpoint_to_diffusers>", "exec"), ns)
    return ns["convert_flux_transformer_checkpoint_to_diffusers"]


def check_converter(convert, original: dict, expected: dict, what: str) -> None:
    ck = {k: v.float().clone() for k, v in original.items()}
    got = convert(ck)
    if ck:
        raise RuntimeError(f"{what}: diffusers' converter left keys unused: {sorted(ck)[:8]}")
    same_state(expected, got, what)


# --------------------------------------------------------------------------
# T5
# --------------------------------------------------------------------------
def gen_t5(root: Path, tok_path: Path, t5) -> list[Path]:
    out = root / "t5"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    t5.config.architectures = ["T5EncoderModel"]
    # transformers' own writer (5.x: the tied embedding is stored once, as shared.weight;
    # transformers 4.57 writes the same key set)
    with tempfile.TemporaryDirectory() as tmp:
        t5.to(torch.float16).save_pretrained(tmp)
        t5.to(torch.float32)
        state = load_file(str(Path(tmp) / "model.safetensors"))
        cfg_text = (Path(tmp) / "config.json").read_text(encoding="utf-8")
    assert "shared.weight" in state and "encoder.embed_tokens.weight" not in state, sorted(state)[:4]
    files.append(save_st(state, out / "model.safetensors"))
    files.append(write_text(out / "config.json", cfg_text))
    loaded = T5EncoderModel.from_pretrained(str(out), local_files_only=True, dtype=torch.float32)
    same_state(t5.state_dict(), loaded.state_dict(), "t5 from_pretrained")

    tok = t5_tokenizer(tok_path)
    raw = Tokenizer.from_file(str(tok_path))
    rows = []
    for name, text in T5_PROMPTS:
        ids = tok(text).input_ids
        raw_ids = raw.encode(text).ids
        if ids != raw_ids:
            raise RuntimeError(f"T5TokenizerFast and tokenizers.Tokenizer disagree on {name!r}")
        assert ids[-1] == 1 and 1 not in ids[:-1] or name == "special_tokens_text", (name, ids)
        rows.append({"name": name, "text": text, "ids": ids, "num_tokens": len(ids),
                     "pieces": tok.convert_ids_to_tokens(ids)})
    assert any(r["num_tokens"] > 512 for r in rows)
    tokens = {
        "format_version": FORMAT_VERSION,
        "generator": generator_info(),
        "tokenizer_file": "assets/t5/tokenizer.json",
        "tokenizer_sha256": sha256(tok_path),
        "tokenizer_class": f"transformers {transformers.__version__} T5TokenizerFast(tokenizer_file=...)",
        "note": ("ids as `tok(text).input_ids`: no padding, no truncation, `</s>` (1) appended by the "
                 "post-processor; checked equal to tokenizers.Tokenizer.from_file(...).encode(text).ids"),
        "eos_token_id": 1, "pad_token_id": 0, "unk_token_id": 2,
        "prompts": rows,
    }
    p = out / "tokens.json"
    sd.write_json(p, sd.sanitize(tokens))
    files.append(p)

    # encoder outputs
    refs = {}
    prompt_ids = [tok(t).input_ids for t in (PROMPT, NEGATIVE_PROMPT, "")]
    L = 16
    ids = torch.zeros((3, L), dtype=torch.int64)
    mask = torch.zeros((3, L), dtype=torch.int64)
    for r, row in enumerate(prompt_ids):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    long_ids = torch.randint(3, 32100, (1, 160), generator=gen(SEED["t5_ids"]))
    long_ids[0, -1] = 1
    with torch.no_grad():
        refs["padded.input_ids"] = ids
        refs["padded.attention_mask"] = mask
        refs["padded.hidden_masked"] = t5(input_ids=ids, attention_mask=mask).last_hidden_state
        refs["padded.hidden_unmasked"] = t5(input_ids=ids).last_hidden_state
        refs["long.input_ids"] = long_ids
        refs["long.hidden"] = t5(input_ids=long_ids).last_hidden_state
        refs["embed.padded"] = t5.shared(ids)
    files.append(save_refs(refs, out / "expected.safetensors"))
    files.append(write_t5_readme(out, rows, tok_path))
    return files


# --------------------------------------------------------------------------
# SD3
# --------------------------------------------------------------------------
def sd3_inputs(batch: int = 2):
    g = gen(SEED["sd3_inputs"])
    jd, pd = SD3_BASE["joint_attention_dim"], SD3_BASE["pooled_projection_dim"]
    return {
        "hidden_states": torch.randn((batch, 16, LAT_H, LAT_W), generator=g),
        "encoder_hidden_states": torch.randn((batch, 10, jd), generator=g),
        "pooled_projections": torch.randn((batch, pd), generator=g),
        "timestep": torch.tensor([999.0, 250.5][:batch]),
    }


def gen_sd3(root: Path, t5, tok_path: Path) -> tuple[list[Path], dict]:
    out = root / "sd3"
    out.mkdir(parents=True, exist_ok=True)
    files, refs, info = [], {}, {"variants": {}}
    inp = sd3_inputs()
    for k, v in inp.items():
        refs[f"inputs.{k}"] = v
    models = {}
    for name in SD3_VARIANTS:
        m = build_sd3(name)
        models[name] = m
        folder = out / name / "transformer"
        files += sd.save_diffusers_model(m, folder)
        reloaded = SD3Transformer2DModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        same_state(m.state_dict(), reloaded.state_dict(), f"{name} from_pretrained")
        orig = sd3_to_original(m.state_dict(), m.config)
        p = save_st(orig, out / f"{name}_original.safetensors")
        files.append(p)
        check_converter(sfu.convert_sd3_transformer_checkpoint_to_diffusers, load_file(str(p)), m.state_dict(),
                        f"{name} original -> diffusers converter")
        fs = SD3Transformer2DModel.from_single_file(str(p), config=str(out / name), subfolder="transformer",
                                                    local_files_only=True, torch_dtype=torch.float32)
        same_state(m.state_dict(), fs.state_dict(), f"{name} from_single_file")
        with torch.no_grad():
            refs[f"{name}.out"] = m(**inp).sample
            refs[f"{name}.out_skip_layer_1"] = m(**inp, skip_layers=[1]).sample
        assert not torch.equal(refs[f"{name}.out"], refs[f"{name}.out_skip_layer_1"])
        info["variants"][name] = {"config": sd.sanitize(dict(m.config)), "num_tensors_diffusers": len(m.state_dict()),
                                  "num_tensors_original": len(orig)}

    vae = build_vae(SD3_VAE_CONFIG, SEED["sd3_vae"])
    files += sd.save_diffusers_model(vae, out / "vae")
    lat = randn((1, 16, LAT_H, LAT_W), SEED["vae_latent"])
    with torch.no_grad():
        refs["vae.latent"] = lat
        refs["vae.decoded"] = vae.decode(lat / vae.config.scaling_factor + vae.config.shift_factor).sample
        refs["vae.encoded_mean"] = vae.encode(refs["vae.decoded"].clamp(-1, 1)).latent_dist.mean

    # ---- full pipeline (SD3-medium transformer), then the same encoders with the others
    pipe_info, pipe_files = sd3_pipeline(out, models, vae, t5, tok_path, refs)
    files += pipe_files
    info["pipelines"] = pipe_info
    p = save_refs(refs, out / "reference.safetensors")
    files.append(p)
    info.update(format_version=FORMAT_VERSION, generator=generator_info(), seeds=SEED,
                vae_config=sd.sanitize(dict(vae.config)), vae_decoded_input="vae.decode(latent / scaling_factor + shift_factor)",
                inputs_note="inputs.* are the transformer inputs for every variant (timestep in [0, 1000])")
    p = out / "reference.json"
    sd.write_json(p, sd.sanitize(info))
    files.append(p)
    return files, info


def run_pipe(pipe, steps, guidance, latents, **kw):
    lat_steps, ts = [], []

    def on_step_end(p, i, t, d):
        lat_steps.append(d["latents"].detach().clone())
        ts.append(float(t))
        return {}

    with torch.no_grad():
        out = pipe(num_inference_steps=steps, guidance_scale=guidance, latents=latents.clone(),
                   output_type="latent", return_dict=True, callback_on_step_end=on_step_end,
                   callback_on_step_end_tensor_inputs=["latents"], height=HEIGHT, width=WIDTH, **kw)
    s = pipe.scheduler
    info = {"scheduler": type(s).__name__, "config": sd.resolved_config(s.config), "num_inference_steps": steps,
            "guidance_scale": guidance, "timesteps": sd.exact_list(s.timesteps), "sigmas": sd.exact_list(s.sigmas),
            "timesteps_run": ts, "height": HEIGHT, "width": WIDTH}
    return out.images.detach().clone(), torch.stack(lat_steps), info


def sd3_pipeline(out: Path, models: dict, vae, t5, tok_path: Path, refs: dict):
    clip_l = build_clip(CLIPTextModelWithProjection, CLIP_L_CONFIG, SEED["clip_l"])
    clip_g = build_clip(CLIPTextModelWithProjection, CLIP_G_CONFIG, SEED["clip_g"])
    tok_l, tok_g = clip_tokenizers()
    tok_t5 = t5_tokenizer(tok_path)
    sched = FlowMatchEulerDiscreteScheduler.from_config({k: v for k, v in SD3_SCHEDULER_CONFIG.items() if k != "_class_name"})
    pipe = StableDiffusion3Pipeline(transformer=models["sd3_medium"], scheduler=sched, vae=vae, text_encoder=clip_l,
                                    tokenizer=tok_l, text_encoder_2=clip_g, tokenizer_2=tok_g, text_encoder_3=t5,
                                    tokenizer_3=tok_t5)
    pipe.set_progress_bar_config(disable=True)
    folder = out / "pipeline"
    files = save_pipeline(pipe, folder, tok_path)
    loaded = StableDiffusion3Pipeline.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    for comp in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        same_state(sd.state_of(getattr(pipe, comp)), sd.state_of(getattr(loaded, comp)), f"sd3 pipeline {comp}")
    check_pipeline_tokenizers(loaded, pipe)

    with torch.no_grad():
        pe, npe, pooled, npooled = pipe.encode_prompt(PROMPT, PROMPT, PROMPT, negative_prompt=NEGATIVE_PROMPT,
                                                      do_classifier_free_guidance=True, max_sequence_length=256)
    refs["pipe.prompt_embeds"] = pe
    refs["pipe.negative_prompt_embeds"] = npe
    refs["pipe.pooled_prompt_embeds"] = pooled
    refs["pipe.negative_pooled_prompt_embeds"] = npooled
    ids = {"clip_l": tok_l(PROMPT, padding="max_length", max_length=77, truncation=True).input_ids,
           "clip_g": tok_g(PROMPT, padding="max_length", max_length=77, truncation=True).input_ids,
           "t5": tok_t5(PROMPT, padding="max_length", max_length=256, truncation=True).input_ids}
    for k, v in ids.items():
        refs[f"pipe.ids.{k}"] = torch.tensor([v])
    lat = randn((1, 16, LAT_H, LAT_W), SEED["sd3_pipe_latents"])
    refs["pipe.latents_in"] = lat
    runs = {}
    for name, m in models.items():
        pipe.transformer = m
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(sched.config))
        final, steps, info = run_pipe(pipe, SD3_STEPS, SD3_GUIDANCE, lat, prompt=PROMPT,
                                      negative_prompt=NEGATIVE_PROMPT, max_sequence_length=256)
        assert torch.equal(final, steps[-1])
        refs[f"pipe.{name}.steps"] = steps
        refs[f"pipe.{name}.latents_out"] = final
        info.update(transformer=f"{name}/transformer", prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT,
                    max_sequence_length=256)
        runs[name] = info
    return {"folder": "pipeline", "transformer_in_folder": "sd3_medium", "runs": runs}, files


def save_pipeline(pipe, folder: Path, tok_path: Path) -> list[Path]:
    """pipe.save_pretrained with the weights in float16 (exact: every weight is
    float16-representable); returns the written files."""
    if folder.exists():
        shutil.rmtree(folder)
    dtypes = {}
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            dtypes[name] = next(comp.parameters()).dtype
            comp.to(torch.float16)
    try:
        pipe.save_pretrained(str(folder), safe_serialization=True)
    finally:
        for name, comp in pipe.components.items():
            if isinstance(comp, torch.nn.Module):
                comp.to(dtypes[name])
    # Tokenizer folders as users' (transformers-4-era) folders have them: the CLIP ones as
    # vocab.json / merges.txt / special_tokens_map.json / tokenizer_config.json (the SDXL
    # fixtures' files), the T5 one with the exact tokenizer.json bytes, and model_index.json
    # naming T5TokenizerFast (transformers 5 writes T5Tokenizer, the same class there).
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    for name, entry in list(index.items()):
        if not name.startswith("tokenizer") or not isinstance(entry, list) or entry[1] is None:
            continue
        lib, cls = entry
        sub = folder / name
        if cls == "CLIPTokenizer":
            src = SDXL_TOKENIZERS / ("tokenizer" if pipe.components[name].pad_token == "<|endoftext|>" else "tokenizer_2")
            shutil.rmtree(sub)
            shutil.copytree(src, sub)
        elif cls in ("T5Tokenizer", "T5TokenizerFast"):
            shutil.copyfile(tok_path, sub / "tokenizer.json")
            index[name] = [lib, "T5TokenizerFast"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return sorted(p for p in folder.rglob("*") if p.is_file())


def check_pipeline_tokenizers(loaded, pipe) -> None:
    texts = [t for _, t in T5_PROMPTS]
    for name, comp in pipe.components.items():
        if name.startswith("tokenizer") and comp is not None:
            got = getattr(loaded, name)
            for t in texts:
                assert got(t).input_ids == comp(t).input_ids, (name, t)


# --------------------------------------------------------------------------
# Flux
# --------------------------------------------------------------------------
def flux_ids(h2: int, w2: int, txt_len: int):
    img = torch.zeros(h2, w2, 3)
    img[..., 1] = torch.arange(h2)[:, None]
    img[..., 2] = torch.arange(w2)[None, :]
    return img.reshape(h2 * w2, 3), torch.zeros(txt_len, 3)


def flux_inputs():
    g = gen(SEED["flux_inputs"])
    h2, w2 = LAT_H // 2, LAT_W // 2
    img_ids, txt_ids = flux_ids(h2, w2, 10)
    return {
        "hidden_states": torch.randn((2, h2 * w2, 64), generator=g),
        "encoder_hidden_states": torch.randn((2, 10, FLUX_BASE["joint_attention_dim"]), generator=g),
        "pooled_projections": torch.randn((2, FLUX_BASE["pooled_projection_dim"]), generator=g),
        "timestep": torch.tensor([1.0, 0.25]),     # the transformer multiplies by 1000
        "img_ids": img_ids,
        "txt_ids": txt_ids,
        "guidance": torch.tensor([3.5, 1.0]),      # x 1000 inside as well (dev only)
    }


def fp8_scaled(orig: dict):
    """ComfyUI "scaled fp8": every 2-D weight as float8_e4m3fn with a float32 scalar
    `<module>.scale_weight` (max|w| / 448); everything else float16; the marker
    `scaled_fp8` (an empty float8_e4m3fn tensor). Returns (file state, dequantized state)."""
    f, deq = {}, {}
    for k, v in orig.items():
        if k.endswith(".weight") and v.dim() == 2:
            scale = (v.abs().max() / FP8_MAX).to(torch.float32)
            q = (v / scale).to(torch.float8_e4m3fn)
            f[k] = q
            f[k[:-len("weight")] + "scale_weight"] = scale.reshape(())
            deq[k] = q.to(torch.float32) * scale
        else:
            f[k] = v.half()
            deq[k] = v.float()
    f["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return f, deq


def gen_flux(root: Path, t5, tok_path: Path) -> list[Path]:
    out = root / "flux"
    out.mkdir(parents=True, exist_ok=True)
    files, refs, info = [], {}, {"variants": {}}
    inp = flux_inputs()
    for k, v in inp.items():
        refs[f"inputs.{k}"] = v
    models = {}
    for name in FLUX_VARIANTS:
        m = build_flux(name)
        models[name] = m
        folder = out / name / "transformer"
        files += sd.save_diffusers_model(m, folder)
        reloaded = FluxTransformer2DModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        same_state(m.state_dict(), reloaded.state_dict(), f"flux {name} from_pretrained")
        orig = flux_to_original(m.state_dict(), m.config)
        p = save_st(orig, out / f"{name}_original.safetensors")
        files.append(p)
        inner = m.config.num_attention_heads * m.config.attention_head_dim
        check_converter(diffusers_flux_converter(inner), load_file(str(p)), m.state_dict(),
                        f"flux {name} original -> diffusers converter")
        kw = {k: v for k, v in inp.items() if k != "guidance" or m.config.guidance_embeds}
        with torch.no_grad():
            refs[f"{name}.out"] = m(**kw).sample
        info["variants"][name] = {"config": sd.sanitize(dict(m.config)), "num_tensors_diffusers": len(m.state_dict()),
                                  "num_tensors_original": len(orig)}
        if name == "dev":
            fstate, deq = fp8_scaled({k: v.float() for k, v in load_file(str(p)).items()})
            p8 = out / "dev_original_fp8_scaled.safetensors"
            save_st(fstate, p8, f16=False)
            files.append(p8)
            conv = diffusers_flux_converter(inner)({k: v.clone() for k, v in deq.items()})
            q = FluxTransformer2DModel(**shrunk(FluxTransformer2DModel, FLUX_VARIANTS[name])).eval()
            q.load_state_dict(conv, strict=True)
            with torch.no_grad():
                refs["dev.out_fp8_dequantized"] = q(**kw).sample
            info["fp8"] = {
                "file": p8.name,
                "quantized": sorted(k for k, v in fstate.items() if v.dtype == torch.float8_e4m3fn and v.numel()),
                "max_abs_diff_vs_f16_output": max_diff(refs["dev.out_fp8_dequantized"], refs["dev.out"]),
            }

    vae = build_vae(FLUX_VAE_CONFIG, SEED["flux_vae"])
    files += sd.save_diffusers_model(vae, out / "vae")
    lat = randn((1, 16, LAT_H, LAT_W), SEED["vae_latent"])
    with torch.no_grad():
        refs["vae.latent"] = lat
        refs["vae.decoded"] = vae.decode(lat / vae.config.scaling_factor + vae.config.shift_factor).sample
        refs["vae.encoded_mean"] = vae.encode(refs["vae.decoded"].clamp(-1, 1)).latent_dist.mean

    pipe_info, pipe_files = flux_pipelines(out, models, vae, t5, tok_path, refs)
    files += pipe_files
    info["pipelines"] = pipe_info
    files.append(save_refs(refs, out / "reference.safetensors"))
    info.update(format_version=FORMAT_VERSION, generator=generator_info(), seeds=SEED,
                vae_config=sd.sanitize(dict(vae.config)),
                vae_decoded_input="vae.decode(latent / scaling_factor + shift_factor)",
                inputs_note=("inputs.* are the transformer inputs for both variants; timestep and guidance are "
                             "as the pipeline passes them (sigma-like, the model multiplies by 1000); "
                             "schnell ignores inputs.guidance"))
    p = out / "reference.json"
    sd.write_json(p, sd.sanitize(info))
    files.append(p)
    return files


def pack(lat: torch.Tensor) -> torch.Tensor:
    b, c, h, w = lat.shape
    return lat.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, n, c4 = p.shape
    return p.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def flux_pipelines(out: Path, models: dict, vae, t5, tok_path: Path, refs: dict):
    clip_l = build_clip(CLIPTextModel, CLIP_L_CONFIG, SEED["flux_clip_l"])
    tok_l, _ = clip_tokenizers()
    tok_t5 = t5_tokenizer(tok_path)
    sched = FlowMatchEulerDiscreteScheduler.from_config(
        {k: v for k, v in FLUX_DEV_SCHEDULER_CONFIG.items() if k != "_class_name"})
    pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=clip_l, tokenizer=tok_l, text_encoder_2=t5,
                        tokenizer_2=tok_t5, transformer=models["dev"])
    pipe.set_progress_bar_config(disable=True)
    folder = out / "pipeline"
    files = save_pipeline(pipe, folder, tok_path)
    loaded = FluxPipeline.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    for comp in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        same_state(sd.state_of(getattr(pipe, comp)), sd.state_of(getattr(loaded, comp)), f"flux pipeline {comp}")
    check_pipeline_tokenizers(loaded, pipe)

    with torch.no_grad():
        pe, pooled, text_ids = pipe.encode_prompt(PROMPT, PROMPT, max_sequence_length=512)
    refs["pipe.prompt_embeds"] = pe
    refs["pipe.pooled_prompt_embeds"] = pooled
    refs["pipe.text_ids"] = text_ids
    refs["pipe.ids.clip_l"] = torch.tensor([tok_l(PROMPT, padding="max_length", max_length=77,
                                                  truncation=True).input_ids])
    refs["pipe.ids.t5"] = torch.tensor([tok_t5(PROMPT, padding="max_length", max_length=512,
                                               truncation=True).input_ids])
    lat = randn((1, 16, LAT_H, LAT_W), SEED["flux_pipe_latents"])
    packed = pack(lat)
    assert torch.equal(pipe._pack_latents(lat, 1, 16, LAT_H, LAT_W), packed)
    refs["pipe.latents_in"] = lat
    refs["pipe.latents_in_packed"] = packed
    img_ids = pipe._prepare_latent_image_ids(1, LAT_H // 2, LAT_W // 2, "cpu", torch.float32)
    refs["pipe.img_ids"] = img_ids
    runs = {}
    for name, sc, steps, guidance in (("dev", FLUX_DEV_SCHEDULER_CONFIG, FLUX_STEPS, FLUX_GUIDANCE),
                                      ("schnell", FLUX_SCHNELL_SCHEDULER_CONFIG, SCHNELL_STEPS, 0.0)):
        pipe.transformer = models[name]
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            {k: v for k, v in sc.items() if k != "_class_name"})
        final, st, info = run_pipe(pipe, steps, guidance, packed, prompt=PROMPT, max_sequence_length=512)
        assert torch.equal(final, st[-1])
        refs[f"pipe.{name}.steps_packed"] = st
        refs[f"pipe.{name}.latents_out_packed"] = final
        refs[f"pipe.{name}.latents_out"] = unpack(final, LAT_H, LAT_W)
        assert torch.equal(pipe._unpack_latents(final, HEIGHT, WIDTH, pipe.vae_scale_factor),
                           refs[f"pipe.{name}.latents_out"])
        info.update(transformer=f"{name}/transformer", prompt=PROMPT, max_sequence_length=512,
                    guidance_note=("dev: guidance embedding gets guidance_scale (no CFG); "
                                   "schnell: no guidance embedding, guidance_scale unused"),
                    mu_note="the pipeline passes mu = calculate_shift(image_seq_len=24, ...) to set_timesteps")
        runs[name] = info
    return {"folder": "pipeline (dev transformer, dev scheduler)", "runs": runs}, files


# --------------------------------------------------------------------------
# READMEs
# --------------------------------------------------------------------------
REGEN = f"""## Regenerating

From the repository root (Python 3.11, PyPI only; `scripts/requirements-sd-fixtures.txt`):

```sh
/tmp/weft-sd-fixtures-venv/bin/python {SCRIPT}           # (re)writes t5/, sd3/, flux/
/tmp/weft-sd-fixtures-venv/bin/python {SCRIPT} --check   # compares a fresh run byte-for-byte
```

Offline, one CPU thread. Every parameter is perturbed by `0.05·N(0,1)` and rounded to
float16; weight files are **float16** (exact: a loader that upcasts sees the weights the
references were computed with), references **float32**. Float32 references may differ
in the last bits on another CPU; compare with a tolerance (1e-4 relative to the
tensor's scale is ample; the generator itself reproduces them bit-exactly). **Do not
edit these files by hand**: this README is written by the script too.
"""


def files_table(root: Path, folder: Path, desc: dict) -> str:
    rows, seen = [], set()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        rel = p.relative_to(folder).as_posix()
        if rel == "README.md":
            continue
        d = ""
        for k, v in desc.items():
            if rel == k:
                d = v
            elif k.endswith("/") and rel.startswith(k) and k not in seen:
                seen.add(k)
                rows.append(f"| `{k}` | | {v} |")
        rows.append(f"| `{rel}` | {p.stat().st_size} | {d} |")
    return "| file | bytes | what |\n| --- | --- | --- |\n" + "\n".join(rows)


def write_t5_readme(out: Path, rows, tok_path: Path) -> Path:
    desc = {
        "model.safetensors": "tiny `T5EncoderModel` weights, float16, as transformers 5.23 `save_pretrained` writes them (the tied embedding once, as `shared.weight`; transformers 4.57.1 writes the same key set)",
        "config.json": "its transformers config",
        "tokens.json": "ids of the real T5 tokenizer for the prompts below",
        "expected.safetensors": "encoder outputs (float32), see below",
    }
    text = f"""# Tiny T5 v1.1 encoder fixtures (generated with transformers)

A tiny random-weight `T5EncoderModel` with exactly T5 v1.1's (T5-XXL's) layout and the
real 32128-row vocabulary, its encoder outputs, and the ids the real T5 tokenizer gives
for a set of prompts, so that `cargo test` can check the T5 text encoder and tokenizer
of SD3 / Flux without Python.

Config: `{json.dumps(T5_CONFIG)}` — gated-gelu feed-forward (`wi_0` gelu-tanh × `wi_1`,
`wo`), RMS layer norms (eps 1e-6, no bias, no mean), relative attention bias (32 buckets,
max distance 128, bidirectional) only in layer 0 (`relative_attention_bias` of
`encoder.block.0.layer.0.SelfAttention`, shared by every layer), no attention scaling
(T5 folds 1/sqrt(d_kv) into the init), attention inner width heads·d_kv = 64 ≠ d_model 48.
The vocabulary keeps the real size so that every id the tokenizer produces (≤ 32099) has a
row; d_model 48 keeps the file at ~3 MB.

{files_table(out.parent, out, desc)}

## `expected.safetensors`

| tensor | meaning |
| --- | --- |
| `padded.input_ids` | [3, 16] int64: the tokenizer's ids of `{PROMPT}`, `{NEGATIVE_PROMPT}`, `` (each with `</s>`), right-padded with 0 |
| `padded.attention_mask` | [3, 16] int64: 1 on the real tokens |
| `padded.hidden_masked` | `last_hidden_state` with that mask (padding masked out as keys) |
| `padded.hidden_unmasked` | `last_hidden_state` without a mask (what diffusers' SD3 / Flux pipelines and ComfyUI do: padding tokens attend and are attended to) |
| `long.input_ids` / `long.hidden` | [1, 160] random ids ending in `</s>` (distances beyond 128 hit the last bucket) and the unmasked output |
| `embed.padded` | `shared(padded.input_ids)` |

## `tokens.json`

The tokenizer is `assets/t5/tokenizer.json` (sha256 `{sha256(tok_path)}`): ComfyUI's
`comfy/text_encoders/t5_tokenizer/tokenizer.json` (T5 v1.1 SentencePiece unigram model,
Apache-2.0), loaded with transformers' `T5TokenizerFast(tokenizer_file=...)` and checked
equal to `tokenizers.Tokenizer.from_file(...).encode(text).ids` for every prompt:
normalizer Precompiled (NFKC-like charsmap) → Strip(right) → Replace(" {{2,}}" → "▁"),
pre-tokenizer Metaspace("▁", prepend_scheme first, split), Unigram, post-processor
appends `</s>` (1). No padding, no truncation. Prompts: {", ".join(f"`{r['name']}` ({r['num_tokens']})" for r in rows)}.

{REGEN}"""
    return write_text(out / "README.md", text)


def write_sd3_readme(out: Path, info: dict) -> Path:
    desc = {
        "reference.safetensors": "float32 references (tensor list below)",
        "reference.json": "configs, seeds, scheduler timesteps / sigmas of every pipeline run, generator versions",
        "vae/": "tiny SD3 VAE (`AutoencoderKL`, 16 latent channels, no quant convs, scaling 1.5305, shift 0.0609)",
        "pipeline/": "the whole `StableDiffusion3Pipeline` (`save_pretrained`, float16 weights): SD3-medium transformer, tiny CLIP-L / CLIP-G (1000-token SDXL-fixture tokenizers), tiny T5 with the real T5 tokenizer, the SD3 VAE, FlowMatchEulerDiscreteScheduler shift 3.0",
    }
    for name in SD3_VARIANTS:
        desc[f"{name}/"] = f"diffusers `SD3Transformer2DModel` folder of the `{name}` variant (float16)"
        desc[f"{name}_original.safetensors"] = f"the same weights in Stability's original single-file layout (float16)"
    ex = sd3_to_original(build_sd3("sd35_medium").state_dict(), build_sd3("sd35_medium").config)
    keys = [k for k in ex if "joint_blocks.0." in k or "joint_blocks" not in k or "joint_blocks.2.context" in k]
    variants = "\n".join(f"| `{n}` | `{json.dumps(sd.sanitize(SD3_VARIANTS[n]))}` |" for n in SD3_VARIANTS)
    runs = info["pipelines"]["runs"]
    text = f"""# Tiny SD3 / SD3.5 fixtures (generated with diffusers + transformers)

Three tiny random-weight `SD3Transformer2DModel`s built from diffusers' default config
with only the sizes shrunk, each as a diffusers folder and in Stability's original
single-file layout, a tiny SD3 VAE, and a full `StableDiffusion3Pipeline` run, with
float32 references computed by diffusers / transformers.

| variant | config overrides (everything else: diffusers' defaults) |
| --- | --- |
{variants}

(`sd3_medium`: SD3-medium, no qk-norm; `sd35_large`: SD3.5-large style, RMS qk-norm;
`sd35_medium`: SD3.5-medium / MMDiT-X, qk-norm and a second image self-attention
`attn2` in blocks 0 and 1.) Two 16-wide heads (inner 32); the last block's context stream
is pre-only (no attention output / MLP for the text tokens, a 2-chunk adaLN). The pos-embed
table is 8×8 patches; the 8×12 latents (4×6 patches) use its centre crop (rows 2–5,
columns 1–6).

{files_table(out.parent, out, desc)}

## Original layout

Prefix `model.diffusion_model.` (as in `sd3_medium.safetensors` /
`sd3.5_large.safetensors`). Made by `sd3_to_original` in the script and checked against
diffusers' `convert_sd3_transformer_checkpoint_to_diffusers`: converting the file gives
every diffusers tensor bit for bit and leaves no key unused; diffusers'
`SD3Transformer2DModel.from_single_file(file, config=<variant folder>)` gives the same
model. q/k/v are concatenated (`qkv`, rows q then k then v); adaLN projections keep their
chunk order except `final_layer.adaLN_modulation.1` and the last block's
`context_block.adaLN_modulation.1`, which are (shift, scale) in the original and
(scale, shift) in diffusers. The `sd35_medium` keys:

```
{chr(10).join(keys)}
```

## References (`reference.safetensors`)

{tensor_table(out / "reference.safetensors")}

* `inputs.*`: transformer inputs (batch 2; timestep 999 and 250.5, in [0, 1000] as the
  pipeline passes them); `<variant>.out` = `transformer(**inputs).sample`;
  `<variant>.out_skip_layer_1` the same with `skip_layers=[1]` (block 1 skipped).
* `vae.decoded` = `vae.decode(vae.latent / 1.5305 + 0.0609).sample`; `vae.encoded_mean` =
  `vae.encode(vae.decoded.clamp(-1, 1)).latent_dist.mean` (no shift / scale applied).
* `pipe.*`: `StableDiffusion3Pipeline` from `pipe.latents_in` (1×16×8×12, i.e. 64×96 px),
  prompt `{PROMPT}`, negative `{NEGATIVE_PROMPT}`, {SD3_STEPS} steps, guidance {SD3_GUIDANCE}
  (CFG), `max_sequence_length=256`, `output_type="latent"`, FlowMatchEulerDiscreteScheduler
  (`num_train_timesteps` 1000, `shift` 3.0): timesteps {runs['sd3_medium']['timesteps']},
  sigmas {runs['sd3_medium']['sigmas']}. `pipe.prompt_embeds` [1, 77+256, 48] = CLIP-L and
  CLIP-G penultimate hidden states concatenated (16 + 24) and zero-padded to 48, then the
  T5 states; `pipe.pooled_prompt_embeds` [1, 40] = the two text projections;
  `pipe.ids.*` the padded ids each encoder got. `pipe.<variant>.steps` are the latents after
  each step and `pipe.<variant>.latents_out` the final ones (before the VAE's scale/shift),
  for each variant's transformer with the same encoders (the folder holds `sd3_medium`).

{REGEN}"""
    return write_text(out / "README.md", text)


def write_flux_readme(out: Path) -> Path:
    info = json.loads((out / "reference.json").read_text(encoding="utf-8"))
    desc = {
        "reference.safetensors": "float32 references (tensor list below)",
        "reference.json": "configs, seeds, scheduler timesteps / sigmas of every pipeline run, the fp8 error",
        "vae/": "tiny Flux VAE (`AutoencoderKL`, 16 latent channels, no quant convs, scaling 0.3611, shift 0.1159)",
        "pipeline/": "the whole `FluxPipeline` (`save_pretrained`, float16 weights): dev transformer, tiny CLIP-L (1000-token SDXL-fixture tokenizer), tiny T5 with the real T5 tokenizer, the Flux VAE, FLUX.1-dev's scheduler config",
        "dev/": "diffusers `FluxTransformer2DModel` folder, dev style (`guidance_embeds` true), float16",
        "schnell/": "the same, schnell style (no guidance embedding), float16",
        "dev_original.safetensors": "dev weights in BFL's original layout (float16)",
        "schnell_original.safetensors": "schnell weights in BFL's original layout (float16)",
        "dev_original_fp8_scaled.safetensors": "dev weights as a ComfyUI \"scaled fp8\" file (see below)",
    }
    ex = load_file(str(out / "dev_original.safetensors"))
    keys = [k for k in ex if not (k.startswith(("double_blocks.1.", "single_blocks.1.")))]
    runs = info["pipelines"]["runs"]
    f8 = info["fp8"]
    text = f"""# Tiny Flux.1 fixtures (generated with diffusers + transformers)

Two tiny random-weight `FluxTransformer2DModel`s built from diffusers' default config with
only the sizes shrunk — dev style (`guidance_embeds=True`) and schnell style — as
diffusers folders and in BFL's original layout, a ComfyUI scaled-fp8 file of the dev one,
a tiny Flux VAE, and full `FluxPipeline` runs, with float32 references computed by
diffusers / transformers.

Config overrides (everything else diffusers' defaults): `{json.dumps(sd.sanitize(FLUX_BASE))}`,
`guidance_embeds` true (dev) / false (schnell). Two 16-wide heads (inner 32), RoPE axes
4 + 6 + 6 = 16 (theta 10000), 2 double and 2 single blocks, MLP ratio 4.

{files_table(out.parent, out, desc)}

## Original layout

No prefix (as in BFL's `flux1-dev.safetensors`; ComfyUI checkpoints add
`model.diffusion_model.`). Made by `flux_to_original` in the script and checked against
diffusers' `convert_flux_transformer_checkpoint_to_diffusers` (re-run from its own source
with its hard-coded `inner_dim = 3072` replaced by 32): converting the file gives every
diffusers tensor bit for bit and leaves no key unused. `img_attn.qkv` / `txt_attn.qkv` are
q, k, v concatenated; `single_blocks.N.linear1` is q, k, v and the MLP input
(32 + 32 + 32 + 128 rows); `final_layer.adaLN_modulation.1` is (shift, scale) (diffusers'
`norm_out.linear` is (scale, shift)); every other modulation keeps its order. The dev keys
(blocks 1 left out):

```
{chr(10).join(keys)}
```

## Scaled fp8 (`dev_original_fp8_scaled.safetensors`)

ComfyUI's "scaled fp8" convention on the dev original layout: every 2-D weight
(`*.weight` with 2 dims, {len(f8['quantized'])} tensors) is stored as `float8_e4m3fn`
`round_to_fp8(w / s)` with `s = max|w| / 448` stored as a float32 scalar (0-dim)
`<module>.scale_weight` (the key with `weight` replaced by `scale_weight`); biases and
norm scales stay float16; the marker `scaled_fp8` is an empty `float8_e4m3fn` tensor
(shape [0]). `dev.out_fp8_dequantized` is the dev transformer's output on the same
inputs with the weights dequantized as `w = fp8.float() * s` (it differs from `dev.out` by
at most {f8['max_abs_diff_vs_f16_output']:.3g}).

## References (`reference.safetensors`)

{tensor_table(out / "reference.safetensors")}

* `inputs.*`: transformer inputs (batch 2): packed latents `hidden_states` [2, 24, 64]
  (4×6 tokens of 2×2×16), `img_ids` [24, 3] = (0, row, column), `txt_ids` [10, 3] zeros,
  `timestep` 1.0 / 0.25 and `guidance` 3.5 / 1.0 as the pipeline passes them (the model
  multiplies both by 1000 before the sinusoidal embedding). `<variant>.out` =
  `transformer(**inputs).sample` (schnell without `guidance`).
* `vae.decoded` = `vae.decode(vae.latent / 0.3611 + 0.1159).sample`; `vae.encoded_mean` as in sd3/.
* `pipe.*`: `FluxPipeline` from `pipe.latents_in` (1×16×8×12 → packed `pipe.latents_in_packed`
  [1, 24, 64]), prompt `{PROMPT}` (both encoders), `max_sequence_length=512`,
  `output_type="latent"`. dev: {FLUX_STEPS} steps, guidance {FLUX_GUIDANCE} (embedded, no CFG),
  scheduler with dynamic shifting (mu from the 24-token sequence): timesteps
  {runs['dev']['timesteps']}, sigmas {runs['dev']['sigmas']}; schnell: {SCHNELL_STEPS} steps,
  shift 1.0, no dynamic shifting: timesteps {runs['schnell']['timesteps']}, sigmas
  {runs['schnell']['sigmas']}. `pipe.prompt_embeds` [1, 512, 48] (T5), `pipe.pooled_prompt_embeds`
  [1, 16] (CLIP-L pooler output), `pipe.text_ids`, `pipe.img_ids`, `pipe.ids.*` the padded
  ids; `pipe.<variant>.steps_packed` after each step, `pipe.<variant>.latents_out_packed` /
  `pipe.<variant>.latents_out` (unpacked [1, 16, 8, 12]) the final latents.

{REGEN}"""
    return write_text(out / "README.md", text)


# --------------------------------------------------------------------------
def generate(root: Path, tok_path: Path) -> list[Path]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("t5", "sd3", "flux"):
        if (root / sub).exists():
            shutil.rmtree(root / sub)
    t5 = build_t5()
    files = gen_t5(root, tok_path, t5)
    sd3_files, sd3_info = gen_sd3(root, t5, tok_path)
    files += sd3_files
    files.append(write_sd3_readme(root / "sd3", sd3_info))
    files += gen_flux(root, t5, tok_path)
    files.append(write_flux_readme(root / "flux"))
    return sorted(set(files))


def main() -> int:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=FIXTURES, help="fixtures root (default: %(default)s)")
    ap.add_argument("--t5-tokenizer", type=Path, default=DEFAULT_T5_TOKENIZER,
                    help="T5 tokenizer.json (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare byte-for-byte with --out")
    args = ap.parse_args()
    if not args.t5_tokenizer.exists():
        raise SystemExit(f"{args.t5_tokenizer} not found: put ComfyUI's comfy/text_encoders/t5_tokenizer/"
                         "tokenizer.json there (or pass --t5-tokenizer PATH)")
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            files = generate(Path(tmp), args.t5_tokenizer)
            bad = [str(f.relative_to(tmp)) for f in files
                   if not (args.out / f.relative_to(tmp)).exists()
                   or (args.out / f.relative_to(tmp)).read_bytes() != f.read_bytes()]
            extra = [str(p.relative_to(args.out)) for sub in ("t5", "sd3", "flux") if (args.out / sub).exists()
                     for p in (args.out / sub).rglob("*") if p.is_file()
                     and not (Path(tmp) / p.relative_to(args.out)).exists()]
            if bad or extra:
                print("fixtures differ from a fresh run: " + ", ".join(bad + [f"{e} (not written)" for e in extra]))
                return 1
            print(f"{len(files)} fixture files match a fresh run")
            return 0
    files = generate(args.out, args.t5_tokenizer)
    total = 0
    sums = {}
    for f in files:
        size = f.stat().st_size
        total += size
        top = f.relative_to(args.out).parts[0]
        sums[top] = sums.get(top, 0) + size
        print(f"{size:10d}  {f.relative_to(args.out)}")
    for k, v in sums.items():
        print(f"{v:10d}  {k}/ total")
    print(f"{total:10d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
