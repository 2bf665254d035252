"""Write the bundled CIFAR-10 sample: 200 training and 100 test images of each class.

The images are drawn evenly from the JPEG copy of CIFAR-10 (`cifar10-jpg/{train,test}/<class>/`
with 5,000 and 1,000 files a class): every 25th training file and every 10th test file of each
class in file-name order, starting with the first. Their JPEG bytes are copied as they are (no
re-encoding) under their own names, so every file can be traced back to the full set, and
running the script again gives identical files. A README beside them says where they come from.

    python tools/make_cifar10_sample.py [--source ../shared/datasets/cifar10-jpg]
                                        [--out trained/data/cifar10-sample]
                                        [--train-per-class 200] [--test-per-class 100]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.base import paths
from dashboard.data import dataset_info

DEFAULT_SOURCE = paths.REPO_ROOT.parent / "shared" / "datasets" / "cifar10-jpg"
README = """\
# Bundled CIFAR-10 sample (JPEG copy)

{train:,} training images ({train_each} a class) and {test:,} test images ({test_each} a class) of
CIFAR-10, in ImageFolder layout: `train/<class>/NNNN.jpg`, `test/<class>/NNNN.jpg`. CNN Lens
reads them when the full CIFAR-10 is not under the data root, and its tests use them on a fresh
clone; every result computed on them says "bundled CIFAR-10 sample".

Origin: CIFAR-10 (A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009,
https://www.cs.toronto.edu/~kriz/cifar.html), through a JPEG re-encoding of it laid out as an
image folder (50,000 training and 10,000 test files, 5,000 and 1,000 a class), so pixels differ
slightly from the original pickled batches. The JPEG bytes here are copied from that folder
unchanged and keep their file names there.

License: the authors' page states no license; CIFAR-10 is shared from it for research and
teaching (torchvision downloads it from there), and users are asked to cite the report above.

How it was drawn (`python tools/make_cifar10_sample.py`): in each class, every
{train_step}th training file and every {test_step}th test file in file-name order, starting with
the first; no image was chosen by looking at it.

    train/<class>/  {train_names}
    test/<class>/   {test_names}

{files:,} files, {size:,} bytes; SHA-256 of their paths and bytes in order:
{digest}
"""


def _every_nth(folder: Path, keep: int) -> tuple[list[Path], int]:
    """`keep` files of a class folder evenly spaced in file-name order, and the step."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
    if len(files) < keep:
        raise SystemExit(f"{folder} holds {len(files)} JPEG files, fewer than {keep}")
    step = len(files) // keep
    return files[::step][:keep], step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="full cifar10-jpg/")
    parser.add_argument("--out", type=Path, default=paths.CIFAR10_SAMPLE_DIR)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)

    classes = dataset_info("cifar10").classes
    if args.out.exists():  # a clean rewrite: no file of an earlier draw may stay behind
        shutil.rmtree(args.out)
    digest = hashlib.sha256()
    files = size = 0
    steps, names = {}, {}
    for split, keep in (("train", args.train_per_class), ("test", args.test_per_class)):
        for name in classes:
            chosen, steps[split] = _every_nth(args.source / split / name, keep)
            names[split] = f"{chosen[0].name}, {chosen[1].name}, …, {chosen[-1].name}"
            target = args.out / split / name
            target.mkdir(parents=True)
            for path in chosen:
                content = path.read_bytes()
                (target / path.name).write_bytes(content)
                digest.update(f"{split}/{name}/{path.name}\0".encode() + content)
                files += 1
                size += len(content)
    (args.out / "README.md").write_text(
        README.format(
            train=args.train_per_class * len(classes),
            test=args.test_per_class * len(classes),
            train_each=args.train_per_class,
            test_each=args.test_per_class,
            train_step=steps["train"],
            test_step=steps["test"],
            train_names=names["train"],
            test_names=names["test"],
            files=files,
            size=size,
            digest=digest.hexdigest(),
        )
    )
    print(f"{args.out}: {files:,} files, {size:,} bytes, sha256 {digest.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
