"""Tools in chat-completion requests: OpenAI's forms, and which models take them.

A plain request's ``tools``, ``tool_choice`` and ``parallel_tool_calls`` go, as
they are, to a model that can call tools (``capabilities.tools``: the remote
``openai:`` backend); the calls it asks for come back as ``message.tool_calls``
with ``finish_reason: "tool_calls"``, and the conversation may then carry the
assistant's tool calls and the ``"tool"`` messages that answer them.

The embedded models cannot: llama.cpp renders their chat templates with its
built-in formats, which have no place for tools (SmolLM2's ChatML template has
none either). A request offering them tools is refused (400, ``param: "tools"``),
except with ``tool_choice: "none"``, which asks for no call: it is served as the
same request without tools. Strategies do not vote over tool calls: a strategy
request with tools, or with tool messages in its conversation, is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from thinktank.models.base import Completion, Model, ToolCallingModel, ToolOffer

#: OpenAI's limits: function names, and tools per request.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOOLS = 128


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    #: A JSON schema of the arguments, passed on unchecked (the endpoint reads it).
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    """One of ``tools``: a function the model may call."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the function the model must call."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    #: JSON text, as the model wrote it.
    arguments: str


class MessageToolCall(BaseModel):
    """One of an assistant message's ``tool_calls``, as a client sends it back."""

    model_config = ConfigDict(extra="ignore")  # clients echo a streamed call's "index"

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolMessage(Protocol):
    """What the checks read of a request's message."""

    role: str
    tool_calls: list[MessageToolCall] | None


class ToolsRefused(ValueError):
    """A request's tools or tool messages the server cannot serve; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def tool_offer(
    tools: Sequence[ToolDefinition] | None,
    choice: ToolChoice | None,
    parallel: bool | None,
) -> ToolOffer | None:
    """The tools a request offers (None without ``tools``), in the backends' form.
    Refuses, as OpenAI does, ``tool_choice`` or ``parallel_tool_calls`` without
    tools, and a ``tool_choice`` naming a function not offered."""
    if not tools:
        for name, value in (("tool_choice", choice), ("parallel_tool_calls", parallel)):
            if value is not None:
                raise ToolsRefused(f"{name} is only allowed when tools are given", name)
        return None
    names = [tool.function.name for tool in tools]
    if len(set(names)) < len(names):
        raise ToolsRefused("tools: two tools have the same function name", "tools")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise ToolsRefused(
            f"tool_choice names {choice.function.name!r}, which is not among the tools",
            "tool_choice",
        )
    return ToolOffer(
        tools=tuple(tool.model_dump(exclude_none=True) for tool in tools),
        choice=choice.model_dump() if isinstance(choice, NamedToolChoice) else choice,
        parallel=parallel,
    )


def offering_tools(
    model: Model,
    offer: ToolOffer | None,
    messages: Sequence[ToolMessage],
    *,
    strategy: bool,
) -> Model:
    """The model a request calls: ``model`` offering ``offer`` where it can call tools,
    ``model`` itself where the request offers none (or, to a model that cannot call
    tools, offers them with ``tool_choice: "none"``). Raises `ToolsRefused` for tools
    or tool messages it cannot serve: with a strategy, or to a model without tools."""
    carries_calls = any(m.role == "tool" or m.tool_calls for m in messages)
    if strategy and offer is not None:
        raise ToolsRefused(
            "tools: strategies do not vote over tool calls yet; send a plain request "
            "(model set to a served model's name) to use tools",
            "tools",
        )
    if strategy and carries_calls:
        raise ToolsRefused(
            "messages: a strategy answers a conversation without tool calls or tool "
            "messages; send a plain request to continue one",
            "messages",
        )
    if isinstance(model, ToolCallingModel) and model.capabilities.tools:
        return model if offer is None else model.with_tools(offer)
    if carries_calls:
        raise ToolsRefused(
            f"messages: {model.name} cannot call tools, so its conversations cannot hold "
            "tool calls or tool messages",
            "messages",
        )
    if offer is not None and offer.choice != "none":
        raise ToolsRefused(
            f"tools: {model.name} cannot call tools (its chat template has no place for "
            "them); send the request without tools, or with tool_choice 'none'",
            "tools",
        )
    return model


def tool_call_fields(completion: Completion) -> dict[str, Any]:
    """The ``tool_calls`` of a response message, where the completion asked for any
    (its ``content`` then null if it wrote no text, as OpenAI's)."""
    if not completion.tool_calls:
        return {}
    return {"content": completion.text or None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.name, "arguments": call.arguments}}
        for call in completion.tool_calls
    ]}  # fmt: skip


def tool_call_delta(message: dict[str, Any]) -> dict[str, Any]:
    """A response message's ``tool_calls`` as a stream's delta carries them: each
    whole, with its ``index``."""
    calls = message.get("tool_calls")
    if not calls:
        return {}
    return {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}
