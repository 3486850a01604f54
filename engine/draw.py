"""Overlays, heatmaps and training plots (Pillow, numpy and Plotly only).

Images go in as PIL images or (H, W, 3) uint8 arrays and come out as PIL RGB images; figures are
``plotly.graph_objects.Figure``. Nothing here knows about the UI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # plotly is imported where used: drawing overlays should not pay for it
    import plotly.graph_objects as go

#: Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), RGB 0-255,
#: ordered so the first ones stand out on off-white walls. Black is left out: it reads as a crack.
PALETTE: list[tuple[int, int, int]] = [
    (213, 94, 0),  # vermillion
    (0, 114, 178),  # blue
    (0, 158, 115),  # bluish green
    (230, 159, 0),  # orange
    (204, 121, 167),  # reddish purple
    (86, 180, 233),  # sky blue
    (240, 228, 66),  # yellow
]

# viridis sampled at i/9, i = 0..9 (matplotlib's values); interpolated to a 256-entry lookup table
_VIRIDIS_ANCHORS = np.array(
    [
        (68, 1, 84),
        (72, 40, 120),
        (62, 73, 137),
        (49, 104, 142),
        (38, 130, 142),
        (31, 158, 137),
        (53, 183, 121),
        (110, 206, 88),
        (181, 222, 43),
        (253, 231, 37),
    ],
    dtype=np.float64,
)


def colour_for(index: int) -> tuple[int, int, int]:
    """RGB colour (0-255) of the index-th prompt; the palette repeats after ``len(PALETTE)``."""
    return PALETTE[index % len(PALETTE)]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _to_rgb_array(image) -> np.ndarray:
    """PIL image (any mode) or (H, W, 3) uint8 array -> (H, W, 3) uint8 array (a copy)."""
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(
            f"image must be a PIL image or an (H, W, 3) uint8 array, got shape {arr.shape} dtype {arr.dtype}; "
            "convert with np.asarray(pil_image.convert('RGB'))"
        )
    return arr.copy()


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion of an (H, W) bool mask; pixels outside the image count as background."""
    padded = np.pad(mask, 1, constant_values=False)
    return (
        mask
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )


def mask_edges(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Inner boundary of a bool mask: mask pixels within ``width`` steps (4-neighbour) of the background.

    Args:
        mask: (H, W) bool.
        width: boundary thickness in pixels, >= 1.

    Returns:
        (H, W) bool, a subset of ``mask``.
    """
    inner = mask
    for _ in range(width):
        inner = _erode(inner)
    return mask & ~inner


def overlay(image, masks: Mapping[str, np.ndarray], alpha: float = 0.45, outline: bool = True) -> Image.Image:
    """Colour each mask over the image, one palette colour per prompt in dict order; overlaps stay readable.

    Inside the masks the pixel becomes ``(1 - alpha) * pixel + alpha * c``, where ``c`` is the mean colour of
    the masks covering it (so where two masks overlap both colours show in the mix, and neither hides the
    other); with ``outline`` every mask's boundary (about ``min(H, W) / 400`` px thick, at least 1) is then
    painted in its solid colour over all fills, so each prompt's outline stays visible inside another's mask
    (where two outlines cross, the later prompt's is on top). Pixels outside every mask are left untouched.

    Args:
        image: PIL image or (H, W, 3) uint8 array.
        masks: prompt -> (H, W) bool mask at the image's size.
        alpha: fill opacity in [0, 1].
        outline: draw the mask boundaries.

    Returns:
        PIL RGB image of size (W, H).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = _to_rgb_array(image).astype(np.float32)
    h, w = out.shape[:2]
    width = max(1, min(h, w) // 400)
    checked = []
    for name, mask in masks.items():
        mask = np.asarray(mask)
        if mask.shape != (h, w):
            raise ValueError(
                f"mask {name!r} has shape {mask.shape} but the image is {(h, w)}; "
                "masks must be (H, W) at the image's own size"
            )
        checked.append(mask.astype(bool, copy=False))
    count = np.zeros((h, w), dtype=np.float32)
    colour_sum = np.zeros((h, w, 3), dtype=np.float32)
    for k, mask in enumerate(checked):
        count += mask
        colour_sum[mask] += np.array(colour_for(k), dtype=np.float32)
    covered = count > 0
    mean_colour = colour_sum[covered] / count[covered, None]
    out[covered] = (1.0 - alpha) * out[covered] + alpha * mean_colour
    if outline:
        for k, mask in enumerate(checked):
            out[mask_edges(mask, width)] = np.array(colour_for(k), dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def number_regions(image: Image.Image, labels: Sequence[tuple[float, float, str, int]]) -> Image.Image:
    """The image with a numbered tag at each point: labels are (x, y, text, colour index), x and y in the image's
    pixels; each tag is the text in white on its prompt's palette colour, so region 2 of the crack mask reads
    "2" in the crack's colour, matching a table row."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(12, min(28, min(out.size) // 40)))
    for x, y, text, colour in labels:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 8, bottom - top + 6
        x0 = int(min(max(0, x - w / 2), out.width - w))
        y0 = int(min(max(0, y - h / 2), out.height - h))
        draw.rounded_rectangle((x0, y0, x0 + w, y0 + h), radius=4, fill=colour_for(colour), outline=(255, 255, 255))
        draw.text((x0 + 4 - left, y0 + 3 - top), text, fill=(255, 255, 255), font=font)
    return out


def legend(masks: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """(prompt, "#rrggbb") pairs matching the colours :func:`overlay` uses, in dict order."""
    return [(name, _hex(colour_for(k))) for k, name in enumerate(masks)]


def _viridis_lut() -> np.ndarray:
    """(256, 3) uint8 lookup table interpolated from the viridis anchors."""
    xs = np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS))
    grid = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(grid, xs, _VIRIDIS_ANCHORS[:, c]) for c in range(3)], axis=1)
    return np.rint(lut).astype(np.uint8)


def heatmap(prob: np.ndarray) -> Image.Image:
    """Colour a probability map with viridis (dark purple = 0, yellow = 1).

    Args:
        prob: (H, W) float in [0, 1]; values outside are clipped; NaN is an error.

    Returns:
        PIL RGB image of size (W, H).
    """
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2:
        raise ValueError(f"prob must be an (H, W) map, got shape {prob.shape}")
    if np.isnan(prob).any():
        raise ValueError("prob contains NaN; check the model output")
    idx = np.rint(np.clip(prob, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(_viridis_lut()[idx], "RGB")


def blend_heatmap(image, prob: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The :func:`heatmap` of ``prob`` blended over the image: ``(1 - alpha) * image + alpha * heat``.

    Args:
        image: PIL image or (H, W, 3) uint8 array.
        prob: (H, W) float in [0, 1] at the image's size.
        alpha: heatmap opacity in [0, 1].

    Returns:
        PIL RGB image of size (W, H).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = _to_rgb_array(image).astype(np.float32)
    prob = np.asarray(prob)
    if prob.shape != base.shape[:2]:
        raise ValueError(
            f"prob has shape {prob.shape} but the image is {base.shape[:2]}; "
            "pass the map at the image's own size"
        )
    heat = np.asarray(heatmap(prob), dtype=np.float32)
    out = (1.0 - alpha) * base + alpha * heat
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def side_by_side(images: Sequence, labels: Sequence[str], gap: int = 8) -> Image.Image:
    """Images in one row, each scaled to the smallest height, with a caption above each.

    Args:
        images: PIL images or (H, W, 3) uint8 arrays.
        labels: one caption per image.
        gap: pixels between and around the panels.

    Returns:
        PIL RGB image on a white background.
    """
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels; pass one label per image")
    if not images:
        raise ValueError("no images to lay out; pass at least one")
    pils = [im.convert("RGB") if isinstance(im, Image.Image) else Image.fromarray(_to_rgb_array(im)) for im in images]
    height = min(im.height for im in pils)
    pils = [
        im if im.height == height else im.resize((max(1, round(im.width * height / im.height)), height), Image.BILINEAR)
        for im in pils
    ]
    font = ImageFont.load_default(size=max(12, min(24, height // 20)))
    caption_h = int(font.size * 1.6) if hasattr(font, "size") else 20
    total_w = sum(im.width for im in pils) + gap * (len(pils) + 1)
    canvas = Image.new("RGB", (total_w, height + caption_h + 2 * gap), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for im, label in zip(pils, labels):
        draw.text((x, gap), str(label), fill=(20, 20, 20), font=font)
        canvas.paste(im, (x, gap + caption_h))
        x += im.width + gap
    return canvas


# ---------------------------------------------------------------- plotly figures


def _empty_figure(title: str | None, message: str = "no epochs yet") -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 16})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, template="plotly_white")
    return fig


def _prompts_in(history: Sequence[Mapping]) -> list[str]:
    """Prompts appearing in any epoch's "val" dict, in order of first appearance."""
    seen: dict[str, None] = {}
    for row in history:
        for prompt in (row.get("val") or {}):
            seen.setdefault(prompt, None)
    return list(seen)


def _val_series(history: Sequence[Mapping], prompt: str, key: str) -> list[float | None]:
    """history[i]["val"][prompt][key] per epoch, None where missing (Plotly draws a gap)."""
    return [((row.get("val") or {}).get(prompt) or {}).get(key) for row in history]


def synonym_groups(history: Sequence[Mapping]) -> list[list[str]]:
    """The prompts of a history grouped by identical validation curves (mIoU and Dice equal at every epoch), in
    order of first appearance: synonyms of one set ("segment crack", "segment wall crack") that a model answers
    alike draw one line, not several on top of each other."""
    groups: dict[tuple, list[str]] = {}
    for prompt in _prompts_in(history):
        key = tuple(zip(_val_series(history, prompt, "miou"), _val_series(history, prompt, "dice")))
        groups.setdefault(key, []).append(prompt)
    return list(groups.values())


def training_curves(history: Sequence[Mapping], title: str | None = None) -> go.Figure:
    """Loss and validation curves of one training run.

    Args:
        history: one dict per epoch: ``{"epoch": int, "train_loss": float, "val_loss": float | None,
            "lr": float, "val": {prompt: {"miou": float, "dice": float}}}``; "val_loss", "lr" and "val"
            may be missing.
        title: figure title.

    Returns:
        A Figure with three panels, each with its own axes (no titles on top of each other): train/val loss;
        the learning rate (only from two epochs on: one point says nothing of a schedule); per-prompt validation
        mIoU (solid) and Dice (dashed) in [0, 1], one colour per group of prompts with identical curves
        (`synonym_groups`, named "a = b"). Every series shows its points, so one epoch is visible. An empty
        history gives a figure with the note "no epochs yet".
    """
    if not history:
        return _empty_figure(title)
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [row["epoch"] for row in history]
    lrs = [row.get("lr") for row in history]
    show_lr = len(history) > 1 and any(v is not None for v in lrs)
    titles = ("Loss", "Learning rate", "Validation IoU / Dice") if show_lr else ("Loss", "Validation IoU / Dice")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.09,
                        column_widths=[0.36, 0.22, 0.42] if show_lr else [0.45, 0.55])
    score_col = len(titles)
    fig.add_trace(go.Scatter(x=epochs, y=[row.get("train_loss") for row in history], name="train loss",
                             mode="lines+markers", line={"color": "#333333"}), row=1, col=1)
    val_loss = [row.get("val_loss") for row in history]
    if any(v is not None for v in val_loss):
        fig.add_trace(go.Scatter(x=epochs, y=val_loss, name="val loss", mode="lines+markers",
                                 line={"color": "#888888"}), row=1, col=1)
    if show_lr:
        fig.add_trace(go.Scatter(x=epochs, y=lrs, name="lr", mode="lines+markers",
                                 line={"color": "#999999", "dash": "dot"}), row=1, col=2)
        fig.update_yaxes(title_text="learning rate", exponentformat="power", row=1, col=2)
    for k, group in enumerate(synonym_groups(history)):
        colour, name, first = _hex(colour_for(k)), " = ".join(group), group[0]
        fig.add_trace(go.Scatter(x=epochs, y=_val_series(history, first, "miou"), name=f"{name} mIoU",
                                 mode="lines+markers", line={"color": colour}, legendgroup=name), row=1, col=score_col)
        fig.add_trace(go.Scatter(x=epochs, y=_val_series(history, first, "dice"), name=f"{name} Dice",
                                 mode="lines+markers", line={"color": colour, "dash": "dash"}, legendgroup=name),
                      row=1, col=score_col)
    for col in range(1, len(titles) + 1):
        fig.update_xaxes(title_text="epoch", dtick=1 if len(history) <= 10 else None, row=1, col=col)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="score (validation)", range=[0, 1], row=1, col=score_col)
    fig.update_layout(title=title, template="plotly_white", hovermode="x unified",
                      legend={"orientation": "h", "y": -0.25})
    return fig


def compare_curves(runs: Mapping[str, Sequence[Mapping]], title: str | None = None) -> go.Figure:
    """Validation mIoU per prompt of several runs on one axis.

    Args:
        runs: run name -> history (as in :func:`training_curves`).
        title: figure title.

    Returns:
        A Figure with one line per (run, prompt), named "run · prompt": colour by run, dash style by
        prompt. No epochs in any run gives a figure with the note "no epochs yet".
    """
    if not any(runs.values()):
        return _empty_figure(title)
    import plotly.graph_objects as go

    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    all_prompts = _prompts_in([row for history in runs.values() for row in history])
    fig = go.Figure()
    for r, (run, history) in enumerate(runs.items()):
        colour = _hex(colour_for(r))
        epochs = [row["epoch"] for row in history]
        for prompt in _prompts_in(history):
            dash = dashes[all_prompts.index(prompt) % len(dashes)]
            fig.add_trace(
                go.Scatter(x=epochs, y=_val_series(history, prompt, "miou"), name=f"{run} · {prompt}",
                           mode="lines+markers", line={"color": colour, "dash": dash}, legendgroup=run)
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="validation mIoU", range=[0, 1])
    fig.update_layout(title=title, template="plotly_white", hovermode="x unified")
    return fig
