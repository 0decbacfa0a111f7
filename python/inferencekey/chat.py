"""Typed shapes of the chat parameters, for editors and type checkers: messages, tools, tool choice, response format
and stream options, under their OpenAI names. They are plain ``TypedDict``s: a dict literal of the same shape type
checks as one, and plain dicts keep working at run time (the core checks every shape before any request).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "ChatMessage",
    "ChatTool",
    "FunctionDefinition",
    "JsonSchemaFormat",
    "NamedToolChoice",
    "ResponseFormat",
    "StreamOptions",
    "ToolCallFunction",
    "ToolCallMessage",
    "ToolChoice",
]


class ToolCallFunction(TypedDict):
    """The function of a tool call in an assistant message: its name and its arguments as JSON text."""

    name: str
    arguments: str


class ToolCallMessage(TypedDict):
    """A tool call as an assistant message carries it (``ToolCall`` of a reply, sent back in ``messages``)."""

    id: str
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessage(TypedDict, total=False):
    """One message of ``messages``: ``role`` and ``content``; an assistant message may carry ``tool_calls`` and a
    ``tool`` message answers one by ``tool_call_id``."""

    role: Literal["system", "developer", "user", "assistant", "tool"] | str
    content: str | list[dict[str, Any]] | None
    name: str
    tool_calls: list[ToolCallMessage]
    tool_call_id: str


class _Named(TypedDict):
    name: str


class FunctionDefinition(_Named, total=False):
    """A function the model may call: its ``name`` (required; 1-64 of ``a-z A-Z 0-9 _ -``), what it does, and its
    parameters as a JSON schema."""

    description: str
    parameters: dict[str, Any]
    strict: bool


class ChatTool(TypedDict):
    """One entry of ``tools``."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoice(TypedDict):
    """``tool_choice`` naming the one function the model must call."""

    type: Literal["function"]
    function: _Named


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice
"""``tool_choice``: ``"none"``, ``"auto"`` (the default when tools are given), ``"required"``, or a named function."""


class _JsonSchema(_Named, total=False):
    schema: dict[str, Any]
    description: str
    strict: bool


class JsonSchemaFormat(TypedDict):
    """``response_format`` asking for JSON valid against a named schema."""

    type: Literal["json_schema"]
    json_schema: _JsonSchema


class _SimpleFormat(TypedDict):
    type: Literal["text", "json_object"]


ResponseFormat = _SimpleFormat | JsonSchemaFormat
"""``response_format``: ``{"type": "text"}``, ``{"type": "json_object"}`` (any JSON object), or a
``JsonSchemaFormat``."""


class StreamOptions(TypedDict, total=False):
    """``stream_options`` of ``generate_text_stream``: ``include_usage`` adds a last chunk carrying ``usage``."""

    include_usage: bool
