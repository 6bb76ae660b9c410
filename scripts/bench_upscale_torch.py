#!/usr/bin/env python3
"""PyTorch/spandrel side of `cargo bench -p weft-models --bench upscale_speed`.

Builds spandrel's RRDBNet (what ComfyUI runs ESRGAN models with) at full size --
x4, 23 blocks, 64 features, growth 32 (RealESRGAN_x4plus, 4x-UltraSharp) -- with
PyTorch's default random initialisation (nothing is downloaded), times one image
of SIDE x SIDE pixels upscaled x4 in float32 on the CPU, and prints one JSON line:
median and min seconds of RUNS timed runs after a warm-up, and peak RSS.

    python scripts/bench_upscale_torch.py x4_128|x4_512 [RUNS]

Both phases fit one of ComfyUI's 512-pixel tiles, so ImageUpscaleWithModel runs
them as this single call does.
"""

import sys

import torch
from spandrel.architectures.ESRGAN import ESRGAN

from bench_timing import time_and_report

SIDES = {"x4_128": 128, "x4_512": 512}


def main() -> None:
    phase = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if phase not in SIDES:
        raise SystemExit(f"unknown phase {phase}")
    side = SIDES[phase]
    torch.manual_seed(0)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4).eval()
    x = torch.rand(1, 3, side, side)
    time_and_report(phase, lambda: model(x), runs)


if __name__ == "__main__":
    main()
