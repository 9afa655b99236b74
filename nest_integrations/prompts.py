"""Prompt construction: chat template of the model, question, and (for RA systems) passages."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from nest_integrations.errors import ConfigError, EmptyQuestionError

__all__ = [
    "Message",
    "NoChatTemplateWarning",
    "to_messages",
    "last_user_text",
    "condensed_query",
    "retrieval_query_of",
    "with_context",
    "render_prompt",
    "conversation_retrieval_query",
    "CONVERSATION_QUERY_ALIASES",
]

Message = Mapping[str, Any]

RA_INSTRUCTION = "Answer the question using the context below. Answer in one sentence."


class NoChatTemplateWarning(UserWarning):
    """The tokenizer has no chat template (e.g. GPT-2): the prompt falls back to the plain message text."""


def to_messages(prompt: str | Sequence[Message], system_prompt: str | None = None) -> list[dict[str, str]]:
    """A list of chat messages from a question string or from messages (role/content dicts)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise EmptyQuestionError("the question is empty")
        msgs = [{"role": "user", "content": prompt}]
    else:
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
        if not msgs:
            raise EmptyQuestionError("the message list is empty")
    if system_prompt is not None and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def last_user_text(messages: Sequence[Message]) -> str:
    """The content of the last user message (the default retrieval query)."""
    for m in reversed(messages):
        if m["role"] == "user":
            text = str(m["content"])
            if not text.strip():
                raise EmptyQuestionError("the last user message is empty")
            return text
    raise EmptyQuestionError("no user message to answer")


_REFERRING = frozenset(
    "he him his she her hers it its they them their theirs this that these those there then former latter "
    "one ones".split()
)
_WORD = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)
HISTORY_TURNS = 2
"""Earlier user turns a condensed query may add to a follow-up."""


def _is_follow_up(text: str) -> bool:
    """A message that refers back to the conversation instead of naming its subject.

    True when it contains a referring word (he, her, it, they, this, that …) or names nothing (no
    capitalised word after its first word).
    """
    words = _WORD.findall(text)
    if any(w.lower() in _REFERRING for w in words):
        return True
    return not any(w[:1].isupper() for w in words[1:])


def condensed_query(messages: Sequence[Message], history_turns: int = HISTORY_TURNS) -> str:
    """The retrieval query of a conversation, built without a model.

    Rule: the last user message alone when it names its own subject; when it is a follow-up
    (:func:`_is_follow_up`: a referring word such as "her" or "it", or no capitalised word after the
    first), it is followed by the previous ``history_turns`` user messages, most recent first, so the
    retriever sees the subject the follow-up refers to ("Who was her father?" after "Where was Ada
    Lovelace born?" → "Who was her father?\nWhere was Ada Lovelace born?"). A one-message conversation
    gives the message itself.
    """
    users = [str(m["content"]) for m in messages if m["role"] == "user" and str(m["content"]).strip()]
    last = last_user_text(messages)
    earlier = users[:-1]
    if not earlier or not _is_follow_up(last):
        return last
    return "\n".join([last, *reversed(earlier[-history_turns:])])


def retrieval_query_of(messages: Sequence[Message], mode: str = "condensed") -> str:
    """The retrieval query for ``messages``: ``condensed`` (:func:`condensed_query`), ``last_user`` or
    ``all_user`` (every user message, in order)."""
    if mode == "last_user":
        return last_user_text(messages)
    if mode == "all_user":
        last_user_text(messages)  # the same errors for an empty conversation
        return "\n".join(str(m["content"]) for m in messages if m["role"] == "user" and str(m["content"]).strip())
    return condensed_query(messages)


def with_context(messages: list[dict[str, str]], passages: Sequence[str], raw: bool = False) -> list[dict[str, str]]:
    """Put ``passages`` into the last user message (the RA prompt of the paper: top-k chunks in the prompt).

    For chat prompts the passages come with an instruction and the question; for ``raw`` completion
    prompts they are simply placed before the text to continue.
    """
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            context = "\n\n".join(passages)
            if raw:
                m["content"] = f"{context}\n\n{m['content']}"
            else:
                m["content"] = f"{RA_INSTRUCTION}\n\nContext:\n{context}\n\nQuestion: {m['content']}"
            break
    return out


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], raw: bool = False) -> list[int]:
    """Token ids of the prompt: the tokenizer's chat template (with generation prompt) or raw text.

    A tokenizer without a chat template (a base model such as GPT-2) gets the plain prompt: the message
    contents joined by newlines, as ``raw`` would give, with a :class:`NoChatTemplateWarning`.
    """
    if not raw and getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        warnings.warn(
            f"the tokenizer of {name!r} has no chat template; the prompt is the plain message text "
            "(completion prompt, as raw=True)",
            NoChatTemplateWarning,
            stacklevel=2,
        )
        raw = True
    if raw:
        text = "\n".join(m["content"] for m in messages)
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, Mapping) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


#: Older adapter names of the conversation query modes → :attr:`NestConfig.conversation_query` values.
CONVERSATION_QUERY_ALIASES: Mapping[str, str] = {
    "last_user_message": "last_user",
    "all_user_messages": "all_user",
}


def conversation_retrieval_query(
    messages: Sequence[Mapping[str, Any]], mode: str | None, default_mode: str = "condensed"
) -> str:
    """The passage-retrieval query of a chat request, as both adapters compute it.

    ``mode`` is ``condensed`` (the default: :func:`~nest_integrations.prompts.condensed_query`, a
    follow-up such as "Who was her father?" is extended with the previous user turns), ``last_user`` or
    ``all_user`` (the old adapter names ``last_user_message`` / ``all_user_messages`` are accepted);
    ``None`` means ``default_mode`` (the effective config's ``conversation_query``).

    Raises:
        EmptyQuestionError: no user message, or the last one is empty.
        ConfigError: an unknown mode.
    """
    chosen = default_mode if mode is None else mode
    chosen = CONVERSATION_QUERY_ALIASES.get(chosen, chosen)
    if chosen not in ("condensed", "last_user", "all_user"):
        raise ConfigError(f"unknown conversation query mode {mode!r} (condensed, last_user or all_user)")
    return retrieval_query_of(messages, chosen)
