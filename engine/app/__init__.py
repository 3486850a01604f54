"""What the app's handlers call: one function per button, plain types in and out (no gradio here).

`app.py` turns widget values into one call below and the result back into widget values:

    segment   segment one photo into overlay, heatmap, legend, table and mask files
    jobs      start, watch and stop the background training job from the Train tab's choices
    views     progress Markdown, the status as JSON, the legend, table values (pure functions)
    compare   several models on one labelled set
    export    ONNX export with a speed and parity report, zipped
    choices   the models a picker offers and their short names

Safe zip extraction lives in `engine.data.archive`, the cache of loaded models in `engine.models.cache`.
"""

from engine.app.choices import model_choices, model_label
from engine.app.compare import (
                                COMPARE_HEADERS,
                                WORST_HEADERS,
                                CompareResult,
                                absent_sets_for,
                                compare_models,
                                eval_data_for,
                                open_eval_set,
                                read_history,
)
from engine.app.export import EXPORT_HEADERS, ExportResult, export_model, speed_rows, time_predict
from engine.app.jobs import (
                                TrainRequest,
                                new_run_dir,
                                start_run,
                                start_training,
                                stop_training,
                                train_defaults,
                                training_data,
                                training_settings,
                                training_status,
)
from engine.app.segment import (
                                DISPLAY_MAX_SIDE,
                                TABLE_HEADERS,
                                SegmentResult,
                                example_rows,
                                image_id_for,
                                segment_photo,
                                slider_threshold,
)
from engine.app.views import IDLE_TEXT, format_eta, legend_html, status_dict, status_markdown, table, training_view

__all__ = [
    "COMPARE_HEADERS", "DISPLAY_MAX_SIDE", "EXPORT_HEADERS", "IDLE_TEXT", "TABLE_HEADERS", "WORST_HEADERS",
    "CompareResult", "ExportResult", "SegmentResult", "TrainRequest",
    "absent_sets_for", "compare_models", "eval_data_for", "example_rows", "export_model", "format_eta", "image_id_for",
    "legend_html", "model_choices", "model_label", "new_run_dir", "open_eval_set", "read_history", "segment_photo",
    "slider_threshold", "speed_rows",
    "start_run", "start_training", "status_dict", "status_markdown", "stop_training", "table", "time_predict",
    "train_defaults", "training_data", "training_settings", "training_status", "training_view",
]
