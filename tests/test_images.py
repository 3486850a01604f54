"""engine.images: every mode and format people upload, EXIF orientation, huge and broken files."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import images
from engine.images import IMAGE_SUFFIXES, ImageError, image_size, list_images, load_image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "drywall-qa"


def _pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel(xy)


def _close(a, b, tol=0):
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def _saved(tmp_path: Path, image: Image.Image, name: str, **params) -> Path:
    path = tmp_path / name
    image.save(path, **params)
    return path


# ----------------------------------------------------------------------------------------- modes


def test_gray_and_bilevel(tmp_path):
    gray = load_image(_saved(tmp_path, Image.new("L", (8, 6), 100), "g.png"))
    assert gray.size == (8, 6) and _pixel(gray) == (100, 100, 100)
    bits = Image.new("1", (8, 6), 0)
    bits.putpixel((3, 2), 1)
    loaded = load_image(_saved(tmp_path, bits, "b.png"))
    assert _pixel(loaded, (3, 2)) == (255, 255, 255) and _pixel(loaded, (0, 0)) == (0, 0, 0)


def test_rgba_is_composited_onto_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red: white
    rgba.putpixel((1, 1), (255, 0, 0, 255))  # opaque red
    rgba.putpixel((2, 2), (0, 0, 255, 128))  # half-transparent blue over white
    loaded = load_image(_saved(tmp_path, rgba, "a.png"))
    assert _pixel(loaded, (0, 0)) == (255, 255, 255)
    assert _pixel(loaded, (1, 1)) == (255, 0, 0)
    assert _close(_pixel(loaded, (2, 2)), (127, 127, 255), tol=1)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGBa", "PA", "P", "RGB"])
def test_transparency_composited_by_bands_like_the_whole_image(monkeypatch, mode):
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (31, 17, 4), dtype=np.uint8), "RGBA").convert(mode)
    if mode in ("P", "RGB"):
        image.info["transparency"] = 5 if mode == "P" else image.getpixel((4, 4))
    monkeypatch.setattr(images, "BAND_BYTES", 17 * 4 * 3)  # three rows a band
    banded = np.asarray(load_image(image))
    monkeypatch.setattr(images, "BAND_BYTES", 10**9)
    np.testing.assert_array_equal(banded, np.asarray(load_image(image)))
    if mode == "RGBA":  # over white: colour * alpha + 255 * (1 - alpha)
        rgba = np.asarray(image).astype(np.float64)
        expected = rgba[:, :, :3] * rgba[:, :, 3:] / 255 + 255 * (1 - rgba[:, :, 3:] / 255)
        assert np.abs(banded - expected).max() <= 1
    if mode == "RGB":
        assert _pixel(Image.fromarray(banded), (4, 4)) == (255, 255, 255)


def test_gray_alpha_and_premultiplied_modes():
    la = Image.new("LA", (3, 3), (0, 0))
    la.putpixel((1, 1), (40, 255))
    loaded = load_image(la)
    assert _pixel(loaded, (0, 0)) == (255, 255, 255) and _pixel(loaded, (1, 1)) == (40, 40, 40)
    for mode in ("RGBa", "La", "PA"):
        assert load_image(Image.new(mode, (3, 2))).size == (3, 2)


def test_palette_png_with_transparency(tmp_path):
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putpixel((0, 0), 0)
    path = _saved(tmp_path, palette, "p.png", transparency=0)
    assert Image.open(path).mode == "P"
    loaded = load_image(path)
    assert _pixel(loaded, (0, 0)) == (255, 255, 255)  # transparent index: white, not black
    assert _pixel(loaded, (1, 1)) == (10, 200, 30)


def test_cmyk_jpeg(tmp_path):
    path = _saved(tmp_path, Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    assert _close(_pixel(load_image(path), (8, 8)), (255, 0, 0), tol=8)


def test_16bit_png_gradient_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)[None, :].repeat(4, axis=0)
    path = _saved(tmp_path, Image.fromarray(ramp), "g16.png")
    assert Image.open(path).mode.startswith("I")
    values = np.asarray(load_image(path))[0, :, 0].astype(int)
    assert values[0] == 0 and values[-1] == 255
    assert np.all(np.diff(values) >= 0) and len(np.unique(values)) > 200  # a ramp, not 0/255 from clipping
    assert abs(values[128] - 128) <= 1


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_16bit_pil_modes_in_memory(dtype):
    image = Image.fromarray(np.array([[0, 257 * 128, 65535]], dtype=dtype))
    assert image.mode in ("I;16", "I;16B")
    assert [p[0] for p in np.asarray(load_image(image))[0]] == [0, 128, 255]


def test_int32_and_float_modes(tmp_path):
    as_int = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32))
    assert as_int.mode == "I" and [p[0] for p in np.asarray(load_image(as_int))[0]] == [0, 128, 255]
    as_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert as_float.mode == "F" and [p[0] for p in np.asarray(load_image(as_float))[0]] == [0, 128, 255]
    tiff = _saved(tmp_path, as_float, "f.tif")
    assert [p[0] for p in np.asarray(load_image(tiff))[0]] == [0, 128, 255]


def _wide_reference(values: np.ndarray, mode: str) -> np.ndarray:
    """The documented scaling of `to_rgb`, on the whole (H, W) array at once: uint8 gray."""
    if mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = values.min(), values.max()
        if low >= 0 and high <= 1:
            return np.round(values * 255).astype(np.uint8)
        if low >= 0 and high <= 255:
            return np.round(values).astype(np.uint8)
        return np.round((values - low) * (255 / (high - low))).astype(np.uint8)
    values = values.astype(np.int64)
    if mode == "I" and (values.min() < 0 or values.max() > 65535):
        return np.round((values - values.min()) * (255 / (values.max() - values.min()))).astype(np.uint8)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _wide_images() -> dict[str, Image.Image]:
    """Small (37, 23) images of every wide mode, with values that pick each scaling rule."""
    rng = np.random.default_rng(0)
    shape = (37, 23)
    stretched = rng.normal(40.0, 300.0, shape).astype(np.float32)
    stretched[2, 3], stretched[30, 1], stretched[5, 20] = np.nan, np.inf, -np.inf
    return {
        "F stretched, NaN and inf": Image.fromarray(stretched, "F"),
        "F in [0, 1]": Image.fromarray(rng.random(shape, dtype=np.float32), "F"),
        "F in [0, 255]": Image.fromarray((rng.random(shape) * 255).astype(np.float32), "F"),
        "I stretched": Image.fromarray(rng.integers(-70_000, 90_000, shape).astype(np.int32)),
        "I in 0..65535": Image.fromarray(rng.integers(0, 65_536, shape).astype(np.int32)),
        "I;16": Image.fromarray(rng.integers(0, 65_536, shape).astype("<u2")),
        "I;16B": Image.fromarray(rng.integers(0, 65_536, shape).astype(">u2")),
    }


@pytest.mark.parametrize("case", list(_wide_images()))
def test_wide_modes_convert_by_bands_like_the_whole_image(monkeypatch, case):
    image = _wide_images()[case]
    expected = _wide_reference(np.asarray(image), image.mode)
    # Min and max differ from band to band here, so a stretch from one band's own statistics would not match.
    monkeypatch.setattr(images, "BAND_BYTES", 23 * 4 * 5)  # 5 rows of F or I, 10 of I;16: several bands
    banded = np.asarray(load_image(image))
    monkeypatch.setattr(images, "BAND_BYTES", 10**9)  # one band
    whole = np.asarray(load_image(image))
    assert banded.shape == (37, 23, 3)
    np.testing.assert_array_equal(banded[:, :, 0], expected)
    np.testing.assert_array_equal(banded, whole)
    assert (banded[:, :, 0] == banded[:, :, 2]).all()


def test_wide_tiff_by_bands_then_downscaled_like_rgb(tmp_path, monkeypatch):
    image = _wide_images()["F stretched, NaN and inf"]
    path = _saved(tmp_path, image, "wide.tif", compression="tiff_deflate")
    expected_gray = _wide_reference(np.asarray(image), "F")
    monkeypatch.setattr(images, "BAND_BYTES", 1)  # one row a band
    np.testing.assert_array_equal(np.asarray(load_image(path))[:, :, 0], expected_gray)
    # Downscaled as 8-bit gray before becoming RGB: the same pixels as resizing the RGB image.
    expected_small = load_image(np.repeat(expected_gray[:, :, None], 3, axis=2), max_side=11)
    np.testing.assert_array_equal(np.asarray(load_image(path, max_side=11)), np.asarray(expected_small))


def test_wide_arrays_convert_by_bands(monkeypatch):
    rng = np.random.default_rng(1)
    as_uint16, as_float = rng.integers(0, 65_536, (29, 7, 3)).astype(np.uint16), rng.random((29, 7))
    monkeypatch.setattr(images, "BAND_BYTES", 1)
    banded = [np.asarray(load_image(as_uint16)), np.asarray(load_image(as_float))]
    np.testing.assert_array_equal(banded[0], ((as_uint16.astype(np.int64) * 255 + 32767) // 65535))
    np.testing.assert_array_equal(banded[1][:, :, 1], np.round(as_float * 255))


def test_ycbcr_converts():
    assert _close(_pixel(load_image(Image.new("YCbCr", (2, 2), (128, 128, 128)))), (128, 128, 128), tol=2)


@pytest.mark.parametrize("suffix,params", [(".jpg", {"quality": 95}), (".png", {}), (".webp", {"quality": 95}),
                                           (".bmp", {}), (".tif", {}), (".tiff", {"compression": "tiff_lzw"})])
def test_formats(tmp_path, suffix, params):
    path = _saved(tmp_path, Image.new("RGB", (30, 20), (10, 120, 240)), "x" + suffix, **params)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (30, 20)
    assert _close(_pixel(loaded, (15, 10)), (10, 120, 240), tol=4)
    assert image_size(path) == (30, 20)


# ---------------------------------------------------------------------------------- orientation


def _oriented_jpeg(tmp_path: Path, orientation: int) -> Path:
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 4, 4))  # a red mark at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _saved(tmp_path, stored, f"o{orientation}.jpg", exif=exif.tobytes(), quality=95)


def test_exif_orientation_6_swaps_size_and_rotates(tmp_path):
    path = _oriented_jpeg(tmp_path, 6)
    assert Image.open(path).size == (40, 20)
    assert image_size(path) == (20, 40)
    assert image_size(path.read_bytes()) == (20, 40)
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    assert _pixel(loaded, (18, 1))[0] > 200  # orientation 6 = rotate 90 clockwise: the mark is top-right
    assert _pixel(loaded, (1, 1))[0] < 50


@pytest.mark.parametrize("orientation,size", [(1, (40, 20)), (3, (40, 20)), (5, (20, 40)), (8, (20, 40))])
def test_exif_orientations(tmp_path, orientation, size):
    path = _oriented_jpeg(tmp_path, orientation)
    assert image_size(path) == size and load_image(path).size == size


def test_exif_orientation_with_reduced_jpeg_decode(tmp_path):
    loaded = load_image(_oriented_jpeg(tmp_path, 6), max_side=10)
    assert loaded.size == (5, 10) and _pixel(loaded, (4, 0))[0] > 100


def test_pil_input_is_not_modified(tmp_path):
    opened = Image.open(_oriented_jpeg(tmp_path, 6))
    loaded = load_image(opened)
    assert loaded.size == (20, 40) and opened.size == (40, 20) and opened.getexif().get(0x0112) == 6
    rgba = Image.new("RGBA", (5, 5))
    load_image(rgba)
    assert rgba.mode == "RGBA"


# --------------------------------------------------------------------------------- other sources


def test_bytes_and_file_objects(tmp_path):
    path = _saved(tmp_path, Image.new("RGB", (9, 7), (1, 2, 3)), "s.png")
    assert load_image(path.read_bytes()).size == (9, 7)
    assert load_image(str(path)).size == (9, 7)
    with open(path, "rb") as file:
        assert load_image(file).size == (9, 7)
        assert not file.closed  # the caller's file stays theirs...
        assert image_size(file) == (9, 7)  # ...and can be read again
    assert image_size(io.BytesIO(path.read_bytes())) == (9, 7)


def test_numpy_inputs():
    assert _pixel(load_image(np.full((3, 4), 7, np.uint8))) == (7, 7, 7)
    assert load_image(np.zeros((3, 4), np.uint8)).size == (4, 3)
    assert _pixel(load_image(np.full((2, 2, 3), (1, 2, 3), np.uint8))) == (1, 2, 3)
    assert _pixel(load_image(np.full((2, 2, 4), (0, 0, 0, 0), np.uint8))) == (255, 255, 255)
    assert _pixel(load_image(np.full((2, 2), 65535, np.uint16))) == (255, 255, 255)
    assert _pixel(load_image(np.ones((2, 2), bool))) == (255, 255, 255)
    assert _pixel(load_image(np.full((2, 2, 3), 0.5, np.float32))) == (128, 128, 128)
    assert _pixel(load_image(np.full((2, 2, 1), 9, np.uint8))) == (9, 9, 9)
    assert image_size(np.zeros((3, 4, 3), np.uint8)) == (4, 3)


@pytest.mark.parametrize("array,match", [
    (np.full((2, 2), 2.0), r"\[0, 1\].*divide"),
    (np.zeros((2, 2), np.int64), "dtype int64"),
    (np.zeros((2, 2, 2), np.uint8), r"shape \(2, 2, 2\)"),
    (np.zeros((0, 3), np.uint8), "shape"),
])
def test_numpy_errors(array, match):
    with pytest.raises(ImageError, match=match) as info:
        load_image(array)
    assert "<uploaded image>" in str(info.value)


# ------------------------------------------------------------------------------------ downscaling


def test_max_side_png_and_small_images(tmp_path):
    path = _saved(tmp_path, Image.new("RGB", (300, 200), (50, 60, 70)), "w.png")
    assert load_image(path, max_side=100).size == (100, 67)
    assert load_image(path, max_side=1000).size == (300, 200)
    assert load_image(np.zeros((200, 300), np.uint8), max_side=30).size == (30, 20)
    with pytest.raises(ValueError, match="max_side"):
        load_image(path, max_side=0)


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory) -> Path:
    """A 12000x9000 (108 MP) camera-sized JPEG; one flat colour so it encodes in about a second."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    image = Image.new("RGB", (12000, 9000), (120, 130, 140))
    image.save(path, quality=50)
    del image
    return path


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory read from Linux /proc")
def test_huge_jpeg_decodes_reduced_with_bounded_memory(huge_jpeg):
    # In a fresh process, so its peak RSS measures this load alone; warnings are errors there, so Pillow's
    # DecompressionBombWarning (above 89 MP) must not escape for a photo under our limit.
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest, which made the 309 MiB image).
    script = textwrap.dedent("""
        import re, sys, warnings
        warnings.simplefilter("error")
        from engine.images import image_size, load_image
        image = load_image(sys.argv[1], max_side=1024)
        with open("/proc/self/status") as status:
            peak_kib = re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)
        print(image.mode, *image.size, *image_size(sys.argv[1]), peak_kib)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(huge_jpeg)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    mode, width, height, shown_w, shown_h, peak_kib = result.stdout.split()
    assert (mode, int(width), int(height)) == ("RGB", 1024, 768)
    assert (int(shown_w), int(shown_h)) == (12000, 9000)
    # A full decode holds 12000*9000*3 bytes = 309 MiB of pixels alone; the reduced decode stays far below.
    assert int(peak_kib) / 1024 < 200, f"peak RSS {int(peak_kib) / 1024:.0f} MiB"


def test_over_our_limit_raises(tmp_path, monkeypatch):
    path = _saved(tmp_path, Image.new("RGB", (50, 40)), "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    for call in (load_image, image_size):
        with pytest.raises(ImageError, match=r"big\.png: 50x40 = 2,000 pixels is over the limit of 1,000 pixels; "
                                             "downscale"):
            call(path)


def test_over_decoded_bytes_limit_raises_by_mode(tmp_path, monkeypatch):
    # 50x40 = 2,000 pixels: 2,000 bytes as 8-bit gray, 4,000 as 16-bit, 8,000 as float32 (Pillow's layout).
    gray = _saved(tmp_path, Image.new("L", (50, 40), 9), "gray.png")
    deep = _saved(tmp_path, Image.fromarray(np.full((40, 50), 9, np.uint16)), "deep.png")
    floats = _saved(tmp_path, Image.new("F", (50, 40), 0.5), "floats.tif")
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 5000)
    assert load_image(gray).size == load_image(deep).size == (50, 40)
    with pytest.raises(ImageError, match=r"floats\.tif: 50x40 in mode 'F' decodes to 8,000 bytes, over the limit of "
                                         r"5,000 bytes; downscale the photo .* \(8-bit instead of 16-bit or float\)"):
        load_image(floats)
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 3000)
    with pytest.raises(ImageError, match=r"deep\.png: 50x40 in mode 'I;16' decodes to 4,000 bytes"):
        load_image(deep)
    assert image_size(floats) == (50, 40)  # the header alone decodes nothing


def test_decoded_bytes_limit_counts_the_reduced_jpeg_decode(tmp_path, monkeypatch):
    path = _saved(tmp_path, Image.new("RGB", (400, 300), (10, 20, 30)), "wide.jpg", quality=90)
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 100_000)  # full decode: 400*300*4 = 480,000 bytes
    assert load_image(path, max_side=50).size == (50, 38)  # decoded at 1/4 scale: 100x75*4 = 30,000 bytes
    with pytest.raises(ImageError, match=r"wide\.jpg: 400x300 in mode 'RGB' decodes to 480,000 bytes"):
        load_image(path)


def _huge_file(folder: Path, kind: str) -> Path:
    """A 12000x12000 float32 TIFF (values -100..665, so min-max stretched), 16-bit gray PNG or RGBA PNG (black
    fading to transparent), a few MB at most: one value a row compresses well, and Pillow builds it without a
    full-size numpy copy. Each is dark at the top and light at the bottom once loaded."""
    ramp = Image.linear_gradient({"float32": "F", "16-bit": "I", "RGBA": "L"}[kind])  # (256, 256), rows 0..255
    if kind == "RGBA":
        path = folder / "huge-rgba.png"
        black = Image.new("L", ramp.size, 0)
        Image.merge("RGBA", (black, black, black, ramp.point(lambda v: 255 - v))).resize(
            (12000, 12000), Image.Resampling.NEAREST).save(path)
    elif kind == "float32":
        path = folder / "huge-float32.tif"
        ramp.point(lambda v: v * 3 - 100).resize((12000, 12000), Image.Resampling.NEAREST).save(
            path, compression="tiff_deflate")
    else:
        path = folder / "huge-16bit.png"
        ramp.point(lambda v: v * 257).resize((12000, 12000), Image.Resampling.NEAREST).convert("I;16").save(path)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory read from Linux /proc")
@pytest.mark.parametrize("kind,mode", [("float32", "F"), ("16-bit", "I;16"), ("RGBA", "RGBA")])
def test_huge_photo_loads_within_memory_bound(tmp_path, kind, mode):
    path = _huge_file(tmp_path, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # 144 MP: Pillow warns above 89 MP
        with Image.open(path) as opened:
            assert opened.mode == mode and path.stat().st_size < 5_000_000
    # In a fresh process per call: VmHWM is that process's peak RSS; idle is its RSS once engine.images is imported.
    script = textwrap.dedent("""
        import re, sys, warnings
        warnings.simplefilter("error")
        from engine.images import load_image
        def kib(key):
            with open("/proc/self/status") as status:
                return int(re.search(key + r":\\s+(\\d+) kB", status.read()).group(1))
        idle = kib("VmRSS")
        image = load_image(sys.argv[1], max_side=int(sys.argv[2]))
        print(image.mode, *image.size, image.getpixel((0, 0))[0], image.getpixel((0, image.height - 1))[0],
              kib("VmHWM") - idle)
    """)
    for max_side in (1600, 352):
        result = subprocess.run([sys.executable, "-c", script, str(path), str(max_side)], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        image_mode, width, height, top, bottom, peak_kib = result.stdout.split()
        assert (image_mode, int(width), int(height)) == ("RGB", max_side, max_side)
        assert int(top) <= 1 and int(bottom) >= 254  # scaled, stretched or composited to 0..255, not clipped
        # The decoded pixels (576 MB float32 or RGBA, 288 MB 16-bit) and the 144 MB 8-bit copy or, for RGBA, the
        # 576 MB RGB one; before banding, whole-image copies took 4.6 GB (float32), 2.3 GB (16-bit), 2.9 GB (RGBA).
        peak_gb = int(peak_kib) * 1024 / 1e9
        assert peak_gb <= 1.5, f"{kind} at max_side={max_side}: peak {peak_gb:.2f} GB above idle"


def test_pillow_guard_kept_and_its_warning_silenced_only_under_our_limit(tmp_path, monkeypatch):
    path_40 = _saved(tmp_path, Image.new("RGB", (40, 40)), "p40.png")  # 1600 px: Pillow warns above 1000
    path_50 = _saved(tmp_path, Image.new("RGB", (50, 50)), "p50.png")  # 2500 px: Pillow refuses above 2000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path_40).size == (40, 40)
        with pytest.raises(ImageError, match=r"p50\.png: too large"):
            load_image(path_50)
    assert Image.MAX_IMAGE_PIXELS == 1000  # never switched off


# ---------------------------------------------------------------------------------- broken files


def test_broken_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    whole = _saved(tmp_path, Image.effect_noise((64, 64), 40).convert("RGB"), "whole.jpg", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    cases = [(empty, "empty.jpg: file is empty"), (text, "notes.jpg: not an image"),
             (cut, "cut.jpg: image file is truncated"), (tmp_path / "gone.png", "gone.png: no such file"),
             (tmp_path, "is a folder")]
    for path, message in cases:
        with pytest.raises(ImageError, match=message):
            load_image(path)
    assert image_size(cut) == (64, 64)  # the header is intact: image_size does not decode pixels
    with pytest.raises(ImageError, match="<uploaded image>: no data"):
        load_image(b"")
    with pytest.raises(ImageError, match="<uploaded image>: not an image"):
        load_image(io.BytesIO(b"GIF? no"))


def test_heic_gets_a_specific_message(tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 32)
    with pytest.raises(ImageError, match="IMG_0001.HEIC: HEIC/HEIF .*JPEG"):
        load_image(path)


# ------------------------------------------------------------------------------------ list_images


def test_list_images(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("b.jpg", "A.PNG", "c.webp", "._b.jpg", "notes.txt"):
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "d.jpg").write_bytes(b"x")
    single = tmp_path / "single.tif"
    single.write_bytes(b"x")
    assert list_images([single, folder]) == [single, folder / "A.PNG", folder / "b.jpg", folder / "c.webp"]
    assert list_images(str(folder))[0] == folder / "A.PNG"
    assert IMAGE_SUFFIXES == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        list_images([single, tmp_path / "missing.jpg"])


def test_list_images_empty_folder(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ImageError, match="nothing: folder holds no images"):
        list_images([tmp_path / "nothing"])


def test_real_photo_loads():
    photo = next((SHARED_DATA / "cracks" / "valid" / "images").glob("*.jpg"))
    image = load_image(photo, max_side=320)
    assert image.mode == "RGB" and image.size == (320, 320)
    assert image_size(photo) == (640, 640)
