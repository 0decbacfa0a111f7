# The chat API beyond the reference's four parameters, against the local platform: every option goes on the wire under
# its OpenAI name (the body equals what the `openai` client sends for the same call, sync and async), the checks run
# before any request, and replies come back with typed usage and tool calls, unary and streamed, in every dialect.
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import PROJECT, Admin, Deploy

from inferencekey import (
    ApiError,
    AsyncDataClient,
    DataClient,
    NotFoundError,
    RateLimitError,
    TextChunk,
    TextResult,
    ToolCall,
    Usage,
    ValidationError,
)
from inferencekey.local import LocalPlatform

DIALECTS = ["vllm", "llamacpp", "ollama", "sglang"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string"}},
        "member": {"type": "boolean"},
        "score": {"type": "number"},
        "role": {"enum": ["admin", "user"]},
    },
    "required": ["name", "age", "tags", "member", "role"],
}

# One distinct, valid value per option, under its OpenAI name.
EVERY_OPTION: dict[str, Any] = {
    "stop": ["\n\n", "END"],
    "top_p": 0.9,
    "seed": 42,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.25,
    "logprobs": True,
    "top_logprobs": 2,
    "tools": [WEATHER],
    "tool_choice": "auto",
    "response_format": {"type": "json_object"},
}


def chat_bodies(admin: Admin) -> list[dict[str, Any]]:
    return [e["body"] for e in admin.journal() if e["path"].endswith("/chat/completions")]


def valid(value: Any, schema: dict[str, Any]) -> bool:
    """Whether `value` satisfies the subset of JSON schema the tests use."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and all(name in value for name in schema.get("required", []))
            and all(valid(item, props[name]) for name, item in value.items() if name in props)
        )
    if kind == "array":
        return isinstance(value, list) and all(valid(item, schema.get("items", {})) for item in value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and schema.get("minimum", value) <= value <= schema.get("maximum", value)
        )
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return True


def test_every_option_goes_under_its_openai_name(deploy: Deploy, admin: Admin) -> None:
    ep = deploy()
    ep.generate_text(prompt="Hola", extra_body={"top_k": 20, "temperature": 0.3}, **EVERY_OPTION)
    with ep.generate_text_stream(prompt="Hola", stream_options={"include_usage": True}, **EVERY_OPTION) as stream:
        list(stream)
    unary, streamed = admin.wait_journal(lambda entries: len(entries) == 2) and chat_bodies(admin)
    base = {"model": "support-bot", "messages": [{"role": "user", "content": "Hola"}]}
    assert unary == {**base, "stream": False, **EVERY_OPTION, "top_k": 20, "temperature": 0.3}
    assert streamed == {**base, "stream": True, **EVERY_OPTION, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("name", sorted(EVERY_OPTION))
def test_each_option_alone(deploy: Deploy, admin: Admin, name: str) -> None:
    # Each keyword reaches the body under its own name and nothing else comes along (a tool_choice needs tools,
    # top_logprobs needs logprobs).
    needs = {"tool_choice": {"tools": [WEATHER]}, "top_logprobs": {"logprobs": True}}.get(name, {})
    deploy().generate_text(prompt="Hola", **{name: EVERY_OPTION[name]}, **needs)
    (body,) = chat_bodies(admin)
    assert set(body) == {"model", "messages", "stream", name, *needs}
    assert body[name] == EVERY_OPTION[name]


def openai_client(platform: LocalPlatform, ep_base_url: str) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=ep_base_url, api_key=platform.api_key, max_retries=0)


def test_bodies_equal_what_the_openai_client_sends(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    ep = deploy()
    client = openai_client(platform, ep.base_url)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    calls: list[dict[str, Any]] = [
        {"messages": messages},
        {"messages": messages, "temperature": 0.2, "max_tokens": 50, **EVERY_OPTION},
        {
            "messages": messages,
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
        {
            "messages": messages,
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
        },
        {"messages": messages, "stop": "END", "seed": -3, "extra_body": {"min_p": 0.1}},
    ]
    for call in calls:
        for stream in (False, True):
            admin.clear_journal()
            ours = dict(call)
            theirs = {"model": "support-bot", "stream": stream, **call}
            if stream:
                ours["stream_options"] = theirs["stream_options"] = {"include_usage": True}
                with ep.generate_text_stream(**ours) as chunks:
                    list(chunks)
                list(client.chat.completions.create(**theirs))
            else:
                ep.generate_text(**ours)
                client.chat.completions.create(**theirs)
            bodies = admin.wait_journal(lambda entries: len(entries) == 2) and chat_bodies(admin)
            assert bodies[0] == bodies[1], (call, stream)


def test_async_bodies_equal_the_sync_ones(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    ep = deploy()
    kwargs = {"prompt": "Hola", "extra_body": {"top_k": 5}, **EVERY_OPTION}
    ep.generate_text(**kwargs)
    with ep.generate_text_stream(stream_options={"include_usage": True}, **kwargs) as stream:
        list(stream)
    sync_bodies = admin.wait_journal(lambda entries: len(entries) == 2) and chat_bodies(admin)
    admin.clear_journal()

    async def main() -> None:
        async with AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key) as data:
            aep = data.endpoint("support-bot")
            await aep.generate_text(**kwargs)
            async with await aep.generate_text_stream(stream_options={"include_usage": True}, **kwargs) as stream:
                async for _ in stream:
                    pass

    asyncio.run(main())
    assert (admin.wait_journal(lambda entries: len(entries) == 2) and chat_bodies(admin)) == sync_bodies


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop takes at most 4 sequences"),
        ({"stop": 3}, "stop must be a str or a list of str"),
        ({"top_p": 1.5}, "top_p must be a number greater than 0 and at most 1"),
        ({"presence_penalty": -3}, "presence_penalty must be a number from -2 to 2"),
        ({"top_logprobs": 3}, "top_logprobs needs logprobs=True"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be an integer from 0 to 20"),
        ({"tools": [{"type": "function", "function": {}}]}, r"tools\[0\].function.name is missing"),
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice names the function",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format.type must be"),
        ({"extra_body": {"stream": True}}, "extra_body must not set stream"),
        ({"extra_body": {"x": {1, 2}}}, "extra_body holds a value of type set"),
    ],
)
def test_bad_options_are_refused_before_any_request(
    deploy: Deploy, admin: Admin, kwargs: dict[str, Any], message: str
) -> None:
    ep = deploy()
    with pytest.raises(ValidationError, match=message):
        ep.generate_text(prompt="Hola", **kwargs)
    with pytest.raises(ValidationError, match=message):
        ep.generate_text_stream(prompt="Hola", **kwargs)
    assert chat_bodies(admin) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"seed": "7"}, "seed must be an int, not str"), ({"logprobs": 1}, "logprobs must be a bool, not int")],
)
def test_wrong_types_are_type_errors_naming_the_argument(deploy: Deploy, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        deploy().generate_text(prompt="Hola", **kwargs)


@pytest.mark.parametrize("backend", DIALECTS)
def test_usage_is_typed_and_consistent_in_every_dialect(deploy: Deploy, backend: str) -> None:
    ep = deploy(backend=backend)
    result = ep.generate_text(prompt="Tell me a story", max_tokens=12)
    assert isinstance(result.usage, Usage)
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.usage.completion_tokens > 0
    # Without stream_options the terminal chunk still carries finish_reason and no chunk carries usage.
    with ep.generate_text_stream(prompt="Tell me a story", max_tokens=12) as stream:
        plain = list(stream)
    assert plain[-1].finish_reason is not None or plain[-2].finish_reason is not None
    assert all(chunk.usage is None for chunk in plain)
    with ep.generate_text_stream(
        prompt="Tell me a story", max_tokens=12, stream_options={"include_usage": True}
    ) as stream:
        chunks = list(stream)
    with_usage = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(with_usage) == 1
    usage = with_usage[0].usage
    assert isinstance(usage, Usage) and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens == result.usage.completion_tokens


@pytest.mark.parametrize("backend", DIALECTS)
def test_tool_calls_come_back_typed_unary_and_streamed(deploy: Deploy, backend: str) -> None:
    ep = deploy(backend=backend)
    named = {"type": "function", "function": {"name": "get_weather"}}
    result = ep.generate_text(prompt="What is it like in Paris?", tools=[WEATHER], tool_choice=named, seed=5)
    assert result.finish_reason == "tool_calls"
    assert result.text == ""
    (call,) = result.tool_calls
    assert isinstance(call, ToolCall) and call.name == "get_weather" and call.id
    assert valid(json.loads(call.arguments), WEATHER["function"]["parameters"])  # type: ignore[index]
    with ep.generate_text_stream(prompt="What is it like in Paris?", tools=[WEATHER], tool_choice=named, seed=5) as s:
        first = next(s)
        final = s.final_result()
    assert isinstance(first, TextChunk)
    assert isinstance(final, TextResult)
    assert [(c.name, c.arguments) for c in final.tool_calls] == [(call.name, call.arguments)]
    assert final.finish_reason == "tool_calls"
    assert final.raw["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_auto_tool_choice_follows_the_documented_rule(deploy: Deploy) -> None:
    ep = deploy()
    called = ep.generate_text(prompt="Please call get_weather for Oslo", tools=[WEATHER])
    assert [c.name for c in called.tool_calls] == ["get_weather"]
    answered = ep.generate_text(prompt="Tell me a joke", tools=[WEATHER])
    assert answered.tool_calls == [] and answered.text


@pytest.mark.parametrize("backend", DIALECTS)
def test_structured_output_is_valid_json(deploy: Deploy, backend: str) -> None:
    ep = deploy(backend=backend)
    schema_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    result = ep.generate_text(prompt="Describe someone", response_format=schema_format)
    assert valid(json.loads(result.text), PERSON)
    assert isinstance(json.loads(ep.generate_text(prompt="x", response_format={"type": "json_object"}).text), dict)
    with ep.generate_text_stream(prompt="Describe someone", response_format=schema_format) as stream:
        streamed = "".join(chunk.text for chunk in stream)
    assert valid(json.loads(streamed), PERSON)


def test_final_result_includes_chunks_already_iterated(deploy: Deploy) -> None:
    ep = deploy()
    with ep.generate_text_stream(prompt="Tell me a story", max_tokens=16) as stream:
        chunks = list(stream)
        final = stream.final_result()  # after the end: the reply kept
    assert final.text == "".join(chunk.text for chunk in chunks)
    assert final.model == "support-bot"
    assert final.finish_reason == "length"
    with ep.generate_text_stream(
        prompt="Tell me a story", max_tokens=16, stream_options={"include_usage": True}
    ) as stream:
        head = [next(stream), next(stream)]
        final = stream.final_result()
        assert list(stream) == []  # consumed
    assert final.text.startswith("".join(chunk.text for chunk in head))
    assert final.usage is not None and final.usage.completion_tokens == 16


def test_final_result_of_a_closed_stream_is_an_error(deploy: Deploy) -> None:
    with deploy().generate_text_stream(prompt="Tell me a story", max_tokens=16) as stream:
        next(stream)
        stream.close()
        with pytest.raises(Exception, match="closed before its end"):
            stream.final_result()


def test_async_final_result(platform: LocalPlatform, deploy: Deploy) -> None:
    deploy()

    async def main() -> tuple[str, TextResult, TextResult]:
        async with AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key) as data:
            ep = data.endpoint("support-bot")
            stream = await ep.generate_text_stream(prompt="Tell me a story", max_tokens=10)
            text = ""
            async for chunk in stream:
                text += chunk.text
            after_end = await stream.final_result()
            stream = await ep.generate_text_stream(
                prompt="Tell me a story", max_tokens=10, stream_options={"include_usage": True}
            )
            return text, after_end, await stream.final_result()

    text, after_end, direct = asyncio.run(main())
    assert after_end.text == text == direct.text
    assert direct.usage is not None and after_end.usage is None


def test_embed_usage(deploy: Deploy) -> None:
    result = deploy(slug="embedder", task_type="embedding").embed(input=["a", "b"])
    assert isinstance(result.usage, Usage)
    assert result.usage.completion_tokens == 0
    assert result.usage.total_tokens == result.usage.prompt_tokens


def test_not_found_and_rate_limit_errors(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    # No retries, so the 429 is raised at once instead of waited out.
    with DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key, max_retries=0) as data:
        with pytest.raises(NotFoundError) as missing:
            data.endpoint("no-such-workload").generate_text(prompt="x")
        assert missing.value.status_code == 404
        assert isinstance(missing.value, ApiError)
        admin.fault("chat", {"type": "status", "status": 429, "retry_after": 7}, count=None)
        with pytest.raises(RateLimitError) as limited:
            data.endpoint("support-bot").generate_text(prompt="x")
        assert limited.value.status_code == 429
        assert limited.value.retry_after == 7.0
        assert isinstance(limited.value, ApiError)
        admin.clear_faults()
        admin.fault("chat", {"type": "status", "status": 429})
        with pytest.raises(RateLimitError) as unsaid:
            data.endpoint("support-bot").generate_text(prompt="x")
        assert unsaid.value.retry_after is None


def test_embed_dimensions_and_extra_body(deploy: Deploy, admin: Admin) -> None:
    ep = deploy(slug="embedder", task_type="embedding")
    result = ep.embed(input=["a", "b"], dimensions=8, extra_body={"user": "u1"})
    assert [len(vector) for vector in result.embeddings] == [8, 8]
    (entry,) = [e for e in admin.journal() if e["path"].endswith("/embeddings")]
    assert entry["body"] == {
        "model": "embedder",
        "input": ["a", "b"],
        "encoding_format": "base64",
        "dimensions": 8,
        "user": "u1",
    }
    with pytest.raises(ValidationError, match="dimensions must be an integer of at least 1"):
        ep.embed(input="a", dimensions=0)
    with pytest.raises(ValidationError, match="extra_body must be a dict"):
        ep.embed(input="a", extra_body=[1])  # type: ignore[arg-type]


def test_endpoint_hands_its_key_to_other_clients_without_showing_it(platform: LocalPlatform, deploy: Deploy) -> None:
    ep = deploy()
    assert ep.api_key == platform.api_key
    assert platform.api_key not in repr(ep)
    client = openai_client(platform, ep.base_url)
    reply = client.chat.completions.create(model="support-bot", messages=[{"role": "user", "content": "Hola"}])
    assert reply.choices[0].message.content
    with pytest.raises(AttributeError):
        ep.api_key = "x"  # type: ignore[misc]


@pytest.mark.parametrize("backend", DIALECTS)
def test_the_openai_client_gets_tool_calls_and_structured_output(
    platform: LocalPlatform, deploy: Deploy, backend: str
) -> None:
    # The local platform's replies decode in the openai client too: schema-valid tool calls (unary and streamed,
    # assembled from each dialect's fragments) and structured output.
    ep = deploy(backend=backend)
    client = openai_client(platform, ep.base_url)
    messages = [{"role": "user", "content": "What is it like in Paris?"}]
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(model="support-bot", messages=messages, tools=[WEATHER], tool_choice=named)
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert valid(json.loads(call.function.arguments), WEATHER["function"]["parameters"])  # type: ignore[index]
    fragments: dict[int, str] = {}
    for chunk in client.chat.completions.create(
        model="support-bot", messages=messages, tools=[WEATHER], tool_choice="required", stream=True
    ):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            fragments[delta.index] = fragments.get(delta.index, "") + (delta.function.arguments or "")
    assert valid(json.loads(fragments[0]), WEATHER["function"]["parameters"])  # type: ignore[index]
    structured = client.chat.completions.create(
        model="support-bot",
        messages=[{"role": "user", "content": "Describe someone"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    )
    assert valid(json.loads(structured.choices[0].message.content or ""), PERSON)
