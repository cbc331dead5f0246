"""`eval=checkpoints`: a training run's curve, the held-out reward of every saved checkpoint (D2PO's figures:
gold reward against step, and against the gold labels used where the run logged them).

The policy is rebuilt as the run built it (the `policy` node of its `config.yaml`: base model, LoRA), which is
also the curve's step 0, then each checkpoint's `model.safetensors` is loaded into it (a value head, as PPO
trains one, is left out). Each checkpoint is evaluated by `rlhf.eval.evaluate.HeldOutReward` into
`<run_dir>/checkpoints/step-N/`; one whose result was written for the same weights file (size and
modification time) is not evaluated again, so a killed evaluation resumes. Written: `curve.json`, `eval.json`
(the curve and the last point), `eval.md` and `curve.png`.
"""

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import load_file
from tqdm.auto import tqdm

from rlhf.atomic import write_text
from rlhf.config import build
from rlhf.eval.evaluate import HeldOutReward, PolicyFactory
from rlhf.eval.plots import line_plot
from rlhf.eval.report import markdown_table
from rlhf.eval.reward_eval import BackendFactory
from rlhf.models.policy import Policy
from rlhf.rewards.base import Reward
from rlhf.tasks.base import DialogueTask
from rlhf.trainers.checkpoint import PREFIX
from rlhf.users.base import UserSimulator

log = logging.getLogger(__name__)
GOLD_LABELS = "d2po/gold_labels"


def checkpoint_weights(policy: Policy, checkpoint: Path) -> None:
    """Load a checkpoint's model weights into `policy` (built as the run built it), in place."""
    file = checkpoint / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{checkpoint} has no model.safetensors (a DeepSpeed ZeRO checkpoint holds "
                                "sharded weights: evaluate the run's model/ instead)")
    state = load_file(str(file))
    if any(k.startswith("value_head.") for k in state):  # PolicyWithValueHead: the policy is its `model`
        state = {k.removeprefix("model."): v for k, v in state.items() if not k.startswith("value_head.")}
    missing, unexpected = policy.model.load_state_dict(state, strict=False)
    tied = policy.model.config.tie_word_embeddings
    missing = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]  # saved once, tied on load
    if missing or unexpected:
        raise ValueError(f"{file} does not fit the run's policy (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}): was the run's config.yaml changed after training?")


def gold_labels_at(metrics_file: Path) -> dict[int, float]:
    """step -> the gold labels used by then, from a run's metrics.jsonl (empty when it logged none)."""
    found: dict[int, float] = {}
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a last line cut by a kill
                continue
            if GOLD_LABELS in row:
                found[int(row["step"])] = float(row[GOLD_LABELS])
    return found


class CheckpointCurve:
    """run: the training run directory. every: evaluate every n-th saved checkpoint (the last always).
    num_samples: as for `eval=reward`."""

    def __init__(self, run: str, every: int = 1, num_samples: int = 1):
        if every < 1:
            raise ValueError(f"eval.every={every} must be >= 1")
        self.run, self.every = Path(run), every
        self.point = HeldOutReward(num_samples)
        if not (self.run / "config.yaml").is_file():
            raise FileNotFoundError(f"eval.run={run!r} is not a training run directory (no config.yaml)")

    def checkpoints(self) -> list[tuple[int, Path]]:
        found = sorted((self.run / "checkpoints").glob(f"{PREFIX}*/trainer_state.json"))
        steps = [(int(p.parent.name.removeprefix(PREFIX)), p.parent) for p in found]
        if not steps:
            raise FileNotFoundError(f"eval.run={str(self.run)!r} has no saved checkpoint (set "
                                    "trainer.checkpoint_every and trainer.keep_checkpoints to keep some)")
        return [s for i, s in enumerate(steps) if i % self.every == 0 or i == len(steps) - 1]

    def __call__(self, policy: PolicyFactory, task: DialogueTask, reward: Reward, backend: BackendFactory,
                 user: UserSimulator, run_dir: str, seed: int) -> dict:
        del policy  # the run's own policy config is what its checkpoints fit
        points = [(0, None), *self.checkpoints()]
        run_policy = OmegaConf.load(self.run / "config.yaml").policy
        model = build(run_policy)
        labels = gold_labels_at(self.run / "metrics.jsonl")
        curve = []
        out = Path(run_dir)
        for step, checkpoint in tqdm(points, desc="checkpoints", unit="checkpoint"):
            where = out / "checkpoints" / f"{PREFIX}{step:08d}"
            weights = checkpoint / "model.safetensors" if checkpoint is not None else None
            stamp = [weights.stat().st_size, weights.stat().st_mtime_ns] if weights is not None else None
            done = where / "eval.json"
            result = json.loads(done.read_text()) if done.is_file() else None
            if result is None or result.get("weights") != stamp:
                if checkpoint is not None:
                    checkpoint_weights(model, checkpoint)
                result = self.point(lambda: model, task, reward, backend, user, str(where), seed)
                result["weights"] = stamp
                write_text(done, json.dumps(result, indent=2))
            point = {"step": step, **{k: v for k, v in result.items() if isinstance(v, (int, float))}}
            used = [n for s, n in labels.items() if s <= step]
            if labels:
                point["gold_labels"] = used[-1] if used and step > 0 else 0.0
            curve.append(point)
        return self.write(out, curve)

    def write(self, out: Path, curve: list[dict]) -> dict:
        result = {"run": str(self.run), **curve[-1], "curve": curve}  # the last checkpoint's metrics, and all
        write_text(out / "curve.json", json.dumps(curve, indent=2))
        write_text(out / "eval.json", json.dumps(result, indent=2))
        labelled = "gold_labels" in curve[0]
        header = ["step", *(["gold labels"] if labelled else []), "reward (mean ± s.e.)", "n", "invalid"]
        rows = [[p["step"], *([int(p["gold_labels"])] if labelled else []),
                 f"{p['reward_mean']:.3f} ± {p['reward_stderr']:.3f}", int(p["n"]), int(p["reward_invalid"])]
                for p in curve]
        write_text(out / "eval.md", markdown_table(header, rows))
        series = [(p["step"], p["reward_mean"], p["reward_stderr"]) for p in curve]
        panels = [("optimizer step", "held-out reward", {"policy": series})]
        if labelled:
            panels.append(("gold labels used", "held-out reward",
                           {"policy": [(p["gold_labels"], p["reward_mean"], p["reward_stderr"]) for p in curve]}))
        line_plot(out / "curve.png", panels, f"checkpoints of {self.run}")
        print(markdown_table(header, rows))
        return result
