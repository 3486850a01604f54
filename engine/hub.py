"""Push a training run to the Hugging Face Hub: the run's model folder (`engine.models.package`) with its card.

    python -m engine push --run checkpoints/my-run --repo user/my-run [--private]

The app's "Push to the Hub" button calls `push_run` with the OAuth token of the signed-in user (on a Space,
`hf_oauth: true` in README.md's front matter); locally `token=None` means the one `hf auth login` saved.
The upload goes through huggingface_hub (`create_repo`, then `upload_folder`). Before any upload the repo id
is checked (`check_repo_id`) and the Hub is dialled once with a short timeout, so an offline machine fails in
seconds with a message that names the alternative: download the run as a zip.

Label sets (engine.data.labelset) go up as dataset repos with a dataset card (`push_label_set`), and a dataset
repo comes down as training data (`fetch_hub_dataset`, for `--data hf://datasets/OWNER/NAME`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import urllib.parse
from dataclasses import dataclass

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from engine.models.package import find_run, package_run

__all__ = ["HUB_DATA_PREFIX", "HUB_TIMEOUT_S", "PushResult", "check_repo_id", "dataset_card", "fetch_hub_dataset",
           "hub_endpoint", "push_label_set", "push_run"]

HUB_TIMEOUT_S = 4.0
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"{_NAME}/{_NAME}")
OFFLINE_ALTERNATIVE = ("Download the run as a zip instead (the Train or Export tab's 'Download the run', or "
                       "/download_run) and upload it later from a machine online.")


@dataclass(frozen=True)
class PushResult:
    """A pushed run: the repo id, its URL on the Hub, whether it is private, and the files uploaded."""

    repo_id: str
    url: str
    private: bool
    files: list[str]


def check_repo_id(repo_id: str | None) -> str:
    """`repo_id` stripped, or ValueError saying what a Hub model id looks like ("user/name")."""
    text = (repo_id or "").strip()
    problem = None
    if not _REPO_ID.fullmatch(text):
        problem = "it must be your user or organisation name, '/', and a model name"
    elif "--" in text or ".." in text:
        problem = "'--' and '..' are not allowed in it"
    else:
        try:
            validate_repo_id(text)
        except HFValidationError as exc:
            problem = str(exc).split("\n")[0]
    if problem:
        raise ValueError(f"Repo id {text!r} is not a Hub model id: {problem}, e.g. 'your-name/drywall-cracks' "
                         "(letters, digits, '-', '_' and '.', at most 96 each).")
    return text


def hub_endpoint() -> str:
    """The Hub's URL: HF_ENDPOINT as set now (tests point it at a local port), else huggingface_hub's."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _check_reachable(endpoint: str, timeout_s: float) -> None:
    """One TCP connection to the Hub's host with a short timeout: offline fails here, in seconds."""
    url = urllib.parse.urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
            return
    except OSError as exc:
        raise ConnectionError(f"The Hugging Face Hub ({endpoint}) is unreachable from here ({exc}). "
                              f"{OFFLINE_ALTERNATIVE}") from None


def push_run(source: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
             timeout_s: float = HUB_TIMEOUT_S, scrub=None) -> PushResult:
    """Create (or reuse) the model repo `repo_id` and upload the run's Hugging Face folder to it.

    source: a run folder (its best/ is uploaded), or a model folder; token: a write token (None: the one saved
    by `hf auth login`). Raises ValueError for a bad repo id or source (before anything is sent),
    ConnectionError when the Hub is unreachable, PermissionError when no token or a read-only one is given;
    the last two name the zip download as the alternative. scrub: as in `engine.models.package.package_run`.
    """
    repo_id = check_repo_id(repo_id)
    find_run(source)  # a bad source fails before the network
    endpoint = hub_endpoint()
    _check_reachable(endpoint, timeout_s)
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="drywall-push-") as tmp:
        folder = package_run(source, tmp, scrub=scrub)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                              commit_message=f"Upload {folder.name} from Drywall QA")
        except LocalTokenNotFoundError:
            raise PermissionError("Not logged in to the Hugging Face Hub: run `hf auth login` (locally) or press "
                                  f"'Sign in with Hugging Face' (on a Space), then push again. {OFFLINE_ALTERNATIVE}"
                                  ) from None
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise PermissionError(f"The Hub refused the push to {repo_id} ({status}): the token needs write "
                                      "access to that user or organisation (`hf auth login` with a write token, "
                                      f"or sign in again). {OFFLINE_ALTERNATIVE}") from None
            raise RuntimeError(f"Push to {repo_id} failed: {exc}. {OFFLINE_ALTERNATIVE}") from None
        except OSError as exc:  # network dropped mid-way
            raise ConnectionError(f"Push to {repo_id} failed on the network ({exc}). {OFFLINE_ALTERNATIVE}") from None
    return PushResult(repo_id=repo_id, url=str(url), private=private, files=files)


# ------------------------------------------------------------------------------------------------ label sets
SET_OFFLINE_ALTERNATIVE = ("Download the set as a zip instead (the Segment tab's 'Download the set', or "
                           "/label_download) and upload it later from a machine online.")
HUB_DATA_PREFIX = "hf://datasets/"


def dataset_card(folder: str | os.PathLike) -> str:
    """README.md of a label set pushed as a dataset repo: what it holds, its layout, and a licence to choose."""
    from engine.data.labelset import set_summary

    summary = set_summary(folder)
    rows = "\n".join(f"| {prompt} | {n} | {absent} |" for prompt, (n, absent) in summary.prompts.items())
    return f"""---
tags:
- image-segmentation
- drywall-qa
# license: choose one (e.g. cc-by-4.0) for the photos and masks you own
---

# {summary.name}

A label set made with Drywall QA: {summary.photos} photos, their masks corrected by hand.

| prompt | masks | absent marks |
|---|---|---|
{rows}

Layout: `labelset.json` (prompt, absent mark, proposing model and whether it was corrected, per mask) and one
folder per prompt with `images/` and `masks/` (0/255 PNG at the photo's size; all zero = "not in this photo").
Train on it with `python -m engine train --preset teach --data hf://datasets/OWNER/NAME`.

**Licence:** not set. Whoever pushed this set decides it; until then, ask them before reusing the photos.
"""


def push_label_set(folder: str | os.PathLike, repo_id: str, *, private: bool = True, token: str | None = None,
                   timeout_s: float = HUB_TIMEOUT_S) -> PushResult:
    """Create (or reuse) the dataset repo `repo_id` and upload the label set in `folder` with a dataset card.

    Raises ValueError for a bad repo id or a folder that is not a label set (before the network),
    ConnectionError offline, PermissionError without a write token; the last two name the zip download.
    """
    from engine.data.labelset import is_label_set

    repo_id = check_repo_id(repo_id)
    folder = os.fspath(folder)
    if not is_label_set(folder):
        raise ValueError(f"{os.path.basename(folder)} is not a label set; save masks to it first.")
    endpoint = hub_endpoint()
    try:
        _check_reachable(endpoint, timeout_s)
    except ConnectionError as exc:
        raise ConnectionError(str(exc).replace(OFFLINE_ALTERNATIVE, SET_OFFLINE_ALTERNATIVE)) from None
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="drywall-set-") as tmp:
        copy = shutil.copytree(folder, os.path.join(tmp, os.path.basename(folder)))
        with open(os.path.join(copy, "README.md"), "w") as card:
            card.write(dataset_card(folder))
        files = sorted(os.path.relpath(os.path.join(d, f), copy) for d, _, fs in os.walk(copy) for f in fs)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="dataset")
            api.upload_folder(repo_id=repo_id, folder_path=copy, repo_type="dataset",
                              commit_message="Upload a label set from Drywall QA")
        except LocalTokenNotFoundError:
            raise PermissionError("Not logged in to the Hugging Face Hub: run `hf auth login` (locally) or sign in "
                                  f"(on a Space), then push again. {SET_OFFLINE_ALTERNATIVE}") from None
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise PermissionError(f"The Hub refused the push to {repo_id} ({status}): the token needs write "
                                      f"access. {SET_OFFLINE_ALTERNATIVE}") from None
            raise RuntimeError(f"Push to {repo_id} failed: {exc}. {SET_OFFLINE_ALTERNATIVE}") from None
        except OSError as exc:
            raise ConnectionError(f"Push to {repo_id} failed on the network ({exc}). {SET_OFFLINE_ALTERNATIVE}"
                                  ) from None
    return PushResult(repo_id=repo_id, url=str(url), private=private, files=files)


def fetch_hub_dataset(text: str, dest: str | os.PathLike, *, token: str | None = None,
                      timeout_s: float = HUB_TIMEOUT_S) -> str:
    """`hf://datasets/OWNER/NAME` downloaded into `dest` (a fresh folder); returns that folder. Offline it fails
    in seconds (ConnectionError) naming the alternative: download the set and give its folder or zip."""
    repo_id = check_repo_id(text[len(HUB_DATA_PREFIX):].strip("/"))
    endpoint = hub_endpoint()
    try:
        _check_reachable(endpoint, timeout_s)
    except ConnectionError:
        raise ConnectionError(f"The Hugging Face Hub ({endpoint}) is unreachable from here, so {text} cannot be "
                              "fetched; download the data set on a machine online and give its folder or zip."
                              ) from None
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type="dataset", local_dir=os.fspath(dest), token=token,
                                 endpoint=endpoint)
    except HfHubHTTPError as exc:
        raise ValueError(f"{text}: the Hub answered {exc}; check the name and that you may read it.") from None
