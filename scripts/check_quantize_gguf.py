#!/usr/bin/env python3
"""Reads a GGUF written by `weft quantize` with gguf-py (llama.cpp's reader, which
ComfyUI-GGUF uses) and compares every tensor, dequantised by gguf-py, with the
safetensors file it came from.

    target/debug/weft quantize models/tests/fixtures/flux/dev_original.safetensors /tmp/q8.gguf --type q8_0
    /tmp/weft-sd-fixtures-venv/bin/python scripts/check_quantize_gguf.py /tmp/q8.gguf \
        models/tests/fixtures/flux/dev_original.safetensors
"""

import sys

import gguf
import numpy as np
from safetensors.numpy import load_file


def main(gguf_path: str, original_path: str) -> None:
    original = load_file(original_path)
    reader = gguf.GGUFReader(gguf_path)
    field = reader.fields["general.architecture"]
    print("general.architecture:", bytes(field.parts[field.data[0]]).decode())
    worst, types = 0.0, {}
    for t in reader.tensors:
        shape = tuple(reversed([int(x) for x in t.shape]))  # ggml lists dims innermost first
        values = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        expected = original[t.name].astype(np.float32)
        assert values.shape == expected.shape, (t.name, values.shape, expected.shape)
        scale = max(float(np.abs(expected).max()), 1e-6)
        worst = max(worst, float(np.abs(values - expected).max()) / scale)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    missing = set(original) - {t.name for t in reader.tensors}
    assert not missing, f"not in the GGUF: {sorted(missing)[:5]}"
    print(f"{len(reader.tensors)} tensors, {types}; worst error relative to each tensor's largest value: {worst:.5f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
