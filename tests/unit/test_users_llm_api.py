"""LLM user simulators: prompt building and reply parsing on hand-written replies, `user=api` against the
fake chat server (failures per dialogue, retries, cache), `user=llm` batched on the tiny local model."""

import pytest
from hydra import compose, initialize_config_dir

from rlhf.chat_api import UnparsableReply
from rlhf.config import CONF_DIR, build
from rlhf.users.api import APIUser
from rlhf.users.base import TERMINATE, UserTurn
from rlhf.users.llm import LLMUser
from rlhf.users.prompting import UserPrompting, first_json_object, parse_user_reply, transcript
from tests.fake_chat_server import Raw, Reply, Sleep, Status, last_content

DIALOGUES = [
    [{"role": "user", "content": f"Tell me about topic {i}."}, {"role": "assistant", "content": f"Topic {i} is big."}]
    for i in range(5)
]


def user_config(option: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("generate", [f"user={option}", *overrides]).user


def api_user(server, tmp_path, option: str = "api", extra: tuple[str, ...] = ()) -> APIUser:
    overrides = [f"user.client.base_url={server.base_url}", f"user.client.cache_dir={tmp_path / 'chat'}",
                 "++user.client.timeout_s=0.3", "++user.client.max_retries=1", "++user.client.backoff_s=0.01", *extra]
    user = build(user_config(option, overrides))
    assert isinstance(user, APIUser)
    return user


# ---- parsing hand-written replies ---------------------------------------------------------------------------


@pytest.mark.parametrize("reply, turn", [
    ("Justification: I want the details.\nQuestion: How big is topic 1?", UserTurn("How big is topic 1?")),
    ("Justification: the last Question: was vague.\nQuestion:  Why?  \n", UserTurn("Why?")),  # the LAST marker
    ("Question: Anything else? " + TERMINATE, UserTurn.end()),
    (TERMINATE, UserTurn.end()),  # nothing else to read, the marker ends the dialogue
    # no "Question:": the whole reply is the question, as REFUEL's user_generator.py falls back to
    ("  I would ask about the size.\n", UserTurn("I would ask about the size.")),
])
def test_question_format_keeps_the_question(reply, turn):
    assert parse_user_reply(reply, "question") == turn


@pytest.mark.parametrize("reply, reason", [
    ("Justification: to learn more.\nQuestion:   ", "user simulator reply has an empty question"),
    (" \n ", "user simulator reply is empty"),
])
def test_question_format_reports_unparsable_replies(reply, reason):
    with pytest.raises(UnparsableReply, match=reason):
        parse_user_reply(reply, "question")


@pytest.mark.parametrize("reply, turn", [
    ('```json\n{"thought": "it is an animal", "response": "Yes."}\n```\nDone.', UserTurn("Yes.")),
    (f'{{"thought": "not yet time for {TERMINATE}", "response": "No."}}', UserTurn("No.")),  # only the message counts
    (f'Sure: {{"thought": "it guessed it", "response": "{TERMINATE}"}}', UserTurn.end()),
])
def test_json_format_reads_the_response(reply, turn):
    assert parse_user_reply(reply, "json") == turn


@pytest.mark.parametrize("reply, reason", [
    ("Yes.", "user simulator reply has no JSON object"),
    ('{"thought": "hm", "answer": "Yes."}', "no non-empty 'response' string"),
    ('{"response": 1}', "no non-empty 'response' string"),
])
def test_json_format_reports_unparsable_replies(reply, reason):
    with pytest.raises(UnparsableReply, match=reason):
        parse_user_reply(reply, "json")


@pytest.mark.parametrize("reply, turn", [
    ('{"thought": "a cat is alive", "response": "yes"}', UserTurn("Yes.")),
    ('```json\n{"thought": "no", "response": "No, it is not a mineral."}\n```', UserTurn("No.")),
    ("YES! It is an animal.", UserTurn("Yes.")),  # no JSON: the reply itself is the answer
    ('  "No."', UserTurn("No.")),
    (f'{{"thought": "it guessed cat", "response": "{TERMINATE}"}}', UserTurn.end()),
])
def test_yes_no_format_normalises_the_answer(reply, turn):
    assert parse_user_reply(reply, "yes_no") == turn


@pytest.mark.parametrize("reply, reason", [
    ('{"thought": "hm", "response": "Maybe."}', "the oracle's answer 'Maybe.' is not yes or no"),
    ("Nobody knows.", "the oracle's answer 'Nobody knows.' is not yes or no"),  # a word starting with "no"
    ('{"thought": "hm", "response": 1}', "the oracle's answer '1' is not yes or no"),
])
def test_yes_no_format_reports_other_answers(reply, reason):
    with pytest.raises(UnparsableReply, match=reason):
        parse_user_reply(reply, "yes_no")


def test_first_json_object_skips_braces_that_are_not_json():
    assert first_json_object('set {a, b} then {"x": 1} and {"y": 2}') == {"x": 1}
    assert first_json_object('[{"x": 1}]') == {"x": 1}  # an object inside a list is still found
    assert first_json_object("{not json}") is None


def test_prompt_is_the_template_filled_with_the_transcript_and_fields():
    prompting = UserPrompting("Object: {object}\n\n{conversation}\n\nNow {\"json\": 1}")
    conversation = [{"role": "system", "content": "Be brief."}, *DIALOGUES[0]]
    [message] = prompting.prompt(conversation, {"object": "cat", "names": ["cat"]}, "here")
    assert message == {"role": "user", "content": "Object: cat\n\n### user: Tell me about topic 0.\n\n"
                                                  "### assistant: Topic 0 is big.\n\nNow {\"json\": 1}"}
    assert transcript(conversation).count("###") == 2  # the system message is not shown


def test_bad_settings_and_missing_fields_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"user.reply_format='xml' is not one of \['question', 'json', 'yes_no'\]"):
        UserPrompting("{conversation}", reply_format="xml")
    with pytest.raises(ValueError, match="user.max_attempts=0"):
        UserPrompting("{conversation}", max_attempts=0)
    prompting = UserPrompting("{object}: {conversation}")
    with pytest.raises(ValueError, match=r"placeholder \{object\} has no value for user.template in conversation 1: "
                                         r"available are \['conversation', 'topic'\]"):
        prompting.respond(None, DIALOGUES[:2], [{"object": "cat"}, {"topic": "x"}])


# ---- user=api against the fake server ---------------------------------------------------------------------


def refuel_reply(body: dict, seen: int):
    """A well-behaved simulated user, except for the dialogues about topics 1-4."""
    prompt = last_content(body)
    topic = next(i for i in range(5) if f"topic {i}" in prompt)
    return {1: Sleep(1.0), 2: Status(500, "overloaded"), 3: Raw(b"<html>oops</html>"),
            4: Reply(f"Justification: done.\nQuestion: {TERMINATE}")}.get(
        topic, Reply(f"Justification: the assistant was brief.\nQuestion: Why is topic {topic} big?"))


def test_api_user_failures_mark_only_their_dialogue(chat_server, tmp_path):
    chat_server.script = refuel_reply
    user = api_user(chat_server, tmp_path)
    turns = user.respond(DIALOGUES, [{} for _ in DIALOGUES], seed=0)
    assert turns == [
        UserTurn("Why is topic 0 big?"),
        UserTurn.failed("timeout after 2 attempts"),
        UserTurn.failed("HTTP 500 after 2 attempts: overloaded"),
        UserTurn.failed("malformed response after 2 attempts: body is not JSON: b'<html>oops</html>'"),
        UserTurn.end(),
    ]
    prompt = chat_server.bodies[0]["messages"]
    assert len(prompt) == 1 and prompt[0]["role"] == "user"
    text = prompt[0]["content"]
    assert text.startswith("Below is a dialogue between the user and the assistant. Pretend you are the user")
    assert "### user: Tell me about topic" in text and text.endswith("Justification:\nQuestion:")
    assert chat_server.bodies[0]["model"] == "gpt-4o-mini" and chat_server.bodies[0]["temperature"] == 0.8


def test_api_user_asks_again_while_the_reply_has_no_question(chat_server, tmp_path):
    chat_server.script = lambda body, seen: Reply("Justification: hmm.\nQuestion:" if seen < 2 else "Question: And then?")
    user = api_user(chat_server, tmp_path)
    assert user.respond(DIALOGUES[:2], [{}, {}]) == [UserTurn("And then?")] * 2
    assert chat_server.count == 6  # three attempts each
    chat_server.script = lambda body, seen: Reply("Justification: hmm.\nQuestion: ")
    user = api_user(chat_server, tmp_path, extra=("user.max_attempts=2",))
    assert user.respond([DIALOGUES[4]], [{}]) == [UserTurn.failed("user simulator reply has an empty question")]


def test_api_user_turns_repeat_from_the_cache_for_the_same_seed(chat_server, tmp_path):
    chat_server.script = lambda body, seen: Reply(f"Question: take {seen}?")
    user = api_user(chat_server, tmp_path)
    first = user.respond(DIALOGUES[:3], [{}] * 3, seed=7)
    assert first == [UserTurn("take 0?")] * 3 and chat_server.count == 3
    assert user.respond(DIALOGUES[:3], [{}] * 3, seed=7) == first and chat_server.count == 3
    assert user.respond(DIALOGUES[:1], [{}], seed=8) == [UserTurn("take 1?")]  # another turn's seed: a new sample


def test_api_20q_user_answers_for_the_hidden_object(chat_server, tmp_path):
    def oracle(body, seen):
        prompt = last_content(body)
        return Reply('{"thought": "ok", "response": "%s"}' % ("Yes." if "object: cat" in prompt else "No."))

    chat_server.script = oracle
    user = api_user(chat_server, tmp_path, "api_20q")
    game = [{"role": "user", "content": "Let's play 20 questions!"}, {"role": "assistant", "content": "Is it alive?"}]
    turns = user.respond([game, game], [{"object": "cat", "names": ["cat"]}, {"object": "rock", "names": ["rock"]}])
    assert turns == [UserTurn("Yes."), UserTurn("No.")]
    assert "### assistant: Is it alive?" in last_content(chat_server.bodies[0])


# ---- user=llm on the tiny model -----------------------------------------------------------------------------


def test_llm_user_runs_batched_and_reports_unparsable_replies(tiny_path):
    overrides = [f"user.local.path={tiny_path}", "user.local.dtype=float32", "user.local.max_new_tokens=12",
                 "user.local.temperature=0", "user.max_attempts=2"]
    user = build(user_config("llm", overrides))
    assert isinstance(user, LLMUser)
    turns = user.respond(DIALOGUES[:3], [{}] * 3, seed=0)
    # Greedy, the random tiny model writes nothing but special tokens: each dialogue fails with the reason,
    # none is invented; one batched generate per attempt for all three dialogues
    assert turns == [UserTurn.failed("user simulator reply is empty")] * 3
    assert user.chat.backend.calls == 2
    # Sampled, it writes text with no "Question:" line: the whole reply is the user's turn, as in REFUEL
    user = build(user_config("llm", overrides[:-2] + ["user.local.temperature=1.0"]))
    turns = user.respond(DIALOGUES[:3], [{}] * 3, seed=0)
    assert all(t.failure is None and t.content and t.content == t.content.strip() for t in turns), turns


def test_local_20q_oracle_asks_with_the_object_and_rejects_answers_that_are_not_yes_or_no(tiny_path):
    overrides = [f"user.local.path={tiny_path}", "user.local.dtype=float32", "user.local.max_new_tokens=6",
                 "user.local.temperature=0", "user.max_attempts=1"]
    user = build(user_config("llm_20q", overrides))
    assert isinstance(user, LLMUser) and user.prompting.reply_format == "yes_no"
    game = [{"role": "user", "content": "Let's play 20 questions!"}, {"role": "assistant", "content": "Is it alive?"}]
    [asked] = user.prompting.prompt(game, {"object": "cat", "names": ["cat"]}, "test")
    assert "chosen this object: cat" in asked["content"] and "### assistant: Is it alive?" in asked["content"]
    [turn] = user.respond([game], [{"object": "cat", "names": ["cat"]}], seed=0)
    # the random tiny model answers neither yes nor no: the game fails with the reason, no answer is invented
    assert turn.failure is not None and turn.failure.startswith("the oracle's answer") and "is not yes or no" in turn.failure
