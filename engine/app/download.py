"""Keep a run made in the app: download it as a zip of its Hugging Face folder, or push it to the Hub.

`engine.models.package` (the folder and the zip) and `engine.hub` (the upload) load torch through the model
card; they are imported when a button is pressed, so `import app` stays light. No gradio here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["download_run", "push_run_to_hub", "push_message"]


def download_run(source: str | os.PathLike, zip_dir: str | os.PathLike, *,
                 scrub: Callable[[str], str] | None = None) -> Path:
    """zip_dir/<run>.zip: the run's Hugging Face folder (`engine.models.package.zip_run`); scrub: applied to
    its text files (a public app's removal of server paths)."""
    from engine.models.package import zip_run

    return zip_run(source, zip_dir, scrub=scrub)


def push_run_to_hub(source: str | os.PathLike, repo_id: str, *, private: bool, token: str | None,
                    scrub: Callable[[str], str] | None = None):
    """Push the run to `repo_id` (`engine.hub.push_run`); returns its PushResult."""
    from engine.hub import check_repo_id, push_run

    check_repo_id(repo_id)  # a bad id is refused before anything loads or dials out
    return push_run(source, repo_id, private=private, token=token, scrub=scrub)


def push_message(result) -> str:
    """The Markdown shown after a push: where the model is, and how to load it."""
    kind = "private" if result.private else "public"
    return (f"Pushed {len(result.files)} files to [{result.repo_id}]({result.url}) ({kind}). Load it with "
            f"`CLIPSegForImageSegmentation.from_pretrained(\"{result.repo_id}\")` or pick `{result.repo_id}` as "
            "the model.")
