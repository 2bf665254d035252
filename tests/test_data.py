"""dashboard.data on real files: full MNIST, the bundled sample, the CIFAR-10 JPEG copy as an
image folder, torchvision downloads served from 127.0.0.1, the restricted unpickler, and the
batch helpers. Oracles: torchvision's own readers and PIL."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import shutil
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF

from dashboard import data
from dashboard.base import images, paths
from dashboard.base.errors import DatasetUnavailableError, UnknownNameError
from dashboard.data import files, folders
from dashboard.data import registry as data_registry
from tests.conftest import FULL_SETS

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")  # fmt: skip
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test decodes image folders into its own cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(paths.CACHE_ENV, str(cache))
    return cache


@pytest.fixture(scope="module")
def mnist_splits(shared_datasets: Path) -> dict[str, data.Split]:
    return {
        split: data.load_split("mnist", split, data_root=shared_datasets, download=False)
        for split in ("train", "test")
    }


# --------------------------------------------------------------------------- full MNIST


@pytest.mark.full_set("MNIST")
def test_full_mnist_shapes_labels_and_published_counts(
    mnist_splits: dict[str, data.Split], shared_datasets: Path
) -> None:
    train, test = mnist_splits["train"], mnist_splits["test"]
    assert train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    for split in (train, test):
        assert split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
        assert split.images.is_contiguous()
        assert not split.is_sample
    assert train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert test.labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert torch.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(test.labels).tolist() == MNIST_TEST_COUNTS
    raw = shared_datasets / "MNIST" / "raw"
    assert train.source == f"MNIST full set, 60,000 train images ({raw})"
    assert test.info.classes == tuple("0123456789")
    assert (train.info.channels, train.info.size, train.info.augment) == (1, 28, False)


def test_mnist_mean_std_recomputed(mnist_splits: dict[str, data.Split]) -> None:
    images = mnist_splits["train"].images
    mean, std = data.channel_stats(images)
    # oracle: exact integer sums of x and x² (channel_stats uses a histogram)
    n = images.numel()
    s1 = images.sum(dtype=torch.int64).item()
    s2 = sum((chunk.to(torch.int64) ** 2).sum().item() for chunk in images.split(10000))
    assert mean[0] == pytest.approx(s1 / n / 255, abs=1e-12)
    assert std[0] == pytest.approx((s2 / n - (s1 / n) ** 2) ** 0.5 / 255, abs=1e-12)
    info = data.dataset_info("mnist")
    if "MNIST" in FULL_SETS:  # the registry's constants are the full training set's
        assert (round(mean[0], 4), round(std[0], 4)) == (0.1307, 0.3081)
    assert (info.mean, info.std) == ((0.1307,), (0.3081,))


def test_mnist_pixels_equal_torchvision(
    mnist_splits: dict[str, data.Split], shared_datasets: Path
) -> None:
    for train, split in ((True, "train"), (False, "test")):
        reference = torchvision.datasets.MNIST(shared_datasets, train=train, download=False)
        ours = mnist_splits[split]
        assert len(ours) == len(reference)
        for i in (0, 1, 777, len(reference) - 1):
            image, label = reference[i]
            assert np.array_equal(np.asarray(image), ours.images[i, 0].numpy())
            assert label == int(ours.labels[i])


def test_registry_names_and_unknown_names() -> None:
    names = ["mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse"]
    assert data.dataset_names() == names
    with pytest.raises(UnknownNameError, match=r"mnist, fashion-mnist, cifar10.*folder:PATH"):
        data.dataset_info("imagenet")
    with pytest.raises(UnknownNameError, match="choose train or test"):
        data.load_split("mnist", "validation")
    assert data.dataset_info("CIFAR_10".replace("_1", "1")).title == "CIFAR-10"
    assert len(data.dataset_info("cifar100").classes) == 100
    assert data.dataset_info("cifar100-coarse").classes[:2] == ("aquatic_mammals", "fish")
    assert data.dataset_info("mnist", input_size=32).input_shape == (1, 32, 32)


def test_input_size_resizes_registry_sets(shared_datasets: Path) -> None:
    split = data.load_split("mnist", "test", data_root=shared_datasets, input_size=32)
    assert split.images.shape == (10000, 1, 32, 32)
    assert split.info.size == 32
    assert split.source.endswith("resized to 32×32")
    # oracle: PIL's antialiased bilinear resize of the same digit, within rounding
    original = data.read_idx(shared_datasets / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[3]
    pil = PIL.Image.fromarray(original.numpy()).resize((32, 32), PIL.Image.BILINEAR)
    diff = np.abs(np.asarray(pil, dtype=int) - split.images[3, 0].numpy().astype(int))
    assert diff.max() <= 1


# --------------------------------------------------------------------------- bundled sample


@pytest.mark.full_set("MNIST")
def test_bundled_sample_is_the_head_of_the_full_set(mnist_splits: dict[str, data.Split]) -> None:
    for split, count in (("train", 10000), ("test", 10000)):
        stem = data_registry._IDX_FILES[split][0]
        path = paths.SAMPLE_DIR / f"{stem}.gz"
        assert path.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0: reproducible bytes
        sample_images = data.read_idx(path)
        assert sample_images.shape == (count, 28, 28)
        assert torch.equal(sample_images, mnist_splits[split].images[:count, 0])
    labels = data.read_idx(paths.SAMPLE_DIR / "train-labels-idx1-ubyte.gz")
    assert torch.equal(labels.long(), mnist_splits["train"].labels[:10000])


def test_sample_stands_in_when_the_full_set_is_missing(
    tmp_path: Path, mnist_splits: dict[str, data.Split]
) -> None:
    train = data.load_split("mnist", "train", data_root=tmp_path, download=False)
    assert train.is_sample
    assert len(train) == 10000
    assert train.source == (
        "bundled MNIST sample: first 10,000 train images "
        f"(full set not found under {tmp_path / 'MNIST' / 'raw'}; download not attempted; "
        f"{paths.SHORT_DATA_ROOT_HINT})"
    )
    assert torch.equal(train.images, mnist_splits["train"].images[:10000])
    test = data.load_split("mnist", "test", data_root=tmp_path, download=False)
    assert test.is_sample
    assert torch.equal(test.labels, mnist_splits["test"].labels)


def test_cifar10_sample_stands_in_when_the_full_set_is_missing(tmp_path: Path) -> None:
    for split, per_class in (("train", 200), ("test", 100)):
        loaded = data.load_split("cifar10", split, data_root=tmp_path, download=False)
        assert loaded.is_sample
        assert loaded.info == data.dataset_info("cifar10")
        assert loaded.source == (
            f"bundled CIFAR-10 sample (JPEG copy): {10 * per_class:,} {split} images (full set "
            f"not found under {tmp_path / 'cifar-10-batches-py'} or {tmp_path / 'cifar10-jpg'}; "
            "download not attempted)"
        )
        # oracle: torchvision's ImageFolder reads the same files in the same order
        reference = torchvision.datasets.ImageFolder(paths.CIFAR10_SAMPLE_DIR / split)
        assert tuple(reference.classes) == CIFAR10_CLASSES
        assert loaded.labels.tolist() == reference.targets
        assert torch.bincount(loaded.labels).tolist() == [per_class] * 10
        for i in (0, 777, len(reference) - 1):
            image, _ = reference[i]
            assert np.array_equal(np.asarray(image).transpose(2, 0, 1), loaded.images[i].numpy())


# --------------------------------------------------------------------------- image folders


def _copy_cifar_subset(src: Path, dst: Path, per_class: int) -> None:
    """Copies the first `per_class` JPEGs of each class of `src` as 0000.jpg, 0001.jpg, … (the
    full set's are numbered 0000, 0001, …; the shipped sample's 0000, 0010, …). Copies, not
    links: a folder's links leading out of it are not followed."""
    for name in CIFAR10_CLASSES:
        (dst / name).mkdir(parents=True)
        for i, source in enumerate(sorted((src / name).glob("*.jpg"))[:per_class]):
            shutil.copyfile(source, dst / name / f"{i:04d}.jpg")


def _pil_rgb(path: Path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGB")).transpose(2, 0, 1)


@pytest.fixture
def cifar_folder(tmp_path: Path, shared_datasets: Path) -> Path:
    """20 CIFAR-10 JPEGs per class (copies), plus a truncated JPEG and a text file named .png
    in cat/, plus a README that is not an image at all."""
    root = tmp_path / "pets"
    _copy_cifar_subset(shared_datasets / "cifar10-jpg" / "test", root, 20)
    jpeg = (shared_datasets / "cifar10-jpg" / "test" / "cat" / "0100.jpg").read_bytes()
    (root / "cat" / "zz_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "cat" / "zz_not_an_image.png").write_text("hello")
    (root / "README.txt").write_text("not a class")
    return root


def test_folder_dataset_classes_counts_split_and_pixels(cifar_folder: Path) -> None:
    name = f"folder:{cifar_folder}"
    train = data.load_split(name, "train")
    test = data.load_split(name, "test")
    assert train.info == test.info == data.dataset_info(name)
    info = train.info
    assert info.name == name
    assert info.classes == CIFAR10_CLASSES
    assert (info.channels, info.size, info.augment) == (3, 32, True)
    # every 5th file of a class (sorted) is test: 4 per class; cat's two bad files sort last
    # at positions 20 and 21, both train, and are skipped
    assert torch.bincount(test.labels).tolist() == [4] * 10
    assert torch.bincount(train.labels).tolist() == [16] * 10
    assert (train.skipped, test.skipped) == (2, 0)
    assert train.source.endswith(
        f"160 train images ({cifar_folder}), 2 unreadable files skipped (cat/zz_not_an_image.png "
        "is not an image in a format read here (PNG, JPEG, GIF, BMP, TIFF, WebP or PPM); "
        "cat/zz_truncated.jpg could not be decoded (Truncated File Read))"
    )
    cat = CIFAR10_CLASSES.index("cat")
    test_cats = test.images[test.labels == cat]
    for k, i in enumerate((4, 9, 14, 19)):  # oracle: PIL decodes the same files
        assert np.array_equal(test_cats[k].numpy(), _pil_rgb(cifar_folder / "cat" / f"{i:04d}.jpg"))
    train_cats = train.images[train.labels == cat]
    assert np.array_equal(train_cats[4].numpy(), _pil_rgb(cifar_folder / "cat" / "0005.jpg"))
    # normalization computed on the train split
    pixels = train.images.numpy().astype(np.float64) / 255
    assert info.mean == pytest.approx(tuple(pixels.mean(axis=(0, 2, 3))), abs=1e-12)
    assert info.std == pytest.approx(tuple(pixels.std(axis=(0, 2, 3))), abs=1e-12)


def test_folder_cache_hit_and_invalidation(
    cifar_folder: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch, shared_datasets: Path
) -> None:
    name = f"folder:{cifar_folder}"
    first = data.load_split(name, "test")
    cached = sorted((private_cache / "derived" / "folders").glob("*.safetensors"))
    assert len(cached) == 2  # train (needed for normalization) and test

    def no_decoding(paths: list[str], *_) -> None:
        raise AssertionError(f"decoded {paths[0]}… although the cache is fresh")

    with monkeypatch.context() as m:
        m.setattr(images, "decode_files", no_decoding)
        again = data.load_split(name, "test")
    assert torch.equal(again.images, first.images)
    assert torch.equal(again.labels, first.labels)
    assert again.info == first.info

    # replace dog/0004.jpg (a test image) by a copy of a different picture: new key, new pixels
    target = cifar_folder / "dog" / "0004.jpg"
    replacement = shared_datasets / "cifar10-jpg" / "test" / "dog" / "0500.jpg"
    target.unlink()
    shutil.copyfile(replacement, target)
    changed = data.load_split(name, "test")
    dog = CIFAR10_CLASSES.index("dog")
    assert np.array_equal(changed.images[changed.labels == dog][0].numpy(), _pil_rgb(replacement))
    assert not torch.equal(changed.images, first.images)
    assert len(list((private_cache / "derived" / "folders").glob("*.safetensors"))) == 2


def test_folder_with_train_test_dirs_grayscale_and_resizing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    originals: dict[str, list[np.ndarray]] = {}
    for split, count in (("train", 3), ("test", 2)):
        for name in ("circle", "square"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40 + i, 50), dtype=np.uint8)
                PIL.Image.fromarray(pixels, mode="L").save(root / split / name / f"{i}.png")
                originals.setdefault(split, []).append(pixels)
    test = data.load_split(f"folder:{root}", "test", input_size=16)
    assert test.info.classes == ("circle", "square")
    assert (test.info.channels, test.info.size, test.info.augment) == (1, 16, False)
    assert test.images.shape == (4, 1, 16, 16)
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert test.source.endswith(f"4 test images ({root / 'test'})")
    for ours, pixels in zip(test.images, originals["test"], strict=True):
        pil = PIL.Image.fromarray(pixels).resize((16, 16), PIL.Image.BILINEAR)
        assert np.abs(np.asarray(pil, dtype=int) - ours[0].numpy().astype(int)).max() <= 1


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        data.load_split(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailableError, match="at least two class subfolders"):
        data.dataset_info(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "one" / "cats").mkdir(parents=True)
    with pytest.raises(DatasetUnavailableError, match=r"\(found 1\)"):
        data.load_split(f"folder:{tmp_path / 'one'}")
    for name in ("a", "b"):
        (tmp_path / "broken" / name).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "broken" / name / f"{i}.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DatasetUnavailableError, match=r"no readable train images.*8 unreadable"):
        data.load_split(f"folder:{tmp_path / 'broken'}", "train")
    with pytest.raises(UnknownNameError, match="needs a path"):
        data.load_split("folder:")


def _pngs(folder: Path, count: int, first: int = 0) -> None:
    """`count` real 12×12 RGB PNGs, each a different flat colour."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + count):
        PIL.Image.new("RGB", (12, 12), (i * 20 % 256, 90, 200)).save(folder / f"{i:02d}.png")


def test_an_animated_gif_gives_its_first_frame_and_one_named_png_is_skipped(
    tmp_path: Path,
) -> None:
    root = tmp_path / "anim"
    _pngs(root / "a", 5)
    _pngs(root / "b", 5)
    first = PIL.Image.new("RGB", (12, 12), (250, 10, 10))
    second = PIL.Image.new("RGB", (12, 12), (10, 10, 250))
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=[second], duration=50, loop=0)
    (root / "a" / "05.gif").write_bytes(buffer.getvalue())
    (root / "b" / "05.png").write_bytes(buffer.getvalue())  # a GIF named .png
    train = data.load_split(f"folder:{root}", "train", input_size=12)
    a_images = train.images[train.labels == 0]
    assert a_images.shape == (5, 3, 12, 12)  # 00–03 and the GIF; 04 is test
    assert a_images[-1, :, 0, 0].tolist() == [250, 10, 10]  # the first frame
    assert (len(train), train.skipped) == (9, 1)
    assert train.source.endswith(
        "1 unreadable files skipped (b/05.png is a GIF image named .png: rename it .gif)"
    )


def test_an_empty_class_folder_is_a_class_with_a_note(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _pngs(root / "cat", 6)
    _pngs(root / "dog", 6)
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    train = data.load_split(f"folder:{root}", "train")
    assert train.info.classes == ("cat", "dog", "empty")  # a class: the model has 3 outputs
    note = "class folder empty has no train images but still counts as a class"
    assert train.notes == (note,)
    assert train.source.endswith(f"10 train images ({root}), {note}")


def test_symbolic_links_never_lead_out_of_a_class_folder(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _pngs(root / "cat", 5)
    _pngs(root / "cat" / "kittens", 5, first=5)  # a real subfolder: its images are cats
    _pngs(root / "dog", 5)
    outside = tmp_path / "elsewhere"
    _pngs(outside, 5, first=10)
    alone = data.load_split(f"folder:{root}", "train")
    assert torch.bincount(alone.labels).tolist() == [8, 4]
    (root / "cat" / "loop").symlink_to("..")  # the report's case: back up to the root
    (root / "cat" / "dogs").symlink_to(root / "dog")  # into another class
    (root / "cat" / "again").symlink_to(root / "cat" / "kittens")  # a folder listed already
    (root / "dog" / "far").symlink_to(outside)  # out of the dataset
    (root / "dog" / "10.png").symlink_to(outside / "10.png")  # one file out of it
    (root / "cat" / "twin.png").symlink_to(root / "cat" / "00.png")  # inside: followed
    linked = data.load_split(f"folder:{root}", "train")
    assert torch.bincount(linked.labels).tolist() == [9, 4]  # only the twin is new
    note = "5 symbolic links not followed (they lead out of their folder or into a loop)"
    assert linked.notes == (note,)
    assert linked.source.endswith(note)

    split = tmp_path / "split"  # train/ and test/: a test class linked to its train images
    _pngs(split / "train" / "cat", 3)
    _pngs(split / "train" / "dog", 3)
    _pngs(split / "test" / "cat", 2)
    (split / "test" / "dog").symlink_to(split / "train" / "dog")
    test = data.load_split(f"folder:{split}", "test")
    assert test.labels.tolist() == [0, 0]  # no train dog in the test split
    assert test.notes == (
        "1 symbolic link not followed (they lead out of their folder or into a loop)",
        "class folder dog has no test images but still counts as a class",
    )


def test_a_file_a_system_folder_or_the_root_given_as_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picture = tmp_path / "cat.png"
    PIL.Image.new("RGB", (4, 4)).save(picture)
    with pytest.raises(DatasetUnavailableError) as refused:
        data.load_split(f"folder:{picture}")
    assert str(refused.value) == (
        f"image folder {picture} is a file: give the folder that holds one subfolder per class"
    )
    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # a link to itself: resolving it never ends
    with pytest.raises(DatasetUnavailableError) as refused:
        data.load_split(f"folder:{loop}")
    assert str(refused.value).startswith(f"image folder {loop} cannot be opened (")

    def no_listing(*_) -> None:
        raise AssertionError("a system folder was listed")

    monkeypatch.setattr(folders._Walk, "scandir", no_listing)
    for typed, refusal in (
        ("/", "image folder / is the root of the file system: give the folder that holds one "
         "subfolder per class"),
        ("/proc", "image folder /proc is in /proc, a system folder, not a folder of images"),
        ("/sys/class", "image folder /sys/class is in /sys, a system folder, not a folder of "
         "images"),
    ):  # fmt: skip
        with pytest.raises(DatasetUnavailableError) as refused:
            data.dataset_info(f"folder:{typed}")
        assert str(refused.value) == refusal


def test_listing_stops_past_its_limit_and_never_opens_a_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pets"
    _pngs(root / "cat", 30)
    _pngs(root / "dog", 30)
    os.mkfifo(root / "dog" / "99.png")  # opening it would wait for a writer forever
    train = data.load_split(f"folder:{root}", "train")
    assert (len(train), train.skipped) == (48, 0)
    assert train.notes == ("1 image name on a pipe, device or socket not read",)
    monkeypatch.setattr(folders, "MAX_SCAN_ENTRIES", 40)
    with pytest.raises(DatasetUnavailableError) as stopped:
        data.load_split(f"folder:{root}", "train")
    assert str(stopped.value).startswith(f"image folder {root}: listing stopped after 61 entries")
    assert str(stopped.value).endswith("give the folder that holds one subfolder per class")


def test_cifar10_name_uses_the_jpeg_copy(tmp_path: Path, shared_datasets: Path) -> None:
    for split in ("train", "test"):
        _copy_cifar_subset(
            shared_datasets / "cifar10-jpg" / split, tmp_path / "cifar10-jpg" / split, 3
        )
    split = data.load_split("cifar10", "test", data_root=tmp_path, download=False)
    jpg = tmp_path / "cifar10-jpg" / "test"
    assert split.source == f"CIFAR-10 (JPEG copy), 30 test images ({jpg})"
    assert split.info == data.dataset_info("cifar10")
    assert split.info.mean == (0.4914, 0.4822, 0.4465)
    assert split.labels.tolist() == [i // 3 for i in range(30)]
    assert np.array_equal(split.images[4].numpy(), _pil_rgb(jpg / "automobile" / "0001.jpg"))


def test_cifar10_jpeg_test_split_equals_torchvisions_image_folder(shared_datasets: Path) -> None:
    split = data.load_split("cifar10", "test", data_root=shared_datasets, download=False)
    reference = torchvision.datasets.ImageFolder(shared_datasets / "cifar10-jpg" / "test")
    n = len(reference)  # 10,000; 1,000 in the shipped sample
    assert split.images.shape == (n, 3, 32, 32)
    assert torch.bincount(split.labels).tolist() == np.bincount(reference.targets).tolist()
    assert torch.bincount(split.labels).tolist() == [n // 10] * 10
    assert split.source.startswith(f"CIFAR-10 (JPEG copy), {n:,} test images")
    assert tuple(reference.classes) == split.info.classes
    for i in (0, n * 43 // 100, n - 1):
        image, label = reference[i]
        assert np.array_equal(np.asarray(image).transpose(2, 0, 1), split.images[i].numpy())
        assert label == int(split.labels[i])


def test_a_split_for_a_224_px_model_keeps_the_stored_images_and_resizes_when_read(
    shared_datasets: Path,
) -> None:
    stored = data.load_split("cifar10", "test", data_root=shared_datasets, download=False)
    big = data.load_split(
        "cifar10", "test", data_root=shared_datasets, download=False, input_size=224
    )
    # Memory: the 32-px images (31 MB), not 10,000 × 3 × 224 × 224 (1.5 GB).
    n = len(stored)
    assert big.images.nbytes == stored.images.nbytes == n * 3 * 32 * 32
    assert isinstance(big.images, data.ResizedImages)
    assert big.images.shape == (n, 3, 224, 224)
    assert len(big) == n
    assert big.info.input_shape == (3, 224, 224)
    assert big.source.endswith("resized to 224×224")
    # Reads equal resizing the whole split up front (the same filter per image).
    up_front = TF.resize(stored.images[:24], [224, 224], antialias=True)
    assert torch.equal(big.images[:24], up_front)
    assert torch.equal(big.images[7], up_front[7])
    assert torch.equal(big.images[torch.tensor([20, 3])], up_front[[20, 3]])
    assert torch.equal(big.images[5, 2, 100:110], up_front[5, 2, 100:110])
    # oracle: PIL's antialiased bilinear resize of the same photo, within rounding
    pil = PIL.Image.fromarray(stored.images[9].permute(1, 2, 0).numpy()).resize(
        (224, 224), PIL.Image.BILINEAR
    )
    diff = np.asarray(pil, dtype=int).transpose(2, 0, 1) - big.images[9].numpy().astype(int)
    assert np.abs(diff).max() <= 1
    # Slices of the split stay small; batches come out resized and normalized.
    head = data.take_first(big, 24)
    assert head.images.nbytes == 24 * 3 * 32 * 32
    assert head.labels.tolist() == stored.labels[:24].tolist()
    picked = data.subset(big, torch.tensor([20, 3, 11]))
    assert picked.images.nbytes == 3 * 3 * 32 * 32
    assert torch.equal(picked.images[:], up_front[[20, 3, 11]])
    batches = list(data.iterate_batches(head, 10, shuffle=False))
    assert [tuple(x.shape) for x, _ in batches] == [(10, 3, 224, 224)] * 2 + [(4, 3, 224, 224)]
    expected = data.normalize(up_front, big.info.mean, big.info.std)
    torch.testing.assert_close(torch.cat([x for x, _ in batches]), expected, rtol=0, atol=0)
    order = torch.Generator().manual_seed(0)
    shuffled = list(data.iterate_batches(head, 8, shuffle=True, generator=order))
    x = torch.cat([x for x, _ in shuffled])
    y = torch.cat([y for _, y in shuffled])
    again = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, expected[again], rtol=0, atol=0)
    assert y.tolist() == head.labels[again].tolist()


# --------------------------------------------------------------------------- downloads


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a temporary folder."""
    www = tmp_path_factory.mktemp("www")
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_url() -> str:
    """A local address where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_fashion_mnist_downloads_through_torchvision(
    tmp_path: Path,
    http_server: tuple[Path, str],
    shared_datasets: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    www, base = http_server
    (www / "fashion").mkdir()
    raw = shared_datasets / "MNIST" / "raw"
    resources = []
    for stem, count in (("train-images-idx3-ubyte", 16), ("train-labels-idx1-ubyte", 16),
                        ("t10k-images-idx3-ubyte", 8), ("t10k-labels-idx1-ubyte", 8)):  # fmt: skip
        target = www / "fashion" / f"{stem}.gz"
        data.write_idx(target, data.read_idx(raw / stem)[:count])
        resources.append((target.name, _md5(target)))
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [f"{base}/fashion/"])
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "resources", resources)

    root = tmp_path / "data"
    split = data.load_split("fashion-mnist", "train", data_root=root, download=True)
    assert split.images.shape == (16, 1, 28, 28)
    assert split.source == (
        f"Fashion-MNIST, 16 train images (downloaded now to {root / 'FashionMNIST' / 'raw'})"
    )
    reference = torchvision.datasets.FashionMNIST(root, train=True, download=False)
    assert torch.equal(split.images[:, 0], reference.data)
    assert torch.equal(split.labels, reference.targets)
    assert split.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # MNIST's bytes were served
    assert split.info.classes[0] == "T-shirt/top"
    again = data.load_split("fashion-mnist", "test", data_root=root, download=True)
    assert "downloaded now" not in again.source
    assert len(again) == 8


def test_offline_download_names_missing_files(
    tmp_path: Path, closed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [closed_url])
    with pytest.raises(DatasetUnavailableError) as caught:
        data.load_split("fashion-mnist", "test", data_root=tmp_path, download=True)
    message = str(caught.value)
    assert "missing t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert f"from {closed_url}" in message
    assert "download failed" in message
    assert "\n" not in message

    monkeypatch.setattr(torchvision.datasets.CIFAR100, "url", closed_url + "c100.tar.gz")
    with pytest.raises(DatasetUnavailableError, match=r"missing train, meta in .*cifar-100-python"):
        data.load_split("cifar100", "train", data_root=tmp_path, download=True)

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [closed_url])
    fallback = data.load_split("mnist", "test", data_root=tmp_path, download=True)
    assert fallback.is_sample
    assert "download failed" in fallback.source


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Writes pickles the way CIFAR's Python 2 files are: strings as BINSTRING (read back with
    encoding="latin1") and numpy's reconstructor under its old module name."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_binstring(self, obj: str | bytes) -> None:
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_binstring
    dispatch[bytes] = save_binstring

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is files._np_reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _write_py2_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _cifar_archive(www: Path, folder: str, batches: dict[str, dict], meta: tuple[str, dict]):
    """A real cifar-*-python.tar.gz in `www`; returns (archive name, md5, member md5s)."""
    staging = www / "staging" / folder
    staging.mkdir(parents=True)
    for filename, entry in {**batches, meta[0]: meta[1]}.items():
        _write_py2_pickle(staging / filename, entry)
    archive = www / f"{folder}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname=folder)
    members = {f: _md5(staging / f) for f in [*batches, meta[0]]}
    shutil.rmtree(www / "staging")
    return archive.name, _md5(archive), members


def test_cifar10_and_cifar100_download_and_restricted_unpickling(
    tmp_path: Path, http_server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    www, base = http_server
    rng = np.random.default_rng(7)

    def batch(n: int, **labels: list[int]) -> dict:
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        names = [f"img_{i}.png" for i in range(n)]
        return {"batch_label": "test batch", "data": pixels, "filenames": names, **labels}

    # CIFAR-10: five train batches of 2 images, a test batch of 3
    c10 = {f"data_batch_{i}": batch(2, labels=[i, 9 - i]) for i in range(1, 6)}
    c10["test_batch"] = batch(3, labels=[3, 1, 4])
    c10_meta = ("batches.meta", {"label_names": list(CIFAR10_CLASSES), "num_vis": 3072})
    name, md5, members = _cifar_archive(www, "cifar-10-batches-py", c10, c10_meta)
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "url", f"{base}/{name}")
    monkeypatch.setattr(cls, "tgz_md5", md5)
    train_list = [[f"data_batch_{i}", members[f"data_batch_{i}"]] for i in range(1, 6)]
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", [["test_batch", members["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": members["batches.meta"]})

    root = tmp_path / "data"
    train = data.load_split("cifar10", "train", data_root=root, download=True)
    assert train.images.shape == (10, 3, 32, 32)
    assert train.labels.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    assert train.source.startswith("CIFAR-10, 10 train images (downloaded now to ")
    reference = torchvision.datasets.CIFAR10(root, train=True, download=False)  # oracle
    assert np.array_equal(train.images.permute(0, 2, 3, 1).numpy(), reference.data)
    expected = c10["data_batch_1"]["data"][1].reshape(3, 32, 32)  # planes R, G, B
    assert np.array_equal(train.images[1].numpy(), expected)

    # CIFAR-100: fine and coarse labels from the same files
    fine_names = list(data.dataset_info("cifar100").classes)
    coarse_names = list(data.dataset_info("cifar100-coarse").classes)
    c100 = {
        "train": batch(4, fine_labels=[0, 99, 30, 55], coarse_labels=[4, 19, 0, 0]),
        "test": batch(2, fine_labels=[58, 95], coarse_labels=[18, 0]),
    }
    c100_meta = ("meta", {"fine_label_names": fine_names, "coarse_label_names": coarse_names})
    name, md5, members = _cifar_archive(www, "cifar-100-python", c100, c100_meta)
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "url", f"{base}/{name}")
    monkeypatch.setattr(cls, "tgz_md5", md5)
    monkeypatch.setattr(cls, "train_list", [["train", members["train"]]])
    monkeypatch.setattr(cls, "test_list", [["test", members["test"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": members["meta"]})

    coarse = data.load_split("cifar100-coarse", "train", data_root=root, download=True)
    assert coarse.labels.tolist() == [4, 19, 0, 0]
    assert coarse.info.classes[19] == "vehicles_2"
    assert len(coarse.info.classes) == 20
    fine = data.load_split("cifar100", "test", data_root=root, download=True)
    assert fine.labels.tolist() == [58, 95]
    assert fine.info.classes[58] == "pickup_truck"
    fine_train = data.load_split("cifar100", "train", data_root=root)
    assert torch.equal(coarse.images, fine_train.images)
    assert fine_train.labels.tolist() == [0, 99, 30, 55]
    reference = torchvision.datasets.CIFAR100(root, train=False, download=False)
    assert reference.targets == fine.labels.tolist()

    # a planted batch that would run a command is refused before anything runs
    marker = tmp_path / "pwned"
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps(_RunsCommand(f"touch {marker}"))
    )
    with pytest.raises(DatasetUnavailableError, match=r"refused to load (posix|os)\.system"):
        data.load_split("cifar10", "test", data_root=root, download=False)
    assert not marker.exists()


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({"data": _RunsCommand(f"touch {marker}")}))
    with pytest.raises(DatasetUnavailableError, match="refused to load"):
        data.safe_unpickle(evil)
    assert not marker.exists()
    evil.write_bytes(pickle.dumps(eval))
    with pytest.raises(DatasetUnavailableError, match=r"builtins\.eval"):
        data.safe_unpickle(evil)
    arrays = tmp_path / "arrays"
    _write_py2_pickle(arrays, {"data": np.arange(6, dtype=np.uint8).reshape(2, 3)})
    assert np.array_equal(data.safe_unpickle(arrays)["data"], [[0, 1, 2], [3, 4, 5]])


# --------------------------------------------------------------------------- batch helpers


def _toy_split(n: int = 10, channels: int = 3, size: int = 8) -> data.Split:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), generator=generator).to(torch.uint8)
    info = data.DatasetInfo(
        name="toy",
        title="Toy",
        classes=tuple("abcdefghij"),
        channels=channels,
        size=size,
        mean=(0.5, 0.4, 0.3)[:channels],
        std=(0.2, 0.25, 0.3)[:channels],
        augment=True,
        description="random pixels",
    )
    return data.Split(info, "train", images, torch.arange(n), "toy", False)


def test_normalize_is_the_textbook_formula() -> None:
    split = _toy_split()
    x = data.normalize(split.images, split.info.mean, split.info.std)
    mean = torch.tensor(split.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(split.info.std).view(1, 3, 1, 1)
    assert x.dtype == torch.float32
    assert torch.equal(x, (split.images.float() / 255 - mean) / std)
    one = data.normalize(split.images[:, :1], (0.1307,), (0.3081,))
    assert torch.equal(one, (split.images[:, :1].float() / 255 - 0.1307) / 0.3081)
    assert data.normalize(torch.tensor([[[255]]], dtype=torch.uint8), [0.5], [0.5]).item() == 1.0


def test_augment_batch_crops_and_flips_like_the_per_image_recipe() -> None:
    images = _toy_split(n=64).images
    out = data.augment_batch(images, torch.Generator().manual_seed(3))
    assert out.shape == images.shape
    assert out.dtype == torch.uint8
    again = data.augment_batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    assert not torch.equal(out, data.augment_batch(images, torch.Generator().manual_seed(4)))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flips, offsets = 0, set()
    for i in range(len(images)):  # oracle: search every crop of the padded image, both ways
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.equal(
                out[i],
                padded[i, :, dy : dy + 8, dx : dx + 8].flip(-1)
                if flip
                else padded[i, :, dy : dy + 8, dx : dx + 8],
            )
        ]
        assert len(matches) == 1
        flips += matches[0][2]
        offsets.add(matches[0][:2])
    assert 16 < flips < 48
    assert len(offsets) > 30
    plain = data.augment_batch(images, torch.Generator().manual_seed(5), padding=0)
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(plain, images, strict=True)]
    unchanged = [torch.equal(a, b) for a, b in zip(plain, images, strict=True)]
    assert all(m != u for m, u in zip(mirrored, unchanged, strict=True))
    assert 0 < sum(mirrored) < len(images)


def test_iterate_batches_covers_every_index_once() -> None:
    split = _toy_split(n=10)
    batches = list(data.iterate_batches(split, 4, shuffle=False))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
    mean, std = split.info.mean, split.info.std
    assert torch.equal(batches[1][0], data.normalize(split.images[4:8], mean, std))
    shuffled = list(
        data.iterate_batches(split, 3, shuffle=True, generator=torch.Generator().manual_seed(1))
    )
    order = torch.cat([y for _, y in shuffled])
    assert sorted(order.tolist()) == list(range(10))
    assert order.tolist() != list(range(10))
    assert order.tolist() == torch.randperm(10, generator=torch.Generator().manual_seed(1)).tolist()
    for x, y in shuffled:  # images travel with their labels
        assert torch.equal(x, data.normalize(split.images[y], mean, std))
    seeded = torch.Generator().manual_seed(2)
    augmented = list(data.iterate_batches(split, 10, shuffle=False, augment=True, generator=seeded))
    expected = data.augment_batch(split.images, torch.Generator().manual_seed(2))
    assert torch.equal(augmented[0][0], data.normalize(expected, mean, std))
    assert not torch.equal(expected, split.images)


def test_preprocess_pil_matches_pil_conversions() -> None:
    rng = np.random.default_rng(1)
    rgba = PIL.Image.fromarray(rng.integers(0, 256, (28, 28, 4), dtype=np.uint8), mode="RGBA")
    mnist = data.dataset_info("mnist")
    gray = data.preprocess_pil(rgba, mnist)
    assert gray.shape == (1, 28, 28)
    assert gray.dtype == torch.uint8
    assert np.array_equal(gray[0].numpy(), np.asarray(rgba.convert("RGB").convert("L")))
    photo = PIL.Image.fromarray(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8))
    x = data.preprocess_pil(photo, data.dataset_info("cifar10"))
    assert x.shape == (3, 32, 32)
    pil = np.asarray(photo.resize((32, 32), PIL.Image.BILINEAR)).transpose(2, 0, 1)
    assert np.abs(pil.astype(int) - x.numpy().astype(int)).max() <= 1
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    from_file = data.preprocess_pil(PIL.Image.open(buffer), data.dataset_info("cifar10"))
    assert torch.equal(from_file, x)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">iii", 5, 28, 28) + b"\x00" * 10)
    with pytest.raises(DatasetUnavailableError, match="truncated"):
        data.read_idx(bad)
    bad.write_bytes(b"PK\x03\x04")
    with pytest.raises(DatasetUnavailableError, match="bad magic"):
        data.read_idx(bad)
    broken_gz = tmp_path / "x.gz"
    broken_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])
    with pytest.raises(DatasetUnavailableError, match="cannot read"):
        data.read_idx(broken_gz)
