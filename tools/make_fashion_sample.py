"""Build ``nas/assets/fashion_mnist_sample.npz`` from Debian's Fashion-MNIST files.

The package ships this small, class-balanced sample so that the quickstart and the
tests run offline.  The output is byte-for-byte reproducible: a seeded numpy
``Generator`` picks the images and the zip entries carry a fixed timestamp, so
re-running the script on the same source files yields the same file (checked by
``--check``).

Usage::

    python tools/make_fashion_sample.py [--source /usr/share/datasets/fashion-mnist]
        [--train-per-class 200] [--test-per-class 100] [--seed 0]
        [--out nas/assets/fashion_mnist_sample.npz] [--check]

Source: Fashion-MNIST, (c) 2017 Zalando SE, MIT/Expat licence
(https://github.com/zalandoresearch/fashion-mnist), as packaged by Debian
(``dataset-fashion-mnist``).  See ``nas/assets/FASHION_MNIST_LICENSE.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.data import DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, read_idx  # noqa: E402

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # earliest zip timestamp: no build time in the file


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` images of every class, in a seeded random order."""
    perm = rng.permutation(labels.shape[0])
    chosen = []
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        if members.shape[0] < per_class:
            raise SystemExit(f"class {c} has only {members.shape[0]} images, need {per_class}")
        chosen.append(members[:per_class])
    picked = np.concatenate(chosen)
    # Interleave classes: order by position in the permutation.
    rank = np.empty_like(perm)
    rank[perm] = np.arange(perm.shape[0])
    return picked[np.argsort(rank[picked], kind="stable")]


def write_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed-compatible zip with fixed timestamps (reproducible bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, npy.getvalue(), compresslevel=9)
    return buf.getvalue()


def build(source: Path, train_per_class: int, test_per_class: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = read_idx(source / "train-images-idx3-ubyte.gz")
    y = read_idx(source / "train-labels-idx1-ubyte.gz")
    xt = read_idx(source / "t10k-images-idx3-ubyte.gz")
    yt = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    tr = balanced_subset(y, train_per_class, rng)
    te = balanced_subset(yt, test_per_class, rng)
    arrays = {
        "x": x[tr].astype(np.uint8),
        "y": y[tr].astype(np.int64),
        "x_test": xt[te].astype(np.uint8),
        "y_test": yt[te].astype(np.int64),
        "classes": np.array(FASHION_MNIST_CLASSES),
        "train_index": tr.astype(np.int64),  # provenance: rows of the original files
        "test_index": te.astype(np.int64),
    }
    return write_npz(arrays)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST)
    default_out = ROOT / "nas" / "assets" / "fashion_mnist_sample.npz"
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--train-per-class", type=int, default=200)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true",
                    help="rebuild in memory and compare with --out instead of writing")
    args = ap.parse_args(argv)
    data = build(args.source, args.train_per_class, args.test_per_class, args.seed)
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == data
        print(f"{args.out}: {'identical' if same else 'DIFFERS'} (rebuilt sha256 {digest})")
        return 0 if same else 1
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
