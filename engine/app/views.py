"""What the app shows, as plain values: training progress in Markdown, its JSON, the legend, table values.

Pure functions of their inputs (no gradio, no model): the handlers in app.py pass their results to widgets.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from engine.draw import training_curves

if TYPE_CHECKING:  # engine.train loads torch; the app must import without it (`import app` stays light)
    from engine.train.events import JobStatus

__all__ = ["IDLE_TEXT", "NOT_YOURS_TEXT", "format_eta", "status_markdown", "status_dict", "training_view",
           "legend_html", "table"]

IDLE_TEXT = "**No training job has run yet.** Pick data and settings, then press **Train**."
NOT_YOURS_TEXT = "*Read-only: another visitor started this job. You can watch it; only they can stop it.*"


def format_eta(seconds: float | None) -> str:
    """Seconds left as "45 s", "2 min 05 s" or "1 h 05 min"; None -> "estimating..."."""
    if seconds is None:
        return "estimating..."
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _headline(status: JobStatus) -> str:
    """"**Training** · epoch 2/5 · step 3/10 · ETA 2 min 05 s" (the ETA only while the job works)."""
    head = f"**{status.phase.capitalize()}**"
    if status.phase == "caching":  # before the first epoch: the frozen tower's features, view by view
        head += f" · view {status.step}/{status.steps}" if status.steps else ""
        return head + f" · ETA of the cache build {format_eta(status.eta_s)}"
    if status.epochs:
        head += f" · epoch {status.epoch}/{status.epochs}"
    if status.steps:
        head += f" · step {status.step}/{status.steps}"
    if status.active:
        head += f" · ETA {format_eta(status.eta_s)}"
    return head


def _validation_line(metrics: Mapping | None) -> str | None:
    """"Last validation: val loss 0.5000; segment crack: IoU 0.410, Dice 0.500" from a metrics.jsonl row."""
    metrics = metrics or {}
    groups: dict[tuple, list[str]] = {}  # synonyms the model answers alike share one entry: "a = b: IoU ..."
    for prompt, vals in (metrics.get("val") or {}).items():
        if isinstance(vals, Mapping):
            groups.setdefault((vals.get("miou", float("nan")), vals.get("dice", float("nan"))), []).append(prompt)
    parts = [f"{' = '.join(prompts)}: IoU {miou:.3f}, Dice {dice:.3f}" for (miou, dice), prompts in groups.items()]
    if metrics.get("val_loss") is not None:
        parts.insert(0, f"val loss {metrics['val_loss']:.4f}")
    return "Last validation: " + "; ".join(parts) if parts else None


def status_markdown(status: JobStatus, owned: bool = True) -> str:
    """A short progress summary of the training job's status, in Markdown (paragraphs apart).

    owned: False when the viewer did not start the job: a line says it is read-only to them.
    """
    idle = status.phase == "idle"
    lines = [IDLE_TEXT if idle else _headline(status)]
    if not owned and not idle:
        lines.append(NOT_YOURS_TEXT)
    if status.message and not idle:
        lines.append(str(status.message))
    validation = _validation_line(status.last_metrics)
    if validation:
        lines.append(validation)
    if status.run_dir:
        lines.append(f"Run folder: `{status.run_dir}`")
    if status.error:
        lines.append(f"**Error:** {status.error}")
    return "\n\n".join(lines)


def status_dict(status: JobStatus) -> dict:
    """The status as JSON-safe plain data (the Raw status panel and the /train_status API's third output)."""
    return json.loads(json.dumps(dataclasses.asdict(status), default=str))


def training_view(status: JobStatus, owned: bool = True):
    """(markdown, Plotly figure) for a training status: the summary and `engine.draw.training_curves`."""
    return status_markdown(status, owned), training_curves(list(status.history or []))


def legend_html(items: Sequence[tuple[str, str]]) -> str:
    """Colour swatches for the overlay's prompts: items are (prompt, "#rrggbb"), both HTML-escaped."""
    spans = "".join(f'<span><i style="background:{html.escape(c)}"></i>{html.escape(p)}</span>' for p, c in items)
    return f'<div class="dq-legend">{spans}</div>'


def table(rows: Sequence[Sequence], headers: Sequence[str]) -> dict:
    """A table widget's value: {"headers": [...], "data": rows}, rows in the order of `headers`."""
    return {"headers": list(headers), "data": [list(r) for r in rows]}
