"""The one gate every image passes before it is decoded, and the worker processes that decode
image folders.

Every image, from a folder or an upload, goes through `decode`:

1. its byte size against `MAX_IMAGE_BYTES`;
2. its format sniffed from its first bytes by this module's own pure-Python header readers —
   never by a native decoder — which must be one of `FORMATS` and the one its extension names;
3. the pixel size its header declares against Pillow's decompression-bomb limit, and the size
   it will be decoded at against `MAX_PIXELS` (a JPEG may be decoded at 1/2, 1/4 or 1/8 scale);
4. only then Pillow opens it, told its format (`formats=`), so no other plugin (EPS, which runs
   Ghostscript, PDF, …) is ever tried; the size Pillow reports is checked again before a pixel
   is decoded (a GIF frame may be larger than its header's screen).

Image folders are decoded in worker processes (`decode_files`), never in the process that asks
(the Streamlit server, the command line): a native decoder that crashes on a hostile file kills
a worker, which is noticed, reported for that file and replaced; a decoder that hangs is stopped
after `DECODE_TIMEOUT_S`. Workers import Pillow only (numpy when an image needs it), so they
start in a twentieth of a second.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

import PIL.Image
import PIL.ImageOps

from dashboard.base.errors import LensError

if TYPE_CHECKING:  # numpy is imported where it is used: a worker mostly does without
    import numpy as np

# Pillow's format name → the extensions a file of it may carry. One list for folders and uploads.
FORMATS: dict[str, tuple[str, ...]] = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
    "PPM": (".ppm", ".pgm", ".pbm"),
}
IMAGE_EXTENSIONS = tuple(ext for exts in FORMATS.values() for ext in exts)
FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF, WebP or PPM"
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000  # as decoded; a 40-Mpx RGBA frame is 160 MB
DECODE_TIMEOUT_S = 60.0  # a worker silent for this long is stopped
MAX_WORKERS = 2
MAX_CRASHES = 5  # files that kill or stall the decoder before a folder is given up
_FILES_PER_WORKER = 2_000  # fewer files than this are not worth another worker

# Formats recognised only to name them when they are refused.
_REFUSED_MAGIC = (
    (b"%!PS", "an EPS/PostScript file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS/PostScript file"),
    (b"%PDF", "a PDF document"),
    (b"8BPS", "a Photoshop file"),
    (b"\x00\x00\x01\x00", "an icon (ICO) file"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 image"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML file"),
)


class ImageRefusedError(LensError):
    """An image that failed a check or could not be decoded; the message names the file."""


class Header(NamedTuple):
    """What an image file's header declares."""

    format: str  # a key of FORMATS
    width: int
    height: int
    # "L" or "RGB" for a JPEG libjpeg decodes with no help from Pillow's file parser: 8-bit
    # gray or colour, Huffman-coded, no EXIF (orientation) or Adobe (colour transform) segment.
    plain_jpeg: str = ""


# --------------------------------------------------------------------------- header readers
# Each reads the whole file's bytes (`raw`) and returns None when the header is cut or damaged.


def _png(raw: bytes) -> Header | None:
    if raw[12:16] != b"IHDR" or len(raw) < 24:  # signature, IHDR's length and type, sizes
        return None
    width, height = struct.unpack_from(">II", raw, 16)
    return Header("PNG", width, height)


# JPEG markers that carry no length, and the start-of-frame markers holding the image size.
_BARE_MARKERS = frozenset((0x01, *range(0xD0, 0xD8)))
_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_HUFFMAN_FRAMES = frozenset((0xC0, 0xC1, 0xC2))  # baseline, extended, progressive


def _jpeg(raw: bytes) -> Header | None:
    """Walk the marker segments (each says its length) to the first start-of-frame."""
    at, end = 2, len(raw)
    plain = True
    while at < end:
        at = raw.find(b"\xff", at)
        if at < 0:
            return None
        while at < end and raw[at] == 0xFF:  # fill bytes
            at += 1
        if at + 2 >= end:
            return None
        marker = raw[at]
        at += 1
        if marker in _BARE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _FRAME_MARKERS:
            if at + 8 > end:
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", raw, at + 2)
            plain = plain and marker in _HUFFMAN_FRAMES and precision == 8
            mode = {1: "L", 3: "RGB"}.get(components, "") if plain else ""
            return Header("JPEG", width, height, mode)
        length = struct.unpack_from(">H", raw, at)[0]
        if length < 2:
            return None
        segment = raw[at + 2 : at + 7]
        if (marker == 0xE1 and segment[:4] == b"Exif") or (marker == 0xEE and segment == b"Adobe"):
            plain = False
        at += length
    return None


def _gif(raw: bytes) -> Header | None:
    if len(raw) < 10:
        return None
    width, height = struct.unpack_from("<HH", raw, 6)
    return Header("GIF", width, height)


def _bmp(raw: bytes) -> Header | None:
    if len(raw) < 26:
        return None
    if struct.unpack_from("<I", raw, 14)[0] == 12:  # OS/2 core header: 16-bit sizes
        width, height = struct.unpack_from("<HH", raw, 18)
    else:
        width, height = struct.unpack_from("<ii", raw, 18)
    return Header("BMP", abs(width), abs(height))  # a negative height means top-down rows


def _webp(raw: bytes) -> Header | None:
    if len(raw) < 30:
        return None
    kind = raw[12:16]
    if kind == b"VP8X":  # extended: the canvas size, minus one, in 24 bits each
        width = int.from_bytes(raw[24:27], "little") + 1
        height = int.from_bytes(raw[27:30], "little") + 1
    elif kind == b"VP8L" and raw[20] == 0x2F:  # lossless: 14 bits each, minus one
        bits = int.from_bytes(raw[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8 " and raw[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        width = struct.unpack_from("<H", raw, 26)[0] & 0x3FFF
        height = struct.unpack_from("<H", raw, 28)[0] & 0x3FFF
    else:
        return None
    return Header("WEBP", width, height)


def _tiff(raw: bytes) -> Header | None:
    """ImageWidth (256) and ImageLength (257) from the first directory; BigTIFF too."""
    end = "<" if raw[:2] == b"II" else ">"
    big = struct.unpack_from(end + "H", raw, 2)[0] == 43
    offset = struct.unpack_from(end + ("Q" if big else "I"), raw, 8 if big else 4)[0]
    count_format, entry_size, value_at = (end + "Q", 20, 12) if big else (end + "H", 12, 8)
    count = struct.unpack_from(count_format, raw, offset)[0]
    first = offset + struct.calcsize(count_format)
    found: dict[int, int] = {}
    for at in range(first, first + min(count, 4096) * entry_size, entry_size):
        tag, kind = struct.unpack_from(end + "HH", raw, at)
        if tag in (256, 257) and kind in (3, 4, 16):  # SHORT, LONG, LONG8
            found[tag] = struct.unpack_from(
                end + {3: "H", 4: "I", 16: "Q"}[kind], raw, at + value_at
            )[0]
    if 256 not in found or 257 not in found:
        return None
    return Header("TIFF", found[256], found[257])


def _ppm(raw: bytes) -> Header | None:
    """P1…P6: the magic, then width and height as text, with # comments allowed between."""
    text = raw[:4096]
    numbers: list[int] = []
    at = 2
    while len(numbers) < 2 and at < len(text):
        c = text[at : at + 1]
        if c == b"#":
            line_end = text.find(b"\n", at)
            at = len(text) if line_end < 0 else line_end + 1
        elif c.isspace():
            at += 1
        elif c.isdigit():
            start = at
            while at < len(text) and text[at : at + 1].isdigit():
                at += 1
            numbers.append(int(text[start:at]))
        else:
            return None
    if len(numbers) < 2 or not text[at : at + 1].isspace():
        return None
    return Header("PPM", numbers[0], numbers[1])


class _Reader(NamedTuple):
    format: str
    magics: tuple[bytes, ...]  # how a file of this format begins
    read: Callable[[bytes], Header | None]


_READERS = (
    _Reader("PNG", (b"\x89PNG\r\n\x1a\n",), _png),
    _Reader("JPEG", (b"\xff\xd8\xff",), _jpeg),
    _Reader("GIF", (b"GIF87a", b"GIF89a"), _gif),
    _Reader("BMP", (b"BM",), _bmp),
    _Reader("TIFF", (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), _tiff),
    _Reader("PPM", tuple(b"P%d" % k for k in range(1, 7)), _ppm),
)
_WEBP = _Reader("WEBP", (b"RIFF",), _webp)  # RIFF, the length, then WEBP


def _reader_for(raw: bytes) -> _Reader | None:
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return _WEBP
    return next((r for r in _READERS if raw.startswith(r.magics)), None)


def _what_it_is(raw: bytes) -> str:
    """A refused format's name, when it is a common one."""
    head = raw[:64]
    for magic, what in _REFUSED_MAGIC:
        if head.startswith(magic) or head.lstrip().startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "a HEIC/AVIF image or a video"
    return ""


# --------------------------------------------------------------------------- the checks


def _megabytes(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


def _check_bytes(name: str, nbytes: int) -> None:
    if nbytes == 0:
        raise ImageRefusedError(f"{name} is empty")
    if nbytes > MAX_IMAGE_BYTES:
        raise ImageRefusedError(
            f"{name} is {_megabytes(nbytes)}; images up to {_megabytes(MAX_IMAGE_BYTES)} "
            "are accepted"
        )


def decoded_size(header: Header, draft_to: int | None) -> tuple[int, int]:
    """Width and height the decoder will produce. A JPEG asked for `draft_to` pixels is
    decoded at the smallest of 1/1, 1/2, 1/4 or 1/8 scale that keeps both sides at least that
    (Pillow's draft)."""
    if header.format != "JPEG" or not draft_to:
        return header.width, header.height
    fits = min(header.width // draft_to, header.height // draft_to)
    scale = next(s for s in (8, 4, 2, 1) if fits >= s or s == 1)
    return -(-header.width // scale), -(-header.height // scale)


def check_size(name: str, width: int, height: int, decoded: tuple[int, int]) -> None:
    """Declared `width`×`height` against Pillow's bomb limit, `decoded` against MAX_PIXELS."""
    if width <= 0 or height <= 0:
        raise ImageRefusedError(f"{name} has no pixels")
    bomb = PIL.Image.MAX_IMAGE_PIXELS
    if bomb is not None and width * height > 2 * bomb:
        raise ImageRefusedError(
            f"{name} claims to be {width * height:,} pixels: refused as too large"
        )
    if decoded[0] * decoded[1] > MAX_PIXELS:
        raise ImageRefusedError(
            f"{name} is {decoded[0]:,}×{decoded[1]:,} pixels; images up to "
            f"{MAX_PIXELS / 1e6:.0f} megapixels are accepted"
        )


def check(raw: bytes, name: str, *, draft_to: int | None = None) -> Header:
    """Every check that needs no decoder: bytes, format, extension, declared pixels."""
    _check_bytes(name, len(raw))
    reader = _reader_for(raw)
    if reader is None:
        what = _what_it_is(raw)
        prefix = f"{name} is {what}, not" if what else f"{name} is not"
        raise ImageRefusedError(f"{prefix} an image in a format read here ({FORMAT_NAMES})")
    fmt = reader.format
    try:
        header = reader.read(raw)
    except struct.error:  # a field past the end of the file
        header = None
    suffix = os.path.splitext(name)[1].lower()
    if suffix in IMAGE_EXTENSIONS and suffix not in FORMATS[fmt]:
        raise ImageRefusedError(
            f"{name} is a {fmt} image named {suffix}: rename it {FORMATS[fmt][0]}"
        )
    if header is None:
        raise ImageRefusedError(f"{name} could not be decoded (its {fmt} header is damaged)")
    check_size(name, header.width, header.height, decoded_size(header, draft_to))
    return header


def read_file(path: str | os.PathLike[str], name: str) -> bytes:
    """A file's bytes, refused by its size before any is read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        nbytes = os.fstat(fd).st_size
        _check_bytes(name, nbytes)
        chunks, left = [], MAX_IMAGE_BYTES + 1  # a file still growing stops at the limit
        while left > 0:
            chunk = os.read(fd, min(left, max(nbytes, 1 << 16)))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def decode(raw: bytes, name: str, *, draft_to: int | None = None) -> PIL.Image.Image:
    """An image file's bytes → a loaded, upright Pillow image (its first frame, in its own
    mode), through every check above. `draft_to`: a JPEG may be decoded at 1/2, 1/4 or 1/8
    scale as long as both sides stay at least this many pixels. Failures: ImageRefusedError."""
    header = check(raw, name, draft_to=draft_to)
    size = (header.width, header.height)
    if header.plain_jpeg and decoded_size(header, draft_to) == size:
        # Pillow's JPEG decoder straight on the bytes: the pixels Image.open gives, at half
        # the cost for small images (its marker parsing is Python)
        with contextlib.suppress(ValueError, OSError):  # the full path below says what is wrong
            mode = header.plain_jpeg
            return PIL.Image.frombytes(mode, size, raw, "jpeg", mode, "")
    try:
        with PIL.Image.open(io.BytesIO(raw), formats=(header.format,)) as opened:
            if draft_to and opened.format in ("JPEG", "MPO"):
                opened.draft(None, (draft_to, draft_to))
            # Pillow's own idea of the size (GIF frames can enlarge it), before decoding
            check_size(name, *opened.size, opened.size)
            opened.load()  # the first frame of an animation
            return _upright(opened)
    except ImageRefusedError:
        raise
    except PIL.Image.DecompressionBombError as err:
        raise ImageRefusedError(
            f"{name} claims to be {_claimed_size(err)}: refused as too large"
        ) from err
    except PIL.UnidentifiedImageError as err:
        raise ImageRefusedError(
            f"{name} could not be decoded (Pillow does not read it as {header.format})"
        ) from err
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, struct.error) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ImageRefusedError(f"{name} could not be decoded ({reason})") from err


def _upright(image: PIL.Image.Image) -> PIL.Image.Image:
    """Turned by its EXIF orientation; no copy when it has none (most images)."""
    if image.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
        return PIL.ImageOps.exif_transpose(image)
    return image


def _claimed_size(err: Exception) -> str:
    """'Image size (2500000000 pixels) exceeds …' → '2,500,000,000 pixels'."""
    digits = str(err).partition("(")[2].partition(" pixels")[0]
    return f"{int(digits):,} pixels" if digits.isdigit() else "a huge size"


# --------------------------------------------------------------------------- pixels


def to_rgba(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any Pillow mode → RGBA; high-bit-depth gray rescaled to 0..255 (Pillow would clamp)."""
    if image.mode.startswith("I") or image.mode == "F":
        import numpy as np

        values = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16"):
            top = 65535.0
        elif image.mode == "I" and values.max(initial=0) <= 255:
            top = 255.0
        elif image.mode == "I" and values.min(initial=0) >= 0 and values.max() <= 65535:
            top = 65535.0
        else:  # 32-bit integers or floats of unknown range: stretch what is there
            values = values - values.min()
            top = float(values.max()) or 1.0
        gray = np.rint(np.clip(values / top, 0.0, 1.0) * 255).astype(np.uint8)
        return PIL.Image.fromarray(gray).convert("RGBA")
    return image.convert("RGBA")


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB: alpha dropped, high bit depths rescaled like `to_rgba`."""
    if image.mode.startswith("I") or image.mode == "F":
        image = to_rgba(image)
    return image if image.mode == "RGB" else image.convert("RGB")


# --------------------------------------------------------------------------- worker processes

# A worker reads NUL-separated pairs (path, name for messages) on stdin and writes one record
# per file on stdout: index (in its list), kind, two numbers, then the payload — the pixels
# (kind _DECODED: height, width) or a UTF-8 message (kind _REFUSED: its length, 0). A first
# _READY record says it started.
_RECORD = struct.Struct("<IBII")
_DECODED, _REFUSED, _READY = 0, 1, 2
_PIPE_BUFFER = 1 << 20


def worker_main(draft_to: int, careful: bool) -> None:
    """Decode the files listed on stdin, in order. `careful`: every record is flushed before
    the next file is opened, so the parent knows which file a crash stopped at; otherwise the
    records are buffered (fewer system calls and wake-ups)."""
    items = [os.fsdecode(item) for item in sys.stdin.buffer.read().split(b"\0")[:-1]]
    with open(sys.stdout.fileno(), "wb", buffering=_PIPE_BUFFER, closefd=False) as out:
        out.write(_RECORD.pack(0, _READY, 0, 0))
        out.flush()
        for index, (path, name) in enumerate(zip(items[0::2], items[1::2], strict=True)):
            try:
                rgb = to_rgb(decode(read_file(path, name), name, draft_to=draft_to or None))
            except Exception as err:  # in a worker, any failure is the file's
                if isinstance(err, ImageRefusedError):
                    message = str(err)
                else:
                    message = f"{name} could not be decoded ({type(err).__name__}: {err})"
                raw = message.encode("utf-8", "replace")[:2000]
                out.write(_RECORD.pack(index, _REFUSED, len(raw), 0) + raw)
            else:
                out.write(_RECORD.pack(index, _DECODED, rgb.height, rgb.width) + rgb.tobytes())
            if careful:
                out.flush()


def _worker_command(draft_to: int, careful: bool) -> list[str]:
    """A fresh interpreter (never a fork of a threaded server) importing only this module."""
    package_parent = str(Path(__file__).resolve().parents[2])
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from dashboard.base.images import worker_main; "
        "worker_main(int(sys.argv[2]), sys.argv[3] == 'careful')"
    )
    mode = "careful" if careful else "fast"
    return [sys.executable, "-c", code, package_parent, str(draft_to), mode]


def _widen(pipe: IO[bytes]) -> None:
    """Let the pipe hold a whole buffered batch of records (Linux; 64 KiB by default), so a
    worker does not wait for this process to be scheduled between two of its writes."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or over the system's limit
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BUFFER)


class DecoderCrashError(LensError):
    """Too many files killed the decoder, or the worker could not start at all."""


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _Shared(NamedTuple):
    """What the workers of one `decode_files` call share."""

    paths: Sequence[str]
    names: Sequence[str]
    draft_to: int
    consume: Callable[[int, np.ndarray], None]
    refused: dict[int, str]
    crashes: list[int]
    lock: threading.Lock


class _Chunk:
    """One worker's share of the files. When a worker dies, the next one starts at the first
    file without a record, in careful mode, and the file it then dies on (or stalls on) is
    refused with the reason; after that, fast mode again."""

    def __init__(self, indices: list[int], shared: _Shared) -> None:
        self.pending = indices
        self.shared = shared
        self.process: subprocess.Popen[bytes] | None = None
        self.last_progress = time.monotonic()
        self.timed_out = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            careful = False
            while self.pending:
                done = self._one_worker(careful)
                self.pending = self.pending[done:]
                if not self.pending:
                    return
                if careful:  # the first file without a record is the one that killed it
                    self._blame(self.pending.pop(0))
                careful = not careful
        except BaseException as err:  # raised again by the thread that waits for this one
            self.error = err

    def _blame(self, culprit: int) -> None:
        shared = self.shared
        if self.timed_out:
            reason = f"took over {DECODE_TIMEOUT_S:.0f} s to decode: stopped"
        else:
            reason = f"crashed the image decoder ({_death(self.process.returncode)})"
        with shared.lock:
            shared.refused[culprit] = f"{shared.names[culprit]} {reason}"
            shared.crashes.append(culprit)
            if len(shared.crashes) > MAX_CRASHES:
                shown = ", ".join(shared.names[i] for i in shared.crashes[:3])
                raise DecoderCrashError(
                    f"{len(shared.crashes)} files crashed or stalled the image decoder "
                    f"({shown}, …): decoding stopped; remove them and try again"
                )

    def _one_worker(self, careful: bool) -> int:
        """A worker on the pending files; → how many it finished before it ended."""
        shared = self.shared
        self.timed_out = False
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                _worker_command(shared.draft_to, careful),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                bufsize=_PIPE_BUFFER,
            )
            self.process = process
            self.last_progress = time.monotonic()
            _widen(process.stdout)
            done = -1
            try:
                listing = b"".join(
                    os.fsencode(shared.paths[i]) + b"\0" + os.fsencode(shared.names[i]) + b"\0"
                    for i in self.pending
                )
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.write(listing)
                    process.stdin.close()
                done = self._read(process.stdout)
            finally:
                if done < len(self.pending) and process.poll() is None:
                    process.kill()  # out of step, or this thread was interrupted
                process.wait()
                process.stdout.close()
            if done < 0:  # it died before it was ready: no file to blame
                errors.seek(0)
                lines = errors.read().decode("utf-8", "replace").strip().splitlines()
                last = f": {lines[-1]}" if lines else ""
                raise DecoderCrashError(
                    f"the image decoder process did not start ({_death(process.returncode)}{last})"
                )
            return done

    def _read(self, stream: IO[bytes]) -> int:
        """Records until the worker's output ends → files finished (-1: it never got ready)."""
        head = stream.read(_RECORD.size)
        if len(head) < _RECORD.size or _RECORD.unpack(head)[1] != _READY:
            return -1
        import numpy as np

        shared = self.shared
        done = 0
        while done < len(self.pending):
            head = stream.read(_RECORD.size)
            if len(head) < _RECORD.size:
                break
            index, kind, a, b = _RECORD.unpack(head)
            if index != done:
                break
            which = self.pending[index]
            if kind == _DECODED:
                pixels = np.empty((a, b, 3), dtype=np.uint8)
                if stream.readinto(memoryview(pixels).cast("B")) != pixels.nbytes:
                    break
                shared.consume(which, pixels)
            else:
                message = stream.read(a)
                if len(message) < a:
                    break
                with shared.lock:
                    shared.refused[which] = message.decode("utf-8", "replace")
            done += 1
            self.last_progress = time.monotonic()
        return done


def decode_files(
    paths: Sequence[str],
    names: Sequence[str],
    draft_to: int,
    consume: Callable[[int, np.ndarray], None],
    *,
    workers: int | None = None,
) -> dict[int, str]:
    """Decode image files in worker processes; `consume(i, rgb)` gets each decoded image
    ((H, W, 3) uint8, upright, first frame) in this process, from up to `workers` threads at
    once. → the refused files: index → one-line reason naming the file by `names[i]`.

    A file that crashes or stalls its worker is refused with that reason and the worker is
    replaced; more than MAX_CRASHES such files raise DecoderCrashError."""
    n = len(paths)
    if workers is None:
        workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1, n // _FILES_PER_WORKER))
    bounds = [n * k // workers for k in range(workers + 1)]
    shared = _Shared(paths, names, draft_to, consume, {}, [], threading.Lock())
    chunks = [
        _Chunk(list(range(lo, hi)), shared) for lo, hi in itertools.pairwise(bounds) if hi > lo
    ]
    threads = [threading.Thread(target=chunk.run, daemon=True) for chunk in chunks]
    for thread in threads:
        thread.start()
    try:
        for thread, chunk in zip(threads, chunks, strict=True):
            while thread.is_alive():
                thread.join(1.0)
                process = chunk.process
                stalled = time.monotonic() - chunk.last_progress > DECODE_TIMEOUT_S
                if stalled and process is not None and process.poll() is None:
                    chunk.timed_out = True
                    process.kill()
    finally:
        for chunk in chunks:  # interrupted (Ctrl-C): no worker outlives the load
            if chunk.process is not None and chunk.process.poll() is None:
                chunk.process.kill()
    for chunk in chunks:
        if chunk.error is not None:
            raise chunk.error
    return shared.refused
