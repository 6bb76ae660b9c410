#!/usr/bin/env python3
"""Generate tiny Stable Diffusion 1.5 *inpainting* parity fixtures with diffusers + transformers.

Writes models/tests/fixtures/inpaint/: a tiny random-weight SD 1.5 inpainting model
(the UNet of scripts/make_sd_fixtures.py with 9 input channels: 4 noisy latent + 1
mask + 4 masked-image latent), as a diffusers folder for StableDiffusionInpaintPipeline
(with its tokenizer) and as an original LDM single file (A1111 / ComfyUI layout), and
float32 references: a UNet forward pass and full 10-step Euler inpainting pipelines,
with every intermediate a Rust implementation needs (the latent-resolution mask, the
masked image, its VAE posterior mean / log-variance, the masked-image latents diffusers
used, per-step latents, the decoded image). See the README.md in that folder.

Deterministic and offline, with the conventions of scripts/make_sd_fixtures.py, whose
helpers this script imports: models are built from their config classes with fixed
torch seeds (nothing is downloaded; HF_HUB_OFFLINE=1), every parameter is perturbed by
0.05 * N(0, 1) and rounded to float16 and back, all references are computed in float32
on the CPU with one thread, and the weights are saved as float16, so a loader that
upcasts sees exactly the weights the references were computed with.

The VAE is make_sd_fixtures.build_vae() (byte-identical to the one in
models/tests/fixtures/sd/). The text encoder is make_sd_fixtures.build_clip_sd1() with
its token embedding cut to a 1000-token sub-vocabulary (see VOCAB below): CLIP's 49408 x
16 embedding alone is 1.6 MB in float16 and would appear twice (folder and single
file), next to a 1.4 MB full tokenizer, which does not fit the 3 MB budget of this
folder. The cut tokenizer is the one of scripts/make_sdxl_fixtures.py and
scripts/make_sd_sweep_fixtures.py: OpenAI's BPE merges (bpe_simple_vocab_16e6.txt,
taken from the instant-clip-tokenizer crate in the cargo registry, or --bpe PATH) cut
to the byte symbols, the first 486 merges, <|startoftext|> = 998, <|endoftext|> = 999.
Ids 0..997 name the same tokens as in the full vocabulary, so the cut encoder is the
full one restricted to those tokens (rows 0..997, 49406, 49407 of its embedding).

Usage (from the repository root, in the venv of scripts/requirements-sd-fixtures.txt):

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_inpaint_fixtures.py
    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_inpaint_fixtures.py --check   # compare only

This script only *calls* diffusers and transformers; it contains no code of theirs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no scripts/__pycache__ from importing the sibling script
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Importing make_sd_fixtures first sets HF_HUB_OFFLINE and friends before diffusers loads.
import make_sd_fixtures as sd  # noqa: E402

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

FORMAT_VERSION = 1
DEFAULT_OUT = sd.REPO_ROOT / "models" / "tests" / "fixtures" / "inpaint"
SCRIPT = "scripts/make_inpaint_fixtures.py"

PROMPT = sd.PROMPT
NEGATIVE_PROMPT = ""
GUIDANCE_SCALE = 7.5
NUM_STEPS = 10
STRENGTH = 1.0
HEIGHT = WIDTH = 64
PERTURB_STD = sd.PERTURB_STD
# The repainted box (mask 1) in pixels, half-open [top, bottom) x [left, right); every
# edge is a multiple of 8, so diffusers' nearest-neighbour and ComfyUI's bilinear + round
# downsampling to the latent grid agree exactly (latent rows 2..6, cols 3..7).
MASK_BOX = {"top": 16, "bottom": 48, "left": 24, "right": 56}
# The init image is quantised to multiples of 1/IMAGE_QUANTUM so that ComfyUI's greying
# ((p - 0.5) * keep + 0.5, then 2p - 1) and diffusers' ((2p - 1) * keep) agree bit for bit.
IMAGE_QUANTUM = 256

SEED = {
    "clip_sd1": sd.SEED["clip_sd1"],    # make_sd_fixtures.build_clip_sd1()
    "vae": sd.SEED["vae"],              # make_sd_fixtures.build_vae()
    "vae_image": sd.SEED["vae_image"],  # make_sd_fixtures.make_vae_image(): the init image's noise
    "unet_inpaint": 30,
    "unet_sample": 300,
    "unet_context": 301,
    "pipeline_latents": 302,
    "masked_image_generator": 303,
}

UNET_INPAINT_CONFIG = dict(sd.UNET_SD1_CONFIG, in_channels=9, out_channels=4)

# ---- text encoder / tokenizer: build_clip_sd1() cut to a VOCAB-token sub-vocabulary.
FULL_VOCAB = sd.CLIP_SD1_CONFIG["vocab_size"]  # 49408
FULL_BOS, FULL_EOS = sd.CLIP_SD1_CONFIG["bos_token_id"], sd.CLIP_SD1_CONFIG["eos_token_id"]
VOCAB = 1000
BOS, EOS = VOCAB - 2, VOCAB - 1
TOKENIZER_MERGES = VOCAB - 512 - 2
CLIP_CONFIG = dict(sd.CLIP_SD1_CONFIG, vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS)
# Rows of build_clip_sd1()'s token embedding that become the cut embedding.
EMBEDDING_ROWS = list(range(VOCAB - 2)) + [FULL_BOS, FULL_EOS]
# tok(PROMPT).input_ids with the cut vocabulary (a construction check; same as the SDXL fixtures')
PROMPT_IDS = [998, 320, 816, 580, 782, 79, 327, 539, 550, 64, 807, 521, 627, 339, 553, 796, 320, 71, 523, 611,
              999]
CLIP_SPECIAL = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}

MODEL_INDEX = {
    "_class_name": "StableDiffusionInpaintPipeline",
    "_diffusers_version": diffusers.__version__,
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", sd.SD15_SCHEDULER_CONFIG["_class_name"]],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
FOLDER = "tiny_sd15_inpaint"
SINGLE_FILE = "tiny_sd15_inpaint.safetensors"


def write_text_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path


def generator_info() -> dict:
    info = sd.generator_info()
    info["script"] = SCRIPT
    return info


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------
def write_tokenizer(folder: Path, bpe_path: Path) -> list[Path]:
    """vocab.json / merges.txt (CLIP's BPE cut to VOCAB tokens: the byte symbols, the first
    TOKENIZER_MERGES merges, <|startoftext|>, <|endoftext|>), special_tokens_map.json and
    tokenizer_config.json as SD 1.5's tokenizer folder has them (pads with <|endoftext|>)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = bpe_path.read_text(encoding="utf-8").split("\n")
    merges = lines[1:1 + TOKENIZER_MERGES]
    assert len(merges) == TOKENIZER_MERGES and all(len(m.split(" ")) == 2 for m in merges)
    base = sd.byte_symbols()
    vocab = base + [s + "</w>" for s in base] + ["".join(m.split(" ")) for m in merges]
    vocab += [CLIP_SPECIAL["bos_token"], CLIP_SPECIAL["eos_token"]]
    assert len(vocab) == VOCAB and len(set(vocab)) == VOCAB
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = {k: {"content": v, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
             for k, v in CLIP_SPECIAL.items()}
    special = {"bos_token": added["bos_token"], "eos_token": added["eos_token"], "pad_token": CLIP_SPECIAL["eos_token"],
               "unk_token": added["unk_token"]}
    config = {
        "add_prefix_space": False,
        "bos_token": CLIP_SPECIAL["bos_token"],
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": CLIP_SPECIAL["eos_token"],
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": CLIP_SPECIAL["eos_token"],
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": CLIP_SPECIAL["unk_token"],
    }
    return [folder / "vocab.json", folder / "merges.txt",
            write_text_json(folder / "special_tokens_map.json", special),
            write_text_json(folder / "tokenizer_config.json", config)]


def load_tokenizer(folder: Path) -> CLIPTokenizer:
    tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    got = (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, len(tok))
    assert got == (BOS, EOS, EOS, VOCAB), got
    ids = tok(PROMPT).input_ids
    if ids != PROMPT_IDS:
        raise RuntimeError(f"tokenizer construction is wrong: {ids} != {PROMPT_IDS}")
    return tok


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
def build_clip() -> CLIPTextModel:
    """make_sd_fixtures.build_clip_sd1() restricted to the VOCAB-token sub-vocabulary."""
    full = sd.build_clip_sd1()
    state = sd.state_of(full)
    key = "text_model.embeddings.token_embedding.weight"
    assert state[key].shape[0] == FULL_VOCAB
    state[key] = state[key][EMBEDDING_ROWS].clone()
    model = CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG))
    sd.load_into(model, state)
    return model.eval()


def save_folder(root: Path, bpe: Path, unet, vae, clip) -> list[Path]:
    files = [write_text_json(root / "model_index.json", MODEL_INDEX)]
    sc = {"_class_name": sd.SD15_SCHEDULER_CONFIG["_class_name"], "_diffusers_version": diffusers.__version__}
    sc.update({k: v for k, v in sd.SD15_SCHEDULER_CONFIG.items() if k != "_class_name"})
    files.append(write_text_json(root / "scheduler" / "scheduler_config.json", sc))
    files += sd.save_diffusers_model(unet, root / "unet")
    files += sd.save_diffusers_model(vae, root / "vae")
    files += sd.save_text_encoder(clip, root / "text_encoder", "CLIPTextModel")
    files += write_tokenizer(root / "tokenizer", bpe)
    return files


def single_file(unet, vae, clip) -> dict:
    ckpt = {}
    ckpt.update(sd.unet_to_ldm(unet.state_dict(), unet.config))
    ckpt.update(sd.vae_to_ldm(vae.state_dict(), vae.config))
    ckpt.update(sd.clip_to_ldm(sd.state_of(clip)))
    return ckpt


def verify_single_file(path: Path, unet, vae, clip) -> None:
    """Exact round trip through make_sd_fixtures' independently written inverse mapping,
    and a cross-check against diffusers' own LDM converters."""
    c = load_file(str(path))
    prefixes = (sd.LDM_UNET, sd.LDM_VAE, sd.LDM_CLIP)
    stray = [k for k in c if not k.startswith(prefixes)]
    assert not stray, stray
    assert all(v.dtype == torch.float16 for v in c.values())
    assert tuple(c[sd.LDM_UNET + "input_blocks.0.0.weight"].shape) == (UNET_INPAINT_CONFIG["block_out_channels"][0],
                                                                      9, 3, 3)
    cfg = dict(unet.config)
    sd.fresh_load(lambda: UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")}),
                  sd.unet_from_ldm(c, cfg), unet.state_dict(), "unet round trip")
    sd.fresh_load(lambda: AutoencoderKL(**sd.VAE_CONFIG), sd.vae_from_ldm(c, vae.config), vae.state_dict(),
                  "vae round trip")
    sd.fresh_load(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG)), sd.clip_from_ldm(c), sd.state_of(clip),
                  "clip round trip")
    f32 = {k: v.float() for k, v in c.items()}
    sd._assert_same_state(unet.state_dict(), sfu.convert_ldm_unet_checkpoint(f32, cfg), "unet vs diffusers converter")
    sd._assert_same_state(vae.state_dict(), sfu.convert_ldm_vae_checkpoint(f32, dict(vae.config)),
                          "vae vs diffusers converter")
    sd._assert_same_state(sd.state_of(clip), sfu.convert_ldm_clip_checkpoint(f32), "clip vs diffusers converter")
    n_unet = sum(k.startswith(sd.LDM_UNET) for k in c)
    n_vae = sum(k.startswith(sd.LDM_VAE) for k in c)
    n_clip = sum(k.startswith(sd.LDM_CLIP) for k in c)
    assert (n_unet, n_vae, n_clip) == (len(unet.state_dict()), len(vae.state_dict()), len(sd.state_of(clip)))


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------
def make_init_image() -> torch.Tensor:
    """make_sd_fixtures.make_vae_image() mapped to [0, 1] and quantised to multiples of
    1/IMAGE_QUANTUM: [1, 3, 64, 64] float32, NCHW."""
    img = sd.make_vae_image() * 0.5 + 0.5
    return (torch.round(img * IMAGE_QUANTUM) / IMAGE_QUANTUM).clamp(0.0, 1.0)


def make_mask() -> torch.Tensor:
    """[1, 1, 64, 64] float32: 1 (repaint) inside MASK_BOX, 0 (keep) elsewhere."""
    m = torch.zeros((1, 1, HEIGHT, WIDTH), dtype=torch.float32)
    m[:, :, MASK_BOX["top"]:MASK_BOX["bottom"], MASK_BOX["left"]:MASK_BOX["right"]] = 1.0
    return m


# --------------------------------------------------------------------------
# Pipeline runs
# --------------------------------------------------------------------------
def make_pipe(unet, vae, clip, tok) -> StableDiffusionInpaintPipeline:
    pipe = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=clip, tokenizer=tok, unet=unet,
        scheduler=sd.scheduler_from(EulerDiscreteScheduler, sd.SD15_SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_inpaint(pipe, latents, image, mask, masked_image_latents=None, generator=None):
    """One Euler inpainting run; returns (decoded image in [0,1], per-step latents [N,1,4,8,8],
    captured step-0 tensors, scheduler info)."""
    pipe.scheduler = sd.scheduler_from(EulerDiscreteScheduler, sd.SD15_SCHEDULER_CONFIG)
    steps = []
    first = {}

    def on_step_end(p, i, t, kw):
        steps.append(kw["latents"].detach().clone())
        if i == 0:
            for k in ("prompt_embeds", "mask", "masked_image_latents"):
                first[k] = kw[k].detach().clone()
        return kw

    out = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, image=image.clone(), mask_image=mask.clone(),
        masked_image_latents=None if masked_image_latents is None else masked_image_latents.clone(),
        height=HEIGHT, width=WIDTH, strength=STRENGTH, num_inference_steps=NUM_STEPS,
        guidance_scale=GUIDANCE_SCALE, latents=latents.clone(), generator=generator,
        output_type="pt", return_dict=True, callback_on_step_end=on_step_end,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "mask", "masked_image_latents"],
    )
    sched = pipe.scheduler
    info = {
        "pipeline": type(pipe).__name__,
        "scheduler": type(sched).__name__,
        "config": sd.resolved_config(sched.config),
        "num_inference_steps": NUM_STEPS,
        "strength": STRENGTH,
        "guidance_scale": GUIDANCE_SCALE,
        "output_type": "pt",
        "init_noise_sigma": (sd.exact_list(sched.init_noise_sigma.reshape(1))[0]
                             if isinstance(sched.init_noise_sigma, torch.Tensor) else float(sched.init_noise_sigma)),
        "timesteps": sd.exact_list(sched.timesteps),
        "sigmas": sd.exact_list(sched.sigmas),
    }
    # CFG doubles the conditioning tensors: [uncond, cond], identical halves.
    for k in ("mask", "masked_image_latents"):
        a, b = first[k].chunk(2)
        if not torch.equal(a, b):
            raise RuntimeError(f"{k}: the CFG halves differ")
        first[k] = a
    return out.images.detach().clone(), torch.stack(steps), first, info


# --------------------------------------------------------------------------
# Main generation
# --------------------------------------------------------------------------
def generate(out: Path, bpe: Path, verify_load: bool = True) -> list[Path]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    refs: dict[str, torch.Tensor] = {}

    # ---- models
    clip = build_clip()
    unet = sd.build_unet(UNET_INPAINT_CONFIG, SEED["unet_inpaint"])
    vae = sd.build_vae()
    assert unet.config.in_channels == 9 and unet.config.out_channels == 4
    sf = vae.config.scaling_factor

    # ---- diffusers folder (with the tokenizer) and LDM single file
    files += save_folder(out / FOLDER, bpe, unet, vae, clip)
    tok = load_tokenizer(out / FOLDER / "tokenizer")
    p = out / SINGLE_FILE
    save_file(sd.to_f16(single_file(unet, vae, clip)), str(p))
    files.append(p)
    verify_single_file(p, unet, vae, clip)

    # ---- tokens
    ids = tok([PROMPT, NEGATIVE_PROMPT], padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids.to(torch.int64)
    assert int(ids.max()) < VOCAB and ids[0, :len(PROMPT_IDS)].tolist() == PROMPT_IDS
    refs["tokens.ids"] = ids

    with torch.no_grad():
        # ---- UNet: 9 input channels (noisy latent, mask, masked-image latent)
        sample = sd.randn((2, 9, 8, 8), SEED["unet_sample"])
        timestep = torch.tensor([999.0, 321.0], dtype=torch.float32)
        context = sd.randn((2, 77, 16), SEED["unet_context"])
        refs["unet.sample"] = sample
        refs["unet.timestep"] = timestep
        refs["unet.context"] = context
        refs["unet.out"] = unet(sample, timestep, encoder_hidden_states=context).sample

        # ---- inpainting inputs and what the pipeline derives from them
        image = make_init_image()
        mask = make_mask()
        pixels = image * 2.0 - 1.0                       # diffusers' normalisation (and ComfyUI's)
        masked = pixels * (mask < 0.5)                   # diffusers: masked pixels 0 in [-1, 1]
        greyed = ((image - 0.5) * (1.0 - mask.round()) + 0.5) * 2.0 - 1.0  # ComfyUI: 0.5 grey in [0, 1]
        if not torch.equal(masked, greyed):
            raise RuntimeError("diffusers' and ComfyUI's masked images differ")
        dist = vae.encode(masked).latent_dist
        # diffusers' product leaves -0.0 where a masked pixel was negative; ComfyUI's greying
        # gives +0.0. Same values, same VAE output; the reference stores the +0.0 form.
        if not torch.equal(vae.encode(greyed).latent_dist.mean, dist.mean):
            raise RuntimeError("the VAE encodes diffusers' and ComfyUI's masked images differently")
        eps = sd.randn((1, 4, HEIGHT // 8, WIDTH // 8), SEED["masked_image_generator"])
        refs["pipeline.init_image"] = image
        refs["pipeline.mask_image"] = mask
        refs["pipeline.masked_image"] = greyed
        refs["pipeline.masked_image_mean"] = dist.mean
        refs["pipeline.masked_image_logvar"] = dist.logvar
        refs["pipeline.masked_image_noise"] = eps
        refs["pipeline.masked_image_latents"] = sf * dist.mean
        refs["pipeline.masked_image_latents_sampled"] = sf * (dist.mean + dist.std * eps)
        refs["pipeline.init_image_mean"] = vae.encode(pixels).latent_dist.mean

    lat = sd.randn((1, 4, HEIGHT // 8, WIDTH // 8), SEED["pipeline_latents"])
    refs["pipeline.latents"] = lat
    pipe = make_pipe(unet, vae, clip, tok)
    pipelines = {}

    # (1) ComfyUI-equivalent, deterministic: masked_image_latents = scaling_factor * posterior mean,
    #     passed to the pipeline (which then uses them verbatim and never samples).
    img, steps, first, meta = run_inpaint(pipe, lat, image, mask,
                                          masked_image_latents=refs["pipeline.masked_image_latents"])
    if not torch.equal(first["masked_image_latents"], refs["pipeline.masked_image_latents"]):
        raise RuntimeError("the pipeline did not use the given masked_image_latents")
    refs["pipeline.prompt_embeds"] = first["prompt_embeds"]
    refs["pipeline.mask"] = first["mask"]
    refs["pipeline.euler"] = steps[-1].clone()
    refs["pipeline.euler.steps"] = steps
    refs["pipeline.euler_image"] = img
    with torch.no_grad():
        raw = vae.decode(steps[-1] / sf).sample
    if not torch.equal((raw * 0.5 + 0.5).clamp(0, 1), img):
        raise RuntimeError("pipeline.euler_image is not decode(latents / scaling_factor) * 0.5 + 0.5, clamped")
    refs["pipeline.euler_image_raw"] = raw
    meta["masked_image_latents"] = ("given: masked_image_latents=pipeline.masked_image_latents "
                                    "(= scaling_factor * pipeline.masked_image_mean)")
    meta["generator"] = None
    pipelines["pipeline.euler"] = meta

    # (2) diffusers' own path: it encodes pipeline.masked_image and *samples* the posterior with
    #     the generator (its first and only draw here); recorded via the step callback.
    img_s, steps_s, first_s, meta_s = run_inpaint(pipe, lat, image, mask,
                                                  generator=gen(SEED["masked_image_generator"]))
    if not torch.equal(first_s["masked_image_latents"], refs["pipeline.masked_image_latents_sampled"]):
        raise RuntimeError("diffusers' sampled masked_image_latents != scaling_factor * (mean + std * noise)")
    if not torch.equal(first_s["mask"], refs["pipeline.mask"]) or not torch.equal(
            first_s["prompt_embeds"], refs["pipeline.prompt_embeds"]):
        raise RuntimeError("the two runs differ in mask or prompt embeddings")
    refs["pipeline.euler_sampled"] = steps_s[-1].clone()
    refs["pipeline.euler_sampled.steps"] = steps_s
    refs["pipeline.euler_sampled_image"] = img_s
    meta_s["masked_image_latents"] = (
        "sampled by diffusers: vae.encode(pipeline.masked_image).latent_dist.sample(generator) * scaling_factor "
        "with generator = torch.Generator().manual_seed(seeds.masked_image_generator); equals "
        "scaling_factor * (pipeline.masked_image_mean + exp(0.5 * pipeline.masked_image_logvar) * "
        "pipeline.masked_image_noise) bit for bit = pipeline.masked_image_latents_sampled")
    meta_s["generator"] = {"seed": SEED["masked_image_generator"], "device": "cpu",
                           "draws": "one: randn([1, 4, 8, 8]) for the posterior sample"}
    pipelines["pipeline.euler_sampled"] = meta_s
    if meta_s != {**meta, "masked_image_latents": meta_s["masked_image_latents"],
                  "generator": meta_s["generator"]}:
        raise RuntimeError("the two runs' schedules differ")

    if verify_load:
        verify_folder(out, refs)

    # ---- sanity
    m = refs["pipeline.mask"]
    expect = torch.zeros_like(m)
    expect[:, :, MASK_BOX["top"] // 8:MASK_BOX["bottom"] // 8, MASK_BOX["left"] // 8:MASK_BOX["right"] // 8] = 1.0
    if not torch.equal(m, expect):
        raise RuntimeError("diffusers' latent mask is not the box downsampled by 8")
    # ComfyUI: bilinear (align_corners=False) to the latent size, then round.
    comfy = torch.nn.functional.interpolate(refs["pipeline.mask_image"], size=m.shape[-2:], mode="bilinear",
                                            align_corners=False).round()
    if not torch.equal(comfy, m):
        raise RuntimeError("ComfyUI's bilinear + round mask differs from diffusers' nearest one")
    for k, v in refs.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise RuntimeError(f"{k} has non-finite values")
    if torch.equal(refs["pipeline.euler"], refs["pipeline.euler_sampled"]):
        raise RuntimeError("posterior sample and mean give the same result")
    if torch.equal(refs["pipeline.masked_image_mean"], refs["pipeline.init_image_mean"]):
        raise RuntimeError("masking has no effect on the VAE latent")

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
        "prompt_ids": PROMPT_IDS,
        "guidance_scale": GUIDANCE_SCALE,
        "num_inference_steps": NUM_STEPS,
        "strength": STRENGTH,
        "height": HEIGHT,
        "width": WIDTH,
        "mask_box": dict(MASK_BOX, semantics="pixel rows [top, bottom) x cols [left, right) are 1 (repaint); "
                                             "0 (keep) elsewhere"),
        "mask_box_latent": {k: v // 8 for k, v in MASK_BOX.items()},
        "init_image": {
            "construction": "round((make_sd_fixtures.make_vae_image() * 0.5 + 0.5) * quantum) / quantum, "
                            "clamped to [0, 1]; NCHW [1, 3, 64, 64]",
            "quantum": IMAGE_QUANTUM,
            "noise_seed": SEED["vae_image"],
        },
        "masked_image_latents": {
            "pipeline.euler": pipelines["pipeline.euler"]["masked_image_latents"],
            "pipeline.euler_sampled": pipelines["pipeline.euler_sampled"]["masked_image_latents"],
            "vae_scaling_factor": sd.f32(sf),
        },
        "seeds": SEED,
        "perturb_std": PERTURB_STD,
        "models": {
            "unet_inpaint": UNET_INPAINT_CONFIG,
            "vae": sd.VAE_CONFIG,
            "clip": CLIP_CONFIG,
            "clip_embedding_rows_of_build_clip_sd1": {"first": VOCAB - 2, "then": [FULL_BOS, FULL_EOS]},
            "tokenizer": {"vocab": VOCAB, "merges": TOKENIZER_MERGES, "bos": BOS, "eos": EOS, "pad": EOS},
        },
        "scheduler_config_sd15": sd.SD15_SCHEDULER_CONFIG,
        "pipelines": pipelines,
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in refs.items()},
    }
    p = out / "reference.json"
    sd.write_json(p, sd.sanitize(info))
    files.append(p)
    return files


def verify_folder(out: Path, refs: dict) -> None:
    """diffusers' from_pretrained on the written folder (tokenizer included) and its
    from_single_file on the LDM file (with the folder as config) reproduce the
    deterministic pipeline bit for bit."""
    keys = load_file(str(out / FOLDER / "text_encoder" / "model.safetensors")).keys()
    assert all(k.startswith("text_model.") for k in keys)
    pipes = {
        "from_pretrained": StableDiffusionInpaintPipeline.from_pretrained(
            str(out / FOLDER), safety_checker=None, feature_extractor=None, dtype=torch.float32,
            local_files_only=True),
        "from_single_file": StableDiffusionInpaintPipeline.from_single_file(
            str(out / SINGLE_FILE), config=str(out / FOLDER), safety_checker=None, feature_extractor=None,
            dtype=torch.float32, local_files_only=True),
    }
    for how, pipe in pipes.items():
        pipe.set_progress_bar_config(disable=True)
        assert pipe.unet.config.in_channels == 9, how
        assert type(pipe.scheduler).__name__ == sd.SD15_SCHEDULER_CONFIG["_class_name"], how
        _, steps, first, _ = run_inpaint(pipe, refs["pipeline.latents"], refs["pipeline.init_image"],
                                         refs["pipeline.mask_image"],
                                         masked_image_latents=refs["pipeline.masked_image_latents"])
        if not torch.equal(steps, refs["pipeline.euler.steps"]) or not torch.equal(
                first["prompt_embeds"], refs["pipeline.prompt_embeds"]):
            raise RuntimeError(f"{how}: pipeline loaded from disk differs from the reference")


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
