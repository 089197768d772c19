"""Turning client images (encoded bytes, arrays, PIL images) into RGB frames of the target size."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidRequest

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "PPM", "TIFF")
"""Pillow decoders tried on uploads; PPM also reads PGM and PBM (the Netpbm family). Each checks its
header size against Pillow's decompression-bomb limit before decoding, like the others."""
ACCEPTED_NAMES = "PNG, JPEG, WebP, BMP, GIF, PPM/PGM/PBM or TIFF"
MIN_IMAGE_SIDE = 8
"""Smaller images are upscaled to the requested size. 8 px is the VAE's downsampling factor: one
latent cell per 8×8 block, so below 8 px a side has less than one latent cell of real content."""
KEEP_MULTIPLE = 64


def load_image(image, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Validate and decode `image` into an RGB PIL image, refusing oversized input before decoding."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        decoded = _decode(bytes(image), max_bytes=max_bytes, max_pixels=max_pixels)
    elif isinstance(image, np.ndarray):
        decoded = _from_array(image, max_pixels=max_pixels)
    elif isinstance(image, Image.Image):
        _check_pixels(*image.size, max_pixels=max_pixels)
        decoded = image
    else:
        raise InvalidRequest(
            "image", f"expected encoded image bytes or an H×W×3 uint8 array, got {type(image).__name__}"
        )
    width, height = decoded.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InvalidRequest("image", f"image is {width}×{height} pixels; each side must be at least {MIN_IMAGE_SIDE}")
    return to_rgb(decoded)


def _decode(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidRequest("image", "image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidRequest("image", f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidRequest("image", f"image dimensions are over the limit of {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise InvalidRequest("image", f"not a readable {ACCEPTED_NAMES} file") from None
    except Exception:
        raise InvalidRequest("image", "image header is corrupt") from None
    _check_pixels(*image.size, max_pixels=max_pixels)
    try:
        image.load()  # for an animated GIF or WebP this is the first frame
        return ImageOps.exif_transpose(image)
    except Exception:
        raise InvalidRequest("image", "image data is truncated or corrupt") from None


def _from_array(array: np.ndarray, *, max_pixels: int) -> Image.Image:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InvalidRequest("image", f"array must be H×W×3 uint8 RGB, got shape {list(array.shape)} of {array.dtype}")
    _check_pixels(array.shape[1], array.shape[0], max_pixels=max_pixels)
    return Image.fromarray(np.ascontiguousarray(array))


def _check_pixels(width: int, height: int, *, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidRequest("image", f"image is {width}×{height} = {width * height} pixels; the limit is {max_pixels}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: transparency over white, 16-bit scaled rather than clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(values.round(), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def keep_size(image: Image.Image, *, max_pixels: int, max_side: int) -> tuple[int, int]:
    """The image's own size scaled into the pixel budget and rounded down to multiples of 64."""
    width, height = image.size
    scale = min(1.0, (max_pixels / (width * height)) ** 0.5, max_side / width, max_side / height)

    def fit(side: int) -> int:
        return max(KEEP_MULTIPLE, int(side * scale) // KEEP_MULTIPLE * KEEP_MULTIPLE)

    return fit(width), fit(height)


def resize(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """Bring `image` to exactly width×height; `keep` has already chosen a size near the image's own."""
    if image.size == (width, height):
        return image
    method = Image.Resampling.LANCZOS
    if mode == "stretch":
        return image.resize((width, height), method)
    if mode == "pad":
        return ImageOps.pad(image, (width, height), method=method, color=(0, 0, 0))
    return ImageOps.fit(image, (width, height), method=method)  # crop, and keep's rounding
