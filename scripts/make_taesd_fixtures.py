#!/usr/bin/env python3
"""Generate tiny TAESD decoder parity fixtures with diffusers' AutoencoderTiny.

Writes models/tests/fixtures/taesd/:

- autoencoder_tiny.safetensors: a random-weight AutoencoderTiny with the released
  TAESD layout (decoder stages of 3, 3, 3 and 1 blocks; encoder included, which the
  loader must ignore) at 16 channels instead of 64, in diffusers' key layout
  (`decoder.layers.N...`), as float16;
- taesd_decoder.safetensors: the same decoder in the original key layout (the one
  madebyollin/taesd releases and ComfyUI's vae_approx folder holds: an nn.Sequential
  whose layer 0 is the clamp, so diffusers' layer N is layer N + 1), as float16;
- reference.safetensors: float32 latents (2 x 4 x 8 x 8, some beyond the clamp's
  knee at +-3) and diffusers' `AutoencoderTiny.decode` of them (2 x 3 x 64 x 64,
  in diffusers' [-1, 1] convention);
- reference.json: the config, shapes and the generating environment.

Deterministic and offline, as scripts/make_sd_fixtures.py: weights from fixed torch
seeds, every parameter perturbed and rounded to float16 and back (the files hold
exactly the weights the references were computed with), references in float32 on
the CPU with one thread.

Usage (from the repository root; the environment of scripts/requirements-sd-fixtures.txt):

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_taesd_fixtures.py
    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_taesd_fixtures.py --check   # compare only

This script only *calls* diffusers; the original key layout is written here from
the released decoder's module list (Clamp, conv, ReLU, 3 blocks, Upsample, conv,
..., block, conv) and checked against the key list below.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import diffusers  # noqa: E402
from diffusers import AutoencoderTiny  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models" / "tests" / "fixtures" / "taesd"

CHANNELS = 16
CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    encoder_block_out_channels=(CHANNELS,) * 4, decoder_block_out_channels=(CHANNELS,) * 4,
    num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1),
    act_fn="relu", upsample_fn="nearest", upsampling_scaling_factor=2,
)
WEIGHT_SEED = 0
PERTURB_SEED = 1
LATENT_SEED = 2
PERTURB_STD = 0.02
LATENT_SHAPE = (2, 4, 8, 8)

# The released taesd_decoder's parameter indices: convolutions (with bias unless
# noted) and residual blocks; 0 is the clamp, 2 a ReLU, 6/11/16 upsamples.
ORIGINAL_CONVS = {1: True, 7: False, 12: False, 17: False, 19: True}
ORIGINAL_BLOCKS = [3, 4, 5, 8, 9, 10, 13, 14, 15, 18]


def expected_original_keys() -> set[str]:
    keys = set()
    for i, bias in ORIGINAL_CONVS.items():
        keys.add(f"{i}.weight")
        if bias:
            keys.add(f"{i}.bias")
    for i in ORIGINAL_BLOCKS:
        for j in (0, 2, 4):
            keys.update({f"{i}.conv.{j}.weight", f"{i}.conv.{j}.bias"})
    return keys


@torch.no_grad()
def build() -> AutoencoderTiny:
    torch.manual_seed(WEIGHT_SEED)
    model = AutoencoderTiny(**CONFIG)
    gen = torch.Generator().manual_seed(PERTURB_SEED)
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        p.add_(PERTURB_STD * torch.randn(p.shape, generator=gen, dtype=torch.float32))
        p.copy_(p.half().float())
    return model.eval()


def to_original(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if not key.startswith("decoder.layers."):
            continue
        index, rest = key[len("decoder.layers."):].split(".", 1)
        out[f"{int(index) + 1}.{rest}"] = value
    if set(out) != expected_original_keys():
        raise RuntimeError(f"the original layout differs from the released decoder's: {sorted(out)}")
    return out


def generator_info() -> dict:
    return {
        "script": "scripts/make_taesd_fixtures.py",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


@torch.no_grad()
def generate(out: Path) -> list[Path]:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    model = build()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    half = {k: v.half() for k, v in state.items()}
    meta = {"format": "pt"}
    files = []

    path = out / "autoencoder_tiny.safetensors"
    save_file(half, str(path), metadata=meta)
    files.append(path)

    path = out / "taesd_decoder.safetensors"
    save_file(to_original(half), str(path), metadata=meta)
    files.append(path)

    gen = torch.Generator().manual_seed(LATENT_SEED)
    latents = torch.randn(LATENT_SHAPE, generator=gen, dtype=torch.float32) * 2.5
    decoded = model.decode(latents).sample.float().contiguous()
    path = out / "reference.safetensors"
    save_file({"latents": latents, "decoded": decoded}, str(path), metadata=meta)
    files.append(path)

    info = {
        "generator": generator_info(),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in CONFIG.items()},
        "latents": list(latents.shape),
        "decoded": list(decoded.shape),
        "decoded_abs_max": float(decoded.abs().max()),
        "decoded_std": float(decoded.std()),
        "latents_beyond_clamp_knee": int((latents.abs() > 3).sum()),
    }
    path = out / "reference.json"
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    files.append(path)
    return files


def main() -> int:
    diffusers.utils.logging.disable_progress_bar()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare byte-for-byte with --out")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            files = generate(Path(tmp))
            bad = [str(f.relative_to(tmp)) for f in files
                   if not (args.out / f.relative_to(tmp)).exists()
                   or (args.out / f.relative_to(tmp)).read_bytes() != f.read_bytes()]
            if bad:
                print("fixtures differ from a fresh run: " + ", ".join(bad))
                return 1
            print(f"{len(files)} fixture files match a fresh run")
            return 0
    files = generate(args.out)
    total = 0
    for f in files:
        total += f.stat().st_size
        print(f"{f.stat().st_size:9d}  {f.relative_to(args.out)}")
    print(f"{total:9d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
