"""Which epoch a run keeps, and when it stops early: the one home of the best / last / patience policy.

After each epoch's validation the loop asks `judge_epoch`; it never compares scores itself (as timm's
`CheckpointSaver` owns best and last). The policy, from TrainConfig:

    select="best"   an epoch becomes best/ when its validation score beats every earlier one (ties keep the earlier)
    select="last"   every epoch becomes best/ (the final epoch is what ships; scores are still recorded)
    patience=N      stop after N epochs in a row without a new best (0: never stop early; with select="last"
                    no epoch is "without a new best", so it never stops early either)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EpochVerdict", "judge_epoch"]


@dataclass(frozen=True)
class EpochVerdict:
    """What to do after an epoch: save it as best/ (`keep`), and whether to stop training now (`stop`)."""

    keep: bool
    stop: bool


def judge_epoch(state, epoch: int, score: float, *, select: str = "best", patience: int = 0) -> EpochVerdict:
    """The verdict on an epoch's validation `score` (higher is better); updates `state` (a RunState: best_score,
    best_epoch, bad_epochs), which a resumed run restores, so the count of epochs without a new best carries on."""
    if select not in ("best", "last"):
        raise ValueError(f"select must be 'best' or 'last', got {select!r}.")
    keep = select == "last" or score > state.best_score
    if keep:
        state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
    else:
        state.bad_epochs += 1
    return EpochVerdict(keep=keep, stop=bool(patience) and state.bad_epochs >= patience)
