#!/usr/bin/env python3
"""Generate the Flux Fill fixture (issue #15): a tiny random FluxTransformer2DModel with
Flux.1-Fill's input layout (in_channels 384 = 4 x (16 latent + 16 masked-image latent + 64
mask), out_channels 64; Flux.1's defaults otherwise, with widths and depths made tiny),
and one forward pass whose
inputs are prepared by FluxFillPipeline's own helpers (`prepare_mask_latents`,
`_pack_latents`, `_prepare_latent_image_ids`, `_unpack_latents`), so the fixture records
how diffusers lays out the mask and the masked image.

Writes models/tests/fixtures/flux_fill/: `transformer/` (config.json and weights) and
`reference.safetensors` (inputs.* and expected.velocity).

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_flux_fill_fixtures.py
"""

from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import FluxFillPipeline, FluxTransformer2DModel
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "models/tests/fixtures/flux_fill"


def main() -> None:
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=384,
        out_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=24,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    ).eval()
    model.save_pretrained(OUT / "transformer")

    batch, height, width = 1, 32, 48  # pixels; the latent is 16 x 4 x 6
    h, w = height // 8, width // 8
    latents = torch.randn(batch, 16, h, w)
    masked_image_latents = torch.randn(batch, 16, h, w)  # already scaled and shifted
    mask = torch.zeros(batch, 1, height, width)
    mask[:, :, 8:24, 16:40] = 1.0  # 1: paint here
    context = torch.randn(batch, 7, 32)
    pooled = torch.randn(batch, 24)
    timestep = torch.tensor([0.7])
    guidance = torch.tensor([30.0])

    # The pipeline's own preparation, with a stand-in VAE config that leaves the
    # (already scaled) image latents as they are.
    helper = SimpleNamespace(
        vae=SimpleNamespace(config=SimpleNamespace(shift_factor=0.0, scaling_factor=1.0)),
        vae_scale_factor=8,
        _pack_latents=FluxFillPipeline._pack_latents,
    )
    packed_mask, packed_image = FluxFillPipeline.prepare_mask_latents(
        helper, mask, masked_image_latents, batch, 16, 1, height, width,
        torch.float32, "cpu", None,
    )
    image_inputs = torch.cat((packed_image, packed_mask), dim=-1)
    packed = FluxFillPipeline._pack_latents(latents, batch, 16, h, w)
    img_ids = FluxFillPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, "cpu", torch.float32)
    txt_ids = torch.zeros(context.shape[1], 3)
    with torch.no_grad():
        out = model(
            hidden_states=torch.cat((packed, image_inputs), dim=2),
            timestep=timestep,
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=context,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
    velocity = FluxFillPipeline._unpack_latents(out, height, width, 8)
    save_file(
        {
            "inputs.latents": latents.contiguous(),
            "inputs.masked_image_latents": masked_image_latents.contiguous(),
            "inputs.mask": mask[:, 0].contiguous(),
            "inputs.encoder_hidden_states": context.contiguous(),
            "inputs.pooled_projections": pooled.contiguous(),
            "inputs.timestep": timestep,
            "inputs.guidance": guidance,
            "expected.velocity": velocity.contiguous(),
        },
        OUT / "reference.safetensors",
    )
    print("wrote", OUT, "velocity", tuple(velocity.shape))


if __name__ == "__main__":
    main()
