# generate_text: the chat body on the wire (prompt or messages, extra keys kept, unset parameters omitted),
# argument checks before any request, TextResult fields, and the Endpoint's addressing.
from __future__ import annotations

from typing import Any

import pytest
from conftest import PROJECT, PROMPT, Admin, Deploy

from inferencekey import ApiError, DataClient, Endpoint, TextResult, ValidationError
from inferencekey.local import LocalPlatform

CHAT_PATH = f"/endpoint/{PROJECT}/support-bot/v1/chat/completions"


def test_prompt_becomes_one_user_message(deploy: Deploy, admin: Admin) -> None:
    deploy().generate_text(prompt=PROMPT)
    assert admin.only("POST", CHAT_PATH) == {
        "model": "support-bot",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": False,
    }


def test_parameters_are_sent_when_set(deploy: Deploy, admin: Admin) -> None:
    deploy().generate_text(prompt="Hola", temperature=0.2, max_tokens=300)
    assert admin.only("POST", CHAT_PATH) == {
        "model": "support-bot",
        "messages": [{"role": "user", "content": "Hola"}],
        "stream": False,
        "temperature": 0.2,
        "max_tokens": 300,
    }


@pytest.mark.parametrize(("name", "value"), [("temperature", 0.0), ("max_tokens", 7)])
def test_each_parameter_alone(deploy: Deploy, admin: Admin, name: str, value: Any) -> None:
    deploy().generate_text(prompt="Hola", **{name: value})
    body = admin.only("POST", CHAT_PATH)
    assert set(body) == {"model", "messages", "stream", name}
    assert body[name] == value


def test_messages_are_forwarded_as_given(deploy: Deploy, admin: Admin) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "ana"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": [{"type": "text", "text": "And now?"}]},
    ]
    result = deploy().generate_text(messages=messages, max_tokens=5)
    body = admin.only("POST", CHAT_PATH)
    assert body == {"model": "support-bot", "messages": messages, "stream": False, "max_tokens": 5}
    assert isinstance(result, TextResult)


@pytest.mark.parametrize(
    "arguments",
    [{}, {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, {"temperature": 0.5}],
    ids=["neither", "both", "parameters-only"],
)
def test_prompt_xor_messages_is_checked_before_any_request(
    deploy: Deploy, admin: Admin, arguments: dict[str, Any]
) -> None:
    endpoint = deploy()
    for call in (endpoint.generate_text, endpoint.generate_text_stream):
        with pytest.raises(ValidationError) as info:
            call(**arguments)
        assert str(info.value).startswith("validation error: ")
        assert info.value.status_code is None
    assert admin.journal() == []


def test_text_result_fields_come_from_the_response(deploy: Deploy, admin: Admin) -> None:
    result = deploy().generate_text(prompt=PROMPT)
    assert isinstance(result, TextResult)
    raw = result.raw
    assert raw["object"] == "chat.completion"
    assert result.text == raw["choices"][0]["message"]["content"]
    assert result.text
    assert result.model == raw["model"] == "support-bot"
    assert result.finish_reason == raw["choices"][0]["finish_reason"]
    assert result.finish_reason in ("stop", "length")


def test_generation_is_deterministic_and_honours_max_tokens(deploy: Deploy) -> None:
    endpoint = deploy()
    first = endpoint.generate_text(prompt=PROMPT)
    again = endpoint.generate_text(prompt=PROMPT)
    assert (again.text, again.finish_reason) == (first.text, first.finish_reason)
    assert endpoint.generate_text(prompt="something else entirely").text != first.text
    short = endpoint.generate_text(prompt=PROMPT, max_tokens=2)
    assert short.finish_reason == "length"
    assert len(short.text) < len(first.text)


def test_endpoint_addressing(platform: LocalPlatform, deploy: Deploy) -> None:
    endpoint = deploy()
    assert isinstance(endpoint, Endpoint)
    assert endpoint.workload_slug == "support-bot"
    assert endpoint.project == PROJECT
    assert endpoint.base_url == f"{platform.url}/endpoint/{PROJECT}/support-bot/v1"


def test_unknown_workload_is_an_api_error(deploy: Deploy, data: DataClient) -> None:
    deploy()
    with pytest.raises(ApiError) as info:
        data.endpoint("nobody-here").generate_text(prompt="hi")
    assert info.value.status_code == 404


def test_chat_on_an_embedding_workload_is_a_validation_error(deploy: Deploy) -> None:
    endpoint = deploy(slug="embedder", task_type="embedding")
    with pytest.raises(ValidationError) as info:
        endpoint.generate_text(prompt="hi")
    assert info.value.status_code == 400
