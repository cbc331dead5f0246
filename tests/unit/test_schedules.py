"""rlhf's learning-rate schedules against transformers' `get_scheduler`: the same rate at every step and the
same saved state, both ways, so checkpoints of either resume with the other."""

import pytest
import torch
from transformers import get_scheduler

from rlhf.trainers.schedules import SCHEDULES, known_schedules, make_scheduler


def optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (10, 10), (4, 25)])
def test_every_step_matches_transformers(name, warmup, total):
    ours = make_scheduler(name, optimizer(), warmup, total)
    theirs = get_scheduler(name, optimizer(), num_warmup_steps=warmup, num_training_steps=total)
    rates = []
    for _ in range(total + 2):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), abs=1e-15)
        rates.append(ours.get_last_lr()[0])
        ours.optimizer.step(), theirs.optimizer.step()
        ours.step(), theirs.step()
    assert len(set(rates)) > 1 or name == "constant" or (name == "constant_with_warmup" and warmup == 0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_saved_state_resumes_with_either(name):
    ours, theirs = make_scheduler(name, optimizer(), 3, 10), get_scheduler(name, optimizer(), 3, 10)
    for _ in range(5):
        ours.optimizer.step(), theirs.optimizer.step()
        ours.step(), theirs.step()
    assert ours.state_dict() == theirs.state_dict()
    resumed_ours, resumed_theirs = make_scheduler(name, optimizer(), 3, 10), get_scheduler(name, optimizer(), 3, 10)
    resumed_ours.load_state_dict(theirs.state_dict())
    resumed_theirs.load_state_dict(ours.state_dict())
    assert resumed_ours.get_last_lr() == pytest.approx(resumed_theirs.get_last_lr())
    assert resumed_ours.last_epoch == 5


def test_other_names_are_transformers_own():
    scheduler = make_scheduler("polynomial", optimizer(), 2, 10)
    assert type(scheduler).__name__ == "LambdaLR" and "cosine_with_restarts" in known_schedules()
    with pytest.raises(ValueError):
        make_scheduler("no_such_schedule", optimizer(), 2, 10)
