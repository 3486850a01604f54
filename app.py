"""Drywall QA: the Gradio app (layout and wiring only; everything that computes lives in `engine/`).

    python app.py [--host 0.0.0.0] [--port 7860] [--share] [--public]

Four tabs: Segment (a photo and prompts -> overlay, heatmap, masks), Train (a background fine-tuning job with
live curves), Compare (several models on one labelled set) and Export (ONNX with a parity and speed report).
Each handler below is a module-level function: it turns widget values into one `engine.app` call and its
result back into widget values, so a test can call it without HTTP. What handlers share (the model cache,
the folders) travels in an `AppContext` bound as their first argument. Engine errors (ValueError, OSError,
RuntimeError, with the fix in their message) reach the user as `gr.Error`.
The named endpoints (/segment, /segment_batch, /train_start, /train_status, /train_stop, /compare, /export,
/download_run, /push, /models) are the app's API for `gradio_client`. `import app` builds nothing; `build_app()`
makes the Blocks.
Public mode (`--public`, or on a Space where SPACE_ID is set; `engine.app.public`) hides the server-folder
inputs, offers and accepts only the listed models, caps each request's cost and keeps server paths out of
every message. In every mode a training job belongs to the browser session that started it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import html
import importlib.util
import inspect
import logging
import math
import os
import re
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from engine.app import (
    COMPARE_HEADERS,
    DISPLAY_MAX_SIDE,
    EXPORT_HEADERS,
    IDLE_TEXT,
    TABLE_HEADERS,
    WORST_HEADERS,
    TrainRequest,
    absent_sets_for,
    compare_models,
    eval_data_for,
    example_rows,
    export_model,
    image_id_for,
    legend_html,
    model_choices,
    segment_photo,
    slider_threshold,
    start_run,
    status_dict,
    stop_training,
    table,
    train_defaults,
    training_status,
    training_view,
)
from engine.app.batch import MAX_BATCH_PHOTOS, batch_photos
from engine.app.batch import segment_batch as run_batch
from engine.app.choices import own_choices, public_choices
from engine.app.download import download_run as zip_of_run
from engine.app.download import push_message, push_run_to_hub
from engine.app.housekeeping import bytes_used, job_paths, make_work_dir, prune, remove_work_dir, stale_work_dirs
from engine.app.jobs import owns_job, start_teach
from engine.app.labels import (
    BRUSH_COLOUR,
    EDITOR_CANVAS,
    SET_HEADERS,
    SUGGEST_HEADERS,
    editor_value,
    mask_from_editor,
    set_rows,
    suggest,
    thumbnails,
)
from engine.app.public import (
    PublicSettings,
    allowed_models,
    check_compare,
    check_count,
    check_model,
    check_training,
    public_status,
    scrub_paths,
)
from engine.app.segment import REGION_HEADERS, SHOWN_HEADERS, line_scale, region_rows, shown_rows
from engine.app.visitors import (
    VISITORS_DIR,
    Workspace,
    forget_visitor,
    live_visitors,
    local_workspace,
    visitor_workspace,
)
from engine.data.archive import FOLDER_HINT
from engine.data.labelset import check_set_name, delete_label, is_label_set, list_sets, save_label
from engine.data.writers import write_coco, write_yolo, zip_label_set
from engine.errors import ImageError
from engine.images import image_size, load_image
from engine.paths import (
    CHECKPOINTS_DIR,
    DEFAULT_HUB_ID,
    DEFAULT_SETS,
    EXAMPLES_DIR,
    EXPORT_DIR,
    LABELS_DIR,
    SHARED_DATA,
    STARTER_DIR,
)
from engine.prompts import parse_prompts

if TYPE_CHECKING:
    from engine.models.cache import ModelCache

log = logging.getLogger("drywall_qa.app")

QUICK_PICKS = tuple(prompts[0] for prompts in DEFAULT_SETS.values())  # "segment crack", "segment taping area"
POLL_SECONDS = 1.5
KEEP_FILES_S = 24 * 3600  # at start, the work dir's files older than this go (a work dir given by the caller)
_VISITOR_PATH = re.compile(rf"{VISITORS_DIR}/[0-9a-f]{{16}}/(?:[a-z]+/)?")  # a visitor's folder, as scrubbed
DEFAULT_MODEL_ENV = "DQA_DEFAULT_MODEL"  # the Segment tab's first model (default: the bundled model)
DIRECT_CALLER = "direct-call"  # who a handler called without a request (a test, a script) is, in public mode

CSS = """
.dq-header h1 { margin-bottom: 0.1em; }
.dq-header p { margin-top: 0; color: var(--body-text-color-subdued); }
.dq-legend { display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; padding: 0.3em 0.2em; }
.dq-legend span { display: inline-flex; align-items: center; gap: 0.45em; font-size: 0.95em; }
.dq-legend i { width: 1.1em; height: 1.1em; border-radius: 3px; display: inline-block;
               border: 1px solid rgba(0, 0, 0, 0.25); }
.dq-muted { color: var(--body-text-color-subdued); font-size: 0.9em; }
"""


def launch_options(public: PublicSettings | None = None) -> dict:
    """What `launch()` needs besides host and port: theme, CSS (Gradio 6 takes them here), example files,
    and in public mode the upload cap (`max_file_size`)."""
    options = dict(theme=gr.themes.Soft(primary_hue="orange", secondary_hue="blue", neutral_hue="slate"), css=CSS,
                   allowed_paths=[str(EXAMPLES_DIR)])
    if public is not None and public.enabled:
        options["max_file_size"] = public.limits.max_file_size
    return options


@dataclass
class AppContext:
    """What the handlers share: the loaded models and the folders the app lists, reads and writes.

    checkpoints_dir, export_dir: the server's runs and ONNX exports (locally also where new ones go); data_root:
    the shared labelled sets (cracks/, joints/); work_dir: masks, uploads, export zips, the feature cache and, in
    public mode, each visitor's own folder (`engine.app.visitors`); examples: [photo, prompts] rows;
    train_overrides: TrainConfig fields applied to every run started here; public: public mode and its caps.
    """

    cache: ModelCache
    checkpoints_dir: Path
    export_dir: Path
    data_root: Path
    work_dir: Path
    default_model: str = str(STARTER_DIR)
    examples: list[list[str]] = field(default_factory=list)
    train_overrides: dict = field(default_factory=dict)
    public: PublicSettings = field(default_factory=PublicSettings)
    labels_dir: Path = LABELS_DIR  # the local user's label sets (a visitor's are in their own folder)

    def workspace(self, request: gr.Request | None = None) -> Workspace:
        """Where this request's files go: the visitor's own folder in public mode (marked as seen now), else
        the shared folders (checkpoints/, export/, the work dir)."""
        if not self.public.enabled:
            return local_workspace(self.checkpoints_dir, self.export_dir, self.work_dir, self.labels_dir)
        return visitor_workspace(self.work_dir, viewer(request) or DIRECT_CALLER)

    def _in_use(self) -> list[Path | str]:
        """What no clean-up may delete now: the default model, and what a running training job uses."""
        keep: list[Path | str] = [self.default_model]
        if "engine.train" in sys.modules:  # else no job has run in this process (and torch stays unloaded)
            status = training_status()
            keep += job_paths(status.run_dir) if status.active else []
        return keep

    def _pruned_folders(self) -> list[Path]:
        kinds = ("uploads", "masks", "exports", "features") + ((VISITORS_DIR,) if self.public.enabled else ())
        return [self.work_dir / kind for kind in kinds]

    def tidy(self, max_age_s: float | None = None) -> list[Path]:
        """Delete the oldest of the app's own files past the disk cap (`housekeeping.prune`, by its one rule
        `may_delete`): the work dir's uploads, masks, export zips and feature cache, and in public mode the
        folders of visitors who are no longer live (no request for `visitor_idle_min`). Never a live visitor's
        files, the shipped or default model, a tracked file, or what a running training job uses.

        Public mode: raises OSError when the live visitors' files alone fill the cap (the request is refused
        before it writes; they free up as those visitors leave)."""
        keep = self._in_use()
        limits = self.public.limits
        if self.public.enabled:
            keep += live_visitors(self.work_dir, limits.visitor_idle_min * 60)
        folders = self._pruned_folders()
        deleted = prune(folders, limits.disk_bytes, keep=keep, max_age_s=max_age_s)
        if self.public.enabled and bytes_used(folders) > limits.disk_bytes:
            raise OSError(f"This app's disk for visitors' files is full ({limits.disk_gb:g} GB, DQA_MAX_DISK_GB) "
                          "with the work of visitors who are here now; try again in a while, or run the app on "
                          "your own machine.")
        return deleted

    def settle(self, ws: Workspace, keep: Sequence[Path] = ()) -> None:
        """Public mode: hold the visitor to their budget (`limits.visitor_gb`): their own oldest files go first;
        when what this request just made (`keep`) still does not fit, it is deleted and the request refused."""
        if ws.root is None:
            return
        cap = self.public.limits.visitor_bytes
        prune(ws.folders, cap, keep=[*keep, *self._in_use()], min_age_s=0)
        used = bytes_used(ws.folders)
        if used > cap:
            for path in keep:
                if Path(path).resolve().is_relative_to(ws.root.resolve()):
                    shutil.rmtree(path, ignore_errors=True) if Path(path).is_dir() else Path(path).unlink(True)
            raise OSError(f"That would take your files here to {used / 1024**3:.2f} GB, over the "
                          f"{self.public.limits.visitor_gb:g} GB each visitor may keep (DQA_MAX_VISITOR_GB); "
                          "download what you want to keep, then try again (your oldest files go first).")

    @contextlib.contextmanager
    def output_dir(self, ws: Workspace, kind: str, made: list | None = None):
        """A fresh folder for one request's files (`Workspace.call_dir`), made after `tidy`; deleted at once
        when the request fails, and held to the visitor's budget when it succeeds (`settle`), with what the
        request made elsewhere (`made`, filled in by the caller: an export's folder) kept beside it."""
        self.tidy()
        path = ws.call_dir(kind)
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        self.settle(ws, keep=[path, *(made or [])])

    def call_dir(self, kind: str) -> Path:
        """A fresh folder for one request's files in the shared work dir, made after `tidy`."""
        self.tidy()
        return local_workspace(self.checkpoints_dir, self.export_dir, self.work_dir, self.labels_dir).call_dir(kind)

    def choices(self, ws: Workspace | None = None, torch_only: bool = False) -> list[tuple[str, str]]:
        """(label, value) for a model picker, the default model first when it is not listed. Public mode: a
        folder's value is its label (`public_choices`), and the visitor's own runs and exports follow the
        server's ("my run: NAME"); nobody else's are listed."""
        choices = model_choices(self.checkpoints_dir, self.export_dir, torch_only=torch_only,
                                default=self.default_model)
        if not self.public.enabled:
            return choices
        own = own_choices(ws.runs, ws.exports, torch_only=torch_only) if ws is not None and ws.root else []
        return public_choices(choices + own)

    def _allowed(self, ws: Workspace | None) -> dict[str, str]:
        listed = model_choices(self.checkpoints_dir, self.export_dir, default=self.default_model)
        own = own_choices(ws.runs, ws.exports) if ws is not None and ws.root else []
        return allowed_models(listed + own, self.public.extra_models)

    @property
    def default_value(self) -> str:
        """The pickers' starting value: the default model's own value in `choices()`."""
        if not self.public.enabled:
            return self.default_model
        listed = model_choices(self.checkpoints_dir, self.export_dir, default=self.default_model)
        label = next(label for label, source in listed if source == self.default_model)
        return public_choices([(label, self.default_model)])[0][1]

    def model_source(self, value: str | None, ws: Workspace | None = None) -> str:
        """The model source a picker value names (empty: the default). Public mode: only the server's listed
        models, the visitor's own (`ws`) and `public.extra_models`, by their picker value; anything else, a
        listed folder's path included, gets one message that names nothing (`check_model`). The pickers allow
        custom values, so that this check (over the current list, new runs included) is the one refusal."""
        if not value or not self.public.enabled:
            return value or self.default_model
        return check_model(value, self._allowed(ws))

    def prompts(self, text: str | None) -> list[str]:
        """The prompts typed (`parse_prompts`), at most `public.limits.prompts` of them in public mode."""
        chosen = parse_prompts(text)
        if self.public.enabled:
            check_count("Prompts", len(chosen), self.public.limits.prompts, "prompts per request")
        return chosen

    def scrub(self, text: str) -> str:
        """Public mode: `text` without server paths (`scrub_paths`), a visitor's folder by its kind
        ("visitors/<key>/runs/my-run" -> "my-run"), nor advice to use server folders."""
        if not self.public.enabled:
            return text
        text = scrub_paths(text.replace(FOLDER_HINT, ""), self.roots)
        return _VISITOR_PATH.sub("", text)

    @property
    def roots(self) -> list[Path]:
        """The app's folders, scrubbed from public error messages."""
        return [self.work_dir, self.checkpoints_dir, self.export_dir, self.data_root]


def viewer(request: gr.Request | None) -> str | None:
    """Who is asking: the logged-in user, else the browser session (each gradio_client has its own)."""
    if request is None:
        return None
    return getattr(request, "username", None) or getattr(request, "session_hash", None)


def user_errors(fn):
    """Turn engine errors into `gr.Error(message)` and anything else into a short note; log the traceback.

    In public mode (an AppContext argument says so) the message loses every server path (`AppContext.scrub`).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = next((a for a in args if isinstance(a, AppContext)), None)
        clean = ctx.scrub if ctx is not None else str
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, OSError, RuntimeError) as exc:
            log.info("%s: %s", fn.__name__, exc)
            raise gr.Error(clean(str(exc)), print_exception=False) from None
        except Exception as exc:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(clean(f"Unexpected error ({type(exc).__name__}: {exc}); see the server log."),
                           print_exception=False) from None

    return wrapper


def bind(handler, ctx: AppContext):
    """`handler` with `ctx` as its first argument. Gradio names the API's parameters after the rest, and the
    event after the handler; a real function (not a partial), so Gradio sees a `gr.Request` annotation."""

    @functools.wraps(handler)
    def bound(*args, **kwargs):
        return handler(ctx, *args, **kwargs)

    signature = inspect.signature(handler)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


# ---------------------------------------------------------------------------------------------- handlers
# Each takes the AppContext first (bound with `bind` in build_app), then its widgets' values.


@user_errors
def scale_values(mm_per_px, photo_width_mm) -> tuple[float | None, float | None]:
    """The Scale boxes as (mm per pixel, photo width in mm), each None when empty or 0; a negative one refused."""
    values = []
    for name, value in (("Scale (mm per pixel)", mm_per_px), ("Photo width (mm)", photo_width_mm)):
        value = float(value or 0)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} is {value:g}: give a positive number, or 0 for no scale (figures in pixels).")
        values.append(value or None)
    return values[0], values[1]


@user_errors
def segment(ctx: AppContext, image, prompts, model, threshold, mm_per_px=0.0, photo_width_mm=0.0,
            request: gr.Request | None = None):
    """/segment: (overlay, mask file paths, table value, SegmentResult for the other views). mm_per_px or
    photo_width_mm (0: none) put the measurements in millimetres, with crack width bands."""
    # Raw upload (preprocess=False): the engine, not Gradio, decodes the photo, so a file that is not an
    # image gets the engine's message; Gradio has already checked the path is an upload in its cache.
    path = image.get("path") if isinstance(image, dict) else image
    if not path:
        raise ValueError("No photo yet: upload one (JPEG, PNG, WebP) or pick an example below.")
    name = (image.get("orig_name") if isinstance(image, dict) else None) or Path(path).name
    ws = ctx.workspace(request)
    segmenter = ctx.cache.get(ctx.model_source(model, ws))
    chosen = ctx.prompts(prompts)
    scale, width_mm = scale_values(mm_per_px, photo_width_mm)
    try:  # the slider at the model's default means "each prompt's own threshold"; moved, it applies to all
        with ctx.output_dir(ws, "masks") as out_dir:
            result = segment_photo(segmenter, path, chosen, threshold=slider_threshold(segmenter, threshold),
                                   image_id=image_id_for(name), out_dir=out_dir, mm_per_px=scale,
                                   photo_width_mm=width_mm)
    except ImageError as exc:  # name the file as the user knows it, not by its upload cache path
        raise ImageError(str(exc).replace(str(path), name)) from None
    result.source_path = str(path)  # what "Correct this mask" checks the photo against
    if result.warning:  # a prompt outside the model's trained list
        gr.Warning(result.warning)
    fallback = auto_fallback(model or ctx.default_model, segmenter)
    if fallback:
        gr.Warning(fallback)
    return result.overlay, [str(p) for p in result.mask_paths], table(result.rows, TABLE_HEADERS), result


def auto_fallback(value: str, segmenter) -> str | None:
    """The line that says `auto` fell back to the bundled model (the Hub was unreachable), or None."""
    if str(value).strip() != "auto" or str(getattr(segmenter, "name", "")) == DEFAULT_HUB_ID:
        return None
    return (f"auto: the Hugging Face Hub is unreachable, so the bundled model answered, not {DEFAULT_HUB_ID}.")


@user_errors
def show_views(result):
    """After /segment: (before/after pair, heatmap, legend HTML with the model and threshold, the per-prompt table
    as shown, the table of numbered regions)."""
    if result is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    precision = f" · {html.escape(result.precision)}" if result.precision else ""
    thresholds = (f"threshold {result.threshold:.2f} for every prompt (the slider)" if result.overridden else
                  "each prompt's own calibrated thresholds (table: pixel thr, presence thr)")
    caption = (f'<span class="dq-muted">answered by {html.escape(result.model)} · {thresholds}'
               f" · {result.ms:.0f} ms{precision}</span>")
    scale = (f" · scale {result.mm_per_px:.3g} mm per pixel" if result.mm_per_px else
             " · no scale: lengths and widths in pixels")
    return ((result.photo, result.overlay), result.heatmap, legend_html(result.legend) + caption + scale,
            table(shown_rows(result.rows), SHOWN_HEADERS), table(region_rows(result.measures or {}), REGION_HEADERS))


def pick_point(points, evt: gr.SelectData):
    """A click on the overlay: the last two clicked points, (x, y) in the overlay's pixels, and what they are."""
    points = [*(points or [])[-1:], [float(evt.index[0]), float(evt.index[1])]]
    ends = " and ".join(f"({x:.0f}, {y:.0f})" for x, y in points)
    more = "Give its length and press **Use this line**." if len(points) == 2 else "Click the other end."
    return points, f"Clicked {ends}. {more}"


@user_errors
def use_line_scale(points, length_mm, result):
    """The scale from the clicked line: (mm per pixel box, photo width box at 0, a note saying what was set)."""
    if result is None or result.size is None:
        raise ValueError("Segment a photo first: the line is clicked on its overlay.")
    mm = line_scale(points or [], length_mm, result.overlay.size, result.size)
    return (round(mm, 5), 0, f"Scale **{mm:.4g} mm per pixel** from a {float(length_mm):g} mm line. Press "
            "**Segment** to measure in millimetres.")


@user_errors
def model_threshold(ctx: AppContext, model, request: gr.Request | None = None):
    """The threshold slider at the chosen model's calibrated threshold."""
    source = ctx.model_source(model, ctx.workspace(request))
    return gr.Slider(value=round(float(ctx.cache.get(source).threshold), 2))


@user_errors
def add_prompt(text, pick):
    """A quick-pick button: `pick` added to the prompts typed so far (once)."""
    return "\n".join(parse_prompts(text or "", [pick])) if (text or "").strip() else pick


@user_errors
def train_start(ctx: AppContext, sets, cracks_prompts, joints_prompts, zip_file, zip_prompts, folder, folder_prompts,
                model, run_name, epochs, lr, batch_size, image_size, unfreeze_vision, unfreeze_text, augment,
                patience, max_images, negative_rate=None, label_sets=None, request: gr.Request | None = None):
    """/train_start: start the background job from the Train tab's widgets; returns a message. label_sets: names
    of the caller's label sets, each training under its own prompts.

    The job belongs to the caller's session (`viewer`); public mode refuses folders and settings over the caps
    and stops the job after `limits.train_minutes`.
    """
    public = ctx.public.enabled
    ws = ctx.workspace(request)
    wanted = TrainRequest(
        model=ctx.model_source(model, ws), epochs=epochs, lr=lr, batch_size=batch_size, image_size=image_size,
        unfreeze_vision_layers=unfreeze_vision, unfreeze_text_layers=unfreeze_text, augment=augment,
        patience=patience, max_images=max_images, negative_rate=negative_rate, run_name=run_name, sets=sets or (),
        set_prompts={"cracks": cracks_prompts, "joints": joints_prompts}, zip_file=zip_file,
        zip_prompts=zip_prompts, folder=folder, folder_prompts=folder_prompts,
        label_sets=[str(_set_folder(ws, name)) for name in label_sets or []])
    if public:
        check_training(wanted, ctx.public.limits)
    ctx.tidy()  # room for the upload's extracted copy and the run
    ctx.settle(ws)  # the visitor's own oldest files go first when they are over their budget
    run_dir = start_run(wanted, data_root=ctx.data_root, checkpoints_dir=ws.runs, uploads_dir=ws.uploads,
                        cache=ctx.cache, overrides=ctx.train_overrides, owner=viewer(request),
                        time_limit_s=ctx.public.limits.train_minutes * 60 if public else None)
    shown = Path(run_dir).name if public else run_dir
    return f"Training started: run folder `{shown}`. Progress and curves update below."


def start_polling():
    """After a start: the status timer ticks."""
    return gr.Timer(active=True)


def status_views(ctx: AppContext, status, request: gr.Request | None):
    """(progress Markdown, curves figure, status JSON) as this viewer sees them: read-only when another
    session started the job; in public mode the run by its name and no server path."""
    owned = owns_job(viewer(request))
    shown = public_status(status, ctx.roots, owned) if ctx.public.enabled else status
    markdown, figure = training_view(shown, owned)
    return markdown, figure, status_dict(shown)


@user_errors
def train_status(ctx: AppContext, request: gr.Request | None = None):
    """/train_status: (progress Markdown, curves figure, the status as JSON)."""
    return status_views(ctx, training_status(), request)


@user_errors
def poll(ctx: AppContext, last_key, request: gr.Request | None = None):
    """Timer tick: the status, plus whether to keep ticking; a finished run is evicted and listed."""
    status = training_status()
    key = f"{status.phase}:{status.run_dir}"
    if not status.active and key != last_key and status.run_dir:
        ctx.cache.evict(status.run_dir)
    return (*status_views(ctx, status, request), key, gr.Timer(active=status.active))


@user_errors
def train_stop(ctx: AppContext, request: gr.Request | None = None):
    """/train_stop: ask the running job to stop (only the session that started it may); returns a message."""
    status = stop_training(viewer(request))
    name = Path(status.run_dir or "").name if ctx.public.enabled else status.run_dir
    return f"Stop requested for `{name}`; the job stops after the current step."


@user_errors
def refresh_pickers(ctx: AppContext, request: gr.Request | None = None):
    """The four model pickers with the current runs and exports (Segment, Train, Compare, Export); in public
    mode the server's and the asking visitor's own."""
    ws = ctx.workspace(request)
    every, torch_only = ctx.choices(ws), ctx.choices(ws, torch_only=True)
    return (gr.Dropdown(choices=every), gr.Dropdown(choices=torch_only), gr.Dropdown(choices=every),
            gr.Dropdown(choices=torch_only))


def forget_session(ctx: AppContext, request: gr.Request | None = None):
    """A browser tab closed: an anonymous visitor's folder goes (nobody can reach it again; a signed-in user
    keeps theirs), unless their training job still runs (the idle clean-up takes it later)."""
    if not ctx.public.enabled or request is None or getattr(request, "username", None):
        return
    who = viewer(request)
    if who and not ("engine.train" in sys.modules and training_status().active and owns_job(who)):
        forget_visitor(ctx.work_dir, who)


@user_errors
def list_my_models(ctx: AppContext, request: gr.Request | None = None) -> list[str]:
    """/models: the values the caller may pass as `model` (the pickers' values: in public mode the server's
    models and the caller's own runs and exports, by label)."""
    return [value for _, value in ctx.choices(ctx.workspace(request))]


# ------------------------------------------------------------------------------------ correct, keep, teach
# A visitor's label sets live in their own folder (public mode) or in labels/ (locally): `Workspace.sets`.


def _file_path(value) -> str | None:
    """A file input's server path (a Gradio FileData dict, a path string, or None)."""
    if isinstance(value, dict):
        return value.get("path")
    return str(value) if value else None


def _label_caps(ctx: AppContext) -> dict:
    limits = ctx.public.limits
    return dict(max_photos=limits.set_photos, max_sets=limits.label_sets) if ctx.public.enabled else {}


def _room_for_labels(ctx: AppContext, ws: Workspace) -> None:
    """Public mode: before a label is kept, the visitor's other oldest files go when they are over their budget;
    their label sets never do. Refused (OSError) when the sets alone fill it."""
    ctx.tidy()
    if ws.root is None:
        return
    cap = ctx.public.limits.visitor_bytes
    prune([f for f in ws.folders if f != ws.sets], cap, keep=ctx._in_use(), min_age_s=0)
    used = bytes_used(ws.folders)
    if used > cap:
        raise OSError(f"Your files here take {used / 1024**3:.2f} GB, the most each visitor may keep "
                      f"({ctx.public.limits.visitor_gb:g} GB, DQA_MAX_VISITOR_GB); download a label set and delete "
                      "some of its photos, then save again.")


def _set_folder(ws: Workspace, set_name: str) -> Path:
    folder = ws.sets / check_set_name(set_name)
    if not is_label_set(folder):
        raise ValueError(f"You have no label set named {set_name.strip()!r}; save a mask to it first.")
    return folder


@user_errors
def label_save(ctx: AppContext, photo, prompt, mask, set_name, request: gr.Request | None = None) -> str:
    """/label_save: keep `photo` with `mask` for `prompt` in the caller's label set `set_name`; returns the
    set's summary. mask: a PNG at the photo's size (non-zero = object); none, or all zero: "not in this photo",
    a negative for that prompt in training."""
    path = _file_path(photo)
    if not path:
        raise ValueError("No photo given: send the photo the mask belongs to.")
    name = (photo.get("orig_name") if isinstance(photo, dict) else None) or Path(path).name
    ws = ctx.workspace(request)
    _room_for_labels(ctx, ws)
    try:
        summary = save_label(ws.sets, set_name, path, prompt, _file_path(mask), photo_name=name, corrected=True,
                             **_label_caps(ctx))
    except ImageError as exc:
        raise ImageError(str(exc).replace(str(path), name)) from None
    return summary.text()


@user_errors
def label_sets(ctx: AppContext, request: gr.Request | None = None):
    """/label_sets: the caller's label sets: set, photos, and per prompt its masks and absent marks."""
    return table(set_rows(list_sets(ctx.workspace(request).sets)), SET_HEADERS)


@user_errors
def label_download(ctx: AppContext, set_name, kind="masks", request: gr.Request | None = None) -> str:
    """/label_download: a zip of the caller's label set. kind: "masks" (the set itself: one images/ + masks/
    folder per prompt; the Train tab, `--data` and `open_dataset` read it), "coco" (RLE), "coco-polygons" or
    "yolo" (YOLOv8-seg)."""
    writers = {"masks": zip_label_set, "coco": write_coco, "coco-polygons": partial(write_coco, polygons=True),
               "yolo": write_yolo}
    if kind not in writers:
        raise ValueError(f"Format {kind!r}: choose one of {', '.join(writers)}.")
    ws = ctx.workspace(request)
    folder = _set_folder(ws, set_name)
    with ctx.output_dir(ws, "exports") as zip_dir:
        return str(writers[kind](folder, zip_dir))


@user_errors
def label_push(ctx: AppContext, set_name, set_repo_id, oauth_token: gr.OAuthToken | None = None,
               request: gr.Request | None = None) -> str:
    """/label_push: the caller's label set to a (private) Hugging Face dataset repo with a dataset card; the
    signed-in user's token (tokens as for a model push)."""
    from engine.hub import push_label_set

    token = getattr(oauth_token, "token", None) or push_token(ctx.public.enabled)
    if ctx.public.enabled and not token:
        raise PermissionError("Sign in with Hugging Face first, or download the set as a zip and upload it "
                              "yourself.")
    result = push_label_set(_set_folder(ctx.workspace(request), set_name), set_repo_id, private=True, token=token)
    return f"Pushed {len(result.files)} files to the private dataset [{result.repo_id}]({result.url})."


@user_errors
def label_delete(ctx: AppContext, set_name, photo, prompt="", request: gr.Request | None = None) -> str:
    """/label_delete: remove a photo's mask for `prompt` (empty: every prompt) from the caller's set."""
    ws = ctx.workspace(request)
    summary = delete_label(ws.sets, check_set_name(set_name), photo, prompt or None)
    return summary.text() if summary.photos else f"{summary.name}: deleted (it held nothing more)."


@user_errors
def teach_start(ctx: AppContext, teach_sets, model, request: gr.Request | None = None) -> str:
    """/teach_start: fine-tune `model` (the one the Segment tab uses) on the caller's label sets with the
    `teach` preset (replaying the shared sets where present); the run belongs to the caller."""
    ws = ctx.workspace(request)
    names = [teach_sets] if isinstance(teach_sets, str) else list(teach_sets or [])
    folders = [_set_folder(ws, name) for name in names]
    public = ctx.public.enabled
    ctx.tidy()
    run_dir = start_teach(folders, model=ctx.model_source(model, ws), data_root=ctx.data_root,
                          checkpoints_dir=ws.runs, cache=ctx.cache, overrides=ctx.train_overrides,
                          owner=viewer(request),
                          time_limit_s=ctx.public.limits.train_minutes * 60 if public else None)
    shown = Path(run_dir).name
    return (f"Teaching started: run `{shown}` on {', '.join(names)}. Its progress and curves are on the Train tab; "
            "the run appears in every model picker when it is done.")


def label_set_choices(ctx: AppContext, request: gr.Request | None = None):
    """The visitor's set names for the pickers of the Segment and Train tabs, and the sets table."""
    sets = list_sets(ctx.workspace(request).sets)
    names = [s.name for s in sets]
    return gr.Dropdown(choices=names), gr.Dropdown(choices=names), table(set_rows(sets), SET_HEADERS)


@user_errors
def label_open(ctx: AppContext, image, result, label_prompt, empty=False):
    """The editor with the photo and `label_prompt`'s mask of the last answer (empty: no mask, to label from
    scratch), and the state saying what it was loaded from."""
    path = _file_path(image)
    if not path:
        raise ValueError("No photo yet: upload one above (and press Segment to start from the model's mask).")
    prompt = " ".join(str(label_prompt or "").split())
    if not prompt:
        raise ValueError("Which prompt is the mask for? Type or pick one, e.g. 'segment crack'.")
    answered = result is not None and not empty and prompt in [row[0] for row in result.rows]
    if not empty and not answered:
        raise ValueError(f"The last answer has no mask for {prompt!r}: press Segment with it, or start from an "
                         "empty mask.")
    if answered and result.source_path != path:
        raise ValueError("The photo changed since the last answer: press Segment again, or start from an empty mask.")
    photo = None if answered else load_image(path, max_side=DISPLAY_MAX_SIDE)
    value = editor_value(result if answered else None, prompt if answered else None, photo, image_size(path))
    return value, {"photo": path, "prompt": prompt, "from_model": answered,
                   "model": result.model if answered else ""}


@user_errors
def label_keep(ctx: AppContext, editor, loaded, result, set_name, absent=False, request: gr.Request | None = None):
    """Save the editor's mask (absent: an empty one, "not in this photo") to the visitor's set; the summary."""
    if not loaded:
        raise ValueError("Open the editor first: 'Correct this mask' or 'Start from an empty mask'.")
    path, prompt = loaded["photo"], loaded["prompt"]
    mask, corrected = None, True
    if not absent:
        from_model = result if loaded["from_model"] and result is not None else None
        if from_model is not None and from_model.source_path != path:
            raise ValueError("Another photo was segmented since the editor opened: press 'Correct this mask' again.")
        mask, corrected = mask_from_editor(editor, from_model, prompt if from_model else None, image_size(path))
    ws = ctx.workspace(request)
    _room_for_labels(ctx, ws)
    summary = save_label(ws.sets, set_name, path, prompt, mask, photo_name=Path(path).name,
                         model=ctx.scrub(loaded.get("model") or ""), corrected=corrected, **_label_caps(ctx))
    note = "absent mark" if absent or mask is None or not mask.any() else (
        "corrected mask" if corrected else "mask as proposed")
    return f"Kept the {note} for **{prompt}**. {summary.text()}"


@user_errors
def label_browse(ctx: AppContext, set_name, request: gr.Request | None = None):
    """A set's photos with their masks, newest first."""
    if not (set_name or "").strip():
        return []
    return thumbnails(_set_folder(ctx.workspace(request), set_name))


def pick_label(evt: gr.SelectData):
    """A click on a set's picture: its caption ("prompt · photo · note")."""
    return evt.value.get("caption") if isinstance(evt.value, dict) else str(evt.value)


@user_errors
def label_delete_picked(ctx: AppContext, set_name, picked, request: gr.Request | None = None):
    """Delete the picture picked in the set's gallery."""
    if not picked:
        raise ValueError("Click a picture of the set first.")
    prompt, photo = [part.strip() for part in picked.split("·")][:2]
    return label_delete(ctx, set_name, photo, prompt, request=request)


def open_suggestion(suggested, photos, evt: gr.SelectData):
    """A click on a row of "least certain first": that photo and prompt in the Segment tab."""
    row = suggested.iloc[evt.index[0]] if hasattr(suggested, "iloc") else suggested[evt.index[0]]
    photo, prompt = str(row[0]), str(row[1])
    path = (photos or {}).get(photo)
    if not path:
        raise gr.Error("That photo is no longer here: run the batch again.", print_exception=False)
    return path, prompt, prompt


def show_data_inputs(choice):
    """The Compare tab's folder box and zip upload, each shown only when chosen."""
    return gr.Textbox(visible=choice == "folder"), gr.File(visible=choice == "zip")


@user_errors
def compare(ctx: AppContext, models, precisions, data_choice, folder, zip_file, prompts, limit,
            request: gr.Request | None = None):
    """/compare: (scores table, curves figure, gallery of (image, caption), worst-cases table)."""
    if ctx.public.enabled:  # no server folder, the listed models only, bounded counts
        check_compare(len(models or []), data_choice, limit, ctx.public.limits)
    ws = ctx.workspace(request)
    sources = [ctx.model_source(m, ws) for m in models or []]
    data, default_prompts = eval_data_for(data_choice, data_root=ctx.data_root, folder=folder, zip_file=zip_file)
    chosen = ctx.prompts(prompts) if (prompts or "").strip() else list(default_prompts)
    ctx.tidy()  # room for the upload's extracted copy (compare_models deletes it once scored)
    result = compare_models(ctx.cache, sources, data, chosen, precisions=precisions or ["fp32"],
                            limit=int(limit or 0) or None, uploads_dir=ws.uploads,
                            absent=absent_sets_for(data_choice, data_root=ctx.data_root))
    return (table(result.rows, COMPARE_HEADERS), result.curves, result.gallery,
            table(result.worst, WORST_HEADERS))


@user_errors
def export(ctx: AppContext, model, precision, progress=gr.Progress(), request: gr.Request | None = None):
    """/export: (parity and speed table, the report's text, the zip's path). In public mode the export
    goes to the visitor's own folder, and its manifest, report and zip name the model by its picker label."""
    ws = ctx.workspace(request)
    source = ctx.model_source(model, ws)
    public = ctx.public.enabled
    made: list[Path] = []
    with ctx.output_dir(ws, "exports", made) as zip_dir:
        result = export_model(source, ws.exports, int8=precision == "int8", cache=ctx.cache,
                              example=ctx.examples[0][0] if ctx.examples else None, prompts=QUICK_PICKS,
                              zip_dir=zip_dir, progress=lambda f, m: progress(f, desc=m),
                              source_name=(model or ctx.default_value) if public else None,
                              scrub=ctx.scrub if public else None)
        made.append(result.out_dir)
    rows = [[ctx.scrub(str(c)) for c in row] for row in result.rows] if public else result.rows
    return table(rows, EXPORT_HEADERS), ctx.scrub(result.report), str(result.zip_path)


@user_errors
def segment_batch(ctx: AppContext, files, prompts, model, threshold, mm_per_px=0.0, photo_width_mm=0.0,
                  progress=gr.Progress(), request: gr.Request | None = None):
    """/segment_batch: (masks zip, predictions.csv, report.html) for several photos or a zip of photos; a fourth
    value, kept in a State (not part of the API), lists the least certain answers for the page."""
    paths = [f.get("path") if isinstance(f, dict) else f for f in files or []]
    ws = ctx.workspace(request)
    segmenter = ctx.cache.get(ctx.model_source(model, ws))  # cheap refusals first: model, prompts, photo count
    chosen = ctx.prompts(prompts)
    scale, width_mm = scale_values(mm_per_px, photo_width_mm)
    cap = ctx.public.limits.batch_photos if ctx.public.enabled else MAX_BATCH_PHOTOS
    with ctx.output_dir(ws, "masks") as out_dir:
        photos = batch_photos([(p, Path(p).name) for p in paths if p], out_dir / "photos", max_photos=cap)
        warning = segmenter.prompt_warning(chosen)
        if warning:
            gr.Warning(warning)
        result = run_batch(segmenter, photos, chosen, out_dir=out_dir,
                           threshold=slider_threshold(segmenter, threshold), progress=lambda f, m: progress(f, desc=m),
                           mm_per_px=scale, photo_width_mm=width_mm)
    if result.failed:
        gr.Warning(f"{len(result.failed)} photo(s) could not be read: " + "; ".join(result.failed.values()))
    # For "worth correcting" (not part of the API: a State): the answers, least certain first, and the photos.
    review = {"rows": suggest(result.rows), "photos": {p.name: str(p.path) for p in photos}}
    return str(result.zip_path), str(result.csv_path), str(result.report_path), review


def show_suggested(review):
    """After a batch: the least certain answers as a table, and the photos they name."""
    review = review or {}
    return table(review.get("rows") or [], SUGGEST_HEADERS), review.get("photos") or {}


@user_errors
def download_run(ctx: AppContext, model, request: gr.Request | None = None):
    """/download_run: a zip of the run's Hugging Face folder (best model, model card, metrics.jsonl). Public
    mode: the server's runs and the visitor's own only, with no server path in any of its files."""
    if not (model or "").strip():
        raise ValueError("No run chosen: pick a training run in the list, then download it.")
    ws = ctx.workspace(request)
    source = ctx.model_source(model, ws)
    with ctx.output_dir(ws, "exports") as zip_dir:
        zip_path = zip_of_run(source, zip_dir, scrub=ctx.scrub if ctx.public.enabled else None)
    return str(zip_path)


@user_errors
def download_trained(ctx: AppContext, request: gr.Request | None = None):
    """The Train tab's download: the zip of the current (or last) training job's run, for the visitor who
    started it."""
    run_dir = training_status().run_dir if "engine.train" in sys.modules else None
    if not run_dir or (ctx.public.enabled and not owns_job(viewer(request))):
        raise ValueError("No run trained by you in this app yet: train one, or pick a run in the Export tab.")
    ws = ctx.workspace(request)
    with ctx.output_dir(ws, "exports") as zip_dir:
        zip_path = zip_of_run(run_dir, zip_dir, scrub=ctx.scrub if ctx.public.enabled else None)
    return str(zip_path)


@user_errors
def push_to_hub(ctx: AppContext, model, repo_id, private, oauth_token: gr.OAuthToken | None = None,
                request: gr.Request | None = None):
    """The "Push to the Hub" button: the run's folder and card to `repo_id`, with the signed-in user's token.
    Without sign-in: locally the token `hf auth login` saved; on a Space without OAuth, the Space's HF_TOKEN
    (`push_token`); a public app with OAuth never uses a token of its own."""
    token = getattr(oauth_token, "token", None) or push_token(ctx.public.enabled)
    if ctx.public.enabled and not token:
        raise PermissionError("Sign in with Hugging Face first (the button beside Push), or download the run as a "
                              "zip and upload it yourself.")
    ws = ctx.workspace(request)
    result = push_run_to_hub(ctx.model_source(model, ws), repo_id, private=bool(private), token=token,
                             scrub=ctx.scrub if ctx.public.enabled else None)
    return push_message(result)


def push_token(public: bool) -> str | None:
    """The token a push uses when the visitor has not signed in: on a public app without OAuth (a Space whose
    README has no `hf_oauth`, or a local test of one), HF_TOKEN from the environment; else None (locally
    huggingface_hub then reads the token `hf auth login` saved)."""
    if public and not oauth_available():
        return os.environ.get("HF_TOKEN") or None
    return None


# ---------------------------------------------------------------------------------------------- layout


def _own_work_dir() -> Path:
    """A fresh work dir (housekeeping.make_work_dir), deleted when the process exits; work dirs that killed
    app processes left behind are deleted first."""
    for stale in stale_work_dirs():
        remove_work_dir(stale)
    work_dir = make_work_dir()
    atexit.register(remove_work_dir, work_dir)
    return work_dir


def default_segment_model() -> str:
    """The model the Segment, Compare and Export tabs start on: DQA_DEFAULT_MODEL when set (a run marked as the
    default), else the bundled model, trained on walls, the one this app has evidence for (README "Models").
    Training starts from `auto` instead: the pretrained Hub model where reachable (it fine-tunes best)."""
    return os.environ.get(DEFAULT_MODEL_ENV) or str(STARTER_DIR)


def make_context(*, checkpoints_dir: str | os.PathLike | None = None, export_dir: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None, examples_dir: str | os.PathLike | None = None,
                 work_dir: str | os.PathLike | None = None, default_model: str | None = None, cache_size: int = 4,
                 train_overrides: dict | None = None, public: PublicSettings | None = None,
                 labels_dir: str | os.PathLike | None = None) -> AppContext:
    """The handlers' context with the repo's defaults (engine.paths) for what is not given; loads no model.

    public: None reads the environment (`PublicSettings.from_env`: on on a Space), else as given.
    labels_dir: the local user's label sets (default: labels/ in the repository, or, when a work dir is given,
    inside it, so that a test's sets never land in the repository).
    """
    from engine.models.cache import ModelCache  # deferred: engine.models loads torch; `import app` must not

    examples_dir = Path(examples_dir or EXAMPLES_DIR)
    public = public or PublicSettings.from_env()
    labels_dir = Path(labels_dir or (LABELS_DIR if work_dir is None else Path(work_dir) / "labels"))
    work_dir = Path(work_dir or _own_work_dir())
    overrides = dict(train_overrides or {})
    if public.enabled:  # the feature cache in the work dir, where the disk cap (AppContext.tidy) prunes it
        overrides.setdefault("cache_dir", str(work_dir / "features"))
    return AppContext(
        cache=ModelCache(maxsize=cache_size), checkpoints_dir=Path(checkpoints_dir or CHECKPOINTS_DIR),
        export_dir=Path(export_dir or EXPORT_DIR), data_root=Path(data_root or SHARED_DATA),
        work_dir=work_dir, default_model=default_model or default_segment_model(),
        examples=example_rows(examples_dir, QUICK_PICKS[:1]) if examples_dir.is_dir() else [],
        train_overrides=overrides, public=public, labels_dir=labels_dir)


# One builder per tab: each lays out its widgets and returns them by name, the names of the handler parameters
# they feed (`inputs_for` wires them by those names, so a widget can never shift onto another's parameter).
# `wire_events` connects everything once every tab exists.

UI = dict  # widget name -> component, one per tab


def inputs_for(handler, ui: UI, **renamed) -> list:
    """The widgets that feed `handler`, by its parameter names (after the AppContext; not the request, progress
    or OAuth token Gradio fills in). renamed: parameter -> widget name where they differ."""
    skip = {"ctx", "request", "progress", "oauth_token"}
    names = [n for n in inspect.signature(handler).parameters if n not in skip]
    return [ui[renamed.get(n, n)] for n in names]


def _segment_tab(ctx: AppContext) -> UI:
    ui: UI = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            ui["image"] = gr.Image(label="Wall photo", type="filepath", image_mode=None,
                                   sources=["upload", "clipboard"], height=340, elem_id="seg-image")
            ui["prompts"] = gr.Textbox(label="What to find", lines=2, value=QUICK_PICKS[0],
                                       placeholder="one prompt per line or comma-separated",
                                       info="Several prompts at once: one per line or comma-separated.",
                                       elem_id="seg-prompts")
            with gr.Row():
                ui["picks"] = [gr.Button(f"+ {p}", size="sm", variant="secondary") for p in QUICK_PICKS]
            ui["model"] = gr.Dropdown(ctx.choices(), value=ctx.default_value, label="Model",
                                      allow_custom_value=True, elem_id="seg-model")
            ui["threshold"] = gr.Slider(0.0, 1.0, value=0.4, step=0.01, label="Threshold",
                                        info="At the model's default each prompt uses its own calibrated "
                                             "thresholds; moved, it applies to every prompt.")
            with gr.Row():
                ui["mm_per_px"] = gr.Number(0, label="Scale (mm per pixel)", minimum=0, elem_id="seg-scale",
                                            info="0: figures in pixels, no width band.")
                ui["photo_width_mm"] = gr.Number(0, label="...or the photo's real width (mm)", minimum=0,
                                                 elem_id="seg-width-mm", info="e.g. 1200 for a board across it.")
            with gr.Accordion("...or a line of known length on the overlay", open=False):
                gr.Markdown("Click the two ends of something you know the length of on the overlay (a board's "
                            "edge, a tape), give its length, and use it; then press Segment again.",
                            elem_classes="dq-muted")
                with gr.Row():
                    ui["line_length"] = gr.Number(0, label="Its length (mm)", minimum=0, elem_id="seg-line-mm")
                    ui["line_btn"] = gr.Button("Use this line", size="sm", elem_id="seg-line-btn")
                ui["line_note"] = gr.Markdown("No points clicked yet.", elem_id="seg-line-note")
                ui["line_points"] = gr.State([])
            ui["segment_btn"] = gr.Button("Segment", variant="primary", elem_id="segment-btn")
        with gr.Column(scale=3, min_width=400):
            with gr.Tabs():
                with gr.Tab("Overlay"):
                    ui["overlay"] = gr.Image(label="Overlay", type="pil", format="png", height=420,
                                             interactive=False, show_label=False, elem_id="seg-overlay")
                with gr.Tab("Before / after"):
                    ui["slider"] = gr.ImageSlider(label="Before / after", type="pil", height=420,
                                                  interactive=False, show_label=False)
                with gr.Tab("Heatmap"):
                    ui["heatmap"] = gr.Image(label="Probability heatmap", type="pil", height=420,
                                             interactive=False, show_label=False)
                    gr.Markdown("Probability per pixel, one panel per prompt: dark purple 0, green 0.5, "
                                "yellow 1.", elem_classes="dq-muted")
            ui["legend"] = gr.HTML(legend_html([]))
            ui["masks"] = gr.File(label="Masks (PNG, 0/255, named {photo}__{prompt}.png)", file_count="multiple",
                                  interactive=False, elem_id="seg-masks", elem_classes="dq-files")
    # The tables take the page's whole width. The API's table (every column) is not shown; the page shows the two.
    ui["table"] = gr.Dataframe(headers=TABLE_HEADERS, label="Every figure", interactive=False, visible=False)
    ui["shown"] = gr.Dataframe(headers=SHOWN_HEADERS, label="Per prompt", interactive=False, wrap=True,
                               elem_id="seg-table")
    ui["regions"] = gr.Dataframe(headers=REGION_HEADERS, label="Regions (numbered on the overlay)",
                                 interactive=False, wrap=True, elem_id="seg-regions", max_height=300)
    if ctx.examples:  # fill the photo and its prompts; nothing runs until Segment is pressed
        gr.Examples(ctx.examples, inputs=[ui["image"], ui["prompts"]], cache_examples=False, examples_per_page=12,
                    label="Example walls (made by engine/synth.py; click one, then Segment)",
                    example_labels=[f"{Path(p).stem}: {t.replace(chr(10), ', ')}" for p, t in ctx.examples])
    ui.update(_label_section(ctx))
    ui.update(_batch_section(ctx))
    ui["result"] = gr.State(None)
    ui["review"] = gr.State(None)
    return ui


def _label_section(ctx: AppContext) -> UI:
    ui: UI = {}
    with gr.Accordion("Correct and keep: label your photos, then teach the model", open=False,
                      elem_id="label-section"):
        gr.Markdown("Wrong answer? Open a prompt's mask over the photo, paint what it missed (brush) and wipe what "
                    "it got wrong (eraser), then **Save to my set**. **Not in this photo** keeps an empty mask: "
                    "the model learns to answer nothing there. **Teach** fine-tunes the model above on your set "
                    "(about 2 minutes for 20 photos on 2 CPU cores).", elem_classes="dq-muted")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=400):
                ui["editor"] = gr.ImageEditor(
                    label="Mask (red): brush adds, eraser removes", type="numpy", format="png", sources=(),
                    transforms=(), brush=gr.Brush(default_size=6, colors=[BRUSH_COLOUR], color_mode="fixed"),
                    eraser=gr.Eraser(default_size=14), layers=gr.LayerOptions(allow_additional_layers=False),
                    canvas_size=EDITOR_CANVAS, fixed_canvas=True, height=520, elem_id="label-editor")
            with gr.Column(scale=2, min_width=300):
                ui["label_prompt"] = gr.Dropdown(list(QUICK_PICKS), value=QUICK_PICKS[0], allow_custom_value=True,
                                                 label="Prompt", elem_id="label-prompt",
                                                 info="Any prompt, a new one too (e.g. 'segment water stain').")
                with gr.Row():
                    ui["open_btn"] = gr.Button("Correct this mask", size="sm", elem_id="label-open")
                    ui["empty_btn"] = gr.Button("Start from an empty mask", size="sm", elem_id="label-empty")
                ui["set_name"] = gr.Dropdown([], value="my-walls", allow_custom_value=True, label="Label set",
                                             elem_id="label-set", info="A new name starts a new set.")
                with gr.Row():
                    ui["keep_btn"] = gr.Button("Save to my set", variant="primary", elem_id="label-keep")
                    ui["absent_btn"] = gr.Button("Not in this photo", variant="secondary", elem_id="label-absent")
                ui["label_note"] = gr.Markdown(elem_id="label-note")
                ui["teach_btn"] = gr.Button("Teach the model above on this set", elem_id="label-teach")
                ui["teach_note"] = gr.Markdown(elem_id="teach-note")
        gr.Markdown("#### My label sets")
        ui["sets_table"] = gr.Dataframe(headers=SET_HEADERS, interactive=False, wrap=True, elem_id="label-sets")
        with gr.Row(equal_height=False):
            ui["label_format"] = gr.Radio([("mask folders (trains here)", "masks"), ("COCO, RLE", "coco"),
                                           ("COCO, polygons", "coco-polygons"), ("YOLOv8-seg", "yolo")],
                                          value="masks", label="Download as", scale=3)
            with gr.Column(scale=1, min_width=160):
                ui["download_set_btn"] = gr.Button("Download the set", size="sm", elem_id="label-download")
                ui["refresh_sets_btn"] = gr.Button("Refresh", size="sm", elem_id="label-refresh")
        with gr.Row(equal_height=False):
            ui["set_repo_id"] = gr.Textbox(label="Push the set to a Hub dataset repo (private)", scale=3,
                                           placeholder="your-name/my-walls", elem_id="label-repo")
            ui["push_set_btn"] = gr.Button("Push the set", size="sm", scale=1, elem_id="label-push")
        ui["push_set_note"] = gr.Markdown()
        ui["set_file"] = gr.File(label="The set (zip)", interactive=False, visible=False)
        ui["gallery"] = gr.Gallery(label="The set's photos, newest first (click one to pick it)", columns=6, rows=1,
                                   height=230, object_fit="contain", allow_preview=False, elem_id="label-gallery")
        with gr.Row():
            ui["picked_note"] = gr.Markdown("Nothing picked.", elem_classes="dq-muted")
            ui["delete_btn"] = gr.Button("Delete the picked photo from the set", size="sm", variant="stop",
                                         elem_id="label-delete")
        # /label_save for API clients: the photo and a mask file (none: "not in this photo").
        with gr.Group(visible=False):
            ui["api_photo"] = gr.File(label="photo")
            ui["api_mask"] = gr.File(label="mask")
            ui["api_prompt"] = gr.Textbox(label="prompt")
            ui["api_set"] = gr.Textbox(label="set_name")
            ui["api_btn"] = gr.Button("label_save")
    ui["loaded"] = gr.State(None)
    ui["picked"] = gr.State("")
    return ui


def _batch_section(ctx: AppContext) -> UI:
    ui: UI = {}
    cap = ctx.public.limits.batch_photos if ctx.public.enabled else MAX_BATCH_PHOTOS
    with gr.Accordion("Batch: several photos, or a zip of photos", open=False):
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                ui["files"] = gr.File(label="Photos or a .zip of photos", file_count="multiple",
                                      file_types=["image", ".zip"], type="filepath", height=160,
                                      elem_id="batch-files")
                ui["batch_btn"] = gr.Button("Segment all", variant="primary", elem_id="batch-btn")
                gr.Markdown(f"The prompts, model and threshold above apply to every photo; at most {cap} photos "
                            "per batch.", elem_classes="dq-muted")
            with gr.Column(scale=3, min_width=400):
                ui["batch_zip"] = gr.File(label="Masks (zip of {photo}__{prompt}.png)", interactive=False)
                ui["batch_csv"] = gr.File(label="predictions.csv", interactive=False)
                ui["batch_report"] = gr.File(label="Report (HTML, opens offline)", interactive=False)
        ui["suggested"] = gr.Dataframe(headers=SUGGEST_HEADERS, interactive=False, wrap=True, max_height=300,
                                       label="Worth correcting: the least certain answers first (click a row to "
                                             "open that photo above)", elem_id="batch-suggested")
        ui["batch_photos"] = gr.State({})
    return ui


def _capped(ctx: AppContext):
    """top(local_max, cap): a slider's end, the public cap in public mode."""
    return (lambda local_max, cap: min(local_max, cap)) if ctx.public.enabled else (lambda local_max, cap: local_max)


def _train_data(ctx: AppContext, shared_sets: list[str]) -> UI:
    ui: UI = {}
    public = ctx.public.enabled
    gr.Markdown("### Data")
    ui["sets"] = gr.CheckboxGroup(shared_sets, value=shared_sets[:1], label="Shared labelled sets",
                                  info=None if public else f"from {ctx.data_root}", visible=bool(shared_sets))
    ui["cracks_prompts"] = gr.Textbox(", ".join(DEFAULT_SETS["cracks"]), label="Prompts for cracks",
                                      visible="cracks" in shared_sets)
    ui["joints_prompts"] = gr.Textbox(", ".join(DEFAULT_SETS["joints"]), label="Prompts for joints",
                                      visible="joints" in shared_sets)
    ui["label_sets"] = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                   label="Your label sets (kept in the Segment tab)", elem_id="train-label-sets",
                                   info="Each set trains under its own prompts; Teach uses the teach preset.")
    with gr.Accordion("Your own labelled set", open=not shared_sets):
        ui["zip_file"] = gr.File(label="Upload a .zip (Roboflow YOLOv8 or COCO export)", file_types=[".zip"],
                                 type="filepath")
        ui["zip_prompts"] = gr.Textbox(label="Prompts for the zip", placeholder="segment crack")
        ui["folder"] = gr.Textbox(label="...or a folder on the server", visible=not public,
                                  placeholder="/data/my-walls (YOLOv8 root, split folder or COCO)")
        ui["folder_prompts"] = gr.Textbox(label="Prompts for the folder", placeholder="segment crack",
                                          visible=not public)
    return ui


def _train_settings(ctx: AppContext) -> UI:
    ui: UI = {}
    defaults, caps, top, public = train_defaults(), ctx.public.limits, _capped(ctx), ctx.public.enabled
    gr.Markdown("### Settings")
    ui["model"] = gr.Dropdown(ctx.choices(torch_only=True), value="auto", label="Start from", allow_custom_value=True,
                              info="auto: the pretrained Hub model where it is reachable (it fine-tunes best), else "
                                   "the bundled model; the run's card names the one it started from.")
    ui["run_name"] = gr.Textbox(label="Run name", placeholder="empty: run-<date>-<time>",
                                info="A new name: existing runs are never overwritten.", elem_id="run-name")
    ui["epochs"] = gr.Slider(1, top(100, caps.epochs), value=top(defaults.epochs, caps.epochs), step=1,
                             label="Epochs", elem_id="train-epochs")
    ui["lr"] = gr.Slider(1e-6, 5e-3, value=defaults.lr, step=1e-6, label="Learning rate",
                         info="Type an exact value in the box, e.g. 0.0001.")
    ui["batch_size"] = gr.Slider(1, top(64, caps.batch_size), step=1, label="Batch size",
                                 value=top(defaults.batch_size, caps.batch_size), elem_id="train-batch")
    ui["image_size"] = gr.Slider(64, top(704, caps.image_size), step=32, label="Image size (px)",
                                 value=top(defaults.image_size, caps.image_size),
                                 info="CLIPSeg works at 352; smaller trains faster.", elem_id="train-size")
    with gr.Row():
        layers = top(12, caps.unfreeze_layers)
        ui["unfreeze_vision"] = gr.Slider(0, layers, value=min(defaults.unfreeze_vision_layers, layers), step=1,
                                          label="Vision layers to unfreeze")
        ui["unfreeze_text"] = gr.Slider(0, layers, value=min(defaults.unfreeze_text_layers, layers), step=1,
                                        label="Text layers to unfreeze")
    with gr.Row():
        ui["augment"] = gr.Checkbox(value=defaults.augment, label="Augment (flips, crops, colour)")
        ui["patience"] = gr.Slider(0, 20, value=defaults.patience, step=1, label="Early-stopping patience (0 = off)")
    ui["max_images"] = gr.Slider(int(public), top(1000, caps.train_images), step=1,
                                 value=caps.train_images if public else 0,
                                 label="Images per set" if public else "Images per set (0 = all)",
                                 info="A small number makes a quick trial run.", elem_id="train-images")
    ui["negative_rate"] = gr.Slider(0.0, 0.9, value=defaults.negative_rate, step=0.05, label="Absent-concept negatives",
                                    info="Share of samples that pair a photo with another set's prompt and an empty "
                                         "mask, so that a prompt for something absent gives nothing (needs two or "
                                         "more sets).")
    return ui


def _train_tab(ctx: AppContext, shared_sets: list[str]) -> UI:
    ui: UI = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            ui.update(_train_data(ctx, shared_sets))
        with gr.Column(scale=1, min_width=320):
            ui.update(_train_settings(ctx))
    with gr.Row():
        ui["train_btn"] = gr.Button("Train", variant="primary", elem_id="train-btn")
        ui["stop_btn"] = gr.Button("Stop", variant="stop", elem_id="stop-btn")
        ui["teach_btn"] = gr.Button("Teach (your label sets, from the Segment tab's model)", elem_id="train-teach")
        ui["status_btn"] = gr.Button("Refresh status", variant="secondary")
        ui["download_btn"] = gr.Button("Download the run (zip)", variant="secondary")
    ui["message"] = gr.Markdown(label="train_message")
    ui["file"] = gr.File(label="The run as a Hugging Face folder (zip)", interactive=False, visible=False)
    ui["progress"] = gr.Markdown(IDLE_TEXT, label="progress", elem_id="train-progress")
    ui["curves"] = gr.Plot(label="Training curves")
    with gr.Accordion("Raw status", open=False):
        ui["status"] = gr.JSON(label="Job status")
    ui["timer"] = gr.Timer(POLL_SECONDS, active=False)
    ui["phase_key"] = gr.State("")
    return ui


def _compare_tab(ctx: AppContext, shared_sets: list[str]) -> UI:
    ui: UI = {}
    public, caps, top = ctx.public.enabled, ctx.public.limits, _capped(ctx)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            ui["models"] = gr.Dropdown(ctx.choices(), multiselect=True, label="Models or runs",
                                       info="Pick two or more; ONNX exports run as they were exported.",
                                       allow_custom_value=True, max_choices=caps.compare_models if public else None)
            ui["precisions"] = gr.CheckboxGroup(["fp32", "bf16"], value=["fp32"], label="Torch precision")
            choices = [(f"{n} (shared, valid split)", n) for n in shared_sets] + (
                [] if public else [("a folder on the server", "folder")]) + [("an uploaded zip", "zip")]
            ui["data_choice"] = gr.Radio(choices, value=choices[0][1], label="Labelled set")
            ui["folder"] = gr.Textbox(label="Folder", placeholder="a split folder or a YOLOv8/COCO root",
                                      visible=choices[0][1] == "folder")
            ui["zip_file"] = gr.File(label="Zip (YOLOv8 or COCO export)", file_types=[".zip"], type="filepath",
                                     visible=False, height=140)
            ui["prompts"] = gr.Textbox(label="Prompts", lines=2,
                                       placeholder="empty: the set's own (shared sets: their synonyms)")
            ui["limit"] = gr.Slider(int(public), top(500, caps.compare_images), step=1,
                                    value=top(20, caps.compare_images),
                                    label="Images" if public else "Images (0 = all)",
                                    info="Fewer images give a quicker, rougher answer.")
            ui["compare_btn"] = gr.Button("Compare", variant="primary")
        with gr.Column(scale=2, min_width=400):
            ui["curves"] = gr.Plot(label="Training curves of the chosen runs")
            ui["gallery"] = gr.Gallery(label="Ground truth and each model's overlay", columns=6, height=460,
                                       object_fit="contain", selected_index=0)
    # The tables take the page's whole width: eleven columns of scores fit there without cutting a name.
    ui["table"] = gr.Dataframe(headers=COMPARE_HEADERS, label="Scores per prompt", interactive=False, wrap=True,
                               elem_id="cmp-table")
    ui["worst"] = gr.Dataframe(headers=WORST_HEADERS, label="Worst cases (lowest IoU)", interactive=False,
                               wrap=True, column_widths=["22%", "22%", "44%", "12%"])
    return ui


def _export_tab(ctx: AppContext) -> UI:
    ui: UI = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            ui["model"] = gr.Dropdown(ctx.choices(torch_only=True), value=ctx.default_value, label="Model",
                                      info="The model to export, download or push.", allow_custom_value=True)
            ui["precision"] = gr.Radio(["fp32", "int8"], value="fp32", label="Precision",
                                       info="int8 quantizes the encoders and also keeps fp32 graphs.")
            ui["export_btn"] = gr.Button("Export to ONNX", variant="primary")
            gr.Markdown("Exports appear in every model picker." if ctx.public.enabled else
                        f"Exports go to `{ctx.export_dir}` and appear in every model picker.", elem_classes="dq-muted")
            gr.Markdown("### Keep the model")
            ui["download_btn"] = gr.Button("Download the run (zip)", elem_id="download-btn")
            gr.Markdown("A Hugging Face folder (model, card, metrics.jsonl): load it with "
                        "`CLIPSegForImageSegmentation.from_pretrained`, or unzip it into `checkpoints/`.",
                        elem_classes="dq-muted")
            ui["repo_id"] = gr.Textbox(label="Hub repo", placeholder="your-name/drywall-cracks")
            ui["private"] = gr.Checkbox(value=True, label="Private repo")
            with gr.Row():
                if oauth_available():
                    gr.LoginButton()
                ui["push_btn"] = gr.Button("Push to the Hub", elem_id="push-btn")
            ui["push_message"] = gr.Markdown()
        with gr.Column(scale=2, min_width=400):
            ui["table"] = gr.Dataframe(headers=EXPORT_HEADERS, label="Parity and speed", interactive=False, wrap=True)
            ui["report"] = gr.Textbox(label="Report", lines=8, max_lines=40, interactive=False, elem_id="exp-report",
                                      buttons=["copy"])
            ui["file"] = gr.File(label="Download the export (zip)", interactive=False)
            ui["run_file"] = gr.File(label="The run as a Hugging Face folder (zip)", interactive=False)
    return ui


def _wire_segment(ctx: AppContext, seg: UI) -> None:
    seg["segment_btn"].click(bind(segment, ctx), inputs_for(segment, seg),
                             [seg["overlay"], seg["masks"], seg["table"], seg["result"]], api_name="segment",
                             preprocess=False, concurrency_limit=2, concurrency_id="model").success(
        show_views, seg["result"], [seg["slider"], seg["heatmap"], seg["legend"], seg["shown"], seg["regions"]],
        api_visibility="private",
        queue=False)
    for button, pick in zip(seg["picks"], QUICK_PICKS):
        button.click(partial(add_prompt, pick=pick), seg["prompts"], seg["prompts"], api_visibility="private",
                     queue=False)
    seg["overlay"].select(pick_point, seg["line_points"], [seg["line_points"], seg["line_note"]],
                          api_visibility="private", queue=False)
    seg["line_btn"].click(use_line_scale, [seg["line_points"], seg["line_length"], seg["result"]],
                          [seg["mm_per_px"], seg["photo_width_mm"], seg["line_note"]], api_visibility="private",
                          queue=False)
    seg["model"].change(bind(model_threshold, ctx), seg["model"], seg["threshold"], api_visibility="private",
                        concurrency_limit=2, concurrency_id="model", show_progress="minimal")
    # Batches queue apart from /segment: a long batch never holds another visitor's single photo.
    seg["batch_btn"].click(bind(segment_batch, ctx), inputs_for(segment_batch, seg),
                           [seg["batch_zip"], seg["batch_csv"], seg["batch_report"], seg["review"]],
                           api_name="segment_batch", concurrency_limit=1, concurrency_id="batch").success(
        show_suggested, seg["review"], [seg["suggested"], seg["batch_photos"]], api_visibility="private", queue=False)
    seg["suggested"].select(open_suggestion, [seg["suggested"], seg["batch_photos"]],
                            [seg["image"], seg["prompts"], seg["label_prompt"]], api_visibility="private",
                            queue=False).success(
        bind(segment, ctx), inputs_for(segment, seg), [seg["overlay"], seg["masks"], seg["table"], seg["result"]],
        api_visibility="private", preprocess=False, concurrency_limit=2, concurrency_id="model").success(
        show_views, seg["result"], [seg["slider"], seg["heatmap"], seg["legend"], seg["shown"], seg["regions"]],
        api_visibility="private", queue=False)


def _wire_labels(ctx: AppContext, seg: UI, train: UI, set_pickers: list) -> None:
    """The Segment tab's labelling section: open the editor, keep masks, browse, download and teach."""
    editor_out = [seg["editor"], seg["loaded"]]
    seg["open_btn"].click(bind(label_open, ctx), [seg["image"], seg["result"], seg["label_prompt"]], editor_out,
                          api_visibility="private", preprocess=False, queue=False)
    seg["empty_btn"].click(bind(partial(label_open, empty=True), ctx),
                           [seg["image"], seg["result"], seg["label_prompt"]], editor_out,
                           api_visibility="private", preprocess=False, queue=False)
    refresh = dict(fn=bind(label_set_choices, ctx), inputs=None, outputs=set_pickers, api_visibility="private",
                   queue=False)
    gallery = dict(fn=bind(label_browse, ctx), inputs=seg["set_name"], outputs=seg["gallery"],
                   api_visibility="private", queue=False)
    keep_inputs = [seg["editor"], seg["loaded"], seg["result"], seg["set_name"]]
    seg["keep_btn"].click(bind(label_keep, ctx), keep_inputs, seg["label_note"], api_visibility="private",
                          concurrency_limit=2, concurrency_id="labels").success(**refresh).success(**gallery)
    seg["absent_btn"].click(bind(partial(label_keep, absent=True), ctx), keep_inputs, seg["label_note"],
                            api_visibility="private", concurrency_limit=2, concurrency_id="labels").success(
        **refresh).success(**gallery)
    seg["api_btn"].click(bind(label_save, ctx), [seg["api_photo"], seg["api_prompt"], seg["api_mask"], seg["api_set"]],
                         seg["label_note"], api_name="label_save", preprocess=False, concurrency_limit=2,
                         concurrency_id="labels").success(**refresh)
    seg["refresh_sets_btn"].click(bind(label_sets, ctx), None, seg["sets_table"], api_name="label_sets",
                                  concurrency_limit=None).success(**gallery)
    seg["set_name"].change(**gallery)
    seg["download_set_btn"].click(bind(label_download, ctx), [seg["set_name"], seg["label_format"]], seg["set_file"],
                                  api_name="label_download", concurrency_limit=2, concurrency_id="labels").success(
        lambda: gr.File(visible=True), None, seg["set_file"], api_visibility="private", queue=False)
    seg["push_set_btn"].click(bind(label_push, ctx), [seg["set_name"], seg["set_repo_id"]], seg["push_set_note"],
                              api_name="label_push", concurrency_limit=1)
    seg["gallery"].select(pick_label, None, seg["picked"], api_visibility="private", queue=False).then(
        lambda picked: f"Picked: {picked}", seg["picked"], seg["picked_note"], api_visibility="private", queue=False)
    seg["delete_btn"].click(bind(label_delete_picked, ctx), [seg["set_name"], seg["picked"]], seg["label_note"],
                            api_visibility="private", concurrency_limit=2, concurrency_id="labels").success(
        **refresh).success(**gallery)
    # Teach from the Train tab (/teach_start: set names) or from the Segment tab (the set picked there).
    for button, sets, note, name in ((train["teach_btn"], train["label_sets"], train["message"], "teach_start"),
                                     (seg["teach_btn"], seg["set_name"], seg["teach_note"], "teach_this_set")):
        button.click(bind(teach_start, ctx), [sets, seg["model"]], note, api_name=name,
                     api_visibility="public" if name == "teach_start" else "private", concurrency_limit=1).success(
            start_polling, None, train["timer"], api_visibility="private", queue=False)


def _wire_train(ctx: AppContext, train: UI, pickers: list) -> None:
    views = [train["progress"], train["curves"], train["status"]]
    train["train_btn"].click(bind(train_start, ctx), inputs_for(train_start, train), train["message"],
                             api_name="train_start", concurrency_limit=1).success(
        start_polling, None, train["timer"], api_visibility="private", queue=False)
    train["stop_btn"].click(bind(train_stop, ctx), None, train["message"], api_name="train_stop",
                            concurrency_limit=None)
    train["status_btn"].click(bind(train_status, ctx), None, views, api_name="train_status", concurrency_limit=None)
    train["timer"].tick(bind(poll, ctx), train["phase_key"], [*views, train["phase_key"], train["timer"]],
                        api_visibility="private", concurrency_limit=None, show_progress="hidden")
    train["phase_key"].change(bind(refresh_pickers, ctx), None, pickers, api_visibility="private", queue=False)
    train["download_btn"].click(bind(download_trained, ctx), None, train["file"], api_visibility="private",
                                concurrency_limit=1).success(lambda: gr.File(visible=True), None, train["file"],
                                                             api_visibility="private", queue=False)


def _wire_compare_export(ctx: AppContext, cmp: UI, exp: UI, pickers: list) -> None:
    cmp["data_choice"].change(show_data_inputs, cmp["data_choice"], [cmp["folder"], cmp["zip_file"]],
                              api_visibility="private", queue=False)
    cmp["compare_btn"].click(bind(compare, ctx), inputs_for(compare, cmp),
                             [cmp["table"], cmp["curves"], cmp["gallery"], cmp["worst"]], api_name="compare",
                             concurrency_limit=1)
    exp["export_btn"].click(bind(export, ctx), inputs_for(export, exp), [exp["table"], exp["report"], exp["file"]],
                            api_name="export", concurrency_limit=1).success(
        bind(refresh_pickers, ctx), None, pickers, api_visibility="private")
    exp["download_btn"].click(bind(download_run, ctx), inputs_for(download_run, exp), exp["run_file"],
                              api_name="download_run", concurrency_limit=1)
    exp["push_btn"].click(bind(push_to_hub, ctx), inputs_for(push_to_hub, exp), exp["push_message"], api_name="push",
                          concurrency_limit=1)


def wire_events(ctx: AppContext, demo: gr.Blocks, seg: UI, train: UI, cmp: UI, exp: UI) -> None:
    """Every listener, once every tab exists; the named ones are the app's API."""
    pickers = [seg["model"], train["model"], cmp["models"], exp["model"]]
    set_pickers = [seg["set_name"], train["label_sets"], seg["sets_table"]]
    _wire_segment(ctx, seg)
    _wire_labels(ctx, seg, train, set_pickers)
    _wire_train(ctx, train, pickers)
    _wire_compare_export(ctx, cmp, exp, pickers)
    # A new visitor sees their models, the default model's threshold and a job someone else started.
    demo.load(bind(refresh_pickers, ctx), None, pickers, api_visibility="private", queue=False)
    demo.load(bind(label_set_choices, ctx), None, set_pickers, api_visibility="private", queue=False)
    demo.load(bind(model_threshold, ctx), seg["model"], seg["threshold"], api_visibility="private",
              show_progress="minimal")
    demo.load(bind(poll, ctx), train["phase_key"],
              [train["progress"], train["curves"], train["status"], train["phase_key"], train["timer"]],
              api_visibility="private")
    demo.unload(bind(forget_session, ctx))
    gr.api(bind(list_my_models, ctx), api_name="models")


def build_app(ctx: AppContext | None = None, **context) -> gr.Blocks:
    """The Drywall QA Blocks. Loads no model: models load on first use into the context's LRU.

    ctx: the handlers' context, or None to make one from `context` (make_context's keyword arguments:
    checkpoints_dir, export_dir, data_root, examples_dir, work_dir, default_model, cache_size, train_overrides,
    public).
    """
    ctx = ctx or make_context(**context)
    ctx.tidy(max_age_s=KEEP_FILES_S)  # uploads, masks and exports left from a day ago go at start
    shared_sets = [name for name in DEFAULT_SETS if (ctx.data_root / name).is_dir()]
    with gr.Blocks(title="Drywall QA", delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown("# Drywall QA\nFind cracks and taping areas in wall photos by typing what to look for. "
                    "Fine-tune on your own labelled photos, compare models, and export them to ONNX.",
                    elem_classes="dq-header")
        with gr.Tabs():
            with gr.Tab("Segment", id="segment"):
                seg = _segment_tab(ctx)
            with gr.Tab("Train", id="train"):
                train = _train_tab(ctx, shared_sets)
            with gr.Tab("Compare", id="compare"):
                cmp = _compare_tab(ctx, shared_sets)
            with gr.Tab("Export", id="export"):
                exp = _export_tab(ctx)
        gr.Markdown("Data: Roboflow \"cracks-3ii36\" (10xConstruction) and \"drywall-join-detect\" "
                    "(objectdetect-pu6rn), CC BY 4.0. Model: [CLIPSeg](https://huggingface.co/CIDAS/clipseg-rd64-"
                    "refined).", elem_classes="dq-muted")
        wire_events(ctx, demo, seg, train, cmp, exp)
    if os.environ.get("SPACE_ID") and ctx.public.enabled and not oauth_available():
        log.info("no Hugging Face OAuth on this Space (its README lacks hf_oauth): no sign-in button; Push uses "
                 "HF_TOKEN from the environment%s", "" if os.environ.get("HF_TOKEN") else " (not set: Push is refused)")
    return demo.queue(default_concurrency_limit=1)


OAUTH_ENV = ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OPENID_PROVIDER_URL")  # what `hf_oauth: true` sets


def oauth_available() -> bool:
    """True on a Hugging Face Space (SPACE_ID set) whose README asks for `hf_oauth` (the Space then sets
    OAUTH_CLIENT_ID and its kin) with `gradio[oauth]` (authlib, itsdangerous) installed: there the app shows a
    Sign-in button and Push uses the visitor's OAuth token. Elsewhere (locally, or a duplicated Space that lost
    `hf_oauth`, where Gradio's sign-in would demand a saved Hub login just to start) there is no button and
    Push uses HF_TOKEN (public) or the token that `hf auth login` saved (`push_token`)."""
    return bool(os.environ.get("SPACE_ID")) and all(os.environ.get(name) for name in OAUTH_ENV) and all(
        importlib.util.find_spec(name) is not None for name in ("authlib", "itsdangerous"))


def set_threads() -> None:
    """torch's CPU threads for the whole process: all cores (the app's entry point sets it, once)."""
    import torch  # deferred: `import app` loads no torch (tests/test_app.py)

    from engine.segmenter import default_threads

    torch.set_num_threads(default_threads())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start the Drywall QA app.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--model", default=None,
                        help=f"the model the Segment tab starts on (default: ${DEFAULT_MODEL_ENV}, else the bundled "
                             "model trained on walls)")
    parser.add_argument("--public", action="store_true",
                        help="public mode: no server folders, listed models only, capped requests "
                             "(docs/public-mode.md; on by default on a Space, where SPACE_ID is set)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    set_threads()
    public = PublicSettings.from_env(force=args.public)
    if public.enabled:
        log.info("public mode: %s", public.limits)
    # SIGTERM (a Space stopping) exits like Ctrl+C, so atexit removes the work dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo = build_app(default_model=args.model, public=public)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options(public))


if __name__ == "__main__":
    main()
