"""Read the images people really upload: any mode Pillow opens, EXIF-rotated, 16-bit, huge, or broken.

`load_image` is the one door every photo comes through (app, CLI, data sets). It returns an 8-bit RGB PIL image
in the orientation a photo viewer shows, or raises `ImageError` naming the file and the fix. `image_size` gives
that same displayed (width, height) from the file header alone, without decoding pixels.

Pillow's decompression-bomb guard stays on for the process; only while a photo under our own `MAX_PIXELS` is
opened is its warning (given above ~89 MP) silenced, so a 12000x9000 (108 MP) camera photo loads quietly.

Memory is bounded by the decoded size, not the file's: a photo over `MAX_DECODED_BYTES` is refused from its header,
and 16-bit, 32-bit integer and float photos are turned into 8 bits `BAND_BYTES` of rows at a time, so beyond the
decoded pixels a load holds only 8-bit data and one band (a 0.97 MB float TIFF of 12000x12000 decodes to 576 MB).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps

from engine.errors import ImageError

# Our own size limit, in pixels (width * height as stored). A 12000x9000 photo (108 MP) is accepted.
MAX_PIXELS = 150_000_000

# Our memory limit for one photo's decoded pixels, in bytes as Pillow holds them (`_bytes_per_pixel`: 1 for modes
# 1, L and P, 2 for I;16, 4 for I, F, RGB and every other multi-band mode), checked from the header before decoding.
# A 12000x12000 float32 TIFF (576 MB) or 16-bit PNG (288 MB) passes. Loading adds to the decoded pixels at most the
# RGB result (4 bytes a pixel, so <= 600 MB under MAX_PIXELS; for wide modes only after those pixels are freed)
# and one band (BAND_BYTES), so a photo at this limit peaks near 1.2 GB, within the 1.5 GB one request may take.
# Equal to MAX_PIXELS at 4 bytes a pixel: it holds the memory bound if MAX_PIXELS is raised for 1-byte photos.
MAX_DECODED_BYTES = 600_000_000

# Rows of a 16-bit, 32-bit integer or float image turned into 8 bits at a time: about 4 MB of decoded pixels, whose
# float64 temporaries take 8 MB each. Whole-image float64 copies of a 12000x12000 photo are 1.15 GB each (the
# min-max stretch made four), so the conversion costs the 8-bit result and one band whatever the photo's size.
BAND_BYTES = 4_000_000

# Single-band modes wider than 8 bits: converted to 8-bit "L" by bands (`_wide_to_gray`) before anything else.
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

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
    Raises ImageError for a missing, empty, truncated, corrupt, non-image or too large file (> MAX_PIXELS pixels,
        or > MAX_DECODED_BYTES once decoded; both read from the header).
    """
    max_side = _check_max_side(max_side)
    if isinstance(source, np.ndarray):
        return _downscale(array_to_rgb(source), max_side)
    if isinstance(source, Image.Image):
        name = _pil_name(source)
        _check_pixel_count(source.size, name)
        try:
            image = ImageOps.exif_transpose(source)  # returns a copy: the caller's image stays as it was
            if image.mode in _WIDE_MODES:
                image = _wide_to_gray(image)  # the wide copy is freed here
            return _rgb_at_most(image, name, max_side)
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
                _check_decoded_bytes(image.mode, image.size, name)  # after `draft`: the size really decoded
                image.load()
                ImageOps.exif_transpose(image, in_place=True)
            if image.mode in _WIDE_MODES:
                # To 8 bits first, and the decoded wide pixels freed, before any RGB or resized copy is made.
                image = _wide_to_gray(image)
            return _rgb_at_most(image, name, max_side)
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
    [0, 1] is scaled by 255, in [0, 255] rounded, otherwise min-max stretched (NaN and infinities count as 0).
    The wide modes are converted BAND_BYTES of rows at a time (see `_wide_to_gray`). CMYK, YCbCr, HSV, 1, L
    convert with Pillow. Raises ImageError for modes Pillow cannot turn into RGB (e.g. LAB).
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode == "La":  # premultiplied; Pillow converts it only to LA
        image, mode = image.convert("LA"), "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa") or ("transparency" in image.info and mode in ("P", "L", "RGB")):
        return _composite_on_white(image)
    if mode in _WIDE_MODES:
        return _wide_to_gray(image).convert("RGB")
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
    spans = _spans(array[:1].nbytes, len(array))  # wide dtypes are converted band by band, as in `_wide_to_gray`

    def rows(top: int, bottom: int) -> np.ndarray:
        return array[top:bottom]

    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        data = _convert_bands(rows, spans, _scale_uint16)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(f"{IN_MEMORY_NAME}: float array holds NaN or infinity; replace them first.")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageError(
                f"{IN_MEMORY_NAME}: float array values must lie in [0, 1], got {low:g}..{high:g}; "
                "divide 0..255 data by 255, or pass it as uint8."
            )
        data = _convert_bands(rows, spans, lambda values: np.round(values * 255.0).astype(np.uint8))
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


def _check_decoded_bytes(mode: str, size: tuple[int, int], name: str) -> None:
    width, height = size
    needed = width * height * _bytes_per_pixel(mode)
    if needed > MAX_DECODED_BYTES:
        raise ImageError(
            f"{name}: {width}x{height} in mode {mode!r} decodes to {needed:,} bytes, over the limit of "
            f"{MAX_DECODED_BYTES:,} bytes; downscale the photo (e.g. to 4000 px on the long side) or save it with "
            "fewer bytes a pixel (8-bit instead of 16-bit or float), and try again."
        )


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow holds per pixel of `mode`: 2 for I;16*, 4 for I, F and multi-band modes (RGB is padded to
    4), 1 for 1, L and P; an unknown mode counts as 4, the most Pillow uses."""
    if mode.startswith("I;16"):
        return 2
    try:
        bands = Image.getmodebands(mode)
    except KeyError:
        return 4
    return 4 if mode in ("I", "F") or bands > 1 else 1


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


def _rgb_at_most(image: Image.Image, name: str, max_side: int | None) -> Image.Image:
    """`_downscale(to_rgb(image, name), max_side)`, resizing a plain "L" image before it becomes three bands.

    The resize treats each band alike, so the pixels are the same; a 12000x12000 "L" image is never held as a
    576 MB RGB one just to be shrunk.
    """
    if image.mode == "L" and "transparency" not in image.info:
        return _downscale(image, max_side).convert("RGB")
    return _downscale(to_rgb(image, name), max_side)


def _downscale(image: Image.Image, max_side: int | None) -> Image.Image:
    """Resize so max(width, height) <= max_side (aspect kept, LANCZOS); unchanged if already small enough."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, min(max_side, round(image.width * scale))), max(1, min(max_side, round(image.height * scale))))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _composite_on_white(image: Image.Image) -> Image.Image:
    """An image with alpha or a transparent colour (any mode Pillow converts to "RGBA") -> "RGB" over white.

    Composited BAND_BYTES of rows at a time into the result: whole-image RGBA, white and composite copies would
    add three times the RGB result (1.7 GB for 12000x12000).
    """
    out = Image.new("RGB", image.size)
    for top, bottom in _spans(image.width * 4, image.height):
        band = image.crop((0, top, image.width, bottom)).convert("RGBA")  # crop keeps palette and transparency
        white = Image.new("RGBA", band.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(white, band).convert("RGB"), (0, top))
    return out


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    """gray: (H, W) uint8 -> RGB image with three equal channels."""
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), "L").convert("RGB")


def _wide_to_gray(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image (mode in _WIDE_MODES) -> 8-bit "L", scaled as `to_rgb` says.

    Converted BAND_BYTES of rows at a time: beyond `image` itself, memory holds the (H, W) uint8 result and one
    band with its temporaries. The min and max a stretch needs are gathered in a first pass over the same bands,
    exactly, so the pixels equal a whole-image conversion's.
    """
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"{width}x{height} image has no pixels")
    spans = _spans(width * _bytes_per_pixel(image.mode), height)

    def rows(top: int, bottom: int) -> np.ndarray:  # (bottom - top, W) uint16, int32 or float32
        return np.asarray(image.crop((0, top, width, bottom)))

    if image.mode.startswith("I;16"):
        convert = _scale_uint16
    else:
        low, high = _extrema(rows(top, bottom) for top, bottom in spans)
        convert = partial(_int32_to_uint8 if image.mode == "I" else _float_to_uint8, low=low, high=high)
    return Image.fromarray(_convert_bands(rows, spans, convert), "L")


def _spans(row_bytes: int, height: int) -> list[tuple[int, int]]:
    """(top, bottom) row ranges that cover 0..height, each about BAND_BYTES of input (at least one row)."""
    step = max(1, BAND_BYTES // max(1, row_bytes))
    return [(top, min(height, top + step)) for top in range(0, height, step)]


def _convert_bands(rows: Callable[[int, int], np.ndarray], spans: list[tuple[int, int]],
                   convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(H, ...) uint8: `convert(rows(top, bottom))` for each span, written into one array band by band."""
    out = None
    for top, bottom in spans:
        part = convert(rows(top, bottom))
        if out is None:
            out = np.empty((spans[-1][1], *part.shape[1:]), np.uint8)
        out[top:bottom] = part
    return out


def _extrema(bands: Iterable[np.ndarray]) -> tuple[float, float]:
    """(min, max) over all bands, NaN and infinities counted as 0 (as `_float_to_uint8` treats them).

    Python ints for integer bands, floats for float ones.
    """
    low, high = None, None
    for band in bands:
        if band.dtype.kind == "f":
            band = np.nan_to_num(band, nan=0.0, posinf=0.0, neginf=0.0)
        band_low, band_high = band.min().item(), band.max().item()
        low = band_low if low is None else min(low, band_low)
        high = band_high if high is None else max(high, band_high)
    return low, high


def _scale_uint16(values: np.ndarray) -> np.ndarray:
    """0..65535 (any byte order) -> 0..255 uint8, rounded: 65535 -> 255, 257 -> 1."""
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _int32_to_uint8(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """int32 -> uint8: scaled like 16-bit when low..high lies in 0..65535, else min-max stretched.

    low, high: the whole image's min and max (`values` may be one band of it).
    """
    if low >= 0 and high <= 65535:
        return _scale_uint16(values)
    return _stretch(values.astype(np.float64), low, high)


def _float_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """float -> uint8, NaN and infinities as 0: low..high in [0, 1] scaled by 255, in [0, 255] rounded, else
    min-max stretched.

    low, high: the whole image's min and max, NaN and infinities counted as 0 (`values` may be one band of it).
    """
    finite = np.nan_to_num(values.astype(np.float64), copy=False, nan=0.0, posinf=0.0, neginf=0.0)
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
