"""Push a training run to the Hugging Face Hub: the run's model folder (`engine.models.package`) with its card.

    python -m engine push --run checkpoints/my-run --repo user/my-run [--private]

The app's "Push to the Hub" button calls `push_run` with the OAuth token of the signed-in user (on a Space,
`hf_oauth: true` in README.md's front matter); locally `token=None` means the one `hf auth login` saved.
The upload goes through huggingface_hub (`create_repo`, then `upload_folder`). Before any upload the repo id
is checked (`check_repo_id`) and the Hub is dialled once with a short timeout, so an offline machine fails in
seconds with a message that names the alternative: download the run as a zip.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import urllib.parse
from dataclasses import dataclass

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from engine.models.package import find_run, package_run

__all__ = ["HUB_TIMEOUT_S", "PushResult", "check_repo_id", "hub_endpoint", "push_run"]

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
