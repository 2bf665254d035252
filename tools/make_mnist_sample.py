"""Write the bundled MNIST sample: the first 10,000 training images and all 10,000 test images.

Real gzip IDX files (the format torchvision downloads), written reproducibly (no file name,
mtime 0 in the gzip header), so regenerating them gives byte-identical files.

    python tools/make_mnist_sample.py [--source ../shared/datasets/MNIST/raw]
                                      [--out trained/data/mnist-sample] [--train-count 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.base import paths
from dashboard.data import find_idx, read_idx, write_idx

DEFAULT_SOURCE = paths.REPO_ROOT.parent / "shared" / "datasets" / "MNIST" / "raw"
TRAIN_COUNT = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="full MNIST raw/")
    parser.add_argument("--out", type=Path, default=paths.SAMPLE_DIR)
    parser.add_argument("--train-count", type=int, default=TRAIN_COUNT)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    plan = [  # (file stem, how many records to keep; None = all)
        ("train-images-idx3-ubyte", args.train_count),
        ("train-labels-idx1-ubyte", args.train_count),
        ("t10k-images-idx3-ubyte", None),
        ("t10k-labels-idx1-ubyte", None),
    ]
    for stem, keep in plan:
        found = find_idx(args.source, stem)
        if found is None:
            raise SystemExit(f"{stem} not found in {args.source}")
        data = read_idx(found)[:keep]
        target = args.out / f"{stem}.gz"
        write_idx(target, data.numpy())
        digest = hashlib.sha256(target.read_bytes()).hexdigest()[:16]
        print(f"{target}  {tuple(data.shape)}  {target.stat().st_size:,} bytes  sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
