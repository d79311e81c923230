"""Run profiles: one validated set of sweep settings per name, recorded with every run.

`quick` is the embedded default: every (model, cohort, fold) job, tuned with a small trial budget
and few epochs, so the whole sweep runs on a laptop CPU. `paper` uses the published settings
(20 epochs, one step per 32 patients) and a real tuning budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int
    grad_accum: int
    trials: int
    inner_val_fraction: float = 0.25

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    # Few patients per synthetic fold: 8 patients per step gives enough optimizer steps in few epochs.
    "quick": Profile("quick", epochs=4, grad_accum=8, trials=2),
    "paper": Profile("paper", epochs=20, grad_accum=32, trials=20),
}
