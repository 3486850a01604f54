"""Helpers shared by the tests that launch the app (import them; they are not fixtures)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_public(root, shared_data, limits, **overrides):
    """A launched public app over a tiny random model (`run: tiny-a` in root/checkpoints): (demo, url, Client).
    overrides: TrainConfig fields for its training jobs (after no feature cache, no warm-up, one thread)."""
    from gradio_client import Client

    import app
    from engine.app.public import PublicSettings
    from engine.models import make_random_model_folder

    tiny = make_random_model_folder(root / "checkpoints" / "tiny-a", meta={"threshold": 0.5})
    settings = PublicSettings(enabled=True, limits=limits)
    train_overrides = {"feature_cache": False, "warmup_epochs": 0, "threads": 1, **overrides}
    demo = app.build_app(checkpoints_dir=root / "checkpoints", export_dir=root / "export", data_root=shared_data,
                         work_dir=root / "work", default_model=str(tiny), public=settings,
                         train_overrides=train_overrides)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True,
                            **app.launch_options(settings))
    return demo, url, Client
