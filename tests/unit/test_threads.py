"""`num_threads`: torch's CPU threads follow the CPUs a process may use, and SLURM's cpus_per_task."""

import os

import pytest
import torch

from rlhf.config import cpu_threads, set_threads


def test_default_follows_affinity_and_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    available = len(os.sched_getaffinity(0))
    assert cpu_threads(None) == available
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cpu_threads(None) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(available + 8))  # never more than the process may use
    assert cpu_threads(None) == available
    assert cpu_threads(3) == 3  # a setting wins


def test_bad_setting_is_named():
    with pytest.raises(ValueError, match="num_threads=0 must be >= 1"):
        cpu_threads(0)


def test_set_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
