"""`eval=games`: a policy and a baseline play the same held-out games against the user simulator (20 Questions
against its oracle, LMRL-Gym's evaluation), under the same seeds: success rate, questions asked to a success,
return, and McNemar's exact test on success between the two (paired by game)."""

import json
import math
from pathlib import Path

from rlhf.atomic import write_jsonl, write_text
from rlhf.eval.dialogue_eval import DialogueEvaluator, mean_and_stderr
from rlhf.eval.evaluate import PolicyFactory
from rlhf.eval.plots import bar_plot
from rlhf.eval.report import markdown_table
from rlhf.eval.reward_eval import BackendFactory, refuse_unscored
from rlhf.models.policy import Policy
from rlhf.rewards.base import Reward
from rlhf.tasks.base import DialogueTask
from rlhf.users.base import UserSimulator
from rlhf.users.none import NoUser


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: games only the first side won and games
    only the second did (a binomial test of only_first ~ Bin(only_first + only_second, 1/2))."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first, only_second) + 1)) / 2**n
    return min(1.0, 2 * tail)


def game_stats(per_game: list[dict[str, float]]) -> dict[str, float]:
    """Success rate, questions asked in the games won, and return, each with its standard error."""
    out = {"games": len(per_game)}
    for key, values in (("success", [g["success"] for g in per_game]),
                        ("questions_to_success", [g["questions"] for g in per_game if g["success"] == 1.0]),
                        ("return", [g["return"] for g in per_game])):
        out[key], out[f"{key}_stderr"] = mean_and_stderr(values)
    return out


class Games:
    """baseline: the policy the trained one is compared with (a built policy; default the tiny model)."""

    def __init__(self, baseline: Policy):
        self.baseline = baseline

    def __call__(self, policy: PolicyFactory, task: DialogueTask, reward: Reward, backend: BackendFactory,
                 user: UserSimulator, run_dir: str, seed: int) -> dict:
        if isinstance(user, NoUser):
            raise ValueError(f"eval=games plays task {task.name!r} against a user simulator: choose one with user=")
        evaluator = DialogueEvaluator(backend, user, reward, task, seed, progress=True)
        model = policy()
        played = {"policy": evaluator.play(model)[0], "baseline": evaluator.play(self.baseline)[0]}
        per_game = {side: [task.dialogue_metrics(d.messages, d.fields) for d in games]
                    for side, games in played.items()}
        if "success" not in per_game["policy"][0]:
            raise ValueError(f"eval=games needs a game: task {task.name!r} reports no success per dialogue")
        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "games.jsonl", [{"side": side, **d.to_row(), **m} for side, games in played.items()
                                          for d, m in zip(games, per_game[side])])
        # a game whose user simulator failed is neither won nor lost: left out on both sides (McNemar pairs them)
        for side, games in played.items():
            refuse_unscored([f"user simulator failed: {d.failure}" if d.end == "failed" else None for d in games],
                            f"games of the {side}")
        failed = {i for games in played.values() for i, d in enumerate(games) if d.end == "failed"}
        per_game = {side: [m for i, m in enumerate(games) if i not in failed] for side, games in per_game.items()}
        wins = [(a["success"], b["success"]) for a, b in zip(per_game["policy"], per_game["baseline"])]
        only_policy = sum(a == 1.0 and b == 0.0 for a, b in wins)
        only_baseline = sum(a == 0.0 and b == 1.0 for a, b in wins)
        result = {"policy_path": model.path, "baseline_path": self.baseline.path,
                  **{side: game_stats(games) for side, games in per_game.items()},
                  "only_policy_won": only_policy, "only_baseline_won": only_baseline,
                  "mcnemar_p": mcnemar_exact(only_policy, only_baseline), "failed_games": len(failed)}
        # flat numbers, for `rlhf-eval sweep=`: the policy's unprefixed, the baseline's under baseline/
        result |= result["policy"] | {f"baseline/{k}": v for k, v in result["baseline"].items()}
        write_text(out / "eval.json", json.dumps(result, indent=2))
        table = self.table(result)
        write_text(out / "eval.md", table)
        bar_plot(out / "games.png", {f"{side}\n{Path(result[side + '_path']).name}":
                                     (result[side]["success"], result[side]["success_stderr"])
                                     for side in ("policy", "baseline")},
                 "success rate (± s.e.)", f"{task.name}: {result['policy']['games']} games")
        print(table)
        return result

    @staticmethod
    def table(result: dict) -> str:
        def cell(stats: dict, key: str) -> str:
            return "n/a" if math.isnan(stats[key]) else f"{stats[key]:.3f} ± {stats[key + '_stderr']:.3f}"

        rows = [[side, result[side]["games"], cell(result[side], "success"), cell(result[side], "questions_to_success"),
                 cell(result[side], "return")] for side in ("policy", "baseline")]
        header = ["side", "games", "success", "questions to success", "return"]
        return (markdown_table(header, rows) + f"\npolicy {result['policy_path']} vs baseline {result['baseline_path']}: "
                f"won only by the policy {result['only_policy_won']}, only by the baseline "
                f"{result['only_baseline_won']}; McNemar exact p = {result['mcnemar_p']:.4f}"
                + (f"; {result['failed_games']} games left out on both sides (user simulator failed)"
                   if result.get("failed_games") else "") + "\n")
