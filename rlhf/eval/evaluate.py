"""`eval=reward` (the default of `rlhf-eval`): the reward of a policy on the task's held-out prompts or, with a
user simulator, on its held-out dialogues, written to `<run_dir>/eval.json` and `<run_dir>/eval.md`."""

import json
from collections.abc import Callable
from pathlib import Path

from rlhf.atomic import write_jsonl, write_text
from rlhf.eval.dialogue_eval import DialogueEvaluator
from rlhf.eval.report import format_table, markdown_table, reward_line
from rlhf.eval.reward_eval import BackendFactory, part_metrics, refuse_unscored, sample_and_score, summarize
from rlhf.eval.views import distinct_n
from rlhf.models.policy import Policy
from rlhf.rewards.base import Reward, as_columns, invalid_counts
from rlhf.tasks.base import DialogueTask
from rlhf.tasks.dataset import DatasetTask
from rlhf.users.base import UserSimulator
from rlhf.users.none import NoUser

PolicyFactory = Callable[..., Policy]  # the policy config, partially built: called (with no argument) to load it


class HeldOutReward:
    """Single-turn (`user=none`): `num_samples` responses per held-out prompt, scored (samples.jsonl). With a
    user simulator: one dialogue per held-out opening, played out and scored as a whole (dialogues.jsonl),
    with the task's own metrics (e.g. 20 Questions success, questions asked, return) as mean and standard
    error."""

    def __init__(self, num_samples: int = 1):
        if num_samples < 1:
            raise ValueError(f"eval.num_samples={num_samples} must be >= 1")
        self.num_samples = num_samples

    def __call__(self, policy: PolicyFactory, task: DialogueTask, reward: Reward, backend: BackendFactory,
                 user: UserSimulator, run_dir: str, seed: int) -> dict:
        if isinstance(user, NoUser) and not isinstance(task, DatasetTask):
            raise ValueError(f"task {task.name!r} is played against a user simulator: choose one with user= "
                             "(e.g. user=twenty_questions_kb)")
        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = policy()
        if isinstance(user, NoUser):
            prompts, fields = task.eval_openings()  # fields: e.g. a reference answer the reward checks
            rows, scores, parts, what = sample_and_score(backend(model=model.model, tokenizer=model.tokenizer),
                                                         reward, prompts, self.num_samples,
                                                         fields if any(fields) else None)
            k = self.num_samples
            values, reasons = as_columns(scores)
            columns = {"scores": values, "invalid_reasons": reasons,
                       **{name: as_columns(part)[0] for name, part in parts.items()}}
            for i, row in enumerate(rows):
                row |= {name: values[i * k:(i + 1) * k] for name, values in columns.items()}
            texts = [t for r in rows for t in r["responses"]]
            result = summarize(scores) | part_metrics(parts) | {
                "length_words": sum(len(t.split()) for t in texts) / len(texts),
                "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)}
            write_jsonl(out / "samples.jsonl", rows)
            refuse_unscored(reasons, "evaluation")
            unit = "prompts"
        else:
            if self.num_samples != 1:
                raise ValueError("eval.num_samples: a dialogue evaluation plays each held-out opening once")
            evaluator = DialogueEvaluator(backend, user, reward, task, seed, progress=True)
            dialogues, scores, parts = evaluator.play(model)
            write_jsonl(out / "dialogues.jsonl", [d.to_row() | {"score": s} for d, s in
                                                  zip(dialogues, as_columns(scores)[0])])
            result = evaluator.metrics(dialogues, scores, parts)  # refuses an evaluation of failures
            rows, unit, what = dialogues, "dialogues", evaluator.meaning
        result |= {"invalid_reasons": invalid_counts(scores), "policy": model.path, f"num_{unit}": len(rows)}
        result["reward_is"] = what
        table = [("policy", model.path), (unit, str(len(rows))),
                 ("reward" if what == "reward" else f"reward ({what})", reward_line(result))]
        table += [(key[:-5], f"{result[key]:.3f} ± {result[key[:-5] + '_stderr']:.3f}") for key in result
                  if key.endswith("_mean") and key != "reward_mean" and key[:-5] + "_stderr" in result]
        table += [(key, f"{result[key]:.3f}") for key in ("length_words", "distinct_1", "distinct_2") if key in result]
        write_text(out / "eval.json", json.dumps(result, indent=2))
        write_text(out / "eval.md", markdown_table(["metric", "value"], table))
        print(format_table(table, "evaluation"))
        return result
