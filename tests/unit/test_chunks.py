"""Resumable generation chunks: reused only for the same weights, failed rows generated again, and a run of
mostly failures stopped with its reasons."""

import pytest
import torch

from rlhf.backends.hf import HFBackend
from rlhf.chat_api import LocalChat
from rlhf.rollout.chunks import modules_in, run_chunks, weights_fingerprint
from rlhf.rollout.engine import row_failure
from rlhf.users.llm import LLMUser

KEY = {"mode": "dialogues", "seed": 0}


class Maker:
    """make_rows that fails the rows whose item is in `failing` (with an HTTP 401, as a down endpoint does)."""

    def __init__(self, failing=()):
        self.failing, self.calls = set(failing), []

    def __call__(self, items, chunk):
        self.calls.append(chunk)
        return [{"item": i, "end": "failed" if i in self.failing else "done",
                 "failure": "HTTP 401: invalid key" if i in self.failing else None} for i in items]


def test_new_weights_at_the_same_path_are_refused_not_answered_with_old_rows(tmp_path):
    model = torch.nn.Linear(3, 2)
    run_chunks(list(range(6)), 2, tmp_path, Maker(), KEY, models={"policy": model})
    again = Maker()
    run_chunks(list(range(6)), 2, tmp_path, again, KEY, models={"policy": model})
    assert again.calls == []  # the same weights: every chunk reused
    with torch.no_grad():
        model.weight[0, 0] += 1e-3
    with pytest.raises(ValueError, match=r"holds chunks of different work \(differs in \['weights'\]\)"):
        run_chunks(list(range(6)), 2, tmp_path, Maker(), KEY, models={"policy": model})


def test_the_fingerprint_sees_every_byte_and_finds_a_simulated_user_s_model():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b.bias[1] = torch.nextafter(b.bias[1], torch.tensor(10.0))  # one ulp
    assert weights_fingerprint(a) != weights_fingerprint(b)
    backend = HFBackend.__new__(HFBackend)
    backend.model = a
    user = LLMUser.__new__(LLMUser)
    user.chat = LocalChat(backend)
    assert modules_in(user) == [a]


def test_chunks_with_failed_rows_are_generated_again_on_a_rerun(tmp_path):
    down = Maker(failing={3})  # the endpoint failed for item 3, in chunk 1
    rows = run_chunks(list(range(6)), 2, tmp_path, down, KEY, failed=row_failure)
    assert [r["failure"] for r in rows].count("HTTP 401: invalid key") == 1
    fixed = Maker()
    rows = run_chunks(list(range(6)), 2, tmp_path, fixed, KEY, failed=row_failure)
    assert fixed.calls == [1]  # only the chunk with the failure
    assert all(r["failure"] is None for r in rows) and [r["item"] for r in rows] == list(range(6))


def test_a_run_of_mostly_failures_stops_with_the_reasons_and_keeps_what_it_wrote(tmp_path):
    down = Maker(failing=set(range(100)))
    with pytest.raises(RuntimeError, match=r"(?s)2 of 2 rows so far failed, more than mode.max_failed_fraction=0.5"
                                           r".*2 x HTTP 401.*The 1 chunks written are kept"):
        run_chunks(list(range(10)), 2, tmp_path, down, KEY, failed=row_failure, max_failed_fraction=0.5)
    assert down.calls == [0] and (tmp_path / "chunks" / "000000.jsonl").exists()
    with pytest.raises(ValueError, match=r"mode.max_failed_fraction=1.5 must be in \[0, 1\]"):
        run_chunks([1], 1, tmp_path / "b", Maker(), KEY, max_failed_fraction=1.5)


def test_a_pair_dropped_for_a_user_failure_counts_as_failed():
    assert row_failure({"drop_reason": "user simulator failed: timeout after 3 attempts"}) == "timeout"
    assert row_failure({"drop_reason": "fewer than two valid candidates: user simulator failed: HTTP 500 after 2 "
                                        "attempts: busy; user simulator failed: timeout"}) == "HTTP 500"
    assert row_failure({"drop_reason": "identical responses at the branch turn"}) is None
    assert row_failure({"drop_reason": None}) is None


def test_a_row_whose_reward_endpoint_failed_counts_as_failed_and_a_verdict_does_not():
    from rlhf.rewards.base import unavailable

    down = unavailable("connection error after 3 attempts: [Errno 111] Connection refused").reason
    assert row_failure({"drop_reason": f"invalid reward: {down}"}) == "reward connection error"
    assert row_failure({"invalid_reason": f"judge: {down}"}) == "reward connection error"  # through a composite
    assert row_failure({"invalid_reasons": [None, "empty response", down]}) == "reward connection error"
    assert row_failure({"drop_reason": "invalid reward: judge reply has no JSON object"}) is None
    assert row_failure({"invalid_reasons": [None, "empty response"], "drop_reason": None}) is None


def test_a_chunk_with_an_unavailable_reward_is_generated_again(tmp_path):
    from rlhf.rewards.base import unavailable

    class Scored:
        def __init__(self, down):
            self.down, self.calls = down, []

        def __call__(self, items, chunk):
            self.calls.append(chunk)
            return [{"item": i, "invalid_reasons": [unavailable("HTTP 503 after 3 attempts").reason if i in self.down
                                                    else None]} for i in items]

    first = Scored(down={2})
    run_chunks(list(range(4)), 2, tmp_path, first, KEY, failed=row_failure)
    again = Scored(down=set())
    rows = run_chunks(list(range(4)), 2, tmp_path, again, KEY, failed=row_failure)
    assert again.calls == [1] and all(r["invalid_reasons"] == [None] for r in rows)
