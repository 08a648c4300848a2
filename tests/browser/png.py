"""A small PNG reader for the browser tests' pixel comparisons (no imaging library needed):
8-bit RGB and RGBA, not interlaced, which is what Chromium's ``Page.captureScreenshot`` writes."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Image:
    """Decoded pixels, RGBA rows."""

    width: int
    height: int
    rgba: bytes

    def pixel(self, x: int, y: int) -> tuple[int, int, int, int]:
        """The RGBA of pixel (``x``, ``y``)."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise IndexError(f"pixel ({x}, {y}) is outside the {self.width}x{self.height} image")
        i = (y * self.width + x) * 4
        r, g, b, a = self.rgba[i : i + 4]
        return r, g, b, a

    def crop(self, x: int, y: int, w: int, h: int) -> Image:
        """The ``w`` x ``h`` region at (``x``, ``y``), clipped to the image."""
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.width, x + w), min(self.height, y + h)
        rows = [self.rgba[(r * self.width + x0) * 4 : (r * self.width + x1) * 4] for r in range(y0, y1)]
        return Image(max(0, x1 - x0), max(0, y1 - y0), b"".join(rows))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode(data: bytes) -> Image:
    """Decode a PNG (8-bit RGB or RGBA, not interlaced); ValueError for anything else."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    pos, idat = len(SIGNATURE), []
    width = height = channels = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if not channels:
        raise ValueError("PNG without IHDR")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = bytearray()
    prev = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif ftype == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
            elif ftype != 0:
                raise ValueError(f"bad PNG filter {ftype}")
        if channels == 4:
            out += line
        else:
            for i in range(0, stride, 3):
                out += line[i : i + 3] + b"\xff"
        prev = line
    return Image(width, height, bytes(out))


def parse_colour(css: str) -> tuple[int, int, int]:
    """``#rrggbb`` as (r, g, b)."""
    if len(css) != 7 or not css.startswith("#"):
        raise ValueError(f"expected #rrggbb, got {css!r}")
    return int(css[1:3], 16), int(css[3:5], 16), int(css[5:7], 16)


def close(px: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 24) -> bool:
    """Whether ``px``'s RGB is within ``tolerance`` of ``colour`` in every channel."""
    return len(px) >= 3 and all(abs(p - c) <= tolerance for p, c in zip(px[:3], colour, strict=True))


def difference(a: Image, b: Image, tolerance: int = 16) -> float:
    """The fraction of pixels that differ by more than ``tolerance`` in some channel (1.0 when the
    sizes differ)."""
    if (a.width, a.height) != (b.width, b.height):
        return 1.0
    n = a.width * a.height
    if n == 0:
        return 0.0
    differ = 0
    for i in range(0, n * 4, 4):
        if any(abs(a.rgba[i + k] - b.rgba[i + k]) > tolerance for k in range(3)):
            differ += 1
    return differ / n
