#!/usr/bin/env python3
"""Generate scheduler/sampler parity fixtures from Hugging Face diffusers.

Writes small JSON files to sampling/tests/fixtures/schedulers/ that the Rust test
suite compares against without needing Python. See the README.md in that
folder for the format.

Deterministic and offline: every scheduler is constructed directly from its
constructor kwargs (nothing is downloaded), initial latents come from numpy
with fixed seeds, and every random tensor a stochastic scheduler draws is
recorded (and checked by replaying it).

Usage (from the repository root):

    python -m venv .venv-fixtures
    .venv-fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    .venv-fixtures/bin/python scripts/make_scheduler_fixtures.py
    .venv-fixtures/bin/python scripts/make_scheduler_fixtures.py --check   # compare only

This script only *calls* diffusers; it contains no diffusers code.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

# Never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402  (LMSDiscreteScheduler needs it)
import torch  # noqa: E402

import diffusers  # noqa: E402

FORMAT_VERSION = 1
MODEL_FORMULA = "0.5*tanh(x)+0.1*t/1000"
SHAPE = [1, 2, 4, 4]
INITIAL_SEED = 0  # numpy seed of the initial (pure noise) latent
ORIGINAL_SEED = 1  # numpy seed of the img2img "original" latent
IMG2IMG_NOISE_SEED = 2  # numpy seed of the img2img noise
TORCH_SEED = 1234  # torch.Generator seed for stochastic schedulers
DEFAULT_STEPS = 10

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "nodes" / "tests" / "fixtures" / "schedulers"

SD_BETAS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def sd(**kw):
    d = dict(SD_BETAS)
    d.update(kw)
    return d


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------
# Each case: name, scheduler class name, constructor kwargs, optional
# step_kwargs (extra kwargs to scheduler.step), stochastic (pass a seeded
# torch.Generator and record draws), img2img (strength), description.
CASES = [
    dict(name="euler_epsilon", scheduler="EulerDiscreteScheduler",
         config=sd(prediction_type="epsilon", timestep_spacing="linspace"),
         description="Euler, epsilon prediction, linspace spacing (the diffusers default)."),
    dict(name="euler_v_prediction", scheduler="EulerDiscreteScheduler",
         config=sd(prediction_type="v_prediction", timestep_spacing="linspace"),
         description="Euler, v-prediction."),
    dict(name="euler_karras", scheduler="EulerDiscreteScheduler",
         config=sd(prediction_type="epsilon", use_karras_sigmas=True),
         description="Euler with Karras sigmas (timesteps are fractional, mapped back from sigmas)."),
    dict(name="euler_leading", scheduler="EulerDiscreteScheduler",
         config=sd(timestep_spacing="leading", steps_offset=1),
         description="Euler, leading spacing with steps_offset=1 (SD 1.x config); init_noise_sigma=sqrt(sigma_max^2+1)."),
    dict(name="euler_trailing", scheduler="EulerDiscreteScheduler",
         config=sd(timestep_spacing="trailing"),
         description="Euler, trailing spacing."),
    dict(name="euler_linspace_sigma_min", scheduler="EulerDiscreteScheduler",
         config=sd(timestep_spacing="linspace", final_sigmas_type="sigma_min"),
         description="Euler, final sigma = sigma_min (sigma at train timestep 0) instead of 0."),
    dict(name="euler_zero_snr_trailing", scheduler="EulerDiscreteScheduler",
         config=sd(timestep_spacing="trailing", rescale_betas_zero_snr=True, prediction_type="v_prediction"),
         description="Euler, zero-terminal-SNR rescaled betas (alphas_cumprod[-1] forced to 2**-24), trailing, v-prediction."),
    dict(name="euler_churn", scheduler="EulerDiscreteScheduler",
         config=sd(timestep_spacing="linspace"),
         step_kwargs={"s_churn": 1.0}, stochastic=True,
         description="Euler with s_churn=1.0 (gamma=min(s_churn/(len(sigmas)-1), sqrt(2)-1)); draws noise every step."),
    dict(name="euler_ancestral", scheduler="EulerAncestralDiscreteScheduler",
         config=sd(), stochastic=True,
         description="Euler ancestral, epsilon, linspace."),
    dict(name="heun", scheduler="HeunDiscreteScheduler",
         config=sd(),
         description="Heun (order 2): timesteps interleaved, 2*N-1 model calls."),
    dict(name="lms", scheduler="LMSDiscreteScheduler",
         config=sd(),
         description="LMS (linear multistep), step() default order=4."),
    dict(name="dpmpp_2m", scheduler="DPMSolverMultistepScheduler",
         config=sd(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"),
         description="DPM-Solver++(2M), final sigma 0."),
    dict(name="dpmpp_2m_sigma_min", scheduler="DPMSolverMultistepScheduler",
         config=sd(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="sigma_min"),
         description="DPM-Solver++(2M), final sigma = sigma_min."),
    dict(name="dpmpp_2m_karras", scheduler="DPMSolverMultistepScheduler",
         config=sd(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True),
         description="DPM-Solver++(2M) Karras."),
    dict(name="dpmpp_2m_sde", scheduler="DPMSolverMultistepScheduler",
         config=sd(algorithm_type="sde-dpmsolver++", solver_order=2, final_sigmas_type="zero"),
         stochastic=True,
         description="DPM-Solver++(2M) SDE; draws noise every step."),
    dict(name="ddim_eta0_alpha_one", scheduler="DDIMScheduler",
         config=sd(clip_sample=False, set_alpha_to_one=True, steps_offset=1),
         step_kwargs={"eta": 0.0},
         description="DDIM eta=0, set_alpha_to_one=True, steps_offset=1, leading spacing (default)."),
    dict(name="ddim_eta0_no_alpha_one", scheduler="DDIMScheduler",
         config=sd(clip_sample=False, set_alpha_to_one=False, steps_offset=1),
         step_kwargs={"eta": 0.0},
         description="DDIM eta=0, set_alpha_to_one=False (SD 1.x config)."),
    dict(name="ddim_eta05", scheduler="DDIMScheduler",
         config=sd(clip_sample=False, set_alpha_to_one=False, steps_offset=1),
         step_kwargs={"eta": 0.5}, stochastic=True,
         description="DDIM eta=0.5 (stochastic)."),
    dict(name="ddim_trailing", scheduler="DDIMScheduler",
         config=sd(clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing"),
         step_kwargs={"eta": 0.0},
         description="DDIM eta=0, trailing spacing."),
    dict(name="ddpm", scheduler="DDPMScheduler",
         config=sd(clip_sample=False),
         stochastic=True,
         description="DDPM, fixed_small variance, leading spacing, steps_offset=0: last timestep is 0 so the last step draws no noise."),
    dict(name="ddpm_offset1", scheduler="DDPMScheduler",
         config=sd(clip_sample=False, steps_offset=1),
         stochastic=True,
         description="DDPM with steps_offset=1: every step draws noise."),
    dict(name="unipc_bh2", scheduler="UniPCMultistepScheduler",
         config=sd(solver_order=2, solver_type="bh2"),
         description="UniPC multistep, bh2, order 2, predict_x0."),
    dict(name="flow_match_shift1", scheduler="FlowMatchEulerDiscreteScheduler",
         config={"num_train_timesteps": 1000, "shift": 1.0},
         description="Flow-matching Euler, shift=1.0; no scale_model_input, no init_noise_sigma."),
    dict(name="flow_match_shift3", scheduler="FlowMatchEulerDiscreteScheduler",
         config={"num_train_timesteps": 1000, "shift": 3.0},
         description="Flow-matching Euler, shift=3.0 (SD3 config)."),
    dict(name="flow_match_stochastic", scheduler="FlowMatchEulerDiscreteScheduler",
         config={"num_train_timesteps": 1000, "shift": 3.0, "stochastic_sampling": True},
         stochastic=True,
         description="Flow-matching Euler with stochastic_sampling=True: x0 re-noised with fresh noise each step."),
    dict(name="euler_img2img", scheduler="EulerDiscreteScheduler",
         config=sd(timestep_spacing="linspace"), img2img={"strength": 0.6},
         description="Euler img2img, strength 0.6: set_begin_index(start_index) then add_noise at timesteps[start_index]."),
    dict(name="ddim_img2img", scheduler="DDIMScheduler",
         config=sd(clip_sample=False, set_alpha_to_one=False, steps_offset=1),
         step_kwargs={"eta": 0.0}, img2img={"strength": 0.6},
         description="DDIM img2img, strength 0.6 (DDIM has no set_begin_index; add_noise indexes alphas_cumprod by timestep)."),
    dict(name="flow_match_img2img", scheduler="FlowMatchEulerDiscreteScheduler",
         config={"num_train_timesteps": 1000, "shift": 3.0}, img2img={"strength": 0.6},
         description="Flow-matching img2img, strength 0.6: scale_noise (sigma*noise+(1-sigma)*x) instead of add_noise."),
]


# --------------------------------------------------------------------------
# Number formatting / JSON
# --------------------------------------------------------------------------
def f32(x) -> float:
    """Shortest decimal that round-trips the float32 value, as a Python float."""
    v = np.float32(x)
    if not np.isfinite(v):
        raise ValueError(f"non-finite float32 in tensor data: {v}")
    short = float(str(v))
    # Readers commonly parse JSON numbers as f64 and then cast to f32 (serde_json
    # does). Make sure that path gives back the exact float32; otherwise write the
    # exact double value of the float32 instead.
    if np.float32(short) == v:
        return short
    return float(v)


def exact_list(t) -> list:
    """Exact values as Python floats (float32 and int64 values are exactly representable)."""
    t = t.detach().cpu() if isinstance(t, torch.Tensor) else torch.as_tensor(t)
    if t.dtype in (torch.int64, torch.int32):
        return [float(v) for v in t.flatten().tolist()]
    return [float(v) for v in t.to(torch.float64).flatten().tolist()]


def f32_list(t) -> list:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype != torch.float32:
            # timesteps may be int64 or float64; record their exact value
            if t.dtype in (torch.int64, torch.int32):
                return [float(v) for v in t.flatten().tolist()]
            t = t.to(torch.float64)
            return [float(v) for v in t.flatten().tolist()]
        arr = t.numpy().reshape(-1)
    else:
        arr = np.asarray(t, dtype=np.float32).reshape(-1)
    return [f32(v) for v in arr]


def scalar(v):
    """Exact value of a 0-d tensor / python / numpy scalar as float (float32 shortest form)."""
    if isinstance(v, torch.Tensor):
        if v.dtype == torch.float32:
            return f32(v.item())
        return float(v.item())
    if isinstance(v, np.floating) and v.dtype == np.float32:
        return f32(v)
    return float(v)


def sanitize(obj):
    """Make config values JSON-safe; non-finite floats become strings."""
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
    if isinstance(obj, np.ndarray):
        return sanitize(obj.tolist())
    if isinstance(obj, torch.Tensor):
        return sanitize(obj.tolist())
    return str(obj)


def resolved_config(cfg) -> dict:
    """scheduler.config as JSON. `_use_default_values` is built from a set in
    diffusers (hash-seed dependent order), so it is sorted here."""
    d = sanitize(dict(cfg))
    if isinstance(d.get("_use_default_values"), list):
        d["_use_default_values"] = sorted(d["_use_default_values"])
    return d


def _is_scalar(v):
    return v is None or isinstance(v, (bool, int, float, str))


def dumps(obj, indent=0) -> str:
    """Pretty JSON with lists of scalars kept on one line (small, diffable)."""
    pad = "  " * (indent + 1)
    end = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(obj, list):
        if all(_is_scalar(v) for v in obj):
            return "[" + ",".join(json.dumps(v, allow_nan=False) for v in obj) + "]"
        items = [pad + dumps(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + end + "]"
    return json.dumps(obj, allow_nan=False)


def generator_info() -> dict:
    return {
        "script": "scripts/make_scheduler_fixtures.py",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


# --------------------------------------------------------------------------
# Toy model and random-draw interception
# --------------------------------------------------------------------------
def toy_model(x: torch.Tensor, t) -> torch.Tensor:
    """out = f32(0.5*tanh(f64(x)) + 0.1*(f64(t)/1000.0)), elementwise."""
    x64 = x.detach().cpu().numpy().astype(np.float64)
    t64 = float(t.item()) if isinstance(t, torch.Tensor) else float(t)
    out = 0.5 * np.tanh(x64) + 0.1 * (t64 / 1000.0)
    return torch.from_numpy(out.astype(np.float32))


@contextlib.contextmanager
def intercept_randn(module_name: str, record: list | None = None, replay: list | None = None):
    """Patch `randn_tensor` in the scheduler's own module namespace.

    record: every draw is appended (as a clone) and returned unchanged.
    replay: draws are served from this list in order instead (generator ignored).
    """
    mod = sys.modules[module_name]
    if not hasattr(mod, "randn_tensor"):
        yield None
        return
    orig = mod.randn_tensor
    state = {"i": 0}

    def wrapper(shape, generator=None, device=None, dtype=None, layout=None, **kw):
        if replay is not None:
            v = replay[state["i"]]
            state["i"] += 1
            assert list(v.shape) == list(shape), (v.shape, shape)
            return v.clone().to(dtype=dtype or v.dtype)
        out = orig(shape, generator=generator, device=device, dtype=dtype, layout=layout, **kw)
        record.append(out.detach().clone())
        return out

    mod.randn_tensor = wrapper
    try:
        yield state
    finally:
        mod.randn_tensor = orig


def numpy_normal(seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32))


# --------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------
def execute(spec: dict, replay_steps: list | None = None) -> dict:
    """Run one case the way a diffusers pipeline loop does. Returns tensors and metadata."""
    torch.manual_seed(0)  # irrelevant (all draws use an explicit generator) but harmless
    cls = getattr(diffusers, spec["scheduler"])
    sched = cls(**spec["config"])
    n = spec.get("num_inference_steps", DEFAULT_STEPS)
    sched.set_timesteps(n)
    all_timesteps = sched.timesteps.clone()
    sigmas = getattr(sched, "sigmas", None)
    sigmas = sigmas.clone() if isinstance(sigmas, torch.Tensor) else None
    order = getattr(sched, "order", 1)

    has_ins = hasattr(sched, "init_noise_sigma")
    init_noise_sigma = sched.init_noise_sigma if has_ins else None

    res = {"timesteps": all_timesteps, "sigmas": sigmas, "order": order,
           "init_noise_sigma": init_noise_sigma}

    img = spec.get("img2img")
    if img is None:
        noise0 = numpy_normal(INITIAL_SEED)
        sample = noise0 * init_noise_sigma if has_ins else noise0.clone()
        loop_timesteps = all_timesteps
    else:
        strength = img["strength"]
        if spec["scheduler"].startswith("FlowMatch"):
            # StableDiffusion3Img2ImgPipeline.get_timesteps
            init_timestep = min(n * strength, n)
            t_start = int(max(n - init_timestep, 0))
            formula = "t_start = int(max(n - min(n*strength, n), 0))  (SD3 img2img)"
        else:
            # StableDiffusionImg2ImgPipeline.get_timesteps
            init_timestep = min(int(n * strength), n)
            t_start = max(n - init_timestep, 0)
            formula = "t_start = max(n - min(int(n*strength), n), 0)  (SD img2img)"
        start_index = t_start * order
        loop_timesteps = all_timesteps[start_index:]
        has_begin = hasattr(sched, "set_begin_index")
        if has_begin:
            sched.set_begin_index(start_index)
        original = numpy_normal(ORIGINAL_SEED)
        noise = numpy_normal(IMG2IMG_NOISE_SEED)
        latent_timestep = loop_timesteps[:1]
        if hasattr(sched, "add_noise"):
            sample = sched.add_noise(original, noise, latent_timestep)
            method = "add_noise(original, noise, timesteps[start_index:][:1])"
        else:
            sample = sched.scale_noise(original, latent_timestep, noise)
            method = "scale_noise(original, timesteps[start_index:][:1], noise)"
        res["img2img"] = {
            "strength": strength,
            "t_start_formula": formula,
            "t_start": t_start,
            "start_index": start_index,
            "set_begin_index_called": has_begin,
            "noise_method": method,
            "noise_timestep": latent_timestep,
            "original_seed": ORIGINAL_SEED,
            "noise_seed": IMG2IMG_NOISE_SEED,
            "original": original,
            "noise": noise,
            "start_sample": sample.clone(),
        }

    res["initial_sample"] = sample.clone()
    stochastic = spec.get("stochastic", False)
    step_params = inspect.signature(sched.step).parameters
    gen = torch.Generator(device="cpu").manual_seed(TORCH_SEED) if stochastic else None
    has_scale = hasattr(sched, "scale_model_input")
    res["has_scale_model_input"] = has_scale

    steps = []
    for i, t in enumerate(loop_timesteps):
        model_input = sched.scale_model_input(sample, t) if has_scale else sample
        model_output = toy_model(model_input, t)
        kwargs = dict(spec.get("step_kwargs", {}))
        drawn: list = []
        if stochastic and "generator" in step_params:
            kwargs["generator"] = None if replay_steps is not None else gen
        replay = replay_steps[i] if replay_steps is not None else None
        with intercept_randn(type(sched).__module__, record=drawn, replay=replay) as st:
            out = sched.step(model_output, t, sample, **kwargs)
        if replay is not None:
            assert st["i"] == len(replay), "replay did not consume every recorded draw"
        prev = out.prev_sample if hasattr(out, "prev_sample") else out[0]
        if not stochastic and drawn:
            raise RuntimeError(f"{spec['name']}: deterministic case drew random numbers")
        steps.append({
            "timestep": t.clone(),
            "model_input": model_input.clone(),
            "model_output": model_output,
            "step_noise": replay if replay is not None else drawn,
            "prev_sample": prev.clone(),
        })
        sample = prev
    res["steps"] = steps
    res["final_sample"] = sample.clone()
    res["resolved_config"] = dict(sched.config)
    return res


def build_record(spec: dict) -> dict:
    res = execute(spec)
    # Determinism / completeness check: replay the recorded draws (no generator)
    # and demand bit-identical results; for deterministic cases just rerun.
    replay = [s["step_noise"] for s in res["steps"]] if spec.get("stochastic") else None
    again = execute(spec, replay_steps=replay)
    for a, b in zip(res["steps"], again["steps"]):
        if not torch.equal(a["prev_sample"], b["prev_sample"]):
            raise RuntimeError(f"{spec['name']}: replay/rerun is not bit-identical")
    if not torch.equal(res["final_sample"], again["final_sample"]):
        raise RuntimeError(f"{spec['name']}: replay/rerun is not bit-identical")

    n = spec.get("num_inference_steps", DEFAULT_STEPS)
    rec = {
        "format_version": FORMAT_VERSION,
        "generator": generator_info(),
        "name": spec["name"],
        "description": spec["description"],
        "scheduler": spec["scheduler"],
        "model": MODEL_FORMULA,
        "config": sanitize(spec["config"]),
        "resolved_config": resolved_config(res["resolved_config"]),
        "num_inference_steps": n,
        "order": res["order"],
        "step_kwargs": sanitize(spec.get("step_kwargs", {})),
        "stochastic": bool(spec.get("stochastic", False)),
        "torch_generator_seed": TORCH_SEED if spec.get("stochastic") else None,
        "timesteps": exact_list(res["timesteps"]),
    }
    if res["sigmas"] is not None:
        rec["sigmas"] = f32_list(res["sigmas"])
    ins = res["init_noise_sigma"]
    rec["init_noise_sigma"] = None if ins is None else scalar(ins)
    rec["has_scale_model_input"] = res["has_scale_model_input"]
    rec["shape"] = list(SHAPE)
    rec["initial_seed"] = None if "img2img" in res else INITIAL_SEED
    if "img2img" in res:
        im = res["img2img"]
        rec["img2img"] = {
            "strength": im["strength"],
            "t_start_formula": im["t_start_formula"],
            "t_start": im["t_start"],
            "start_index": im["start_index"],
            "set_begin_index_called": im["set_begin_index_called"],
            "noise_method": im["noise_method"],
            "noise_timestep": exact_list(im["noise_timestep"])[0],
            "original_seed": im["original_seed"],
            "noise_seed": im["noise_seed"],
            "original": f32_list(im["original"]),
            "noise": f32_list(im["noise"]),
            "start_sample": f32_list(im["start_sample"]),
        }
    rec["initial_sample"] = f32_list(res["initial_sample"])
    steps = []
    for i, s in enumerate(res["steps"]):
        d = {
            "index": i,
            "timestep": exact_list(s["timestep"].reshape(1))[0],
            "model_input": f32_list(s["model_input"]),
            "model_output": f32_list(s["model_output"]),
        }
        if rec["stochastic"]:
            d["step_noise"] = [f32_list(z) for z in s["step_noise"]]
        d["prev_sample"] = f32_list(s["prev_sample"])
        steps.append(d)
    rec["steps"] = steps
    rec["final_sample"] = f32_list(res["final_sample"])
    return rec


def build_schedules() -> dict:
    entries = []

    def add(name, cls_name, config, note):
        cls = getattr(diffusers, cls_name)
        s = cls(**config)
        entries.append({
            "name": name,
            "scheduler": cls_name,
            "config": sanitize(config),
            "note": note,
            "alphas_cumprod": f32_list(s.alphas_cumprod),
        })

    base = {"num_train_timesteps": 1000, "clip_sample": False}
    add("linear", "DDIMScheduler",
        dict(base, beta_start=0.0001, beta_end=0.02, beta_schedule="linear"),
        "betas = linspace(beta_start, beta_end, 1000) in float32")
    add("scaled_linear", "DDIMScheduler",
        dict(base, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        "betas = linspace(sqrt(beta_start), sqrt(beta_end), 1000)**2 in float32")
    add("squaredcos_cap_v2", "DDIMScheduler",
        dict(base, beta_schedule="squaredcos_cap_v2"),
        "betas from the cosine alpha_bar (GLIDE), each capped at 0.999; beta_start/beta_end unused")
    add("scaled_linear_zero_snr", "DDIMScheduler",
        dict(base, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
             rescale_betas_zero_snr=True),
        "scaled_linear betas rescaled to zero terminal SNR; DDIM leaves alphas_cumprod[-1] == 0")
    add("scaled_linear_zero_snr_euler", "EulerDiscreteScheduler",
        dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
             beta_schedule="scaled_linear", rescale_betas_zero_snr=True),
        "as scaled_linear_zero_snr, but Euler-family schedulers then set alphas_cumprod[-1] = 2**-24")
    return {
        "format_version": FORMAT_VERSION,
        "generator": generator_info(),
        "description": "alphas_cumprod (float32, as diffusers computes them) for the common beta schedules",
        "schedules": entries,
    }


def generate(out_dir: Path) -> list[Path]:
    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    names = set()
    for spec in CASES:
        assert spec["name"] not in names
        names.add(spec["name"])
        rec = build_record(spec)
        p = out_dir / f"{spec['name']}.json"
        p.write_text(dumps(rec) + "\n", encoding="utf-8")
        written.append(p)
    p = out_dir / "schedules.json"
    p.write_text(dumps(build_schedules()) + "\n", encoding="utf-8")
    written.append(p)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare byte-for-byte with --out")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            files = generate(Path(tmp))
            bad = []
            for f in files:
                target = args.out / f.name
                if not target.exists() or target.read_bytes() != f.read_bytes():
                    bad.append(f.name)
            if bad:
                print("fixtures differ from a fresh run: " + ", ".join(bad))
                return 1
            print(f"{len(files)} fixture files match a fresh run")
            return 0
    files = generate(args.out)
    for f in files:
        print(f"{f.stat().st_size:8d}  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
