"""Rollouts as training sequences: the trained mask of a multi-turn rollout selects exactly the ids the
backend sampled, turn by turn; where re-tokenising the messages does not reproduce them, the sampled ids
are trained on and the turn is counted."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.backends.hf import HFBackend
from rlhf.data.tokenize import Tokenization, tokenize_conversation
from rlhf.rollout.engine import Dialogue, rollout
from rlhf.rewards.twenty_questions import InformationGain
from rlhf.rollout.experience import GroupSampler, Rules, fit_length, sampled_sequence
from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from rlhf.users.oracle import TwentyQuestionsOracle


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    return AutoTokenizer.from_pretrained(tiny_path)


def ends_turns(model, tokenizer):
    """The tiny policy after a few SFT steps on short replies, so that it ends some turns by itself (the
    random initialisation almost never samples the end-of-turn token)."""
    replies = ["Is it an animal?", "Is it big?", "Does it fly?", "Is it a tool?", "Can you eat it?"]
    sequences = [tokenize_conversation(tokenizer, [{"role": "user", "content": "Let's play."},
                                                   {"role": "assistant", "content": r}]) for r in replies]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        for s in sequences:
            ids = torch.tensor([s.input_ids])
            labels = torch.where(torch.tensor([s.turn_ids]) >= 0, ids, -100)
            model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


@pytest.fixture(scope="module")
def games(tiny_path, tokenizer):
    """Twenty Questions games of the tiny policy against the knowledge-base oracle (up to 4 questions of up
    to 7 tokens: some turns end with the end-of-turn token, some are cut at the limit)."""
    torch.manual_seed(0)
    model = ends_turns(AutoModelForCausalLM.from_pretrained(tiny_path), tokenizer)
    backend = HFBackend(model, tokenizer, max_new_tokens=7, seed=0)
    task = TwentyQuestionsTask()
    openings, fields = task.openings("train", 12)
    return rollout(backend, TwentyQuestionsOracle(), openings, fields, max_turns=4, done=task.done,
                   reply_to_last=True, seed=3, progress=False)


def trained_ids(sample, turn):
    return [t for t, k in zip(sample.sequence.input_ids, sample.sequence.turn_ids) if k == turn]


def test_the_mask_selects_exactly_the_sampled_ids_turn_by_turn(games, tokenizer):
    assert {reason for d in games for reason in d.finish_reasons} == {"stop", "length"}
    mismatched = 0
    for d in games:
        sample = sampled_sequence(tokenizer, d, list(range(d.num_turns)))
        for turn in range(d.num_turns):
            assert trained_ids(sample, turn) == d.token_ids[turn]
        assert sum(k >= 0 for k in sample.sequence.turn_ids) == sum(map(len, d.token_ids))
        # outside the policy's turns the sequence is the chat template's: the opening and the oracle's answers
        untrained = tokenizer.decode([t for t, k in zip(sample.sequence.input_ids, sample.sequence.turn_ids) if k < 0])
        assert d.messages[0]["content"] in untrained
        answers = sum(m["role"] == "user" for m in d.until_turn(d.num_turns - 1)[1:])  # the sequence ends with turn
        assert untrained.count("Yes.") + untrained.count("No.") == answers
        mismatched += sample.mismatched
        assert sample.ends_with_eos == (d.finish_reasons[-1] == "stop")
        # re-tokenising reproduces the sampled ids exactly when no turn was counted as a mismatch
        if sample.mismatched == 0:
            template = tokenize_conversation(tokenizer, d.until_turn(d.num_turns - 1)).input_ids
            assert sample.sequence.input_ids == template
    assert mismatched < sum(d.num_turns for d in games)  # the template reproduces most turns


def test_a_turn_cut_at_the_length_limit_trains_no_end_of_turn(games, tokenizer):
    """Among several trained turns, a turn cut at the limit is followed by the end-of-turn token the template
    adds, which is not trained; a single trained turn is the policy's prompt ids, then the ids it sampled."""
    d = next(d for d in games if "length" in d.finish_reasons[:-1])
    turn = d.finish_reasons.index("length")
    sample = sampled_sequence(tokenizer, d, list(range(d.num_turns)))
    ids, marks = sample.sequence.input_ids, sample.sequence.turn_ids
    last = max(i for i, k in enumerate(marks) if k == turn)
    assert tokenizer.eos_token_id not in trained_ids(sample, turn)
    assert ids[last + 1] == tokenizer.eos_token_id and marks[last + 1] == -1  # the template's, not trained
    single = sampled_sequence(tokenizer, d, [turn])
    prompt = tokenizer.apply_chat_template(d.prefix_before(turn), add_generation_prompt=True, return_dict=False)
    assert single.sequence.input_ids == prompt + d.token_ids[turn]
    assert single.sequence.turn_ids == [-1] * len(prompt) + [turn] * len(d.token_ids[turn])
    assert single.mismatched == 0 and not single.ends_with_eos


def test_ids_the_template_does_not_reproduce_are_spliced_in_and_counted(tokenizer):
    """A turn whose text re-tokenises differently (here: the policy sampled "hello" as single characters,
    the template encodes it as a few merged tokens) is trained on its sampled ids, and counted."""
    text = "hello there"
    canonical = tokenizer(text, add_special_tokens=False)["input_ids"]
    spelled = [i for ch in text for i in tokenizer(ch, add_special_tokens=False)["input_ids"]]
    assert spelled != canonical and tokenizer.decode(spelled) == text
    eos = tokenizer.eos_token_id
    d = Dialogue([{"role": "user", "content": "hi"}], {}, 1)
    d.policy_turns, d.finish_reasons = [1, 3], ["stop", "stop"]
    d.messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "and?"},
                   {"role": "assistant", "content": text}]
    d.token_ids = [spelled + [eos], canonical + [eos]]
    sample = sampled_sequence(tokenizer, d, [0, 1])  # turn 1 is trained in a context that holds turn 0's ids
    assert sample.mismatched == 1
    assert trained_ids(sample, 0) == spelled + [eos] and trained_ids(sample, 1) == canonical + [eos]
    template = tokenize_conversation(tokenizer, d.messages).input_ids
    assert len(sample.sequence.input_ids) == len(template) + len(spelled) - len(canonical)
    assert tokenizer.decode(sample.sequence.input_ids) == tokenizer.decode(template)


def test_sequences_longer_than_max_length(games, tokenizer):
    d = max(games, key=lambda d: sum(map(len, d.token_ids)))
    sample = sampled_sequence(tokenizer, d, list(range(d.num_turns)))
    n = len(sample.sequence.input_ids)
    kept = fit_length(sample, Tokenization(max_length=n - 3, truncation="left"), "game")
    assert kept.sequence.input_ids == sample.sequence.input_ids[3:] and max(kept.sequence.turn_ids) >= 0
    assert fit_length(sample, Tokenization(max_length=n - 3, truncation="drop"), "game") is None
    with pytest.raises(ValueError, match="game has"):
        fit_length(sample, Tokenization(max_length=n - 3, truncation="error"), "game")
    with pytest.raises(ValueError, match="at least one policy turn"):
        sampled_sequence(tokenizer, d, [])


def test_turn_credit_makes_each_policy_turn_a_sample(tiny_path, tokenizer):
    """credit=turn: a group per (prompt, turn index) of its K dialogues; each sample trains one turn, in the
    context of the dialogue before it, rewarded by the information gain of that turn's question."""
    torch.manual_seed(0)
    model = ends_turns(AutoModelForCausalLM.from_pretrained(tiny_path), tokenizer)
    backend = HFBackend(model, tokenizer, max_new_tokens=7, seed=0)
    task = TwentyQuestionsTask()
    openings, fields = task.openings("train", 2)
    sampler = GroupSampler(3, single=False, credit="turn")
    rules = Rules(3, task.reply_to_last, task.done)
    experience = sampler(backend, TwentyQuestionsOracle(), InformationGain(), rules, [(openings, fields, 5)],
                         tokenizer, Tokenization(max_length=512))
    dialogues = experience.dialogues
    assert len(dialogues) == 6 and {d.num_turns for d in dialogues} <= {1, 2, 3}
    examples = experience.examples
    turns = {(i // 3, t) for i, d in enumerate(dialogues) for t in range(d.num_turns)}
    assert len(examples) == len(turns)  # one unit per (prompt, turn) some dialogue reached
    rewards = examples.fields["rewards"]  # (units, K)
    for unit, row in zip(examples.items, rewards):
        assert len(unit) == 3
        trained = [{k for k in s.turn_ids if k >= 0} for s in unit]
        assert all(len(t) == 1 for t in trained) and len({next(iter(t)) for t in trained}) == 1  # one turn each
    # a dialogue that ended before a turn has no sample there: NaN, left out of its group
    reached = sum(d.num_turns for d in dialogues)
    assert int((~torch.isnan(rewards)).sum()) <= reached and int(torch.isnan(rewards).sum()) >= 3 * len(turns) - reached
