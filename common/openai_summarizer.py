"""A summarizer backed by any OpenAI-compatible chat completions endpoint.

Works with OpenAI, Azure OpenAI's compatible route, vLLM, Ollama, llama.cpp server, LiteLLM...
anything that answers ``POST {base_url}/chat/completions``. It needs the optional extra
``pip install 'sessionstreams[openai-summarizer]'`` (httpx).

Workers load it with ``sessionstreams worker --summarizer
sessionstreams.common.openai_summarizer:from_env``,
which reads ``SESSIONSTREAMS_SUMMARY_BASE_URL`` (default ``OPENAI_BASE_URL`` or
``https://api.openai.com/v1``), ``SESSIONSTREAMS_SUMMARY_API_KEY`` (default
``OPENAI_API_KEY``), ``SESSIONSTREAMS_SUMMARY_MODEL`` (default ``gpt-4o-mini``) and
``SESSIONSTREAMS_SUMMARY_TIMEOUT_S`` (default 30).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from sessionstreams.common.errors import ConfigError, SummarizeError
from sessionstreams.common.models import Session
from sessionstreams.common.summarizers import event_role, event_text

DEFAULT_PROMPT = (
    "You summarize a conversation between a user and an AI assistant so the assistant can "
    "continue it later without the full history. Keep facts, decisions, open questions and "
    "the user's preferences; drop pleasantries. A line starting with 'Previous summary:' "
    "summarizes the older part of the conversation: merge it into the new summary. Answer "
    "with the summary only, at most {max_words} words."
)


class OpenAISummarizer:
    """Summaries written by a chat model.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name sent in every request.
        api_key: sent as a Bearer token when set.
        prompt: the system prompt; ``{max_words}`` is filled in.
        max_words: the length asked for in the prompt.
        min_events: ``should_summarize`` asks for at least this many new events.
        timeout_s: per-request HTTP timeout (the job timeout bounds it too).
        extra_body: more fields for the request body (``temperature``, ``max_tokens``...).
        headers: more HTTP headers.
    """

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        model: str = "gpt-4o-mini",
        *,
        api_key: str = "",
        prompt: str = DEFAULT_PROMPT,
        max_words: int = 150,
        min_events: int = 1,
        timeout_s: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.prompt = prompt
        self.max_words = max_words
        self.min_events = min_events
        self.timeout_s = timeout_s
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})

    def set_prompt(self, prompt: str) -> None:
        """Replace the system prompt."""
        self.prompt = prompt

    def set_model(self, model: str) -> None:
        """Replace the model."""
        self.model = model

    def metadata(self) -> dict[str, Any]:
        """Describes the summarizer (the API key is never included)."""
        return {"name": "openai-compatible", "base_url": self.base_url, "model": self.model,
                "max_words": self.max_words}

    async def should_summarize(self, session: Session) -> bool:
        """True when the session holds at least ``min_events`` new (non-system) events."""
        return sum(1 for e in session.events if e.author != "system") >= self.min_events

    def messages(self, session: Session) -> list[dict[str, str]]:
        """The chat messages sent for ``session``: the prompt, then the transcript."""
        lines: list[str] = []
        for event in session.events:
            text = event_text(event)
            if not text:
                continue
            role = event_role(event) or event.author or "assistant"
            if event.author == "system" and role == "system":
                lines.append(f"Previous summary: {text}")
            else:
                lines.append(f"{role}: {text}")
        return [
            {"role": "system", "content": self.prompt.format(max_words=self.max_words)},
            {"role": "user", "content": "\n".join(lines)},
        ]

    async def summarize(self, session: Session) -> str:
        """Ask the model; the first choice's message content is the summary.

        Raises:
            SummarizeError: an HTTP error, a non-2xx answer or an unexpected body.
            ConfigError: httpx is not installed.
        """
        httpx = _httpx()
        body = {"model": self.model, "messages": self.messages(session), **self.extra_body}
        headers = {"Content-Type": "application/json", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/chat/completions"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.post(url, content=msgspec.json.encode(body), headers=headers)
        except httpx.HTTPError as exc:
            raise SummarizeError(f"chat completions request to {url} failed: {exc}") from exc
        if resp.status_code // 100 != 2:
            raise SummarizeError(
                f"chat completions at {url} answered {resp.status_code}: {resp.text[:300]}"
            )
        return _content(resp.content, url)


def _content(raw: bytes, url: str) -> str:
    try:
        data = msgspec.json.decode(raw)
        content = data["choices"][0]["message"]["content"]
    except (msgspec.DecodeError, KeyError, IndexError, TypeError) as exc:
        raise SummarizeError(f"unexpected chat completions answer from {url}: {raw[:300]!r}") \
            from exc
    return content.strip() if isinstance(content, str) else ""


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - the extra is installed in development
        raise ConfigError(
            "the OpenAI-compatible summarizer needs httpx: "
            "pip install 'sessionstreams[openai-summarizer]'"
        ) from exc
    return httpx


def from_env(environ: Mapping[str, str] | None = None) -> OpenAISummarizer:
    """An :class:`OpenAISummarizer` configured from environment variables (module docstring).
    """
    env = os.environ if environ is None else environ
    base = (env.get("SESSIONSTREAMS_SUMMARY_BASE_URL") or env.get("OPENAI_BASE_URL")
            or "https://api.openai.com/v1")
    key = env.get("SESSIONSTREAMS_SUMMARY_API_KEY") or env.get("OPENAI_API_KEY") or ""
    model = env.get("SESSIONSTREAMS_SUMMARY_MODEL") or "gpt-4o-mini"
    try:
        timeout_s = float(env.get("SESSIONSTREAMS_SUMMARY_TIMEOUT_S") or 30.0)
    except ValueError as exc:
        raise ConfigError(f"SESSIONSTREAMS_SUMMARY_TIMEOUT_S: {exc}") from exc
    return OpenAISummarizer(base, model, api_key=key, timeout_s=timeout_s)
