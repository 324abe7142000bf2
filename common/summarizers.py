"""A summarizer that needs no model: deterministic, for demos, tests and cheap deployments.

``ExtractiveSummarizer`` keeps the previous summary, adds the first sentence of each new user
turn and the last assistant answer, and cuts the result to ``max_chars`` (the oldest text goes
first). Workers load it with ``sessionstreams worker --summarizer
sessionstreams.common.summarizers:ExtractiveSummarizer``. For a model behind an OpenAI-compatible
endpoint see
:mod:`sessionstreams.common.openai_summarizer`.
"""

from __future__ import annotations

import re
from typing import Any

from sessionstreams.common.models import Event, Session

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s")


def event_text(event: Event) -> str:
    """The text of an event's first choice (message, else delta; text parts joined)."""
    resp = event.response
    if resp is None or not resp.choices:
        return ""
    choice = resp.choices[0]
    for msg in (choice.message, choice.delta):
        if msg.content:
            return msg.content.strip()
        parts = [p.text for p in msg.content_parts or () if p.text]
        if parts:
            return " ".join(parts).strip()
    return ""


def event_role(event: Event) -> str:
    """The role of an event's first choice (``""`` without one)."""
    resp = event.response
    if resp is None or not resp.choices:
        return ""
    choice = resp.choices[0]
    return choice.message.role or choice.delta.role


def first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of ``text`` (whitespace collapsed), at most ``limit`` characters."""
    flat = " ".join(text.split())
    sentence = _SENTENCE_END.split(flat, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


class ExtractiveSummarizer:
    """Previous summary + first sentence of each user turn + last assistant answer.

    Args:
        max_chars: the longest summary; older text is cut first (marked with "…").
        min_events: ``should_summarize`` asks for at least this many new events.
        answer_chars: the longest quoted assistant answer.
    """

    def __init__(self, max_chars: int = 1200, min_events: int = 1, answer_chars: int = 300):
        if max_chars < 16:
            raise ValueError("max_chars must be at least 16")
        self.max_chars = max_chars
        self.min_events = min_events
        self.answer_chars = answer_chars

    async def should_summarize(self, session: Session) -> bool:
        """True when the session holds at least ``min_events`` new (non-system) events."""
        return sum(1 for e in session.events if e.author != "system") >= self.min_events

    async def summarize(self, session: Session) -> str:
        """The extractive summary of the temporary session (deterministic)."""
        previous = ""
        asked: list[str] = []
        answer = ""
        for event in session.events:
            text = event_text(event)
            if not text:
                continue
            role = event_role(event)
            if event.author == "system" and role == "system":
                previous = text
            elif role == "user":
                asked.append(first_sentence(text))
            elif role == "assistant":
                answer = text
        lines = [previous] if previous else []
        if asked:
            lines.append("User: " + " | ".join(asked))
        if answer:
            lines.append("Assistant: " + first_sentence(answer, self.answer_chars))
        return self._fit("\n".join(lines))

    def _fit(self, text: str) -> str:
        if len(text) <= self.max_chars:
            return text
        return "…" + text[-(self.max_chars - 1):].lstrip()

    def metadata(self) -> dict[str, Any]:
        """Describes the summarizer."""
        return {"name": "extractive", "max_chars": self.max_chars, "min_events": self.min_events}
