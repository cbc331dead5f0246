"""Chat models behind one seam: an OpenAI-compatible endpoint (`ChatClient`) or a local model (`LocalChat`).

LLM user simulators and LLM judges send single-turn prompts (message lists) and read the reply text, so
both only need `Chat.complete`. A reply that could not be obtained is a `ChatResult` with a `failure`
reason, never an exception or an invented text.

`ChatClient` uses the standard library only (urllib, json, concurrent.futures). The API key is read from
the environment variable named by `api_key_env` at each request: it is never stored on the object, in a
config, in a cache entry or in a log line, and is masked out of error messages that echo it.
"""

import hashlib
import json
import logging
import os
import random
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Protocol, TypeVar

from rlhf.backends.base import Backend

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ChatResult:
    """One reply: `text`, or `failure` (why there is none, e.g. "timeout after 3 attempts")."""

    text: str | None = None
    failure: str | None = None


class Chat(Protocol):
    def complete(self, prompts: list[list[dict]], seed: int | None = None) -> list[ChatResult]:
        """One reply per prompt (a list of {"role", "content"} messages ending with a user message), in
        input order. `seed` names the sample: calls with different seeds give independent samples, the
        same seed the same one where the chat can reproduce it (a cache, a seeded local model)."""
        ...


class UnparsableReply(ValueError):
    """A reply that does not have the expected form; its message is the reason reported."""


def ask(
    chat: Chat,
    prompts: list[list[dict]],
    parse: Callable[[str], T],
    failed: Callable[[str], T],
    max_attempts: int,
    seed: int | None = None,
    unavailable: Callable[[str], T] | None = None,
) -> list[T]:
    """`parse` of the reply to each prompt. A prompt whose reply raises `UnparsableReply` is asked again
    (up to `max_attempts` in all, each attempt a new sample: seed `attempt_seed(seed, attempt)`); after
    the last attempt it gets `failed(reason)` with the last reason. A transport failure (already retried
    by the chat) gets `unavailable(failure)` at once (default: `failed`)."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts={max_attempts} must be >= 1")
    answers: list[T | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    reasons: dict[int, str] = {}
    for attempt in range(max_attempts):
        results = chat.complete([prompts[i] for i in pending], attempt_seed(seed, attempt))
        if len(results) != len(pending):
            raise ValueError(
                f"{type(chat).__name__}.complete returned {len(results)} replies for {len(pending)} prompts")
        retry = []
        for i, result in zip(pending, results):
            if result.failure is not None:
                answers[i] = (unavailable or failed)(result.failure)
                continue
            try:
                answers[i] = parse(result.text)
            except UnparsableReply as problem:
                reasons[i] = str(problem)
                retry.append(i)
        pending = retry
        if not pending:
            break
    for i in pending:
        answers[i] = failed(reasons[i])
    return answers  # type: ignore[return-value]  # every slot is filled above


def attempt_seed(seed: int | None, attempt: int) -> int | None:
    """The seed of attempt `attempt` at a prompt: `seed` itself for the first (None: the chat's own
    choice), then a hash of both, so retries are fresh samples that still repeat on a rerun."""
    if attempt == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{attempt}".encode()).digest()[:4], "big")


class LocalChat:
    """A chat on a local model through a `Backend`: one completion per prompt, sampled under `seed`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def complete(self, prompts: list[list[dict]], seed: int | None = None) -> list[ChatResult]:
        if not prompts:
            return []
        return [ChatResult(text=samples[0].text) for samples in self.backend.generate(prompts, 1, seed=seed)]


def load_local_chat(
    path: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
    architecture: dict | None = None,
    **sampling,
) -> LocalChat:
    """A `LocalChat` on the causal LM at `path` (hub id or local directory, loaded as a policy is), or else
    on the tiny model cached in `cache_dir` for `architecture` (as `policy=tiny` builds it), on `device`,
    generating with `HFBackend`; `sampling`: HFBackend's keyword arguments (max_new_tokens, temperature,
    top_p, top_k, seed, batch_size, ...)."""
    from rlhf.backends.hf import HFBackend  # torch and transformers only for local models
    from rlhf.models.policy import load_policy
    from rlhf.models.tiny import tiny_model_path

    if path is None:
        if cache_dir is None or architecture is None:
            raise ValueError("a local chat model needs a path (hub id or local folder), or the cache_dir and "
                             "architecture of policy=tiny")
        path = str(tiny_model_path(cache_dir, **architecture))
    policy = load_policy(path, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code)
    model = policy.model.to(device)
    model.requires_grad_(False)
    return LocalChat(HFBackend(model, policy.tokenizer, **sampling))


class RequestFailed(Exception):
    """A request failure not worth another attempt (HTTP 4xx other than 429)."""


class RetryableError(Exception):
    """A request failure worth another attempt (timeout, connection error, HTTP 429 or 5xx, a 200 whose body is
    not a chat completion)."""

    def __init__(self, kind: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(kind)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


class ChatClient:
    """A client of an OpenAI-compatible `POST {base_url}/chat/completions` endpoint.

    base_url: e.g. "https://api.openai.com/v1" or a local server's "http://localhost:8000/v1".
    api_key_env: the NAME of the environment variable holding the key, sent as "Authorization: Bearer";
        without that variable no header is sent (local servers).
    timeout_s: socket timeout of one attempt. max_retries: further attempts after a timeout, a connection
        error, HTTP 429 or 5xx, or a 200 whose body is not a chat completion (another 4xx fails at once with
        the server's message). backoff_s: wait before retry k (0-based) is
        backoff_s * 2**k * u, u in [0.5, 1.5) drawn from a generator seeded by the request and k (so runs
        repeat), or the server's Retry-After when longer.
    max_concurrency: requests in flight at once within one `complete` call.
    cache_dir: where replies are kept, one JSON file per (request body, seed), written atomically; a cached
        reply is returned without a request, so a rerun is reproducible and free. Failures are never
        cached. None: no cache.
    temperature, max_tokens, extra_body: the request body is {"model", "messages", "temperature",
        "max_tokens", **extra_body} (e.g. extra_body={"top_p": 0.9, "seed": 1}).
    The `seed` of `complete` is part of the cache key only; it is not sent.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        backoff_s: float = 1.0,
        max_concurrency: int = 8,
        cache_dir: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        extra_body: dict | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"chat client base_url={base_url!r} must start with http:// or https://")
        if not model:
            raise ValueError("chat client model is empty: name the model the endpoint serves")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or max_concurrency < 1:
            raise ValueError(
                "chat client needs timeout_s > 0, max_retries >= 0, backoff_s >= 0 and max_concurrency >= 1; "
                f"got "
                f"timeout_s={timeout_s}, max_retries={max_retries}, backoff_s={backoff_s}, "
                f"max_concurrency={max_concurrency}"
            )
        clashes = sorted({"model", "messages"} & set(extra_body or {}))
        if clashes:
            raise ValueError(f"chat client extra_body may not set {clashes}: the client sets them")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})

    def __repr__(self) -> str:
        return (f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r})")

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def body(self, messages: list[dict]) -> dict:
        return {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, **self.extra_body}

    def complete(self, prompts: list[list[dict]], seed: int | None = None) -> list[ChatResult]:
        """One reply per prompt, in input order; cached replies first, the rest requested concurrently
        (identical requests in one call are sent once and share the reply)."""
        bodies = [self.body(messages) for messages in prompts]
        keys = [cache_key(body, seed) for body in bodies]
        results: dict[str, ChatResult] = {}
        todo: dict[str, dict] = {}
        for key, body in zip(keys, bodies):
            cached = self._cached(key)
            if cached is not None:
                results[key] = cached
            else:
                todo.setdefault(key, body)
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
                fetched = pool.map(lambda item: self._fetch(*item, seed), todo.items())
                results.update(zip(todo, fetched))
        return [results[key] for key in keys]

    # ---- one request, with retries --------------------------------------------------------------------

    def _fetch(self, key: str, body: dict, seed: int | None) -> ChatResult:
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                text = self._request(body)
            except RetryableError as error:
                if attempt + 1 == attempts:
                    detail = f": {error.detail}" if error.detail else ""
                    plural = "s" if attempts > 1 else ""
                    reason = f"{error.kind} after {attempts} attempt{plural}{detail}"
                    return ChatResult(failure=self._mask(reason))
                delay = self.backoff_s * 2**attempt * random.Random(f"{key}:{attempt}").uniform(0.5, 1.5)
                delay = max(delay, error.retry_after or 0.0)
                logger.warning("chat request to %s: %s; retry %d/%d in %.2f s", self.endpoint, error.kind,
                               attempt + 1, self.max_retries, delay)
                time.sleep(delay)
            except RequestFailed as error:
                return ChatResult(failure=self._mask(str(error)))
            else:
                self._store(key, body, seed, text)
                return ChatResult(text=text)
        raise AssertionError("unreachable: the last attempt returns")

    def _request(self, body: dict) -> str:
        """The reply text of one POST; raises RetryableError or RequestFailed."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            try:
                message = server_message(error.read())
            except OSError:
                message = ""
            if error.code == 429 or error.code >= 500:
                retry_after = retry_after_s(error.headers.get("Retry-After"))
                raise RetryableError(f"HTTP {error.code}", message, retry_after)
            raise RequestFailed(f"HTTP {error.code}: {message}") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise RetryableError("timeout") from None
            raise RetryableError("connection error", str(error.reason)) from None
        except TimeoutError:
            raise RetryableError("timeout") from None
        except (ConnectionError, HTTPException, OSError) as error:
            raise RetryableError("connection error", f"{type(error).__name__}: {error}") from None
        return reply_text(raw)

    def _mask(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text

    # ---- the cache ------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"  # type: ignore[operator]  # only with a cache_dir

    def _cached(self, key: str) -> ChatResult | None:
        if self.cache_dir is None:
            return None
        try:
            return ChatResult(text=json.loads(self._path(key).read_text())["text"])
        except (OSError, ValueError, KeyError):  # absent (or unreadable: asked again and rewritten)
            return None

    def _store(self, key: str, body: dict, seed: int | None, text: str) -> None:
        if self.cache_dir is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as file:
            json.dump({"request": body, "seed": seed, "text": text}, file)
        os.replace(tmp, path)


def cache_key(body: dict, seed: int | None) -> str:
    """sha256 of the request body and the sample's seed (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps({"body": body, "seed": seed}, sort_keys=True).encode()).hexdigest()


def reply_text(raw: bytes) -> str:
    """`choices[0].message.content` of a chat completion body. A 200 whose body is not one (cut JSON, another
    schema: proxies and overloaded servers send them) is a RetryableError("malformed response", why)."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise RetryableError("malformed response", f"body is not JSON: {raw[:80]!r}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise RetryableError("malformed response", f"no choices[0].message.content in {raw[:80]!r}") from None
    if not isinstance(content, str):
        finish = data["choices"][0].get("finish_reason") if isinstance(data["choices"][0], dict) else None
        if content is None and finish in ("content_filter", "length", "tool_calls"):  # the same on every attempt
            raise RequestFailed(f"no reply text (finish_reason {finish!r})")
        raise RetryableError("malformed response", f"choices[0].message.content is {type(content).__name__}")
    return content


def server_message(raw: bytes) -> str:
    """The error message of an error body ({"error": {"message": ...}}), else the body's start."""
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw[:200].decode("utf-8", errors="replace")


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is ignored)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
