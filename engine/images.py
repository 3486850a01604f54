"""Read the images people really upload: any mode Pillow opens, EXIF-rotated, 16-bit, huge, or broken.

`load_image` is the one door every photo comes through (app, CLI, data sets). It returns an 8-bit RGB PIL image
in the orientation a photo viewer shows, or raises `ImageError` naming the file and the fix. `image_size` gives
that same displayed (width, height) from the file header alone, without decoding pixels.

Pillow's decompression-bomb guard stays on for the process; only while a photo under our own `MAX_PIXELS` is
opened is its warning (given above ~89 MP) silenced, so a 12000x9000 (108 MP) camera photo loads quietly.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps
from engine.errors import ImageError

# Our own size limit, in pixels (width * height as stored). A 12000x9000 photo (108 MP) is accepted.
MAX_PIXELS = 150_000_000

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

IN_MEMORY_NAME = "<uploaded image>"

# How much larger than the target the JPEG decoder's reduced scale (`Image.draft`) may stay, so the final
# antialiased resize still has real pixels to average (Pillow's `thumbnail` uses the same idea).
_REDUCING_GAP = 2.0

# EXIF orientations 5-8 are rotations by 90 or 270 degrees: displayed width and height swap.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112

# Errors Pillow and its codecs raise for files that are not images, are cut short or are corrupt.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]


# ----------------------------------------------------------------------------------------------- public API


def load_image(source: ImageSource, *, max_side: int | None = None) -> Image.Image:
    """Read `source` as an 8-bit RGB PIL image in its displayed orientation.

    source: a file path (str/Path), the file's bytes, a binary file object, a PIL image, or a numpy array
        (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of dtype uint8, uint16, bool, or float in [0, 1].
    max_side: if given, the result is downscaled (aspect kept) so that max(width, height) <= max_side.
        JPEGs are then decoded at a reduced scale, so a 12000x9000 photo never exists in memory at full size.
    Returns: mode "RGB" image, EXIF orientation applied; transparency composited onto white; 16-bit and
        float data scaled to 0..255 (not clipped). A PIL image passed in is never modified.
    Raises ImageError for a missing, empty, truncated, corrupt, non-image or too large (> MAX_PIXELS) file.
    """
    max_side = _check_max_side(max_side)
    if isinstance(source, np.ndarray):
        return _downscale(array_to_rgb(source), max_side)
    if isinstance(source, Image.Image):
        name = _pil_name(source)
        _check_pixel_count(source.size, name)
        try:
            image = ImageOps.exif_transpose(source)  # returns a copy: the caller's image stays as it was
            return _downscale(to_rgb(image, name), max_side)
        except ImageError:
            raise
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: cannot be read ({exc}).") from exc

    name, fp = _open_source(source)
    with fp:
        try:
            with warnings.catch_warnings():
                # Pillow warns above ~89 MP; we accept up to MAX_PIXELS and check right after opening.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                # Not `with Image.open(...)`: closing the PIL image would free its pixels; `fp` is ours to close.
                image = Image.open(fp)
                _check_pixel_count(image.size, name)
                if max_side is not None and image.format == "JPEG":
                    image.draft("RGB", _draft_size(image.size, max_side))
                image.load()
                ImageOps.exif_transpose(image, in_place=True)
            return _downscale(to_rgb(image, name), max_side)
        except ImageError:
            raise
        except (Image.DecompressionBombError, *_DECODE_ERRORS) as exc:
            raise _as_image_error(name, exc) from exc


def image_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) of `source` as displayed, i.e. after EXIF orientation (5-8 swap the two).

    For paths, bytes and file objects only the header is read; no pixels are decoded.
    Raises ImageError like `load_image` for unreadable or too large (> MAX_PIXELS) images.
    """
    if isinstance(source, np.ndarray):
        _check_array_shape(source)
        return int(source.shape[1]), int(source.shape[0])
    if isinstance(source, Image.Image):
        return _displayed_size(source.size, _orientation(source))

    name, fp = _open_source(source)
    with fp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(fp) as image:
                    _check_pixel_count(image.size, name)
                    return _displayed_size(image.size, _orientation(image))
        except ImageError:
            raise
        except (Image.DecompressionBombError, *_DECODE_ERRORS) as exc:
            raise _as_image_error(name, exc) from exc


def list_images(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of image files, in the order given.

    A folder contributes its own images (suffix in IMAGE_SUFFIXES, any case; hidden files such as macOS
    "._IMG_1.jpg" skipped), sorted by name; sub-folders are not searched. A file is kept as given, whatever
    its suffix (`load_image` judges it). Raises ImageError for a path that does not exist or a folder
    without images.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images = sorted(
                p for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not images:
                raise ImageError(
                    f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                    "check the folder, or pass the image files themselves."
                )
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise ImageError(f"{path}: no such file or folder; check the path.")
    return found


# ------------------------------------------------------------------------------------ pure conversions


def to_rgb(image: Image.Image, name: str = IN_MEMORY_NAME) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit "RGB" (a new image unless it already is plain RGB).

    Alpha (RGBA, LA, PA, premultiplied RGBa/La, palette or colour-key transparency) is composited onto white;
    16-bit modes (I;16, I;16B, I;16L, I;16N) are scaled 0..65535 -> 0..255; "I" (32-bit int, how Pillow may
    hold 16-bit data) is scaled the same when its values lie in 0..65535, else min-max stretched; "F" in
    [0, 1] is scaled by 255, in [0, 255] rounded, otherwise min-max stretched. CMYK, YCbCr, HSV, 1, L convert
    with Pillow. Raises ImageError for modes Pillow cannot turn into RGB (e.g. LAB).
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode == "La":  # premultiplied; Pillow converts it only to LA
        image, mode = image.convert("LA"), "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa") or ("transparency" in image.info and mode in ("P", "L", "RGB")):
        return _composite_on_white(image.convert("RGBA"))
    if mode.startswith("I;16"):
        return _gray_to_rgb(_scale_uint16(np.asarray(image)))
    if mode == "I":
        return _gray_to_rgb(_int32_to_uint8(np.asarray(image)))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(image)))
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageError(
            f"{name}: colour mode {mode!r} cannot be converted to RGB ({exc}); save the image as an RGB "
            "JPEG or PNG."
        ) from exc


def array_to_rgb(array: np.ndarray) -> Image.Image:
    """Convert a numpy image to an 8-bit RGB PIL image.

    array: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); dtype uint8 (0..255), uint16 (0..65535, scaled by
        255/65535), bool (True -> 255) or float (values in [0, 1], scaled by 255). Four channels are RGBA and
        are composited onto white.
    Raises ImageError (naming "<uploaded image>") for other shapes, dtypes or float values outside [0, 1].
    """
    _check_array_shape(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        data = _scale_uint16(array)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(f"{IN_MEMORY_NAME}: float array holds NaN or infinity; replace them first.")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageError(
                f"{IN_MEMORY_NAME}: float array values must lie in [0, 1], got {low:g}..{high:g}; "
                "divide 0..255 data by 255, or pass it as uint8."
            )
        data = np.round(array * 255.0).astype(np.uint8)
    else:
        raise ImageError(
            f"{IN_MEMORY_NAME}: array dtype {array.dtype} is not supported; pass uint8, uint16, bool, or "
            "float in [0, 1] (e.g. array.astype(np.uint8))."
        )
    data = np.ascontiguousarray(data)
    if data.ndim == 2:
        return _gray_to_rgb(data)
    if data.shape[2] == 4:
        return _composite_on_white(Image.fromarray(data, "RGBA"))
    return Image.fromarray(data, "RGB")


# ------------------------------------------------------------------------------------------- helpers


def _check_max_side(max_side: int | None) -> int | None:
    if max_side is None:
        return None
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ValueError(f"max_side must be a positive int or None, got {max_side!r}.")
    return int(max_side)


def _check_array_shape(array: np.ndarray) -> None:
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not shape_ok or array.size == 0:
        raise ImageError(
            f"{IN_MEMORY_NAME}: array of shape {array.shape} is not an image; pass (H, W), (H, W, 3) "
            "or (H, W, 4) with H, W > 0."
        )


def _check_pixel_count(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of {MAX_PIXELS:,} pixels; "
            "downscale the photo (e.g. to 4000 px on the long side) and try again."
        )


def _open_source(source: ImageSource) -> tuple[str, IO[bytes]]:
    """(display name, open seekable binary file) for a path, bytes or file object; checks empty/missing."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: no such file; check the path.")
        if path.is_dir():
            raise ImageError(f"{path}: is a folder, not an image; pass an image file (list_images expands folders).")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: file is empty (0 bytes); the upload or copy did not finish, copy it again.")
        try:
            return str(path), open(path, "rb")
        except OSError as exc:
            raise ImageError(f"{path}: cannot be opened ({exc.strerror or exc}); check its permissions.") from exc
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{IN_MEMORY_NAME}: no data (0 bytes); the upload did not finish, upload it again.")
        return IN_MEMORY_NAME, io.BytesIO(bytes(source))
    if hasattr(source, "read"):
        file_name = getattr(source, "name", None)
        name = str(file_name) if isinstance(file_name, (str, os.PathLike)) else IN_MEMORY_NAME
        # Into our own buffer: works for unseekable streams and leaves the caller's file open; a seekable file
        # is put back where it was, so the same file object can be read again (load_image, then image_size).
        start = source.tell() if _seekable(source) else None
        data = source.read()
        if start is not None:
            source.seek(start)
        if not data:
            raise ImageError(f"{name}: no data (0 bytes); the upload did not finish, upload it again.")
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(
                f"{name}: file object gave {type(data).__name__}, not bytes; open it in binary mode ('rb')."
            )
        return name, io.BytesIO(bytes(data))
    raise TypeError(
        f"Cannot read an image from {type(source).__name__}; pass a path, bytes, a binary file object, "
        "a PIL image or a numpy array."
    )


def _seekable(file: object) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _as_image_error(name: str, exc: BaseException) -> ImageError:
    """The ImageError for a file Pillow refused: too large for its bomb guard, or unreadable."""
    if isinstance(exc, Image.DecompressionBombError):
        return ImageError(f"{name}: too large to open safely ({exc}); our limit is {MAX_PIXELS:,} pixels. "
                          "Downscale the photo (e.g. to 4000 px on the long side) and upload it again.")
    return ImageError(_decode_failure_message(name, exc))


def _decode_failure_message(name: str, exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, Image.UnidentifiedImageError) or "cannot identify image file" in text:
        if Path(name).suffix.lower() in (".heic", ".heif"):
            return f"{name}: HEIC/HEIF photos are not supported; export the photo as JPEG and try again."
        return (
            f"{name}: not an image Pillow can read (JPEG, PNG, WebP, BMP, TIFF); check that it is really an "
            "image and not renamed from another file type."
        )
    if "truncated" in text or isinstance(exc, EOFError):
        return f"{name}: image file is truncated ({text}); the upload or copy did not finish, copy it again."
    return f"{name}: image file is corrupt or unreadable ({type(exc).__name__}: {text}); re-export or copy it again."


def _pil_name(image: Image.Image) -> str:
    filename = getattr(image, "filename", None)
    return str(filename) if filename else IN_MEMORY_NAME


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 1..8 (1 when absent or malformed)."""
    value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    width, height = size
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _draft_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The smallest (w, h) the JPEG decoder may reduce `size` to and still leave a fair final resize."""
    scale = min(1.0, max_side * _REDUCING_GAP / max(size))
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def _downscale(image: Image.Image, max_side: int | None) -> Image.Image:
    """Resize so max(width, height) <= max_side (aspect kept, LANCZOS); unchanged if already small enough."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, min(max_side, round(image.width * scale))), max(1, min(max_side, round(image.height * scale))))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    """gray: (H, W) uint8 -> RGB image with three equal channels."""
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), "L").convert("RGB")


def _scale_uint16(values: np.ndarray) -> np.ndarray:
    """0..65535 (any byte order) -> 0..255 uint8, rounded: 65535 -> 255, 257 -> 1."""
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _int32_to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= 65535:
        return _scale_uint16(values)
    return _stretch(values.astype(np.float64), low, high)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0:
        return np.round(finite * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.round(finite).astype(np.uint8)
    return _stretch(finite, low, high)


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Min-max stretch to 0..255 uint8 (all zeros when the image is flat)."""
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
