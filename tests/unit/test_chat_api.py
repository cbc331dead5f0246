"""ChatClient against a loopback fake server: order, retries, timeouts, errors, cache, API key, concurrency."""

import logging
from types import SimpleNamespace

import pytest

from rlhf import chat_api
from rlhf.chat_api import ChatClient, ChatResult, UnparsableReply, ask
from tests.fake_chat_server import Raw, Reply, Sleep, Status, last_content

KEY = "sk-test-0123456789abcdef"


def prompts(n: int, prefix: str = "p") -> list[list[dict]]:
    return [[{"role": "user", "content": f"{prefix}{i}"}] for i in range(n)]


def client(server, **kwargs) -> ChatClient:
    settings = {"model": "fake-model", "api_key_env": "RLHF_TEST_KEY", "timeout_s": 2.0, "max_retries": 2,
                "backoff_s": 0.01}
    return ChatClient(server.base_url, **{**settings, **kwargs})


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The client's backoff waits, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(chat_api, "time", SimpleNamespace(sleep=recorded.append))  # not the server's clock
    return recorded


def test_replies_keep_input_order_under_concurrency(chat_server):
    # Earlier prompts answer later, so completion order is the reverse of input order.
    chat_server.script = lambda body, seen: Sleep(0.05 * (8 - int(last_content(body)[1:])), Reply(last_content(body)))
    results = client(chat_server, max_concurrency=8).complete(prompts(8))
    assert [r.text for r in results] == [f"p{i}" for i in range(8)]
    assert all(r.failure is None for r in results)
    assert chat_server.max_in_flight > 1  # they really ran concurrently
    assert sorted(last_content(b) for b in chat_server.bodies) == [f"p{i}" for i in range(8)]


def test_request_body_holds_the_settings_and_extra_params(chat_server):
    chat = client(chat_server, temperature=0.7, max_tokens=33, extra_body={"top_p": 0.9})
    chat.complete([[{"role": "user", "content": "hi"}]])
    assert chat_server.bodies == [{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}],
                                   "temperature": 0.7, "max_tokens": 33, "top_p": 0.9}]


def test_server_errors_are_retried_until_success(chat_server, sleeps):
    chat_server.script = lambda body, seen: Status(500) if seen < 2 else Reply("ok " + last_content(body))
    results = client(chat_server, max_retries=2).complete(prompts(3))
    assert [r.text for r in results] == ["ok p0", "ok p1", "ok p2"]
    assert chat_server.count == 9  # three attempts per prompt
    assert len(sleeps) == 6


def test_rate_limit_is_retried_waiting_at_least_retry_after(chat_server, sleeps):
    chat_server.script = lambda body, seen: Status(429, "slow down", retry_after=0.3) if seen == 0 else Reply("ok")
    [result] = client(chat_server, backoff_s=0.001).complete(prompts(1))
    assert result == ChatResult(text="ok")
    assert sleeps == [pytest.approx(0.3)]


def test_backoff_is_exponential_with_deterministic_jitter(chat_server, sleeps):
    chat_server.script = lambda body, seen: Status(503)
    [first] = client(chat_server, max_retries=3, backoff_s=1.0).complete(prompts(1))
    assert first.failure == "HTTP 503 after 4 attempts: fake server error"
    assert len(sleeps) == 3
    for k, delay in enumerate(sleeps):
        assert 0.5 * 2**k <= delay < 1.5 * 2**k
    waits = list(sleeps)
    sleeps.clear()
    client(chat_server, max_retries=3, backoff_s=1.0).complete(prompts(1))
    assert sleeps == waits  # same request, same waits


def test_timeout_fails_after_the_retries(chat_server, sleeps):
    chat_server.script = lambda body, seen: Sleep(1.5)
    [result] = client(chat_server, timeout_s=0.2, max_retries=1).complete(prompts(1))
    assert result == ChatResult(failure="timeout after 2 attempts")
    assert chat_server.count == 2


def test_server_error_fails_after_the_retries_with_its_message(chat_server, sleeps):
    chat_server.script = lambda body, seen: Status(500, "model overloaded")
    [result] = client(chat_server, max_retries=2).complete(prompts(1))
    assert result == ChatResult(failure="HTTP 500 after 3 attempts: model overloaded")
    assert chat_server.count == 3


def test_client_errors_are_not_retried(chat_server, sleeps):
    chat_server.script = lambda body, seen: Status(400, "unknown model 'fake-model'")
    [result] = client(chat_server).complete(prompts(1))
    assert result == ChatResult(failure="HTTP 400: unknown model 'fake-model'")
    assert chat_server.count == 1 and sleeps == []


@pytest.mark.parametrize("body, reason", [
    (b"<html>502 Bad Gateway</html>", "malformed response after 3 attempts: body is not JSON"),
    (b'{"choices": [{"message": {"cont', "malformed response after 3 attempts: body is not JSON"),
    (b'{"id": "x", "object": "chat.completion"}', "malformed response after 3 attempts: no choices[0].message.content"),
    (b'{"choices": [{"message": {"content": null}}]}',
     "malformed response after 3 attempts: choices[0].message.content is NoneType"),
])
def test_malformed_bodies_are_retried_then_fail_with_the_reason(chat_server, sleeps, body, reason):
    chat_server.script = lambda b, seen: Raw(body)
    [result] = client(chat_server).complete(prompts(1))
    assert result.text is None and result.failure.startswith(reason)
    assert chat_server.count == 3 and len(sleeps) == 2


def test_no_content_for_a_terminal_reason_is_not_retried(chat_server, sleeps):
    chat_server.script = lambda b, seen: Raw(b'{"choices": [{"message": {"content": null}, '
                                             b'"finish_reason": "content_filter"}]}')
    [result] = client(chat_server).complete(prompts(1))
    assert result.failure == "no reply text (finish_reason 'content_filter')" and chat_server.count == 1


def test_a_malformed_body_then_a_good_one_is_a_reply(chat_server, sleeps):
    chat_server.script = lambda b, seen: Raw(b'{"choices": [') if seen == 0 else Reply("fine")
    assert client(chat_server).complete(prompts(1)) == [ChatResult("fine")]
    assert chat_server.count == 2 and len(sleeps) == 1


def test_connection_refused_is_a_connection_error(chat_server, sleeps):
    url = chat_server.base_url
    chat_server.stop()
    [result] = ChatClient(url, "m", max_retries=1, backoff_s=0.01).complete(prompts(1))
    assert result.failure.startswith("connection error after 2 attempts")


def test_one_failure_leaves_the_other_replies(chat_server, sleeps):
    chat_server.script = lambda body, seen: Status(500) if last_content(body) == "p1" else Reply("fine")
    results = client(chat_server, max_retries=0).complete(prompts(3))
    assert results == [ChatResult("fine"), ChatResult(failure="HTTP 500 after 1 attempt: fake server error"),
                       ChatResult("fine")]


def test_cache_hit_makes_no_request_and_survives_a_new_client(chat_server, tmp_path):
    chat_server.script = lambda body, seen: Reply(f"{last_content(body)} #{seen}")  # a new answer each time
    first = client(chat_server, cache_dir=str(tmp_path)).complete(prompts(3))
    assert chat_server.count == 3
    again = client(chat_server, cache_dir=str(tmp_path)).complete(prompts(3))
    assert again == first and chat_server.count == 3
    # another seed, temperature or model is another request
    other_seed = client(chat_server, cache_dir=str(tmp_path)).complete(prompts(1), seed=1)
    assert chat_server.count == 4 and other_seed[0].text == "p0 #1"
    client(chat_server, cache_dir=str(tmp_path), temperature=1.0).complete(prompts(1))
    assert chat_server.count == 5
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 5 and all(name.endswith(".json") and not name.startswith(".tmp") for name in files)


def test_failures_are_not_cached(chat_server, tmp_path, sleeps):
    chat_server.script = lambda body, seen: Status(500)
    [failed] = client(chat_server, cache_dir=str(tmp_path), max_retries=0).complete(prompts(1))
    assert failed.failure is not None and not any(p.is_file() for p in tmp_path.rglob("*"))
    chat_server.script = lambda body, seen: Reply("recovered")
    [result] = client(chat_server, cache_dir=str(tmp_path), max_retries=0).complete(prompts(1))
    assert result.text == "recovered" and chat_server.count == 2


def test_identical_requests_in_one_call_are_sent_once(chat_server):
    results = client(chat_server).complete(prompts(1) * 4)
    assert [r.text for r in results] == ["p0"] * 4 and chat_server.count == 1


def test_api_key_is_sent_as_bearer_and_never_shown(chat_server, monkeypatch, caplog, tmp_path, sleeps):
    monkeypatch.setenv("RLHF_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    chat = client(chat_server, cache_dir=str(tmp_path), max_retries=1)
    chat_server.script = lambda body, seen: (
        Status(500, f"upstream rejected key {KEY}") if last_content(body) == "p1"
        else Status(401, f"Incorrect API key provided: {KEY}") if last_content(body) == "p2"
        else Reply("ok"))
    results = chat.complete(prompts(3))
    assert {h["Authorization"] for h in chat_server.headers} == {f"Bearer {KEY}"}
    assert results[0].text == "ok"
    assert results[1].failure == "HTTP 500 after 2 attempts: upstream rejected key ***"
    assert results[2].failure == "HTTP 401: Incorrect API key provided: ***"
    assert caplog.records, "the retry was logged"
    shown = [repr(chat), str(vars(chat)), caplog.text, *(r.failure or "" for r in results),
             *(p.read_text() for p in tmp_path.rglob("*") if p.is_file())]
    assert not any(KEY in text for text in shown)


def test_no_authorization_header_without_the_key(chat_server, monkeypatch):
    monkeypatch.delenv("RLHF_TEST_KEY", raising=False)
    client(chat_server).complete(prompts(1))
    assert "Authorization" not in chat_server.headers[0]


def test_concurrency_limit_is_respected(chat_server):
    chat_server.script = lambda body, seen: Sleep(0.4, Reply("ok"))
    results = client(chat_server, max_concurrency=3).complete(prompts(9))
    assert [r.text for r in results] == ["ok"] * 9
    # never more than the limit at once; requests do overlap (how many depends on the machine's load)
    assert 2 <= chat_server.max_in_flight <= 3


def test_ask_retries_unparsable_replies_with_new_samples(chat_server, tmp_path):
    # Each prompt's first reply is unparsable; retries are new samples (new cache entries), then parse.
    chat_server.script = lambda body, seen: Reply("???" if seen == 0 else f"value {last_content(body)}")

    def parse(reply: str) -> str:
        if not reply.startswith("value"):
            raise UnparsableReply(f"no value in {reply!r}")
        return reply

    chat = client(chat_server, cache_dir=str(tmp_path))
    assert ask(chat, prompts(2), parse, lambda reason: f"FAILED {reason}", max_attempts=2) == ["value p0", "value p1"]
    assert chat_server.count == 4
    # a rerun repeats from the cache, unparsable first replies included
    assert ask(chat, prompts(2), parse, lambda reason: f"FAILED {reason}", max_attempts=2) == ["value p0", "value p1"]
    assert chat_server.count == 4
    # one attempt only: the reason of the last reply
    assert ask(chat, prompts(1, "q"), parse, lambda reason: f"FAILED {reason}", max_attempts=1) == [
        "FAILED no value in '???'"]


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match="base_url='localhost:8000' must start with http"):
        ChatClient("localhost:8000", "m")
    with pytest.raises(ValueError, match=r"extra_body may not set \['messages'\]"):
        ChatClient("http://x/v1", "m", extra_body={"messages": []})
    with pytest.raises(ValueError, match="max_concurrency=0"):
        ChatClient("http://x/v1", "m", max_concurrency=0)
