"""Training's events on a terminal (`python -m engine train`): a tqdm bar per epoch and one line per epoch."""

from __future__ import annotations

from tqdm import tqdm

from engine.train.events import EpochEvent, LogEvent, StepEvent


class TrainProgress:
    """train()'s events on the terminal: a tqdm bar per epoch (and while caching), one line per epoch."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.bar: tqdm | None = None

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, e) -> None:
        if isinstance(e, StepEvent):
            desc = "caching" if e.caching else f"epoch {e.epoch}/{self.epochs}"
            if self.bar is None or self.bar.desc != desc:
                if self.bar is not None:
                    self.bar.close()
                self.bar = tqdm(total=e.steps, desc=desc, unit="step", leave=False)
            self.bar.update(e.step - self.bar.n)
            if e.loss is not None:
                self.bar.set_postfix(loss=f"{e.loss:.3f}")
        elif isinstance(e, EpochEvent):
            tqdm.write(epoch_line(e.record))
        elif isinstance(e, LogEvent):
            tqdm.write(e.message)


def epoch_line(r: dict) -> str:
    """One metrics.jsonl row as a line: losses, learning rate, time, and each prompt's IoU."""
    scores = "  ".join(f"{p}: IoU {v['miou']:.3f} (best {v['best_miou']:.3f} @ {v['best_threshold']:.2f})"
                       for p, v in r["val"].items())
    return (f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}  val loss {r['val_loss'] or float('nan'):.4f}  "
            f"lr {r['lr']:.2e}  {r['seconds']:.0f}s  {scores}")
