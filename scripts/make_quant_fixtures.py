#!/usr/bin/env python3
"""Fixtures for weft-kernels' GGUF decoding: kernels/tests/fixtures/quant/.

gguf-py (llama.cpp's own Python package) is the independent reference:
- blocks.gguf holds one small tensor per GGUF type. Q4_0..Q8_0, F16 and BF16
  are quantised from a seeded random 4x512 matrix by gguf.quants.quantize;
  the K-quants (which gguf-py only decodes) are seeded random block bytes,
  every bit pattern in play, with their f16 scale fields set to small
  normal values so nothing overflows.
- expected.safetensors holds gguf.quants.dequantize of each, as f32, under
  the same names.

    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_quant_fixtures.py
    /tmp/weft-sd-fixtures-venv/bin/python scripts/make_quant_fixtures.py --check

(gguf, numpy and safetensors pinned in scripts/requirements-sd-fixtures.txt.)
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file, load_file

OUT = os.path.join(os.path.dirname(__file__), "..", "kernels", "tests", "fixtures", "quant")
ROWS, COLS = 4, 512

QUANTISED = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.F16, T.BF16]
# Byte offsets of each K-quant block's f16 fields (ggml-common.h).
RANDOM = {
    T.Q2_K: [80, 82],  # scales[16] qs[64] d dmin
    T.Q3_K: [108],  # hmask[32] qs[64] scales[12] d
    T.Q4_K: [0, 2],  # d dmin scales[12] qs[128]
    T.Q5_K: [0, 2],  # d dmin scales[12] qh[32] qs[128]
    T.Q6_K: [208],  # ql[128] qh[64] scales[16] d
}


def tensors():
    rng = np.random.default_rng(15)
    out = {}
    for qt in QUANTISED:
        w = rng.standard_normal((ROWS, COLS)).astype(np.float32)
        out[qt.name.lower()] = (qt, gguf.quants.quantize(w, qt))
    for qt, fields in RANDOM.items():
        block, size = gguf.GGML_QUANT_SIZES[qt]
        n = ROWS * COLS // block
        raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
        for at in fields:
            d = (rng.uniform(0.001, 0.05, size=n)).astype(np.float16)
            raw[:, at : at + 2] = d.view(np.uint8).reshape(n, 2)
        out[qt.name.lower()] = (qt, raw.reshape(ROWS, COLS // block * size))
    return out


def write(dir_):
    ts = tensors()
    writer = gguf.GGUFWriter(os.path.join(dir_, "blocks.gguf"), "weft-test")
    expected = {}
    for name, (qt, data) in ts.items():
        writer.add_tensor(name, data, raw_dtype=qt)
        expected[name] = np.ascontiguousarray(
            gguf.quants.dequantize(data, qt).astype(np.float32).reshape(ROWS, COLS)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    save_file(expected, os.path.join(dir_, "expected.safetensors"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true", help="regenerate and compare")
    args = p.parse_args()
    if not args.check:
        os.makedirs(OUT, exist_ok=True)
        write(OUT)
        return
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp)
        ok = True
        for f in ["blocks.gguf", "expected.safetensors"]:
            a = open(os.path.join(tmp, f), "rb").read()
            b = open(os.path.join(OUT, f), "rb").read()
            if a != b:
                print(f"{f} differs", file=sys.stderr)
                ok = False
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
