"""Iterated generate -> train (`trainer=iterative`): REFUEL's setting one (Gao et al. 2024), CollabLLM-style
iterated DPO, any loop of "make a dataset with the current policy, train on it, start again from the result".

Iteration k, in `<run_dir>/iter-k/`:
1. `generate/`: the `generate` mode (`rlhf-generate`'s `mode=` group: refuel_pairs by default, collabllm_pairs,
   samples) with the policy of the iteration (the starting policy, then iteration k-1's model), the task's
   user simulator and the reward, on the task's train openings;
2. `train/`: the offline loop (`train`: `rlhf.trainers.offline.fit_offline` and its settings) with the
   algorithm on the preference pairs it wrote (`generate/pairs`); the reference pass is the iteration's own
   policy, so REFUEL's old log-probs are recomputed every iteration (and on another hardware stack);
3. `eval.json`: the trained policy's dialogues on the task's held-out openings, with the reward
   (`rlhf.eval.dialogue_eval`): the figure of each iteration, also logged to metrics.jsonl at step k (the
   starting policy's, `eval-start.json`, at step 0).
Each stage is resumable and skipped when done, so a killed run started again with the same command goes on at
the iteration and step it had reached. `<run_dir>/model` links to the last iteration's model.
"""

import json
import logging
import os
from pathlib import Path

from rlhf.atomic import write_text
from rlhf.data.tokenize import Tokenization
from rlhf.eval.dialogue_eval import DialogueEvaluator
from rlhf.eval.reward_eval import BackendFactory
from rlhf.logging import JsonlLogger, Logger
from rlhf.models.policy import Policy, load_policy
from rlhf.rewards.base import Reward
from rlhf.tasks.base import DialogueTask
from rlhf.tasks.dataset import DatasetTask
from rlhf.users.base import UserSimulator

log = logging.getLogger(__name__)


def fit_iterative(
    *,
    policy: Policy,
    algo,
    task: DialogueTask,
    backend: BackendFactory,
    user: UserSimulator,
    reward: Reward,
    tokenization: Tokenization,
    logger: Logger,
    run_dir: str,
    seed: int,
    config: dict,
    generate,
    train,
    iterations: int = 2,
    num_prompts: int | None = None,
) -> dict[str, float]:
    """Run the iterations (module docstring); returns the last iteration's metrics (and each iteration's
    evaluation as `iter-k/eval/*`), also in final_metrics.json."""
    if iterations < 1:
        raise ValueError(f"trainer.iterations={iterations} must be >= 1")
    if algo.batch_kind != "pair":
        raise ValueError(f"trainer=iterative trains on the pairs each iteration generates: {type(algo).__name__} "
                         f"trains on {algo.batch_kind} batches (use a pair algorithm: refuel, dpo, ...)")
    if policy.has_adapter:
        raise ValueError("trainer=iterative starts each iteration from the previous one's merged model, where a "
                         "LoRA adapter would not be re-applied: train the full weights (policy.lora=null)")
    run_dir = Path(run_dir)
    done = run_dir / "final_metrics.json"
    if done.exists():
        log.info("%s is complete already; delete it to train again", run_dir)
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    evaluate = DialogueEvaluator(backend, user, reward, task, seed, log.info)
    dtype = str(policy.model.dtype).removeprefix("torch.")
    jsonl = JsonlLogger(run_dir / "metrics.jsonl", truncate_after=-1)
    logger.start(run_dir, config)
    start = run_dir / "eval-start.json"  # the starting policy, for comparison
    if not start.exists():
        write_text(start, json.dumps(evaluate(policy), indent=2))
    evaluation = json.loads(start.read_text())
    jsonl.log({f"eval/{key}": value for key, value in evaluation.items()}, 0)
    result = {f"before/eval/{key}": value for key, value in evaluation.items()}
    current = policy
    for k in range(1, iterations + 1):
        folder = run_dir / f"iter-{k}"
        log.info("iteration %d of %d in %s", k, iterations, folder)
        generate(policy=current, backend=backend, user=user, reward=reward, task=task, split="train",
                 num_prompts=num_prompts, seed=seed + k - 1, run_dir=str(folder / "generate"))
        pairs = DatasetTask(f"{task.name} iteration {k} pairs", "preference", train_path=str(folder / "generate" / "pairs"))
        trained = train(policy=current, algo=algo, task=pairs, backend=backend, reward=reward,
                        tokenization=tokenization, logger=logger, run_dir=str(folder / "train"), seed=seed,
                        config=config)
        current = load_policy(str(folder / "train" / "model"), dtype=dtype)
        report = folder / "eval.json"
        if not report.exists():
            write_text(report, json.dumps(evaluate(current), indent=2))
        evaluation = json.loads(report.read_text())
        jsonl.log({f"eval/{key}": value for key, value in evaluation.items()}, k)
        logger.log({f"eval/{key}": value for key, value in evaluation.items()}, k)
        result |= {f"iter-{k}/eval/{key}": value for key, value in evaluation.items()}
        result |= {f"train/{key.removeprefix('train/')}": value for key, value in trained.items()
                   if key.startswith("train/")}
    result |= {f"eval/{key}": value for key, value in evaluation.items()}
    link = run_dir / "model"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(f"iter-{iterations}/train/model", link)
    write_text(done, json.dumps(result, indent=2))
    jsonl.close()
    logger.close()
    return result
