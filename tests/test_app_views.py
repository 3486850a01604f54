"""engine/app/views.py: training progress in Markdown and JSON, the legend, table values."""

import json

import pytest

from engine.app.views import (
    IDLE_TEXT,
    NOT_YOURS_TEXT,
    format_eta,
    legend_html,
    status_dict,
    status_markdown,
    table,
    training_view,
)
from engine.train.events import JobStatus


@pytest.mark.parametrize("seconds, text", [(None, "estimating..."), (-3, "0 s"), (59.4, "59 s"), (125, "2 min 05 s"),
                                           (3600, "1 h 00 min"), (3 * 3600 + 5 * 60 + 59, "3 h 05 min")])
def test_format_eta(seconds, text):
    assert format_eta(seconds) == text


def test_status_markdown_reports_progress_and_errors():
    text = status_markdown(JobStatus(phase="training", epoch=2, epochs=5, step=3, steps=10, eta_s=125,
                                     run_dir="/x/run", last_metrics={
                                         "val_loss": 0.5, "val": {"segment crack": {"miou": 0.41, "dice": 0.5}}}))
    assert "epoch 2/5" in text and "step 3/10" in text and "ETA 2 min 05 s" in text
    assert "segment crack: IoU 0.410" in text and "`/x/run`" in text
    assert text.split("\n\n")[1] == "Last validation: val loss 0.5000; segment crack: IoU 0.410, Dice 0.500"
    synonyms = {"val": {"segment crack": {"miou": 0.41, "dice": 0.5}, "segment wall crack": {"miou": 0.41, "dice": 0.5},
                        "segment taping area": {"miou": 0.2, "dice": 0.3}}}
    assert ("Last validation: segment crack = segment wall crack: IoU 0.410, Dice 0.500; segment taping area: IoU "
            "0.200, Dice 0.300") in status_markdown(JobStatus(phase="training", last_metrics=synonyms))
    assert "**Error:** boom" in status_markdown(JobStatus(phase="failed", error="boom"))
    assert "No training job" in status_markdown(JobStatus())
    assert status_markdown(JobStatus(message="training unavailable")) == IDLE_TEXT  # idle hides its message


def test_status_markdown_shows_no_eta_once_finished():
    text = status_markdown(JobStatus(phase="finished", epoch=2, epochs=2, eta_s=0, message="done after 2 epochs"))
    assert text == "**Finished** · epoch 2/2\n\ndone after 2 epochs"


def test_status_dict_is_json_safe():
    status = JobStatus(phase="training", run_dir="/x/run", history=[{"epoch": 1}], last_metrics={"path": object()})
    data = status_dict(status)
    assert data["phase"] == "training" and data["history"] == [{"epoch": 1}] and data["run_dir"] == "/x/run"
    assert isinstance(data["last_metrics"]["path"], str)
    json.dumps(data)


def test_training_view_plots_the_history():
    markdown, figure = training_view(JobStatus(phase="training", epochs=2, history=[
        {"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val": {"segment crack": {"miou": 0.2, "dice": 0.3}}}]))
    assert markdown.startswith("**Training** · epoch 0/2") and len(figure.data) > 0


def test_legend_html_escapes():
    out = legend_html([("segment <crack>", "#d55e00")])
    assert "segment &lt;crack&gt;" in out and "background:#d55e00" in out and out.startswith('<div class="dq-legend">')


def test_table_is_a_dataframe_value():
    assert table([("a", 1)], ["prompt", "n"]) == {"headers": ["prompt", "n"], "data": [["a", 1]]}
    assert table([], ["prompt"]) == {"headers": ["prompt"], "data": []}


def test_a_job_started_by_another_session_reads_as_read_only():
    running = JobStatus(phase="training", epoch=1, epochs=3, run_dir="/x/run")
    assert NOT_YOURS_TEXT not in status_markdown(running)
    text = status_markdown(running, owned=False)
    assert text.split("\n\n")[1] == NOT_YOURS_TEXT and "only they can stop it" in text
    assert training_view(running, owned=False)[0] == text
    assert status_markdown(JobStatus(), owned=False) == IDLE_TEXT  # nothing to own yet


def test_status_markdown_while_caching_counts_views_and_shows_the_cache_eta():
    text = status_markdown(JobStatus(phase="caching", epochs=8, step=12, steps=256, eta_s=125, message="caching"))
    assert text.startswith("**Caching** · view 12/256 · ETA of the cache build 2 min 05 s")
    assert "epoch" not in text.splitlines()[0]
