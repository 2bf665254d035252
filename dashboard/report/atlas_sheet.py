"""A layer's atlas as one PNG sheet, drawn with PIL alone (the command line stays light: no
plotly). One block per channel: a caption with its numbers, its top-K receptive-field crops in
a square grid, and with feature visualizations the optimized image beside them."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dashboard.analysis.atlas import ChannelAtlas, example_crops
from dashboard.base import files
from dashboard.base.errors import LensError

TILE = 44  # pixels per crop on the sheet
GAP = 4  # between crops
BLOCK_GAP = 14  # between channel blocks
CAPTION = 30  # two lines of caption above each block
SHEET_WIDTH = 1800  # the sheet wraps its blocks at about this width
HEADER = 48
BACKGROUND = (255, 255, 255)
INK = (31, 41, 55)
MUTED = (107, 114, 128)
DEAD = (220, 38, 38)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 with FreeType: a real font
    except (TypeError, OSError):  # pragma: no cover - older Pillow: the small bitmap font
        return ImageFont.load_default()


def _resized(pixels: np.ndarray, side: int) -> Image.Image:
    """(h, w, 3) uint8 as a side × side image: blocky when enlarged, averaged when shrunk."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    smaller = max(pixels.shape[:2]) > side
    return image.resize((side, side), Image.Resampling.BOX if smaller else Image.Resampling.NEAREST)


def sheet(
    atlas: ChannelAtlas,
    images: object,
    *,
    title: str,
    visualizations: np.ndarray | None = None,
    classes: tuple[str, ...] | None = None,
) -> Image.Image:
    """The atlas of every channel as one image. `images` are the split's uint8 images (indexed
    by the atlas's example indices); `visualizations` (C, H, W, 3) uint8, one per channel."""
    k = atlas.top_index.shape[1]
    per_row = math.ceil(math.sqrt(k))
    grid = per_row * TILE + (per_row - 1) * GAP  # the crops' square
    rows_of_crops = math.ceil(k / per_row)
    grid_h = rows_of_crops * TILE + (rows_of_crops - 1) * GAP
    vis_side = grid_h if visualizations is not None else 0
    block_w = grid + (GAP * 2 + vis_side if vis_side else 0)
    block_h = CAPTION + grid_h
    cols = max(1, min(atlas.channels, (SHEET_WIDTH + BLOCK_GAP) // (block_w + BLOCK_GAP)))
    rows = math.ceil(atlas.channels / cols)
    width = max(cols * (block_w + BLOCK_GAP) + BLOCK_GAP, 640)
    height = HEADER + rows * (block_h + BLOCK_GAP) + BLOCK_GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    big, small = _font(16), _font(11)
    draw.text((BLOCK_GAP, 8), title, fill=INK, font=big)
    receptive = f"{int(atlas.rf[0])}x{int(atlas.rf[1])}-pixel receptive fields"
    draw.text(
        (BLOCK_GAP, 28),
        f"values: {atlas.values_of} · top {k} of {atlas.images:,} {atlas.split} images per "
        f"channel, cropped to their {receptive} (grey checks: outside the image)",
        fill=MUTED,
        font=small,
    )
    best_class = atlas.preferred_class
    for c in range(atlas.channels):
        row, col = divmod(c, cols)
        x0 = BLOCK_GAP + col * (block_w + BLOCK_GAP)
        y0 = HEADER + BLOCK_GAP + row * (block_h + BLOCK_GAP)
        dead = float(atlas.dead_share[c])
        top = float(atlas.top_value[c, 0])
        draw.text((x0, y0), f"channel {c}   max {top:.3g}", fill=INK, font=small)
        favourite = classes[best_class[c]] if classes else str(best_class[c])
        line = f"sel {atlas.selectivity[c]:.2f} ({favourite})   dead {dead:.0%}"
        draw.text((x0, y0 + 13), line, fill=DEAD if dead >= 0.99 else MUTED, font=small)
        crops = example_crops(atlas, images, atlas.top(c))
        for i, crop in enumerate(crops):
            r, q = divmod(i, per_row)
            at = (x0 + q * (TILE + GAP), y0 + CAPTION + r * (TILE + GAP))
            canvas.paste(_resized(crop, TILE), at)
        if visualizations is not None:
            canvas.paste(_resized(visualizations[c], vis_side), (x0 + grid + GAP * 2, y0 + CAPTION))
    return canvas


def save_png(image: Image.Image, path: Path) -> Path:
    """Write atomically (a temporary file beside it, then a rename: no half-written sheet is
    ever left under the final name), with the umask's permissions like any other file."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = files.write_temp(path.parent, path.name, buffer.getvalue())
        try:
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise LensError(f"cannot write {path}: {err.strerror or err}") from None
    return path
