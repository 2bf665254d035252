"""The image gate and the folder decoding workers, on real files: the 69-byte PNG of the
security report, every allowed format as Pillow writes it, files whose content is not their
name, an EPS file that must never reach Ghostscript, and worker processes whose decoder
really crashes (SIGSEGV) or hangs."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.EpsImagePlugin
import PIL.Image
import pytest

from dashboard import data
from dashboard.analysis import inputs
from dashboard.base import images, paths
from dashboard.base.errors import LensError
from dashboard.base.images import ImageRefusedError


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def short_png(width: int, height: int) -> bytes:
    """8-bit gray PNG whose one IDAT holds 100 zero bytes: far too few rows for its size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + png_chunk(b"IEND", b"")
    )


REPORTED_PNG = short_png(40_000, 40_000)  # the security report's file: 69 bytes


def encode(image: PIL.Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgb(raw: bytes, name: str) -> np.ndarray:
    """Through the gate → (H, W, 3) uint8, as the folder workers decode."""
    return np.asarray(images.to_rgb(images.decode(raw, name)))


def photo(width: int = 53, height: int = 37, mode: str = "RGB") -> PIL.Image.Image:
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
    return PIL.Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


def write_pngs(folder: Path, count: int) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        image = photo(20 + i, 20, "RGB")
        image.save(folder / f"{i:02d}.png")
        written.append(np.asarray(image))
    return written


# --------------------------------------------------------------------------- the gate


def test_the_69_byte_png_of_the_report_is_refused_by_its_header() -> None:
    assert len(REPORTED_PNG) == 69
    with pytest.raises(ImageRefusedError) as refused:
        images.decode(REPORTED_PNG, "bomb.png")
    assert str(refused.value) == "bomb.png claims to be 1,600,000,000 pixels: refused as too large"
    header = images.check(short_png(6_000, 6_000), "fits.png")  # 36 megapixels: allowed
    assert header == images.Header("PNG", 6_000, 6_000)
    with pytest.raises(ImageRefusedError, match=r"6,000×7,000 pixels; images up to 40 mega"):
        images.decode(short_png(6_000, 7_000), "big.png")


ALLOWED = [
    ("PNG", "x.png", {}),
    ("JPEG", "x.jpg", {"quality": 90}),
    ("JPEG", "x.jpeg", {"progressive": True}),
    ("GIF", "x.gif", {}),
    ("BMP", "x.bmp", {}),
    ("TIFF", "x.tif", {}),
    ("TIFF", "x.tiff", {"compression": "tiff_lzw", "big_tiff": True}),
    ("WEBP", "x.webp", {"quality": 80}),
    ("WEBP", "x.webp", {"lossless": True}),
    ("PPM", "x.ppm", {}),
]


@pytest.mark.parametrize(("fmt", "name", "options"), ALLOWED)
def test_every_allowed_format_has_its_header_read_and_decodes_as_pillow_does(
    fmt: str, name: str, options: dict
) -> None:
    raw = encode(photo(), fmt, **options)
    header = images.check(raw, name)
    assert (header.format, header.width, header.height) == (fmt, 53, 37)
    with PIL.Image.open(io.BytesIO(raw)) as oracle:  # Pillow, left to itself
        expected = np.asarray(oracle.convert("RGB"))
    assert np.array_equal(rgb(raw, name), expected)


def test_odd_headers_of_allowed_formats() -> None:
    rgba_webp = encode(photo(mode="RGBA"), "WEBP")  # the extended (VP8X) header
    assert rgba_webp[12:16] == b"VP8X"
    assert images.check(rgba_webp, "a.webp")[1:3] == (53, 37)
    pgm = b"P5\n# a comment between the magic and the size\n53 37\n255\n" + bytes(53 * 37)
    assert images.check(pgm, "a.pgm")[:3] == ("PPM", 53, 37)
    bilevel = encode(photo(mode="L").convert("1"), "PPM")
    assert images.check(bilevel, "a.pbm")[:3] == ("PPM", 53, 37)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    rotated = encode(photo(), "JPEG", exif=exif.tobytes())
    assert images.check(rotated, "a.jpg").plain_jpeg == ""  # EXIF: Pillow's full path
    assert images.check(encode(photo(), "JPEG"), "a.jpg").plain_jpeg == "RGB"
    assert rgb(rotated, "a.jpg").shape == (53, 37, 3)  # turned upright


def test_a_file_that_is_not_what_its_name_says_is_refused_in_one_line() -> None:
    gif = encode(photo(), "GIF")
    jpeg = encode(photo(), "JPEG")
    cases = {
        ("anim.png", gif): "anim.png is a GIF image named .png: rename it .gif",
        ("photo.png", jpeg): "photo.png is a JPEG image named .png: rename it .jpg",
        ("doc.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"): "doc.png is a PDF document, not an image",
        ("notes.png", b"just some text\n" * 10): "notes.png is not an image in a format read",
        ("empty.jpg", b""): "empty.jpg is empty",
        ("cut.jpg", jpeg[:40]): "cut.jpg could not be decoded (its JPEG header is damaged)",
    }
    for (name, raw), expected in cases.items():
        with pytest.raises(ImageRefusedError) as refused:
            images.decode(raw, name)
        assert str(refused.value).startswith(expected), name
        assert "\n" not in str(refused.value)
    assert images.decode(gif, "anim.gif").size == (53, 37)  # the same bytes, rightly named
    assert images.decode(jpeg, "upload").size == (53, 37)  # no extension to compare


EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 16 16
%%EndComments
newpath 0 0 moveto 16 0 lineto 16 16 lineto closepath fill
showpage
%%EOF
"""


@pytest.fixture
def ghostscript_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `gs` first on PATH that only leaves a marker file: where Ghostscript is installed,
    Pillow's EPS reader runs `gs`; this one tells whether anything did."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ghostscript-ran"
    fake = bin_dir / "gs"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(PIL.EpsImagePlugin, "gs_binary", None)  # found again on the new PATH
    return marker


def test_an_eps_file_named_png_never_reaches_ghostscript(
    ghostscript_marker: Path, tmp_path: Path
) -> None:
    with pytest.raises(LensError) as refused:  # an upload
        inputs.prepare_upload(EPS, data.dataset_info("mnist"), name="drawing.png")
    assert str(refused.value).startswith(
        "drawing.png is an EPS/PostScript file, not an image in a format read here (PNG, JPEG"
    )
    root = tmp_path / "shapes"  # and a folder
    for name in ("a", "b"):
        write_pngs(root / name, 6)
    (root / "a" / "drawing.png").write_bytes(EPS)
    split = data.load_split(f"folder:{root}", "train")
    assert split.skipped == 1
    assert "a/drawing.png is an EPS/PostScript file" in split.source
    assert not ghostscript_marker.exists()
    # Pillow without the gate runs `gs` (the marker proves the check above can see it)
    with contextlib.suppress(Exception), PIL.Image.open(io.BytesIO(EPS)) as left_to_pillow:
        left_to_pillow.load()  # fails after `gs`: the fake renders nothing
    assert ghostscript_marker.exists()


def test_one_pixel_limit_for_folders_and_uploads(tmp_path: Path) -> None:
    big = encode(PIL.Image.new("L", (7_000, 6_000), 40), "PNG")  # 42 megapixels, 40 kB
    message = "big.png is 7,000×6,000 pixels; images up to 40 megapixels are accepted"
    with pytest.raises(LensError) as refused:
        inputs.prepare_upload(big, data.dataset_info("mnist"), name="big.png")
    assert str(refused.value) == message
    root = tmp_path / "shapes"
    for name in ("a", "b"):
        write_pngs(root / name, 6)
    (root / "a" / "big.png").write_bytes(big)
    split = data.load_split(f"folder:{root}", "train")
    assert (len(split), split.skipped) == (10, 1)  # 6 + 5 train files, the big one skipped
    assert split.source.endswith(f"1 unreadable files skipped (a/{message})")


# --------------------------------------------------------------------------- the workers

# A worker whose decoder crashes (a real SIGSEGV: it reads address 0) on files whose name
# holds "crash" and hangs on those holding "hang"; it decodes the others through the gate.
# (The 69-byte PNG killed torchvision's decoder this way; the gate now refuses it before any
# decoder runs, so a crash is made here to show that one could not reach this process.)
FAULTY_WORKER = """
import ctypes, os, sys, time
sys.path.insert(0, sys.argv[1])
from dashboard.base import images

gate = images.decode

def faulty_decode(raw, name, draft_to=None):
    if "crash" in name:
        ctypes.string_at(0)
    if "hang" in name:
        time.sleep(3600)
    return gate(raw, name, draft_to=draft_to)

images.decode = faulty_decode
images.worker_main(int(sys.argv[2]), sys.argv[3] == "careful")
"""


def use_worker(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    package_parent = str(Path(images.__file__).resolve().parent.parent)

    def command(draft_to: int, careful: bool) -> list[str]:
        mode = "careful" if careful else "fast"
        return [sys.executable, "-c", script, package_parent, str(draft_to), mode]

    monkeypatch.setattr(images, "_worker_command", command)


def decode_all(paths: list[Path], workers: int = 1) -> tuple[dict[int, np.ndarray], dict]:
    decoded: dict[int, np.ndarray] = {}

    def keep(index: int, rgb: np.ndarray) -> None:
        decoded[index] = rgb.copy()

    names = [path.name for path in paths]
    refused = images.decode_files([str(p) for p in paths], names, 32, keep, workers=workers)
    return decoded, refused


def test_a_decoder_that_crashes_kills_only_its_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_pngs(tmp_path, 6)
    crash = tmp_path / "03_crash.png"
    crash.write_bytes(encode(photo(), "PNG"))
    paths = sorted(tmp_path.glob("*.png"))
    assert paths.index(crash) == 4
    use_worker(monkeypatch, FAULTY_WORKER)
    decoded, refused = decode_all(paths)
    assert refused == {4: "03_crash.png crashed the image decoder (signal SIGSEGV)"}
    good = [i for i in range(len(paths)) if i != 4]
    assert sorted(decoded) == good
    for index, pixels in zip(good, written, strict=True):  # the rest, decoded and in place
        assert np.array_equal(decoded[index], pixels)


def test_a_folder_loads_with_the_file_that_killed_its_decoder_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "shapes"
    for name in ("a", "b"):
        write_pngs(root / name, 6)
    (root / "b" / "crash.png").write_bytes(encode(photo(), "PNG"))
    use_worker(monkeypatch, FAULTY_WORKER)
    split = data.load_split(f"folder:{root}", "train")
    assert (len(split), split.skipped) == (10, 1)  # 5 + 6 train files, the crash skipped
    assert split.source.endswith(
        "1 unreadable files skipped (b/crash.png crashed the image decoder (signal SIGSEGV))"
    )


def test_files_that_keep_crashing_the_decoder_stop_the_folder_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pngs(tmp_path, 3)
    for i in range(3):
        (tmp_path / f"crash{i}.png").write_bytes(encode(photo(), "PNG"))
    use_worker(monkeypatch, FAULTY_WORKER)
    monkeypatch.setattr(images, "MAX_CRASHES", 2)
    with pytest.raises(images.DecoderCrashError) as stopped:
        decode_all(sorted(tmp_path.glob("*.png")))
    assert str(stopped.value) == (
        "3 files crashed or stalled the image decoder (crash0.png, crash1.png, crash2.png, …): "
        "decoding stopped; remove them and try again"
    )


def test_a_decoder_that_hangs_is_stopped_and_the_rest_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_pngs(tmp_path, 4)
    (tmp_path / "hang.png").write_bytes(encode(photo(), "PNG"))
    use_worker(monkeypatch, FAULTY_WORKER)
    monkeypatch.setattr(images, "DECODE_TIMEOUT_S", 2.0)
    decoded, refused = decode_all(sorted(tmp_path.glob("*.png")))
    assert refused == {4: "hang.png took over 2 s to decode: stopped"}
    assert all(np.array_equal(decoded[i], written[i]) for i in range(4))


def test_two_workers_share_the_files_and_keep_their_order(tmp_path: Path) -> None:
    written = write_pngs(tmp_path, 9)
    text = tmp_path / "05_text.png"
    text.write_text("not an image")
    paths = sorted(tmp_path.glob("*.png"))
    at = paths.index(text)
    decoded, refused = decode_all(paths, workers=2)
    assert refused == {
        at: "05_text.png is not an image in a format read here (PNG, JPEG, GIF, BMP, TIFF, "
        "WebP or PPM)"
    }
    good = [i for i in range(len(paths)) if i != at]
    assert all(np.array_equal(decoded[i], pixels) for i, pixels in zip(good, written, strict=True))


def test_a_worker_that_cannot_start_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pngs(tmp_path, 2)
    use_worker(monkeypatch, "raise SystemExit('this interpreter has no Pillow')")
    with pytest.raises(images.DecoderCrashError) as failed:
        decode_all(sorted(tmp_path.glob("*.png")))
    assert str(failed.value) == (
        "the image decoder process did not start (exit code 1: this interpreter has no Pillow)"
    )
