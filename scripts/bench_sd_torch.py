#!/usr/bin/env python3
"""PyTorch/diffusers side of `cargo bench -p weft-models --bench sd_speed`.

Builds Stable Diffusion 1.5's UNet or VAE from its config with random
weights (nothing is downloaded), times one UNet step at 512x512 with batch 2
or one VAE decode at 512x512 in float32 on the CPU, and prints one JSON line:
median and min seconds of RUNS timed runs after a warm-up, and peak RSS.

    python scripts/bench_sd_torch.py unet|vae [RUNS]
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from bench_timing import time_and_report  # noqa: E402

UNET = dict(
    in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
    norm_num_groups=32, sample_size=64,
)
VAE = dict(
    in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512,
)


def main() -> None:
    phase = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.manual_seed(0)
    if phase == "unet":
        model = UNet2DConditionModel(**UNET).eval()
        x = torch.randn(2, 4, 64, 64)
        ctx = torch.randn(2, 77, 768)
        t = torch.tensor(500.0)
        step = lambda: model(x, t, encoder_hidden_states=ctx)  # noqa: E731
    elif phase == "vae":
        model = AutoencoderKL(**VAE).eval()
        z = torch.randn(1, 4, 64, 64)
        step = lambda: model.decode(z)  # noqa: E731
    else:
        raise SystemExit(f"unknown phase {phase}")
    time_and_report(phase, step, runs)


if __name__ == "__main__":
    main()
