"""A tiny deterministic OpenAI-compatible endpoint for the server-side jobs e2e (tests start it).

`POST /v1/chat/completions` answers every request with the same judge verdict, as a chat completion whose
message content is the JSON MLflow's judges parse (`{"result": ..., "rationale": ...}`), unless one of
`replies` applies: a request any of whose messages contains a reply's marker gets that reply's content
(a pipeline of several prompts, such as issue detection, gets an answer of its own at each step). Each
request's body is kept, so a test can show which model and messages MLflow sent. `delay` holds every
answer back (a job that is still running when the test kills the runner).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERDICT = {"result": "yes", "rationale": "The fake judge of the e2e tests always answers yes."}


@dataclass
class FakeLLM:
    url: str
    requests: list[dict] = field(default_factory=list)
    delay: float = 0.0
    # marker -> message content (a dict is sent as its JSON), first match wins
    replies: dict[str, str | dict] = field(default_factory=dict)


def _content(body: dict, replies: dict[str, str | dict], verdict: dict) -> str:
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    reply = next((reply for marker, reply in replies.items() if marker in text), verdict)
    return reply if isinstance(reply, str) else json.dumps(reply)


@contextmanager
def fake_llm(verdict: dict = VERDICT) -> Iterator[FakeLLM]:
    state = FakeLLM(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            state.requests.append(
                {"path": self.path, "authorization": self.headers.get("authorization"), **body}
            )
            if not self.path.endswith("/chat/completions"):
                self.send_error(404)
                return
            time.sleep(state.delay)
            answer = {
                "id": f"chatcmpl-{len(state.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": _content(body, state.replies, verdict)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            # The caller may have been killed while the answer was held back (the restart test).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
