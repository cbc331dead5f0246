"""SharedRep's GSM8K pieces: the few-shot prompt format keeping the reference answer, the task's fields, the
correctness reward as the published code extracts answers, and z statistics fitted on a samples dataset."""

import json
import math
from pathlib import Path

import pytest

from rlhf.data.sources import GSM8K_FEW_SHOT, check_format
from rlhf.rewards.gold import Length
from rlhf.rewards.gsm8k import GSM8KCorrect, final_number, reference_answer
from rlhf.rewards.pluralistic import SigmoidZScore
from rlhf.tasks.dataset import DatasetTask

SAMPLE = str(Path(__file__).resolve().parents[2] / "data" / "samples" / "gsm8k" / "train.jsonl")


def gsm8k_task(**kwargs) -> DatasetTask:
    return DatasetTask(name="gsm8k", schema="prompt", format="gsm8k", train_path=SAMPLE, eval_path=SAMPLE,
                       **({"fields": ["answer"]} | kwargs))


def test_prompts_are_the_few_shot_text_and_keep_the_answer_as_a_field():
    task = gsm8k_task()
    prompts, fields = task.openings("train")
    raw = [json.loads(line) for line in Path(SAMPLE).read_text().splitlines()]
    assert len(prompts) == len(fields) == len(raw)
    for prompt, field, row in zip(prompts, fields, raw, strict=True):
        assert prompt == [{"role": "user", "content": GSM8K_FEW_SHOT + f"\nQ: {row['question']}. Think step by "
                           "step and provide the final answer prefixed by ####.\nA: "}]
        assert field == {"answer": row["answer"]}
    assert gsm8k_task(fields=None).openings("train")[1][0] == {}  # no fields unless the task names them


def test_bad_fields_and_schemas_are_refused():
    with pytest.raises(ValueError, match="'solution', which the train rows do not have"):
        gsm8k_task(fields=["solution"])
    with pytest.raises(ValueError, match="gives prompt rows"):
        check_format("gsm8k", "preference")


@pytest.mark.parametrize("reply, number", [
    ("So the total is \\boxed{1,250}.", 1250.0),
    ("3 + 4 = 7, and then 7 * 2 = 14. The answer is 14.", 14.0),
    ("#### The final answer is 55.", 55.0),
    ("She has 12 left after 30 are sold", 30.0),  # the last number, as published
    ("I do not know.", None),
])
def test_final_numbers_are_extracted_as_published(reply, number):
    assert final_number(reply) == number


def test_correctness_against_the_reference_field():
    reward = GSM8KCorrect()
    conversations = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": reply}]
                     for reply in ("42 - 30 = 12. The answer is 12.", "The answer is 13.", "no idea")]
    assert reward.score(conversations, [{"answer": "...\n#### 12"}] * 3) == [1.0, 0.0, 0.0]
    assert reference_answer("x\n#### 1,250") == 1250.0
    with pytest.raises(ValueError, match="field 'answer'"):
        reward.score(conversations[:1], [{}])
    with pytest.raises(ValueError, match="task.fields"):
        reward.score(conversations[:1], None)


def test_z_statistics_are_fitted_on_every_response_of_the_samples(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "q1"}], "responses": ["one two", "one two three four"],
             "answer": "#### 1"},
            {"prompt": [{"role": "user", "content": "q2"}], "responses": ["a b c", "a"], "answer": "#### 2"}]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    z = SigmoidZScore(Length(unit="words"), fit_path=str(path))
    lengths = [2, 4, 3, 1]
    mean = sum(lengths) / 4
    assert (z.mean, z.std) == pytest.approx((mean, math.sqrt(sum((v - mean) ** 2 for v in lengths) / 4)))
    reply = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x y z"}]
    assert z.score([reply]) == pytest.approx([1 / (1 + math.exp(-(3 - z.mean) / z.std))])
    with pytest.raises(ValueError, match="mean and std, or fit_path"):
        SigmoidZScore(Length(unit="words"), mean=1.0, std=1.0, fit_path=str(path))
    with pytest.raises(ValueError, match="no column 'responses'"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"prompt": "q"}) + "\n")
        SigmoidZScore(Length(unit="words"), fit_path=str(bad))


def test_the_twin_problems_are_what_the_module_writes(tmp_path):
    from rlhf.tasks.gsm8k_samples import write_samples

    write_samples(tmp_path)
    bundled = Path(SAMPLE).parents[1] / "gsm8k_twin"
    for name in ("train.jsonl", "test.jsonl", "sft_train.jsonl", "sft_test.jsonl"):
        assert (tmp_path / "gsm8k_twin" / name).read_bytes() == (bundled / name).read_bytes(), name
    rows = [json.loads(line) for line in (bundled / "sft_train.jsonl").read_text().splitlines()]
    problems = [json.loads(line) for line in (bundled / "train.jsonl").read_text().splitlines()]
    for row, problem in zip(rows, problems, strict=True):  # each worked reply is correct for its problem
        assert GSM8KCorrect().score([row["messages"]], [problem]) == [1.0]
