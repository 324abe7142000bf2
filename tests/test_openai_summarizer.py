"""The OpenAI-compatible summarizer against a small chat completions server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sessionstreams.common.errors import SummarizeError
from sessionstreams.common.models import Event, Key, Session
from sessionstreams.common.openai_summarizer import OpenAISummarizer, from_env
from sessionstreams.common.summaries import load_summarizer


class FakeCompletions:
    """A chat completions endpoint that records requests and answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.answer: Any = "The user booked a table for two."
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"path": self.path, "auth": self.headers["Authorization"],
                                       "body": json.loads(body)})
                if outer.status != 200:
                    payload = b'{"error": {"message": "overloaded"}}'
                else:
                    payload = json.dumps({"id": "c1", "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": outer.answer},
                         "finish_reason": "stop"}]}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def completions() -> Iterator[FakeCompletions]:
    fake = FakeCompletions()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def conversation() -> Session:
    return Session(id="s:", app_name="a", user_id="u", events=[
        Event.message("system", "The user is vegetarian.", author="system"),
        Event.message("user", "Book a table for two."),
        Event.message("assistant", "Done, 8 pm."),
    ])


async def test_summary_from_the_endpoint(completions: FakeCompletions) -> None:
    """The transcript goes to POST /chat/completions with the model, the prompt and the key;
    the first choice's content is the summary."""
    summarizer = OpenAISummarizer(completions.url, "small-model", api_key="sk-test",
                                  extra_body={"temperature": 0})
    assert await summarizer.should_summarize(conversation())
    assert await summarizer.summarize(conversation()) == "The user booked a table for two."
    (req,) = completions.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "small-model"
    assert body["temperature"] == 0
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][1]["content"] == (
        "Previous summary: The user is vegetarian.\nuser: Book a table for two.\n"
        "assistant: Done, 8 pm."
    )
    assert "sk-test" not in json.dumps(summarizer.metadata())


async def test_endpoint_errors_are_summarize_errors(completions: FakeCompletions) -> None:
    """A non-2xx answer, an unexpected body or no server at all raise SummarizeError."""
    summarizer = OpenAISummarizer(completions.url, "m")
    completions.status = 503
    with pytest.raises(SummarizeError, match="503"):
        await summarizer.summarize(conversation())
    completions.status, completions.answer = 200, None
    assert await summarizer.summarize(conversation()) == ""
    gone = OpenAISummarizer("http://127.0.0.1:1/v1", "m", timeout_s=1)
    with pytest.raises(SummarizeError, match="failed"):
        await gone.summarize(conversation())


async def test_service_stores_the_model_summary(completions, make_service, redis_client):
    """End to end: create_session_summary with the OpenAI-compatible summarizer stores its
    answer; from_env reads the endpoint from the environment (as --summarizer loads it)."""
    summarizer = from_env({"SESSIONSTREAMS_SUMMARY_BASE_URL": completions.url,
                           "SESSIONSTREAMS_SUMMARY_MODEL": "m2"})
    assert summarizer.model == "m2"
    svc = await make_service(summarizer=summarizer)
    s = await svc.create_session(Key("app", "u", "s"))
    await svc.append_event(s, Event.message("user", "Book a table for two."))
    await svc.create_session_summary(s)
    s.summaries = {}
    assert await svc.get_session_summary_text(s) == "The user booked a table for two."
    made = load_summarizer("sessionstreams.common.openai_summarizer:from_env")
    assert isinstance(made, OpenAISummarizer)
