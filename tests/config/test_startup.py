"""Composing a config (`--help`, `--cfg job`) imports no torch, transformers, datasets or accelerate: the
entrypoints load them when a run starts, so a config check answers in about a second."""

import subprocess
import sys

import pytest

from tests.smoke.helpers import REPO

HEAVY = {"torch", "transformers", "datasets", "accelerate", "deepspeed", "vllm", "peft"}


@pytest.mark.parametrize("module", ["rlhf.train", "rlhf.generate", "rlhf.eval"])
def test_composing_imports_no_heavy_library(module):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--cfg", "job"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "seed:" in out.stdout  # the composed config was printed
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert len(imported) > 50  # the import log was read
    assert not {name.split(".")[0] for name in imported} & HEAVY, sorted(imported & HEAVY)
