#!/usr/bin/env python3
"""PyTorch/diffusers side of `cargo bench -p weft-models --bench sdxl_speed`.

Builds the SDXL base UNet from its config with random weights (nothing is
downloaded), times one step at SIZE x SIZE pixels (latent SIZE/8, batch 2:
conditional and unconditional, with SDXL's pooled text and micro-conditioning
time ids) in float32 on the CPU, and prints one JSON line: median and min
seconds of RUNS timed runs after a warm-up, and peak RSS.

    python scripts/bench_sdxl_torch.py unet [RUNS [SIZE [CONFIG_JSON]]]

The bench passes its own config (CONFIG_JSON, the text of a diffusers
`unet/config.json`) so that both sides build the same network; without it,
SDXL base 1.0's.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from bench_timing import time_and_report  # noqa: E402

SDXL_UNET = dict(
    in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    use_linear_projection=True, cross_attention_dim=2048,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    layers_per_block=2, norm_num_groups=32, norm_eps=1e-5, sample_size=128,
)


def main() -> None:
    phase = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    config = json.loads(sys.argv[4]) if len(sys.argv) > 4 else SDXL_UNET
    if phase != "unet":
        raise SystemExit(f"unknown phase {phase}")
    torch.manual_seed(0)
    model = UNet2DConditionModel(**config).eval()
    side = size // 8
    x = torch.randn(2, 4, side, side)
    ctx = torch.randn(2, 77, config["cross_attention_dim"])
    added = {
        "text_embeds": torch.randn(2, 1280),
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32),
    }
    t = torch.tensor(500.0)
    time_and_report(
        phase, lambda: model(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added), runs
    )


if __name__ == "__main__":
    main()
