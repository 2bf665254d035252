"""Write CIFAR-10's official archive out as JPEG files in an image-folder layout.

    python tools/cifar10_to_jpeg.py DIR [--out DIR/cifar10-jpg]

Reads `DIR/cifar-10-batches-py/` (where `torchvision.datasets.CIFAR10(DIR, download=True)`
extracts the archive; read with CNN Lens's restricted unpickler, so a planted file cannot run
code) and writes `DIR/cifar10-jpg/{train,test}/<class>/NNNN.jpg`: each class's images numbered
from 0000 in the archive's order (5,000 and 1,000 a class), saved by Pillow with its default
settings (quality 75, 4:2:0 chroma subsampling), the settings of the JPEG copy this project's
tests and shipped CIFAR-10 checkpoints use. The tests read the full CIFAR-10 in this layout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import PIL.Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import data
from dashboard.base.errors import DatasetUnavailableError


def write_jpeg_copy(root: Path, out: Path) -> dict[str, int]:
    """The archive under `root` as JPEG files in `out` (made whole, then renamed into place);
    returns the number of images written per split."""
    archive = root / "cifar-10-batches-py"
    if not archive.is_dir():
        raise SystemExit(f"{archive} not found: download CIFAR-10 there first (see --help)")
    if out.exists():
        raise SystemExit(f"{out} already exists: remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        written = {split: _write_split(root, split, staging / split) for split in ("train", "test")}
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written is left behind
        raise
    os.replace(staging, out)
    return written


def _write_split(root: Path, split: str, folder: Path) -> int:
    try:
        loaded = data.load_split("cifar10", split, data_root=root, download=False)
    except DatasetUnavailableError as err:
        raise SystemExit(str(err)) from None
    if not loaded.source.startswith("CIFAR-10, "):  # the JPEG copy or the sample stood in
        raise SystemExit(f"{root / 'cifar-10-batches-py'} lacks CIFAR-10's {split} batches")
    classes = loaded.info.classes
    for name in classes:
        (folder / name).mkdir(parents=True)
    counts = [0] * len(classes)
    pixels = loaded.images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) in archive order
    for image, label in zip(pixels, loaded.labels.tolist(), strict=True):
        path = folder / classes[label] / f"{counts[label]:04d}.jpg"
        PIL.Image.fromarray(image).save(path)  # Pillow's defaults: quality 75, 4:2:0
        counts[label] += 1
    return len(loaded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog='Download the archive with: python -c "import torchvision; '
        "torchvision.datasets.CIFAR10('DIR', download=True)\"",
    )
    parser.add_argument("root", type=Path, help="DIR holding cifar-10-batches-py/")
    parser.add_argument("--out", type=Path, help="where to write (default: DIR/cifar10-jpg)")
    args = parser.parse_args(argv)
    out = args.out or args.root / "cifar10-jpg"
    written = write_jpeg_copy(args.root, out)
    print(f"{out}: {written['train']:,} train and {written['test']:,} test images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
