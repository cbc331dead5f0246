"""The turn-synchronous rollout engine on the tiny model: batching, termination, failures, seeding and
the per-turn masks of rolled-out dialogues."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.backends.hf import HFBackend
from rlhf.data.tokenize import tokenize_conversation
from rlhf.rollout.engine import failure_class, rollout, summary
from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from rlhf.users.base import TERMINATE, UserTurn
from rlhf.users.dataset import DatasetUser
from rlhf.users.oracle import TwentyQuestionsOracle


class CountingBackend(HFBackend):
    """The HF backend, recording how many conversations each call was given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def generate(self, conversations, num_samples=1, seed=None):
        self.batches.append(len(conversations))
        return super().generate(conversations, num_samples, seed)


class FailingFor:
    """Replays the data like `user=dataset`, except that dialogues whose `fail` field is set fail."""

    def __init__(self):
        self.batches: list[int] = []

    def respond(self, conversations, fields, seed=None):
        self.batches.append(len(conversations))
        replies = DatasetUser().respond(conversations, fields)
        return [UserTurn.failed(f["fail"]) if f.get("fail") else r for r, f in zip(replies, fields)]


@pytest.fixture(scope="module")
def backend(tiny_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    return CountingBackend(model, AutoTokenizer.from_pretrained(tiny_path), max_new_tokens=8, seed=0)


def opening(text="hello"):
    return [{"role": "user", "content": text}]


def test_turns_are_batched_across_dialogues_and_ended_dialogues_leave(backend):
    # dialogue k has k user turns after the first: it ends (user) after k + 1 policy turns
    fields = [{"user_turns": [f"more {j}" for j in range(k)]} for k in range(4)]
    user = FailingFor()
    backend.batches.clear()
    dialogues = rollout(backend, user, [opening() for _ in fields], fields, max_turns=10, progress=False)
    assert backend.batches == [4, 3, 2, 1]  # one call per turn, only the dialogues still running
    assert user.batches == [4, 3, 2, 1]
    assert [d.num_turns for d in dialogues] == [1, 2, 3, 4]
    assert [d.end for d in dialogues] == ["user"] * 4
    for d, f in zip(dialogues, fields):
        users = [m["content"] for m in d.messages[1:] if m["role"] == "user"]
        assert users == f["user_turns"]  # replayed in order, after the opening
        assert [d.messages[i]["role"] for i in d.policy_turns] == ["assistant"] * d.num_turns
        assert len(d.token_ids) == len(d.finish_reasons) == d.num_turns
    assert summary([d.to_row() for d in dialogues])["ended/user"] == 4


def test_max_turns_terminate_marker_and_failures(backend):
    fields = [{"user_turns": ["a", "b", "c"]}, {"user_turns": ["a", f"ok {TERMINATE}"]},
              {"user_turns": ["a", "b"], "fail": "HTTP 500 after 3 attempts"}]
    dialogues = rollout(backend, FailingFor(), [opening() for _ in fields], fields, max_turns=3, progress=False)
    assert [(d.end, d.num_turns) for d in dialogues] == [("max_turns", 3), ("user", 2), ("failed", 1)]
    assert dialogues[0].messages[-1]["role"] == "assistant"  # no user reply after the last allowed turn
    assert TERMINATE not in str(dialogues[1].messages)
    assert dialogues[2].failure == "HTTP 500 after 3 attempts"
    counts = summary([d.to_row() for d in dialogues])
    assert counts["ended/failed"] == 1 and counts["failures/HTTP 500"] == 1
    assert counts["turns_mean"] == pytest.approx(2.0)


@pytest.mark.parametrize("reason, kind", [
    ("HTTP 500 after 3 attempts: overloaded", "HTTP 500"),
    ("HTTP 500 after 3 attempts: overloaded, retry later", "HTTP 500"),
    ("HTTP 401: invalid api key sk-***", "HTTP 401"),
    ("malformed response after 2 attempts: body is not JSON: b'<html>oops</html>'", "malformed response"),
    ("timeout after 3 attempts", "timeout"),
    ("connection error after 2 attempts: [Errno 111] Connection refused", "connection error"),
    ("the oracle's answer 'maybe so' is not yes or no", "the oracle's answer"),
    ("user simulator reply has no JSON object", "user simulator reply has no JSON object"),
])
def test_failures_are_counted_by_kind_not_by_their_details(reason, kind):
    assert failure_class(reason) == kind
    assert summary([{"end": "failed", "failure": reason, "num_turns": 1}] * 2)[f"failures/{kind}"] == 2


def test_per_dialogue_turn_limits(backend):
    fields = [{"user_turns": ["a", "b", "c"]}] * 3
    dialogues = rollout(backend, DatasetUser(), [opening()] * 3, fields, max_turns=[1, 3, 2], progress=False)
    assert [d.num_turns for d in dialogues] == [1, 3, 2] and {d.end for d in dialogues} == {"max_turns"}


def test_same_seed_same_dialogues_other_seed_other_dialogues(backend):
    fields = [{"user_turns": ["x", "y"]}] * 6
    a = rollout(backend, DatasetUser(), [opening(f"q{i}") for i in range(6)], fields, 3, seed=5, progress=False)
    backend.generate([opening()])  # whatever ran in between
    b = rollout(backend, DatasetUser(), [opening(f"q{i}") for i in range(6)], fields, 3, seed=5, progress=False)
    c = rollout(backend, DatasetUser(), [opening(f"q{i}") for i in range(6)], fields, 3, seed=6, progress=False)
    assert [d.messages for d in a] == [d.messages for d in b]
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    assert [d.messages for d in a] != [d.messages for d in c]


def test_the_oracle_answers_every_question_including_the_last(backend):
    task = TwentyQuestionsTask()
    openings, fields = task.openings("train", 5)
    dialogues = rollout(backend, TwentyQuestionsOracle(), openings, fields, max_turns=4, done=task.done,
                        reply_to_last=True, progress=False)
    for d in dialogues:
        assert d.end == "max_turns" and d.num_turns == 4
        answers = [m["content"] for m in d.messages[d.start:] if m["role"] == "user"]
        assert len(answers) == 4 and set(answers) <= {"Yes.", "No."}


def test_masks_of_every_turn_of_a_rolled_out_dialogue(backend):
    """Each policy turn's tokens, found by its turn mask, decode to exactly that turn's text (plus the end
    of turn); user and opening tokens are in no turn's mask."""
    tokenizer = backend.tokenizer
    fields = [{"user_turns": ["tell me more", "and then?"]}]
    (d,) = rollout(backend, DatasetUser(), [opening("why is the sky blue?")], fields, 3, progress=False)
    assert d.num_turns == 3
    seq = tokenize_conversation(tokenizer, d.messages)
    for turn, index in enumerate(d.policy_turns):
        ids = [t for t, k in zip(seq.input_ids, seq.turn_ids) if k == turn]
        assert tokenizer.decode(ids, skip_special_tokens=True) == d.messages[index]["content"]
        assert ids[-1] == tokenizer.eos_token_id
    user_text = "".join(tokenizer.decode([t]) for t, k in zip(seq.input_ids, seq.turn_ids) if k < 0)
    assert "tell me more" in user_text and "and then?" in user_text and "why is the sky blue?" in user_text
    # the masked tokens are those of the policy turns and nothing else
    assert sum(k >= 0 for k in seq.turn_ids) == sum(
        len([t for t, k in zip(seq.input_ids, seq.turn_ids) if k == turn]) for turn in range(3))


def test_bad_arguments_are_named(backend):
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        rollout(backend, DatasetUser(), [opening()], [{}], 0, progress=False)
    with pytest.raises(ValueError, match="1 openings, 2 field rows"):
        rollout(backend, DatasetUser(), [opening()], [{}, {}], 1, progress=False)
    with pytest.raises(ValueError, match="user=dataset needs each dialogue's `user_turns`"):
        rollout(backend, DatasetUser(), [opening()], [{}], 2, progress=False)
