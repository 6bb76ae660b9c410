#!/usr/bin/env python3
"""Generate tiny upscale-model parity fixtures with spandrel (what ComfyUI loads them with).

Writes models/tests/fixtures/upscale/: tiny random-weight networks built with spandrel's
own architecture classes -- ESRGAN's RRDBNet (spandrel.architectures.ESRGAN.ESRGAN) and
Real-ESRGAN's SRVGGNetCompact (spandrel.architectures.Compact.Compact) -- saved as
.safetensors in the key layouts users' files have, and float32 reference outputs of each
on one fixed 13x18 image (odd sides, so Real-ESRGAN's reflection padding before its pixel
unshuffle is exercised), compared by models/tests/upscale_parity.rs without Python.

| file | network | layout |
|---|---|---|
| esrgan_x4_new.safetensors | RRDBNet x4, nf 8, gc 8, 2 blocks | Real-ESRGAN/BasicSR (`conv_first`, `body.N.rdbM.convK`, `conv_up1`, ...) under `params_ema.` |
| esrgan_x4_old.safetensors | the same weights | original ESRGAN (`model.0`, `model.1.sub.N.RDBM.convK.0`, `model.3`, ..., `model.10`) |
| esrgan_x4_bsrgan.safetensors | the same weights | BSRGAN/RealSR (`RRDB_trunk.N.RDBM.convK`, `trunk_conv`, `upconvK`, `HRconv`) |
| esrgan_x2_gc32.safetensors | RRDBNet x2 (one upsampling), nf 4, spandrel's default gc 32, 1 block | original ESRGAN |
| realesrgan_x2_unshuffle.safetensors | RRDBNet x4 on a 2x2 pixel unshuffle (12 input channels): x2, nf 4, gc 32, 1 block | BasicSR |
| realesrgan_x1_unshuffle.safetensors | RRDBNet x4 on a 4x4 pixel unshuffle (48 input channels): x1, nf 4, gc 32, 1 block | original ESRGAN |
| compact_x4.safetensors | SRVGGNetCompact x4, num_feat 8, num_conv 3 | `body.N` |
| compact_x2.safetensors | SRVGGNetCompact x2, num_feat 6, num_conv 2 | `body.N` |

reference.safetensors holds `image` ([1, 3, 13, 18]) and `<file stem>` for each model: its
output, unclamped. reference.json records what spandrel says of each file (scale,
channels, architecture) for the detection tests.

Growth channels other than 32 are not a parameter of spandrel's RRDBNet (it fixes gc =
32, as every released ESRGAN has), so the small x4 network is spandrel's RRDBNet with its
blocks rebuilt as spandrel's own `RRDB(nf, gc=8)` (architectures/__arch_helpers/block.py);
its three files are read back through spandrel's layout conversion into that network.

Deterministic and offline: fixed torch seeds, every parameter perturbed and rounded to
float16 and back (saved as float16, so a loader that upcasts sees exactly the weights the
references were computed with), PReLU slopes drawn per channel in [0.05, 0.5], references
computed in float32 on the CPU with one thread. Every other saved file is loaded back
with spandrel's ModelLoader, as ComfyUI's UpscaleModelLoader does, and must reproduce its
reference exactly (`params_ema.` keys are read as the nested {"params_ema": ...} dict a
.pth file holds).

Usage (from the repository root, in the venv of scripts/requirements-sd-fixtures.txt,
which pins spandrel):

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_upscale_fixtures.py
    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_upscale_fixtures.py --check   # compare only

This script only *calls* spandrel; it contains no code of it. The layout conversions
below are written from the key names of the original ESRGAN, BSRGAN and BasicSR
repositories' checkpoints.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tempfile
from pathlib import Path

import spandrel
import torch
from safetensors.torch import load_file, save_file
from spandrel import ModelLoader
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN, _to_old_arch
from spandrel.architectures.__arch_helpers import block as B

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / "tests" / "fixtures" / "upscale"
IMAGE_SHAPE = (1, 3, 13, 18)


def round_params(model: torch.nn.Module, seed: int) -> None:
    """Perturbs every parameter a little and rounds it to float16 (and back)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if isinstance(dict(model.named_modules()).get(name.rsplit(".", 1)[0]), torch.nn.PReLU):
                p.copy_(0.05 + 0.45 * torch.rand(p.shape, generator=g))
            else:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())


def rrdbnet(seed: int, *, in_nc: int, nf: int, blocks: int, scale: int, gc: int | None,
            shuffle: int | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = ESRGAN(in_nc=in_nc, out_nc=3, num_filters=nf, num_blocks=blocks, scale=scale,
                 shuffle_factor=shuffle)
    if gc is not None:
        trunk = net.model[1].sub
        for i in range(blocks):
            trunk[i] = B.RRDB(nf, kernel_size=3, gc=gc, stride=1, bias=True, pad_type="zero",
                              norm_type=None, act_type="leakyrelu", mode="CNA")
    round_params(net, seed + 1)
    return net.eval()


def compact(seed: int, *, nf: int, convs: int, scale: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=nf, num_conv=convs, upscale=scale)
    round_params(net, seed + 1)
    return net.eval()


def old_state(net: torch.nn.Module) -> dict:
    """spandrel's RRDBNet is the original ESRGAN sequence: its own state dict."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def to_basicsr(old: dict) -> dict:
    """Original ESRGAN names -> BasicSR / Real-ESRGAN names."""
    top = max(int(k.split(".")[1]) for k in old)
    ups = (top + 1 - 5) // 3
    nb = max(int(m.group(1)) for k in old if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))) + 1
    out = {}
    for k, v in old.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := re.fullmatch(rf"model\.1\.sub\.{nb}\.(weight|bias)", k):
            out[f"conv_body.{m[1]}"] = v
        elif m := re.fullmatch(r"model\.(\d+)\.(weight|bias)", k):
            i = int(m[1])
            if i == 0:
                name = "conv_first"
            elif i % 3 == 0 and 1 <= i // 3 <= ups:
                name = f"conv_up{i // 3}"
            elif i == 3 * ups + 2:
                name = "conv_hr"
            elif i == 3 * ups + 4:
                name = "conv_last"
            else:
                raise KeyError(k)
            out[f"{name}.{m[2]}"] = v
        else:
            raise KeyError(k)
    return out


def to_bsrgan(basicsr: dict) -> dict:
    """BasicSR names -> BSRGAN / RealSR names."""
    out = {}
    for k, v in basicsr.items():
        if m := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", k):
            k = f"RRDB_trunk.{m[1]}.RDB{m[2]}.conv{m[3]}.{m[4]}"
        else:
            k = (k.replace("conv_body.", "trunk_conv.").replace("conv_hr.", "HRconv.")
                 .replace("conv_up", "upconv"))
        out[k] = v
    return out


def gc_of(net: torch.nn.Module) -> int:
    """Growth channels of an RRDBNet (32 for anything else, which spandrel loads as it is)."""
    if isinstance(net, ESRGAN):
        return net.model[1].sub[0].RDB1.conv1[0].out_channels
    return 32


def to_f16(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        h = v.contiguous().half()
        assert torch.equal(h.float(), v.float()), f"{k} is not float16-representable"
        out[k] = h
    return out


def generate(out: Path) -> list[Path]:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    image = torch.rand(IMAGE_SHAPE, generator=g)
    refs = {"image": image}
    info = {}
    files = []

    def save(stem: str, state: dict, net: torch.nn.Module, nested: str | None = None) -> None:
        path = out / f"{stem}.safetensors"
        stored = {f"{nested}.{k}": v for k, v in state.items()} if nested else state
        save_file(to_f16(stored), str(path))
        files.append(path)
        with torch.no_grad():
            want = net(image)
        # Read back as a user's file: spandrel (ComfyUI's loader) must see the same network.
        loaded = {k: v.float() for k, v in load_file(str(path)).items()}
        if nested:
            loaded = {nested: {k[len(nested) + 1:]: v for k, v in loaded.items()}}
        entry = {"output_shape": list(want.shape)}
        if gc_of(net) == 32:
            desc = ModelLoader().load_from_state_dict(loaded).eval()
            model = desc.model
            entry.update(architecture=desc.architecture.id, scale=desc.scale,
                         input_channels=desc.input_channels, output_channels=desc.output_channels,
                         tags=desc.tags)
        else:
            # spandrel's loader builds gc = 32; load into the same network instead,
            # through spandrel's own layout conversion.
            model = copy.deepcopy(net)
            model.load_state_dict(_to_old_arch(loaded), strict=True)
        with torch.no_grad():
            got = model(image)
        assert torch.equal(got, want), f"{stem}: the reload differs by {(got - want).abs().max()}"
        refs[stem] = want.contiguous()
        info[stem] = entry

    x4 = rrdbnet(100, in_nc=3, nf=8, blocks=2, scale=4, gc=8)
    old = old_state(x4)
    new = to_basicsr(old)
    save("esrgan_x4_new", new, x4, nested="params_ema")
    save("esrgan_x4_old", old, x4)
    save("esrgan_x4_bsrgan", to_bsrgan(new), x4)

    x2 = rrdbnet(200, in_nc=3, nf=4, blocks=1, scale=2, gc=None)
    save("esrgan_x2_gc32", old_state(x2), x2)

    u2 = rrdbnet(300, in_nc=12, nf=4, blocks=1, scale=4, gc=None, shuffle=2)
    save("realesrgan_x2_unshuffle", to_basicsr(old_state(u2)), u2)

    u4 = rrdbnet(400, in_nc=48, nf=4, blocks=1, scale=4, gc=None, shuffle=4)
    save("realesrgan_x1_unshuffle", old_state(u4), u4)

    c4 = compact(500, nf=8, convs=3, scale=4)
    save("compact_x4", old_state(c4), c4)
    c2 = compact(600, nf=6, convs=2, scale=2)
    save("compact_x2", old_state(c2), c2)

    ref = out / "reference.safetensors"
    save_file(refs, str(ref))
    meta = out / "reference.json"
    meta.write_text(json.dumps({"spandrel": spandrel.__version__, "torch": torch.__version__.split("+")[0],
                                "models": info}, indent=2) + "\n", encoding="utf-8")
    return files + [ref, meta]


def main() -> int:
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
        print(f"{f.stat().st_size:10d}  {f.relative_to(args.out)}")
    print(f"{total:10d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
