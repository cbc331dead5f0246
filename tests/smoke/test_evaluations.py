"""`rlhf-eval`'s evaluations on real tiny runs: a run directory as policy.path, 20 Questions games against the
oracle, and the curve over a run's checkpoints (each point equal to evaluating that checkpoint's weights by
themselves, resumable, with gold labels from a D2PO run)."""

import json
import os
import subprocess

import pytest

from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from tests.smoke.helpers import REPO, command, env, kill_when, run

pytestmark = pytest.mark.slow

HELD_OUT = ["reward=length", "reward.unit=chars", "task=synthetic_prompts", "task.num_eval_prompts=6",
            "backend.max_new_tokens=16"]
D2PO = ["experiment=online_debug", "algo=d2po", "reward=length", "reward.unit=chars", "backend.max_new_tokens=16",
        "trainer.discriminator.window=8", "trainer.discriminator.relabels=2", "trainer.max_steps=6",
        "trainer.keep_checkpoints=10", "trainer.learning_rate=3e-3"]


def evaluated(tmp_path, tiny_cache, name: str, *overrides: str) -> dict:
    run("rlhf.eval", tmp_path / name, tiny_cache, *overrides)
    return json.loads((tmp_path / name / "eval.json").read_text())


@pytest.fixture(scope="module")
def d2po_run(tmp_path_factory, tiny_cache):
    run_dir = tmp_path_factory.mktemp("d2po") / "run"
    run("rlhf.train", run_dir, tiny_cache, *D2PO)
    return run_dir


def test_checkpoint_curve_points_are_the_checkpoints_own_evaluations_and_resume(d2po_run, tmp_path, tiny_cache):
    curve_dir = tmp_path / "curve"
    overrides = ["eval=checkpoints", f"eval.run={d2po_run}", *HELD_OUT]
    out = run("rlhf.eval", curve_dir, tiny_cache, *overrides)
    curve = json.loads((curve_dir / "curve.json").read_text())
    assert [p["step"] for p in curve] == [0, 2, 4, 6]
    # windows of 8 pairs (two updates) with 2 gold labels each: 2 by step 2, 4 by step 4, 6 by step 6
    assert [p["gold_labels"] for p in curve] == [0, 2, 4, 6]
    # step 0 is the run's starting policy, the last step its saved model: evaluated on their own they agree
    start = evaluated(tmp_path, tiny_cache, "start", *HELD_OUT)
    final = evaluated(tmp_path, tiny_cache, "final", f"policy.path={d2po_run}", *HELD_OUT)  # a run dir: its model/
    assert final["policy"] == f"{d2po_run}/model"
    assert curve[0]["reward_mean"] == start["reward_mean"] and curve[-1]["reward_mean"] == final["reward_mean"]
    assert len({p["reward_mean"] for p in curve}) > 1, "the checkpoints' weights were not loaded"
    table = (curve_dir / "eval.md").read_text()
    assert f"| 6 | 6 | {final['reward_mean']:.3f} ± {final['reward_stderr']:.3f} | 6 | 0 |" in table
    assert table in out.stdout
    png = (curve_dir / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000

    # resume: a finished point is read back, not evaluated again (a planted value survives); a point whose
    # checkpoint file changed, or whose result is gone, is evaluated again
    points = curve_dir / "checkpoints"
    planted = json.loads((points / "step-00000002" / "eval.json").read_text()) | {"reward_mean": 999.0}
    (points / "step-00000002" / "eval.json").write_text(json.dumps(planted))
    stale = json.loads((points / "step-00000004" / "eval.json").read_text()) | {"reward_mean": -1.0}
    (points / "step-00000004" / "eval.json").write_text(json.dumps(stale))
    weights = d2po_run / "checkpoints" / "step-00000004" / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    (points / "step-00000006" / "eval.json").unlink()
    run("rlhf.eval", curve_dir, tiny_cache, *overrides)
    again = json.loads((curve_dir / "curve.json").read_text())
    assert [p["reward_mean"] for p in again] == [curve[0]["reward_mean"], 999.0, curve[2]["reward_mean"],
                                                 curve[3]["reward_mean"]]

    # killed after its second point, the evaluation resumes to the same curve
    killed = tmp_path / "killed"
    kill_when("rlhf.eval", killed, tiny_cache, killed / "checkpoints" / "step-00000002" / "eval.json", *overrides,
              what="its second point")
    assert not (killed / "curve.json").exists(), "the evaluation finished before it could be killed"
    run("rlhf.eval", killed, tiny_cache, *overrides)
    resumed = json.loads((killed / "curve.json").read_text())
    assert [(p["step"], p["reward_mean"]) for p in resumed] == [(p["step"], p["reward_mean"]) for p in curve]


def test_ppo_checkpoints_load_without_their_value_head(tmp_path, tiny_cache):
    run_dir = tmp_path / "ppo"
    run("rlhf.train", run_dir, tiny_cache, "experiment=online_debug", "algo=ppo", "trainer.max_steps=2",
        "trainer.learning_rate=3e-3", *HELD_OUT[:2])
    curve = evaluated(tmp_path, tiny_cache, "curve", "eval=checkpoints", f"eval.run={run_dir}", *HELD_OUT)["curve"]
    final = evaluated(tmp_path, tiny_cache, "final", f"policy.path={run_dir}/model", *HELD_OUT)
    assert [p["step"] for p in curve] == [0, 2] and "gold_labels" not in curve[0]
    assert curve[-1]["reward_mean"] == final["reward_mean"]


def test_twenty_questions_games_against_the_oracle(tmp_path, tiny_cache):
    result = evaluated(tmp_path, tiny_cache, "games", "task=twenty_questions", "reward=twenty_questions_success",
                       "task.num_eval_prompts=3", "backend.max_new_tokens=8", "task.max_turns=4")
    assert result["num_dialogues"] == 3 and result["n"] == 3
    assert result["reward_mean"] == result["success_mean"]  # the reward is success
    games = [json.loads(line) for line in (tmp_path / "games" / "dialogues.jsonl").read_text().splitlines()]
    task = TwentyQuestionsTask(max_turns=4)
    assert [g["fields"]["object"] for g in games] == task.eval_objects[:3]  # the held-out games, in order
    for game in games:  # a game that fails asks every question it may; one that succeeds stops
        asked = sum(m["role"] == "assistant" for m in game["messages"])
        assert asked == 4 or task.dialogue_metrics(game["messages"], game["fields"])["success"] == 1.0
        assert game["score"] == task.dialogue_metrics(game["messages"], game["fields"])["success"]
    per_game = [task.dialogue_metrics(g["messages"], g["fields"]) for g in games]
    assert result["questions_mean"] == pytest.approx(sum(m["questions"] for m in per_game) / 3)
    assert result["return_mean"] == pytest.approx(sum(m["return"] for m in per_game) / 3)


def test_a_game_without_a_user_or_a_checkpoint_as_policy_is_refused(tmp_path, tiny_cache, d2po_run):
    cases = {
        "no user": (["task=twenty_questions", "user=none"],
                    "task 'twenty_questions' is played against a user simulator: choose one with user="),
        "checkpoint": ([f"policy.path={d2po_run}/checkpoints/step-00000002"], "is a training checkpoint"),
        "missing": ([f"policy.path={tmp_path}/nowhere"], "no such directory"),
        "no run": (["eval=checkpoints", f"eval.run={tmp_path}"], "is not a training run directory"),
    }
    for name, (overrides, message) in cases.items():
        result = subprocess.run(command("rlhf.eval", tmp_path / name.replace(" ", "_"), *overrides), cwd=REPO,
                                env=env(tiny_cache, HYDRA_FULL_ERROR="0"), capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and message in result.stderr, (name, result.stderr[-2000:])


def test_win_rate_per_turn_of_a_policy_against_itself_is_all_ties(tmp_path, tiny_cache, d2po_run):
    # the same weights answer the same prefixes under the same seeds: every turn of every game ties
    games = ["eval=win_rate", "task=twenty_questions", "task.num_eval_prompts=3", "task.max_turns=3",
             "reward=length", "backend.max_new_tokens=8", f"eval.baseline.cache_dir={tiny_cache}/tiny"]
    result = evaluated(tmp_path, tiny_cache, "self", *games)
    assert [(p["turn"], p["n"], p["ties"]) for p in result["per_turn"]] == [(1, 3, 3), (2, 3, 3), (3, 3, 3)]
    assert result["win_rate"] == 0.5
    # a trained policy against its starting point, single-turn: a rate over the held-out prompts
    trained = evaluated(tmp_path, tiny_cache, "trained", "eval=win_rate", f"policy.path={d2po_run}", *HELD_OUT,
                        f"eval.baseline.cache_dir={tiny_cache}/tiny")
    (turn,) = trained["per_turn"]
    assert turn["n"] == 6 and turn["wins"] + turn["ties"] + turn["losses"] == 6
    assert trained["win_rate"] == (turn["wins"] + 0.5 * turn["ties"]) / 6
    assert "| policy | H=1 | avg |" in (tmp_path / "trained" / "eval.md").read_text()


def test_games_of_a_trained_policy_against_its_start(tmp_path, tiny_cache, d2po_run):
    result = evaluated(tmp_path, tiny_cache, "games", "eval=games", f"policy.path={d2po_run}", "task=twenty_questions",
                       "task.num_eval_prompts=3", "task.max_turns=3", "backend.max_new_tokens=8",
                       f"eval.baseline.cache_dir={tiny_cache}/tiny")
    assert result["policy_path"] == f"{d2po_run}/model" and result["policy"]["games"] == result["baseline"]["games"] == 3
    sides = [json.loads(line) for line in (tmp_path / "games" / "games.jsonl").read_text().splitlines()]
    assert [g["side"] for g in sides] == ["policy"] * 3 + ["baseline"] * 3
    for side in ("policy", "baseline"):  # the table's rates are the games' own
        assert result[side]["success"] == sum(g["success"] for g in sides if g["side"] == side) / 3
    assert 0.0 <= result["mcnemar_p"] <= 1.0 and "McNemar exact p" in (tmp_path / "games" / "eval.md").read_text()


def test_a_pluralistic_gold_is_reported_per_group_with_length_and_distinct_n(tmp_path, tiny_cache):
    result = evaluated(tmp_path, tiny_cache, "groups", "reward=gold_synthetic_pluralistic", "task=synthetic_prompts",
                       "task.num_eval_prompts=6", "backend.max_new_tokens=16")
    samples = [json.loads(line) for line in (tmp_path / "groups" / "samples.jsonl").read_text().splitlines()]
    for g in (0, 1):  # each group's gold of every response, in the samples and summarised
        values = [v for s in samples for v in s[f"group_{g}"] if v is not None]
        assert result[f"group_{g}_mean"] == pytest.approx(sum(values) / len(values))
    lowest = [min(a, b) for s in samples for a, b in zip(s["group_0"], s["group_1"]) if a is not None]
    assert result["reward_is"] == "minimum over groups" and result["reward_mean"] == pytest.approx(sum(lowest) / len(lowest))
    texts = [t for s in samples for t in s["responses"]]
    assert result["length_words"] == pytest.approx(sum(len(t.split()) for t in texts) / len(texts))
    assert 0 < result["distinct_2"] <= 1
    assert "| reward (minimum over groups) |" in (tmp_path / "groups" / "eval.md").read_text()


def test_reward_model_pair_accuracy_per_group(tmp_path, tiny_cache):
    rm = tmp_path / "rm"
    run("rlhf.train", rm, tiny_cache, "experiment=maxmin_rm", "trainer.max_steps=20")
    result = evaluated(tmp_path, tiny_cache, "pairs", "eval=pairs", "task=synthetic_pluralistic", "reward=group_rm",
                       f"reward.path={rm}/model", "reward.route=group")
    trained = json.loads((rm / "final_metrics.json").read_text())
    # the same held-out pairs, each on its group's head: the training loop's accuracy (400 pairs in 25 equal
    # batches, so its mean of batch means is the pooled mean)
    assert result["n"] == 400 and result["accuracy"] == pytest.approx(trained["eval/rewards/accuracy"])
    groups = [result["group_id=0"], result["group_id=1"]]
    assert groups[0]["n"] + groups[1]["n"] == 400 and groups[0]["n"] < groups[1]["n"]  # 0 is the minority
    pooled = (groups[0]["accuracy"] * groups[0]["n"] + groups[1]["accuracy"] * groups[1]["n"]) / 400
    assert pooled == pytest.approx(result["accuracy"])
    assert "| group_id=0 |" in (tmp_path / "pairs" / "eval.md").read_text()


def test_an_evaluation_whose_judge_is_down_is_refused_with_its_samples_kept(tmp_path, tiny_cache):
    out = tmp_path / "down"
    result = subprocess.run(
        command("rlhf.eval", out, "reward=judge_interactivity", "task=synthetic_prompts", "task.num_eval_prompts=3",
                "backend.max_new_tokens=8", "reward.client.base_url=http://127.0.0.1:9/v1",
                "+reward.client.max_retries=0", f"reward.client.cache_dir={tmp_path / 'chat'}"),
        cwd=REPO, env=env(tiny_cache, OPENAI_API_KEY="sk-test"), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "evaluation: 3 of 3 scores failed, more than half" in result.stderr
    assert not (out / "eval.json").exists()  # no result is written for it
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(r.startswith("reward unavailable: connection error")
                                     for s in samples for r in s["invalid_reasons"])
