"""The catalogue of bad inputs: each one, given to the entrypoint a user would type it into, ends the run with
exit code 1 and a message naming what is wrong (the key, file, row or column), and, where the input allows,
before any model is loaded.

The entrypoints run in this process (Hydra's `main`, as the console scripts call it) with model loading
replaced by a marker, so a case that would load a model before failing is caught as late; a few cases run as
real subprocesses too, to show the exit code is the process's."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from tests.smoke.helpers import REPO, command, env, run

pytestmark = pytest.mark.slow
ENTRYPOINTS = {"train": "rlhf.train", "generate": "rlhf.generate", "eval": "rlhf.eval.__main__"}
MODEL_LOADED = "<a model was loaded>"


class ModelLoaded(Exception):
    pass


def invoke(entry: str, overrides: list[str], run_dir: Path, monkeypatch, capsys, models: bool = False):
    """(exit code, console text) of `rlhf-<entry> hydra.run.dir=<run_dir> <overrides>` in this process;
    unless `models`, loading any model raises instead (its message then holds MODEL_LOADED)."""
    main = importlib.import_module(ENTRYPOINTS[entry]).main
    monkeypatch.setattr(sys, "argv", [f"rlhf-{entry}", f"hydra.run.dir={run_dir}", *overrides])
    if not models:
        def refuse(cls, *args, **kwargs):
            raise ModelLoaded(MODEL_LOADED)
        monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    monkeypatch.undo()
    return code, out.out + out.err


def rows(path: Path, items) -> str:
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in items))
    return str(path)


PAIR = {"prompt": "Question?", "chosen": "Good.", "rejected": "Bad."}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-data")
    rows(d / "good.jsonl", [PAIR] * 8)
    (d / "empty.jsonl").write_text("")
    (d / "nonutf8.jsonl").write_bytes(b"".join(json.dumps(PAIR).encode() + b"\n" for _ in range(2))
                                      + b'{"prompt": "Caf\xe9?", "chosen": "a", "rejected": "b"}\n')
    rows(d / "not_object.jsonl", [PAIR, "[1, 2]", PAIR])
    (d / "prefs.csv").write_text("prompt,chosen,rejected\nQ?,a,b\n")
    rows(d / "no_rejected.jsonl", [{"prompt": "Q?", "chosen": "a"}] * 3)
    rows(d / "int_chosen.jsonl", [PAIR, {**PAIR, "chosen": 5}])
    rows(d / "nan_score.jsonl", [{**PAIR, "score_chosen": 1.0, "score_rejected": 0.0},
                                 '{"prompt": "Q?", "chosen": "a", "rejected": "b", "score_chosen": NaN, "score_rejected": 0}'])
    rows(d / "inf_score.jsonl", ['{"prompt": "Q?", "chosen": "a", "rejected": "b", "score_chosen": Infinity, '
                                 '"score_rejected": 0}'])
    rows(d / "bad_json.jsonl", [PAIR, '{"prompt": "Q?", "chosen": '])
    rows(d / "empty_prompt.jsonl", [PAIR, {**PAIR, "prompt": ""}])
    rows(d / "bad_roles.jsonl", [{"prompt": [{"role": "wizard", "content": "hi"}], "chosen": "a", "rejected": "b"}])
    rows(d / "bool_score.jsonl", [{**PAIR, "score_chosen": True, "score_rejected": 0.0}])
    (d / "blank_lines.jsonl").write_text("\n\n  \n")
    (d / "prefs.txt").write_text("Q? a b\n")
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "notes.txt").write_text("hello")
    return d


PREF = ["task=preference"]
# id: (entrypoint, overrides ({data}: the files above), what the message must hold, fails before a model loads)
CASES = {
    # settings
    "learning_rate_text": ("train", ["trainer.learning_rate=abc"], "trainer.learning_rate='abc' must be a number", True),
    "learning_rate_nan": ("train", ["trainer.learning_rate=nan"], "trainer.learning_rate=nan must be a finite number", True),
    "learning_rate_inf": ("train", ["trainer.learning_rate=inf"], "trainer.learning_rate=inf must be a finite number", True),
    "learning_rate_negative": ("train", ["trainer.learning_rate=-0.1"], "trainer.learning_rate=-0.1 must be > 0", True),
    "batch_size_negative": ("train", ["trainer.batch_size=-4"], "trainer.batch_size=-4 must be >= 1", True),
    "batch_size_float": ("train", ["trainer.batch_size=2.5"], "trainer.batch_size=2.5 must be an int", True),
    "accumulation_zero": ("train", ["trainer.gradient_accumulation_steps=0"],
                          "trainer.gradient_accumulation_steps=0 must be >= 1", True),
    "seed_text": ("train", ["seed=abc"], "seed='abc' must be an integer", True),
    "scheduler_unknown": ("train", ["trainer.lr_scheduler=bogus"],
                          "trainer.lr_scheduler='bogus' is not a learning-rate schedule; one of ['linear', 'cosine'", True),
    "train_limit_zero": ("train", ["task.train_limit=0"], "task.train_limit=0 must be >= 1 (or null)", True),
    "max_steps_zero": ("train", ["trainer.max_steps=0"], "trainer.max_steps=0 must be >= 1 (or null)", True),
    "epochs_zero": ("train", ["trainer.epochs=0"], "trainer.epochs=0 must be >= 1", True),
    "warmup_negative": ("train", ["trainer.warmup_steps=-1"], "trainer.warmup_steps=-1 must be >= 0", True),
    "grad_norm_zero": ("train", ["trainer.max_grad_norm=0"], "trainer.max_grad_norm=0 must be > 0", True),
    "keep_negative": ("train", ["trainer.keep_checkpoints=-1"], "trainer.keep_checkpoints=-1 must be >= 0", True),
    "eval_every_negative": ("train", ["trainer.eval_every=-5"], "trainer.eval_every=-5 must be >= 0", True),
    "max_length_zero": ("train", ["data.max_length=0"], "data.max_length=0 must be >= 1", True),
    "two_bad_settings": ("train", ["trainer.batch_size=0", "seed=x"], "seed='x' must be an integer\n  trainer.batch_size=0", True),
    "resume_unknown": ("train", ["resume=bogus"], "resume='bogus' is not one of ['check', 'ignore_config_change']", True),
    "online_steps_zero": ("train", ["experiment=online_debug", "algo=grpo", "trainer.prompts_per_step=0"],
                          "trainer.prompts_per_step=0 must be >= 1", True),
    "samples_per_prompt_zero": ("train", ["experiment=online_debug", "algo=grpo", "trainer.samples_per_prompt=0"],
                                "trainer.samples_per_prompt=0 must be >= 1", True),
    "max_new_tokens_zero": ("train", ["backend.max_new_tokens=0"], "backend.max_new_tokens=0 must be >= 1", True),
    "accumulation_negative": ("train", ["trainer.gradient_accumulation_steps=-1"],
                              "trainer.gradient_accumulation_steps=-1 must be >= 1", True),
    "grad_norm_nan": ("train", ["trainer.max_grad_norm=nan"], "trainer.max_grad_norm=nan must be a finite number", True),
    "train_limit_negative": ("train", ["task.train_limit=-5"], "task.train_limit=-5 must be >= 1 (or null)", True),
    "train_limit_text": ("train", ["task.train_limit=abc"], "task.train_limit='abc' must be an int or null", True),
    "mixed_precision_unknown": ("train", ["trainer.mixed_precision=fp13"],
                                "trainer.mixed_precision='fp13' is not one of ['no', 'fp16', 'bf16', 'fp8']", True),
    "reference_unknown": ("train", ["trainer.reference=bogus"], "trainer.reference='bogus' is not one of", True),
    "online_pair_forward_unknown": ("train", ["experiment=online_debug", "algo=opo", "trainer.pair_forward=both"],
                                    "trainer.pair_forward='both' is not one of", True),
    "truncation_unknown": ("train", ["data.truncation=middle"], "data.truncation='middle' is not one of", True),
    "num_prompts_text": ("generate", ["num_prompts=all"], "num_prompts='all' must be an integer or null", True),
    "temperature_negative": ("generate", ["backend.temperature=-1"], "backend.temperature=-1 must be >= 0", True),
    # config structure (Hydra's own messages)
    "unknown_experiment": ("train", ["experiment=bogus"], "Could not find 'experiment/bogus'", True),
    "unknown_algo": ("train", ["algo=bogus"], "Could not find 'algo/bogus'", True),
    "unknown_task": ("train", ["task=bogus"], "Could not find 'task/bogus'", True),
    "unknown_key": ("train", ["trainer.bogus_key=1"], "Key 'bogus_key' is not in struct", True),
    "format_without_plus": ("train", [*PREF, "task.train_path={data}/good.jsonl", "task.format=hh_transcript"],
                            "To append to your config use +task.format=hh_transcript", True),
    "train_path_unset": ("train", PREF, "missing values (??? in the config): task.train_path", True),
    # data files
    "empty_file": ("train", [*PREF, "task.train_path={data}/empty.jsonl"], "empty.jsonl holds no rows", True),
    "non_utf8": ("train", [*PREF, "task.train_path={data}/nonutf8.jsonl"], "nonutf8.jsonl line 3 is not UTF-8", True),
    "line_not_an_object": ("train", [*PREF, "task.train_path={data}/not_object.jsonl"],
                           "not_object.jsonl line 2 is a JSON list, not an object of columns", True),
    "cut_json_line": ("train", [*PREF, "task.train_path={data}/bad_json.jsonl"], "bad_json.jsonl line 2 is not JSON",
                      True),
    "csv_file": ("train", [*PREF, "task.train_path={data}/prefs.csv"], ".csv is not read (files read: .jsonl", True),
    "missing_file": ("train", [*PREF, "task.train_path={data}/missing.jsonl"], "missing.jsonl' does not exist", True),
    "eval_file_missing": ("train", [*PREF, "task.train_path={data}/good.jsonl", "task.eval_path={data}/nope.jsonl"],
                          "nope.jsonl' does not exist", True),
    "bool_score": ("train", [*PREF, "task.train_path={data}/bool_score.jsonl"],
                   "column 'score_chosen' must be a number, got bool", True),
    "blank_lines_only": ("train", [*PREF, "task.train_path={data}/blank_lines.jsonl"], "blank_lines.jsonl holds no rows",
                         True),
    "txt_file": ("train", [*PREF, "task.train_path={data}/prefs.txt"], ".txt is not read (files read: .jsonl", True),
    "missing_column": ("train", [*PREF, "task.train_path={data}/no_rejected.jsonl"], "rejected", True),
    "wrong_type": ("train", [*PREF, "task.train_path={data}/int_chosen.jsonl"], "chosen", True),
    "nan_score": ("train", [*PREF, "task.train_path={data}/nan_score.jsonl"], "score_chosen", True),
    "inf_score": ("train", [*PREF, "task.train_path={data}/inf_score.jsonl"], "score_chosen", True),
    "empty_prompt": ("train", [*PREF, "task.train_path={data}/empty_prompt.jsonl"], "prompt", True),
    "unknown_role": ("train", [*PREF, "task.train_path={data}/bad_roles.jsonl"], "wizard", True),
    "refuel_without_scores": ("train", [*PREF, "task.train_path={data}/good.jsonl", "algo=refuel"],
                              "REFUEL needs the ['score_chosen', 'score_rejected'] columns in task 'preference'", True),
    "a_lol_without_scores": ("train", [*PREF, "task.train_path={data}/good.jsonl", "algo=a_lol"],
                             "ALoL needs the ['score_chosen'] column in task 'preference'", True),
    # models
    "policy_missing_dir": ("train", ["policy=hf", "policy.path=/nonexistent/model"], "/nonexistent/model", True),
    "policy_not_a_model": ("train", ["policy=hf", "policy.path={data}/not_a_model"], "not_a_model", True),
    "policy_dtype_unknown": ("train", ["policy.dtype=float13"], "float13", True),
    "api_key_as_name": ("train", ["reward=judge_pairwise", "reward.client.api_key_env=sk-proj-abc123def456"],
                        "reward.client.api_key_env must be the NAME of the environment variable", True),
    # generation
    "split_unknown": ("generate", ["split=validation"], "split='validation' is not a split of the task: train or eval", True),
    "num_prompts_zero": ("generate", ["num_prompts=0"], "num_prompts=0 must be >= 1 (or null)", True),
    "num_prompts_negative": ("generate", ["num_prompts=-1"], "num_prompts=-1 must be >= 1 (or null)", True),
    "num_samples_zero": ("generate", ["mode.num_samples=0"], "mode.num_samples=0 must be >= 1", True),
    "chunk_size_zero": ("generate", ["mode.chunk_size=0"], "mode.chunk_size=0 must be >= 1", True),
    "failed_fraction_out_of_range": ("generate", ["mode=dialogues", "task=synthetic_dialogues", "user=dataset",
                                                  "mode.max_failed_fraction=2"],
                                     "mode.max_failed_fraction=2 must be in [0, 1]", True),
    "dialogues_without_user": ("generate", ["mode=dialogues", "task=twenty_questions", "user=none"],
                               "talks to a user simulator, and user=none has none", True),
    "refuel_pairs_without_reward": ("generate", ["mode=refuel_pairs", "task=synthetic_dialogues", "user=dataset",
                                                 "~reward"], "mode=refuel_pairs ranks what it generates with a reward", True),
    "unknown_mode": ("generate", ["mode=bogus"], "Could not find 'mode/bogus'", True),
    "generate_policy_missing": ("generate", ["policy=hf", "policy.path=/nonexistent/model"], "/nonexistent/model", True),
    "generate_key_as_name": ("generate", ["user=api", "user.client.api_key_env=sk-proj-abc123def456"],
                             "user.client.api_key_env must be the NAME", True),
    # evaluation
    "eval_policy_missing": ("eval", ["policy=hf", "policy.path=/nonexistent/model"], "/nonexistent/model", True),
    "eval_unknown": ("eval", ["eval=bogus"], "Could not find 'eval/bogus'", True),
    "eval_checkpoints_without_run": ("eval", ["eval=checkpoints"], "missing values (??? in the config): eval.run", True),
    "eval_sweep_missing": ("eval", ["sweep=/nonexistent/sweep"], "/nonexistent/sweep", True),
    "eval_seed_text": ("eval", ["seed=abc"], "seed='abc' must be an integer", True),
    "eval_prompts_zero": ("eval", ["task.num_eval_prompts=0"], "task.num_eval_prompts=0 must be >= 1", True),
    "eval_games_without_a_game": ("eval", ["eval=games"], "eval=games plays the task against a user simulator, and "
                                  "user=none has none", True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_clearly(name, data, tmp_path, monkeypatch, capsys, tiny_cache):
    entry, overrides, message, early = CASES[name]
    monkeypatch.setenv("RLHF_CACHE", tiny_cache)
    code, text = invoke(entry, [o.format(data=data) for o in overrides], tmp_path / "run", monkeypatch, capsys,
                        models=not early)
    assert code == 1, f"exit code {code}:\n{text[-3000:]}"
    assert message in text, text[-3000:]
    assert MODEL_LOADED not in text, f"a model was loaded before the error:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]


def test_the_catalogue_is_large():
    assert len(CASES) >= 60 and {entry for entry, *_ in CASES.values()} == set(ENTRYPOINTS)


@pytest.mark.parametrize("name", ["learning_rate_text", "line_not_an_object", "split_unknown"])
def test_the_process_exits_with_code_1_and_the_message_alone(name, data, tmp_path, tiny_cache):
    entry, overrides, message, _ = CASES[name]
    out = subprocess.run(command(ENTRYPOINTS[entry], tmp_path / "run", *[o.format(data=data) for o in overrides]),
                         cwd=REPO, env=env(tiny_cache), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]


def test_eval_of_a_training_run_directory_uses_its_model(tmp_path, tiny_cache):
    run("rlhf.train", tmp_path / "train", tiny_cache, "experiment=debug", "trainer.max_steps=2")
    out = run("rlhf.eval", tmp_path / "eval", tiny_cache, f"policy.path={tmp_path / 'train'}", "task.num_eval_prompts=4")
    assert str(tmp_path / "train" / "model") in out.stdout + out.stderr
