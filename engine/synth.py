"""Procedural drywall photos with exact ground truth, for examples and tests (no real photos used).

A picture is built as a luminance field multiplied into a board colour:

1. board: off-white paper with low-frequency blotches, fibre streaks, fine grain and a few screw dimples;
2. taped joints: full-length bands of whiter, smoother joint compound with wobbly feathered edges and
   faint tape edges; the "taping area" mask is the band (compound at least half opaque);
3. cracks: dark random-walk polylines that branch and taper, drawn at 2x and box-filtered; the "crack"
   mask is the pixels at least a quarter covered by the line;
4. lighting: a linear gradient, a vignette, a colour cast; then sensor noise and a real JPEG round trip.

Everything comes from ``np.random.default_rng(seed)``, so one seed gives the same bytes every time.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PROMPT_FOR_MASK = {"crack": "segment crack", "taping area": "segment taping area"}

# (size (W, H), cracks, joints, lighting): varied on purpose, one portrait; cycled by write_examples
EXAMPLE_VARIANTS: list[tuple[tuple[int, int], int, int, bool]] = [
    ((640, 480), 1, 0, True),
    ((640, 480), 0, 1, True),
    ((640, 480), 2, 1, True),
    ((480, 640), 1, 1, True),
    ((800, 600), 0, 2, False),
    ((512, 512), 3, 0, True),
]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, stretch: tuple[float, float] = (1, 1)):
    """(H, W) float32 value noise of roughly unit amplitude with features about ``cell`` px wide.

    ``stretch`` = (sy, sx) lengthens features along y or x (paper fibres, trowel streaks).
    """
    gh = max(2, int(h / (cell * stretch[0])) + 2)
    gw = max(2, int(w / (cell * stretch[1])) + 2)
    grid = Image.fromarray(rng.standard_normal((gh, gw)).astype(np.float32), "F")
    return np.asarray(grid.resize((w, h), Image.BICUBIC), dtype=np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _board(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """(H, W) float32 luminance factor around 1 for bare drywall paper."""
    lum = 1.0 + 0.016 * _smooth_noise(rng, h, w, 90 * scale)
    lum += 0.010 * _smooth_noise(rng, h, w, 14 * scale)
    fibres = (1, 10) if rng.random() < 0.5 else (10, 1)  # paper fibres run along one direction
    lum += 0.005 * _smooth_noise(rng, h, w, 1.5 * scale, fibres)
    lum += 0.008 * rng.standard_normal((h, w)).astype(np.float32)
    return lum


def _joint(rng: np.random.Generator, h: int, w: int, scale: float, yy: np.ndarray, xx: np.ndarray):
    """One full-length taped joint: (alpha (H, W) float32 in [0, 1], texture (H, W) float32 around 0)."""
    vertical = rng.random() < 0.5
    across, along, length = (xx, yy, h) if vertical else (yy, xx, w)
    extent = w if vertical else h
    centre = rng.uniform(0.2, 0.8) * extent
    half = rng.uniform(28, 50) * scale  # compound spread each side of the seam
    feather = rng.uniform(14, 30) * scale
    # the knife edge wanders along the joint, independently on each side
    wobble = [
        np.interp(along, np.linspace(0, length, 12), rng.normal(0, 3.5 * scale, 12)).astype(np.float32)
        + np.interp(along, np.linspace(0, length, 60), rng.normal(0, 1.0 * scale, 60)).astype(np.float32)
        for _ in range(2)
    ]
    offset = across - centre
    dist = np.where(offset < 0, -offset - wobble[0], offset - wobble[1])
    alpha = _smoothstep((half + feather / 2 - dist) / feather)
    # streaks along the joint from the knife, tape edges as faint ridges, the seam under the tape
    streaks = _smooth_noise(rng, h, w, 3 * scale, (12, 1) if vertical else (1, 12))
    tape_half = rng.uniform(0.45, 0.6) * half
    ridge = np.exp(-((np.abs(offset) - tape_half) / (1.2 * scale)) ** 2)
    seam = np.exp(-(offset / (1.5 * scale)) ** 2)
    texture = 0.008 * streaks - 0.012 * ridge * rng.uniform(0.5, 1) - 0.01 * seam * rng.uniform(0, 1)
    return alpha.astype(np.float32), texture.astype(np.float32)


def _screws(rng: np.random.Generator, lum: np.ndarray, scale: float) -> None:
    """Add a few spotted screw dimples (compound patch + shaded rim) to ``lum`` in place."""
    h, w = lum.shape
    stud = rng.uniform(0.1, 0.3) * w
    for _ in range(rng.integers(2, 7)):
        cx = stud + rng.integers(0, 3) * 0.3 * w + rng.normal(0, 2)
        cy = rng.uniform(0.05, 0.95) * h
        r = rng.uniform(3.5, 6) * scale
        x0, x1 = int(max(0, cx - 4 * r)), int(min(w, cx + 4 * r + 1))
        y0, y1 = int(max(0, cy - 4 * r)), int(min(h, cy + 4 * r + 1))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d = np.hypot(yy - cy, xx - cx) / r
        light = (xx - cx + yy - cy) / (r * 1.4)  # lit from the upper left: rim shadow on that side
        patch = 0.025 * _smoothstep(2.8 - d)
        rim = -0.05 * np.exp(-((d - 1.0) / 0.3) ** 2) * np.clip(0.6 - light, 0, 1.6)
        lum[y0:y1, x0:x1] += patch + rim


def _crack_paths(rng: np.random.Generator, h: int, w: int, scale: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random-walk polylines of one crack and its branches: [(points (N, 2) x/y, widths (N,))]."""
    paths = []
    step = 3.0 * scale
    # (start x, start y, heading, number of steps, base width, depth)
    x0, y0 = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    todo = [(
        x0,
        y0,
        math.atan2(h / 2 - y0, w / 2 - x0) + rng.uniform(-1.0, 1.0),  # roughly across the picture
        int(rng.uniform(0.3, 0.7) * math.hypot(w, h) / step),
        rng.uniform(1.6, 3.2) * scale,
        0,
    )]
    while todo:
        x, y, heading, n, base_w, depth = todo.pop()
        angle = heading
        pts, widths = [(x, y)], []
        thick = base_w * rng.uniform(0.8, 1.2)
        for i in range(n):
            # jagged but directed: the angle jitters and is pulled back to the heading
            angle = heading + 0.75 * (angle - heading) + rng.normal(0, 0.35)
            x += step * math.cos(angle)
            y += step * math.sin(angle)
            if not (0 <= x < w and 0 <= y < h):
                break
            pts.append((x, y))
            taper = math.sin(math.pi * (i + 1) / (n + 1)) ** 0.6
            thick = float(np.clip(thick + rng.normal(0, 0.12 * scale), 0.6 * base_w, 1.5 * base_w))
            widths.append(max(1.0, thick * taper))
            if depth < 2 and i > 3 and rng.random() < 0.018:
                side = 1 if rng.random() < 0.5 else -1
                todo.append((x, y, angle + side * rng.uniform(0.4, 1.1), int((n - i) * rng.uniform(0.2, 0.5)),
                             base_w * 0.6, depth + 1))
        if len(pts) >= 2:
            paths.append((np.array(pts), np.array([widths[0], *widths])))
    return paths


def _draw_cracks(paths, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Render crack polylines at 2x: (coverage (H, W) float32 in [0, 1], depth (H, W) float32 in [0, 1])."""
    ss = 2
    cover = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(cover)
    for pts, widths in paths:
        p = pts * ss
        for (x0, y0), (x1, y1), wd in zip(p[:-1], p[1:], widths[1:]):
            lw = max(2, int(round(wd * ss)))
            draw.line([(x0, y0), (x1, y1)], fill=255, width=lw)
            r = lw / 2  # round joints so thick segments do not leave notches at turns
            draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=255)
    small = cover.resize((w, h), Image.BOX)
    coverage = np.asarray(small, dtype=np.float32) / 255.0
    halo = np.asarray(small.filter(ImageFilter.GaussianBlur(1.6)), dtype=np.float32) / 255.0
    return coverage, halo


def _stain(rng: np.random.Generator, h: int, w: int, scale: float, yy: np.ndarray, xx: np.ndarray):
    """One water stain: (opacity (H, W) float32 in [0, 1], tide line (H, W) float32 in [0, 1]).

    An irregular blotch (a disc whose edge wanders with smooth noise), paler inside, with the darker ring a
    drying stain leaves at its edge. Its mask is where the opacity is at least a half.
    """
    radius = rng.uniform(45, 110) * scale
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    wander = 0.28 * _smooth_noise(rng, h, w, radius * 0.6) + 0.1 * _smooth_noise(rng, h, w, radius * 0.2)
    d = np.hypot((xx - cx) / radius, (yy - cy) / (radius * rng.uniform(0.6, 1.0))) + wander
    opacity = _smoothstep((1.0 - d) / 0.18 + 0.5)
    tide = np.exp(-((d - 0.98) / 0.05) ** 2)
    return opacity.astype(np.float32), tide.astype(np.float32)


def make_wall(
    seed: int,
    size: tuple[int, int] = (640, 480),
    *,
    cracks: int = 1,
    joints: int = 1,
    lighting: bool = True,
    stains: int = 0,
) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """A synthetic photo of a drywall section with its ground-truth masks.

    Args:
        seed: any int; the same seed and arguments give identical pixels and masks.
        size: (W, H) in pixels, as PIL counts; at least 32 x 32.
        cracks: number of cracks (each with random branches); 0 gives an empty "crack" mask.
        joints: number of taped joints (full-length bands); 0 gives an empty "taping area" mask.
        lighting: add a brightness gradient, a vignette and a colour cast (else flat light).
        stains: number of yellow-brown water stains (a concept the bundled model never saw: the teach benchmark
            labels them). Drawn from their own random stream, so walls without stains are unchanged.

    Returns:
        (image, masks): a PIL RGB image of ``size`` and ``{"crack": (H, W) bool, "taping area": (H, W) bool}``,
        plus ``"water stain"`` when ``stains`` > 0.
    """
    w, h = int(size[0]), int(size[1])
    if w < 32 or h < 32:
        raise ValueError(f"size {size} is too small; pass (W, H) of at least (32, 32)")
    if cracks < 0 or joints < 0:
        raise ValueError(f"cracks and joints must be >= 0, got cracks={cracks}, joints={joints}")
    rng = np.random.default_rng(seed)
    scale = min(w, h) / 480.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # 1. board paper
    # tones vary along grey level and along a warm-cool axis only, so no seed turns pink or green
    warm_axis = np.array([1.0, 0.45, -1.0], dtype=np.float32)
    paper = np.array([218, 214, 204], dtype=np.float32) + rng.normal(0, 4) + rng.normal(0, 2.5) * warm_axis
    lum = _board(rng, h, w, scale)
    _screws(rng, lum, scale)
    rgb = lum[..., None] * paper

    # 2. joint compound: whiter and smoother than the paper, blended in by its alpha
    taping = np.zeros((h, w), dtype=bool)
    mud = np.array([231, 230, 225], dtype=np.float32) + rng.normal(0, 2) + rng.normal(0, 1.5) * warm_axis
    for _ in range(joints):
        alpha, texture = _joint(rng, h, w, scale, yy, xx)
        mud_lum = 1.0 + 0.006 * _smooth_noise(rng, h, w, 40 * scale) + texture
        mud_lum += 0.006 * rng.standard_normal((h, w)).astype(np.float32)
        a = alpha[..., None] * rng.uniform(0.6, 0.85)
        rgb = (1 - a) * rgb + a * (mud_lum[..., None] * mud)
        taping |= alpha >= 0.5

    # 3. cracks: darken by coverage, plus a soft grimy halo; a brownish grey
    crack = np.zeros((h, w), dtype=bool)
    if cracks:
        paths = [p for _ in range(cracks) for p in _crack_paths(rng, h, w, scale)]
        coverage, halo = _draw_cracks(paths, h, w)
        dark = np.clip(0.62 * coverage + 0.18 * halo, 0, 0.8)[..., None]
        rgb = rgb * (1 - dark * np.array([1.0, 1.03, 1.1], dtype=np.float32))
        crack = coverage >= 0.25

    # 3b. water stains: a yellow-brown tint and a darker tide line, under the light like everything else
    stained = np.zeros((h, w), dtype=bool)
    stain_rng = np.random.default_rng([seed, 7])
    for _ in range(stains):
        opacity, tide = _stain(stain_rng, h, w, scale, yy, xx)
        strength = stain_rng.uniform(0.10, 0.22)
        tint = np.array([0.55, 0.75, 1.25], dtype=np.float32) * strength  # takes off more blue than red
        rgb = rgb * (1 - opacity[..., None] * tint) * (1 - 0.09 * tide[..., None])
        stained |= opacity >= 0.5

    # 4. light, sensor noise, JPEG
    if lighting:
        theta = rng.uniform(0, 2 * math.pi)
        proj = ((xx / w - 0.5) * math.cos(theta) + (yy / h - 0.5) * math.sin(theta))
        r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2
        light = (1 + rng.uniform(0.08, 0.22) * proj) * (1 - rng.uniform(0.08, 0.2) * r2)
        light *= rng.uniform(0.82, 1.04)
        cast = rng.uniform(-0.04, 0.045)  # > 0 warm bulb, < 0 cool daylight
        rgb = rgb * light[..., None] * (1 + cast * warm_axis)
    rgb += rng.normal(0, 1.6, (h, w, 1)).astype(np.float32) + rng.normal(0, 0.6, (h, w, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=int(rng.integers(82, 93)))
    buf.seek(0)
    image = Image.open(buf).convert("RGB")
    masks = {"crack": crack, "taping area": taping}
    if stains:
        masks["water stain"] = stained
    return image, masks


def write_examples(out_dir, n: int = 6, quality: int = 85) -> list[Path]:
    """Write ``n`` example photos and ``prompts.json`` into ``out_dir``.

    Files are named ``wall_01_crack.jpg``, ``wall_02_taping.jpg``, ``wall_03_crack_taping.jpg`` ...
    after what they contain, cycling through :data:`EXAMPLE_VARIANTS` (seed = example number).
    ``prompts.json`` maps each file name to the prompts that have something to find in it, e.g.
    ``{"wall_03_crack_taping.jpg": ["segment crack", "segment taping area"]}``.

    Returns:
        The paths of the JPEGs written, in order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, prompts = [], {}
    for i in range(n):
        size, n_cracks, n_joints, lighting = EXAMPLE_VARIANTS[i % len(EXAMPLE_VARIANTS)]
        image, masks = make_wall(i + 1, size, cracks=n_cracks, joints=n_joints, lighting=lighting)
        present = [key for key, mask in masks.items() if mask.any()]
        tag = "_".join(key.split()[0] for key in present) or "plain"
        path = out / f"wall_{i + 1:02d}_{tag}.jpg"
        image.save(path, "JPEG", quality=quality, optimize=True)
        paths.append(path)
        prompts[path.name] = [PROMPT_FOR_MASK[key] for key in present]
    (out / "prompts.json").write_text(json.dumps(prompts, indent=2) + "\n")
    return paths


def training_wall(concept: str, seed: int, *, mixed: bool = False) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """One generated wall that holds ``concept`` ("crack": 1-3 cracks, "taping area": 1-2 joints), and with
    ``mixed`` the other concept too (both counts drawn), its size and lighting drawn from
    :data:`EXAMPLE_VARIANTS`; the same arguments give the same wall."""
    if concept not in PROMPT_FOR_MASK:
        raise ValueError(f"concept must be one of {sorted(PROMPT_FOR_MASK)}, not {concept!r}")
    rng = np.random.default_rng(seed)
    size, _, _, lighting = EXAMPLE_VARIANTS[int(rng.integers(len(EXAMPLE_VARIANTS)))]
    if concept == "crack":  # own count first: the walls without the other concept stay what they were
        counts = {"cracks": int(rng.integers(1, 4))}
        counts["joints"] = int(rng.integers(1, 3)) if mixed else 0
    else:
        counts = {"joints": int(rng.integers(1, 3))}
        counts["cracks"] = int(rng.integers(1, 4)) if mixed else 0
    return make_wall(seed, size, lighting=bool(lighting), **counts)


def training_wall_name(concept: str, seed: int, mixed: bool = False) -> str:
    """The file stem of a generated training wall; :func:`is_mixed_wall` tells the mixed ones by it."""
    return f"synth_{concept.split()[0]}_{'mixed_' if mixed else ''}{seed}"


def is_mixed_wall(name: str) -> bool:
    """True for a generated training wall that holds both concepts (its set labels only its own)."""
    return name.startswith("synth_") and "_mixed_" in name


def write_training_set(out_dir, concept: str, n: int, *, mixed: int = 0, seed: int = 1000,
                       quality: int = 90) -> Path:
    """``n`` walls of :func:`training_wall` (seeds ``seed`` .. ``seed + n - 1``; the examples use 1-6, so they
    stay unseen), the last ``mixed`` of them holding the other concept too, as an images/ + masks/ labelled set
    of ``concept`` (a mixed wall's mask is its ``concept`` only). Skipped when the set is already complete.

    Returns:
        ``out_dir``, ready for ``engine.data.open_dataset``.
    """
    if concept not in PROMPT_FOR_MASK:
        raise ValueError(f"concept must be one of {sorted(PROMPT_FOR_MASK)}, not {concept!r}")
    if not 0 <= mixed <= n:
        raise ValueError(f"mixed must be between 0 and n ({n}), not {mixed}")
    out = Path(out_dir)
    images, masks = out / "images", out / "masks"
    if images.is_dir() and masks.is_dir() and len(list(masks.glob("*.png"))) == n:
        return out
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        both = i >= n - mixed
        image, wall_masks = training_wall(concept, seed + i, mixed=both)
        name = training_wall_name(concept, seed + i, both)
        image.save(images / f"{name}.jpg", "JPEG", quality=quality)
        Image.fromarray(wall_masks[concept].astype(np.uint8) * 255).save(masks / f"{name}.png")
    return out
