#!/usr/bin/env python3
"""PyTorch/diffusers side of `cargo bench -p weft-models --bench dit_speed`.

Builds diffusers' `FluxTransformer2DModel` or `SD3Transformer2DModel` from
the config the bench passes (random weights, PyTorch's default init; nothing
is downloaded), calls it once on batch-1 inputs of a SIZE x SIZE image as the
Flux and SD3 pipelines do, in float32 on the CPU, and prints one JSON line:
median and min seconds of RUNS timed runs after a warm-up, and peak RSS.

    python scripts/bench_dit_torch.py PHASE RUNS SIZE CONFIG_JSON

PHASE: flux_double or flux_single (Flux: 16-channel latent packed 2x2, 512
text tokens, dev's guidance) or sd35m_step (SD3: patch 2 inside the model,
77 + 256 text tokens).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel  # noqa: E402
from bench_timing import time_and_report  # noqa: E402

FLUX_TEXT = 512
SD3_TEXT = 77 + 256


def flux_step(config: dict, size: int):
    """The transformer and its call as `FluxPipeline` makes it: packed
    latents, image position ids (0, row, column), zero text ids, the
    timestep as σ (the model multiplies by 1000) and the guidance strength."""
    model = FluxTransformer2DModel(**config).eval()
    side = size // 16
    rows = torch.arange(side).repeat_interleave(side)
    cols = torch.arange(side).repeat(side)
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=1).float()
    args = dict(
        hidden_states=torch.randn(1, side * side, config["in_channels"]),
        encoder_hidden_states=torch.randn(1, FLUX_TEXT, config["joint_attention_dim"]),
        pooled_projections=torch.randn(1, config["pooled_projection_dim"]),
        timestep=torch.tensor([0.5]),
        guidance=torch.tensor([3.5]) if config["guidance_embeds"] else None,
        img_ids=img_ids,
        txt_ids=torch.zeros(FLUX_TEXT, 3),
        return_dict=False,
    )
    return lambda: model(**args)


def sd3_step(config: dict, size: int):
    """The transformer and its call as `StableDiffusion3Pipeline` makes it."""
    model = SD3Transformer2DModel(**config).eval()
    side = size // 8
    args = dict(
        hidden_states=torch.randn(1, config["in_channels"], side, side),
        encoder_hidden_states=torch.randn(1, SD3_TEXT, config["joint_attention_dim"]),
        pooled_projections=torch.randn(1, config["pooled_projection_dim"]),
        timestep=torch.tensor([500.0]),
        return_dict=False,
    )
    return lambda: model(**args)


def main() -> None:
    phase, runs, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = json.loads(sys.argv[4])
    torch.manual_seed(0)
    if phase in ("flux_double", "flux_single"):
        step = flux_step(config, size)
    elif phase == "sd35m_step":
        step = sd3_step(config, size)
    else:
        raise SystemExit(f"unknown phase {phase}")
    time_and_report(phase, step, runs)


if __name__ == "__main__":
    main()
