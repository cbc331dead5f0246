"""Learning-rate schedules (`trainer.lr_scheduler`), without importing transformers' trainer utilities.

`linear`, `cosine`, `constant` and `constant_with_warmup` are computed here, step for step as
`transformers.get_scheduler` computes them (a unit test compares every step and the saved state), as the
same `LambdaLR`s, so a checkpoint of either resumes with the other. Any other name transformers knows
(`cosine_with_restarts`, `polynomial`, ...) is built by transformers itself; importing it costs about 2 s (it
imports peft), which is why the common ones are here.
"""

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _linear(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))


def _cosine(step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5) -> float:
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def _constant(step: int) -> float:
    return 1.0


def _constant_with_warmup(step: int, *, num_warmup_steps: int) -> float:
    if step < num_warmup_steps:
        return float(step) / float(max(1.0, num_warmup_steps))
    return 1.0


# name -> (warmup steps, total steps) -> the LambdaLR's function of the step
LAMBDAS = {
    "linear": lambda warmup, total: partial(_linear, num_warmup_steps=warmup, num_training_steps=total),
    "cosine": lambda warmup, total: partial(_cosine, num_warmup_steps=warmup, num_training_steps=total),
    "constant": lambda warmup, total: _constant,
    "constant_with_warmup": lambda warmup, total: partial(_constant_with_warmup, num_warmup_steps=warmup),
}
SCHEDULES = tuple(LAMBDAS)


def known_schedules() -> list[str]:
    """Every name `make_scheduler` accepts (transformers' list is read only when asked for)."""
    from transformers import SchedulerType

    return list(dict.fromkeys([*SCHEDULES, *(t.value for t in SchedulerType)]))


def make_scheduler(name: str, optimizer: Optimizer, warmup_steps: int, total_steps: int):
    """The schedule `name` over `total_steps` optimizer steps, the first `warmup_steps` of them warming up."""
    if name in LAMBDAS:
        return LambdaLR(optimizer, LAMBDAS[name](warmup_steps, total_steps))
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)

