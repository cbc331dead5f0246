"""A scriptable OpenAI-compatible chat server on loopback, for testing clients without a network.

`FakeChatServer(script)` serves `POST /v1/chat/completions` on 127.0.0.1 at an ephemeral port, one thread
per request. For each request `script(body, seen)` chooses what happens: `body` is the parsed request and
`seen` how many earlier requests had the same messages (so "fail twice, then answer" can be scripted per
prompt, whatever order concurrent requests arrive in). The server records every request body and its
headers, the number of requests, and the most requests it had in flight at once.
"""

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    """A chat completion whose message content is `text`."""

    text: str


@dataclass(frozen=True)
class Status:
    """An HTTP error with an OpenAI-style error body."""

    code: int
    message: str = "fake server error"
    retry_after: float | None = None


@dataclass(frozen=True)
class Raw:
    """A 200 response with this exact body (garbage, or JSON that is not a chat completion)."""

    body: bytes


@dataclass(frozen=True)
class Sleep:
    """Wait `seconds` (e.g. past the client's timeout), then do `then`."""

    seconds: float
    then: "Behaviour" = field(default_factory=lambda: Reply("late"))


Behaviour = Reply | Status | Raw | Sleep
Script = Callable[[dict, int], Behaviour]


def last_content(body: dict) -> str:
    return body["messages"][-1]["content"]


def echo(body: dict, seen: int) -> Behaviour:
    """The default script: reply with the last message's content."""
    return Reply(last_content(body))


class FakeChatServer:
    def __init__(self, script: Script = echo) -> None:
        self.script = script
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        return len(self.bodies)

    def start(self) -> "FakeChatServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _begin(self, body: dict, headers: dict[str, str]) -> Behaviour:
        with self.lock:
            self.bodies.append(body)
            self.headers.append(headers)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            key = json.dumps(body.get("messages"), sort_keys=True)
            seen = self.seen[key]
            self.seen[key] += 1
        return self.script(body, seen)

    def _end(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                if self.path != "/v1/chat/completions":
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                behaviour = server._begin(body, dict(self.headers.items()))
                self.ended = False
                try:
                    self._act(behaviour, body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass
                finally:
                    self._finish()

            def _finish(self) -> None:
                """The request leaves the in-flight count once, before its reply goes out: a client that
                gets the reply may send its next request before this thread runs again."""
                if not self.ended:
                    self.ended = True
                    server._end()

            def _act(self, behaviour: Behaviour, body: dict) -> None:
                if isinstance(behaviour, Sleep):
                    time.sleep(behaviour.seconds)
                    self._act(behaviour.then, body)
                elif isinstance(behaviour, Reply):
                    completion = {"id": "fake", "object": "chat.completion", "model": body.get("model"),
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": behaviour.text}}]}
                    self._send(200, json.dumps(completion).encode())
                elif isinstance(behaviour, Status):
                    retry_after = behaviour.retry_after
                    extra = {} if retry_after is None else {"Retry-After": str(retry_after)}
                    self._send(behaviour.code, json.dumps({"error": {"message": behaviour.message}}).encode(),
                               extra)
                else:
                    self._send(200, behaviour.body)

            def _send(self, code: int, payload: bytes, extra: dict[str, str] | None = None) -> None:
                self._finish()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        return Handler
