"""Model sources: what a user's model string names, resolved to a local folder (the Hub download included).

    auto                         the Hub model if cached or reachable, else the bundled offline model
    starter, bundled             the bundled offline model (checkpoints/drywall-starter)
    CIDAS/clipseg-rd64-refined   a Hub id (through huggingface_hub's cache)
    path/to/folder               a Hugging Face folder (config.json, *.safetensors, tokenizer, preprocessor)
    checkpoints/my-run           a training run folder (its best/ model, else last/)
    export/my-export             an ONNX export folder (manifest.json + *.onnx)

Relative paths are tried from the working directory first, then from the repository root.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, snapshot_download

from engine.errors import ModelSourceError
from engine.paths import DEFAULT_HUB_ID, REPO_ROOT, STARTER_DIR, is_model_folder, is_onnx_export

HUB_TIMEOUT_S = 4.0
# What a model folder must hold; the tokenizer comes as tokenizer.json or as vocab.json + merges.txt.
HUB_FILES = ["config.json", "*.safetensors", "*.json", "*.txt"]


@dataclass(frozen=True)
class Source:
    """A resolved model source: `kind` is hub, folder, run or onnx; `path` the local folder to load."""

    kind: str
    path: Path
    label: str


def resolve_source(source: str | os.PathLike = "auto") -> Source:
    """Turn the user's model string into a local folder to load (downloading from the Hub if needed)."""
    text = str(source).strip()
    if text in ("", "auto"):
        return _resolve_auto()
    if text in ("starter", "bundled"):
        return _resolve_local(STARTER_DIR)
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if path.exists():
        return _resolve_local(path)
    if _looks_like_hub_id(text):
        return Source("hub", hub_snapshot(text), text)
    raise ModelSourceError(
        f"Model source {text!r} is neither an existing folder nor a Hub id. Pass a folder in Hugging Face "
        f"format, a run under checkpoints/, an export under export/, a Hub id like {DEFAULT_HUB_ID!r}, or 'auto'."
    )


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _resolve_local(path: Path) -> Source:
    path = path.resolve()
    if not path.is_dir():
        raise ModelSourceError(f"Model source {path} is a file; pass the folder that holds config.json.")
    if is_onnx_export(path):
        return Source("onnx", path, path.name)
    for sub in ("best", "last"):  # a run folder (its config.json is the TrainConfig, not a model config)
        if is_model_folder(path / sub):
            return Source("run", path / sub, f"{path.name}/{sub}")
    if is_model_folder(path):
        return Source("folder", path, path.name)
    if path == STARTER_DIR.resolve():
        raise ModelSourceError(
            f"The bundled offline model is missing from {path}. Re-clone the repository, or rebuild it with "
            "`python -m engine train --preset starter`."
        )
    raise ModelSourceError(
        f"{path} holds no model: expected config.json + *.safetensors (a Hugging Face folder), a training run "
        "with best/ or last/, or an ONNX export with manifest.json."
    )


def _resolve_auto() -> Source:
    try:
        return Source("hub", hub_snapshot(DEFAULT_HUB_ID), DEFAULT_HUB_ID)
    except ModelSourceError:
        return _resolve_local(STARTER_DIR)


def hub_snapshot(repo_id: str, timeout_s: float = HUB_TIMEOUT_S) -> Path:
    """The local folder of a Hub model: from the cache if present, else downloaded (failing fast offline)."""
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:  # not cached (or cache incomplete): try the network below
        pass
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelSourceError(_offline_message(repo_id, "HF_HUB_OFFLINE is set and the model is not in the cache"))
    if not _hub_reachable(timeout_s):
        raise ModelSourceError(_offline_message(repo_id, "the Hugging Face Hub is unreachable"))
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, etag_timeout=timeout_s))
    except Exception as exc:
        raise ModelSourceError(_offline_message(repo_id, f"download failed ({type(exc).__name__}: {exc})")) from exc


def _hub_reachable(timeout_s: float) -> bool:
    """One quick HTTPS handshake with the Hub's host: no retry loop, so offline fails in seconds."""
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _offline_message(repo_id: str, why: str) -> str:
    return (
        f"Cannot load {repo_id!r} from the Hugging Face Hub: {why}. Alternatives: pass a local model folder "
        f"(--model path/to/folder), use the bundled offline model (--model {STARTER_DIR.relative_to(REPO_ROOT)}), "
        "or download the model once with internet access and then set HF_HUB_OFFLINE=1 to use the filled cache."
    )
