"""An independent judge for the default graph's grid: k-nearest neighbours on
raw pixels against MNIST's 60,000 training digits, sharing nothing with
weft's own classifier (no network, no training, no weft code).

    python scripts/knn_judge.py docs/mnist_flow_cfg.png ../shared/data/mnist

Reads the 10×10 grid (28-pixel tiles, 2-pixel padding, row r = digit r) and
prints how many tiles the 1-NN and 3-NN rules read as their row's digit. As a
sanity check it also scores the same rules on the first 1,000 MNIST test digits.
Needs numpy and Pillow.
"""
import gzip
import sys

import numpy as np
from PIL import Image


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def knn(train_x, train_y, queries, k):
    q = queries.astype(np.float32)
    t = train_x.astype(np.float32)
    d = (q * q).sum(1)[:, None] - 2 * q @ t.T + (t * t).sum(1)[None, :]
    nearest = np.argsort(d, axis=1)[:, :k]
    votes = train_y[nearest]
    return np.array([np.bincount(v, minlength=10).argmax() if k > 1 else v[0] for v in votes])


def main():
    grid_path, data_dir = sys.argv[1], sys.argv[2]
    train_x = idx(f"{data_dir}/train-images-idx3-ubyte.gz").reshape(-1, 784)
    train_y = idx(f"{data_dir}/train-labels-idx1-ubyte.gz").astype(np.int64)
    grid = np.asarray(Image.open(grid_path).convert("L"))
    tiles = np.stack(
        [grid[r * 30 : r * 30 + 28, c * 30 : c * 30 + 28].reshape(784) for r in range(10) for c in range(10)]
    )
    rows = np.repeat(np.arange(10), 10)
    test_x = idx(f"{data_dir}/t10k-images-idx3-ubyte.gz").reshape(-1, 784)[:1000]
    test_y = idx(f"{data_dir}/t10k-labels-idx1-ubyte.gz")[:1000]
    for k in (1, 3):
        grid_right = int((knn(train_x, train_y, tiles, k) == rows).sum())
        test_acc = float((knn(train_x, train_y, test_x, k) == test_y).mean()) * 100
        print(f"{k}-NN on raw pixels: {grid_right}/100 grid digits as requested; {test_acc:.1f} % on 1,000 MNIST test digits")


if __name__ == "__main__":
    main()
