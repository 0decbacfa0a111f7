# The public Python surface: names, enums, exception hierarchy, dataclasses and the documented signatures.
# Pure Python checks; no request is sent.
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import inferencekey
from inferencekey import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AsyncEndpoint,
    AuthError,
    Backend,
    ConfigurationError,
    DataClient,
    DriftError,
    DriftWarning,
    EmbedResult,
    Endpoint,
    EndpointRef,
    ExecutionPolicy,
    FieldChange,
    InferenceKeyError,
    ManagementClient,
    OnDrift,
    PermissionDenied,
    Plan,
    ReadinessEvent,
    RerankItem,
    RerankResult,
    TaskType,
    TextChunk,
    TextResult,
    ToolCall,
    Usage,
    ValidationError,
    WaitTimeoutError,
    WorkloadSpec,
    _core,
)

PUBLIC_NAMES = [
    "ManagementClient", "DataClient", "Endpoint", "WorkloadSpec", "EndpointRef", "TextResult", "EmbedResult",
    "Backend", "TaskType", "OnDrift", "ExecutionPolicy", "InferenceKeyError", "PermissionDenied", "AuthError",
    "ValidationError", "ConfigurationError", "ApiError", "TextChunk", "ReadinessEvent", "Plan", "FieldChange",
    "RerankResult", "RerankItem", "TextStream", "DriftError", "DriftWarning", "ApiConnectionError",
    "ApiTimeoutError", "WaitTimeoutError", "LocalPlatform", "__version__",
]  # fmt: skip

TASK_TYPES = [
    "text2text", "embedding", "text2image", "text2video", "text2audio", "image2image", "image2video", "audio2text",
    "omni", "reranker", "classification", "reward", "forecast",
]  # fmt: skip

KW = inspect.Parameter.KEYWORD_ONLY
REQUIRED = inspect.Parameter.empty
REFERENCE_CHAT = [("prompt", KW, None), ("messages", KW, None), ("temperature", KW, None), ("max_tokens", KW, None)]
PER_CALL = [("extra_headers", KW, None), ("timeout", KW, None), ("max_retries", KW, None)]
CHAT_OPTIONS = [
    (name, KW, None)
    for name in [
        "stop",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "response_format",
    ]
]


def test_every_public_name_is_exported_and_listed() -> None:
    for name in PUBLIC_NAMES:
        assert name in inferencekey.__all__, name
        assert getattr(inferencekey, name) is not None
    for name in inferencekey.__all__:
        assert hasattr(inferencekey, name), name


def test_local_platform_is_importable_from_both_places() -> None:
    from inferencekey.local import LocalPlatform

    assert inferencekey.LocalPlatform is LocalPlatform


def test_version_is_a_release_string() -> None:
    assert isinstance(inferencekey.__version__, str)
    assert inferencekey.__version__.count(".") >= 2


def test_reference_import_block_works_as_written() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "from inferencekey import (\n"
        "ManagementClient, DataClient, Endpoint,\n"
        "WorkloadSpec, EndpointRef, TextResult, EmbedResult,\n"
        "Backend, TaskType, OnDrift, ExecutionPolicy,\n"
        "InferenceKeyError, PermissionDenied, AuthError,\n"
        "ValidationError, ConfigurationError, ApiError,\n"
        ")\n",
        namespace,
    )
    assert namespace["ManagementClient"] is ManagementClient
    assert namespace["ApiError"] is ApiError


def test_backend_values() -> None:
    assert {member.name: member.value for member in Backend} == {
        "OLLAMA": "ollama",
        "VLLM": "vllm",
        "VLLM_OMNI": "vllm-omni",
        "SGLANG": "sglang",
        "LLAMACPP": "llamacpp",
        "STABLE_DIFFUSION_CPP": "stablediffusioncpp",
    }


def test_task_type_has_the_thirteen_platform_values() -> None:
    assert [member.value for member in TaskType] == TASK_TYPES
    for member in TaskType:
        assert member.name == member.value.upper()


def test_on_drift_and_execution_policy_values() -> None:
    assert {m.name: m.value for m in OnDrift} == {
        "RECONCILE": "reconcile",
        "FAIL": "fail",
        "DRY_RUN": "dry_run",
        "WARN": "warn",
        "IGNORE": "ignore",
    }
    assert {m.name: m.value for m in ExecutionPolicy} == {
        "FIXED": "fixed",
        "SCHEDULED": "scheduled",
        "AUTOSCALING": "autoscaling",
    }


@pytest.mark.parametrize("enum", [Backend, TaskType, OnDrift, ExecutionPolicy])
def test_enum_members_are_their_wire_strings(enum: Any) -> None:
    members: list[Any] = list(enum)
    for member in members:
        assert member == member.value
        assert str(member) == member.value
        assert f"{member}" == member.value
        assert enum(member.value) is member
        assert isinstance(member, str)


def test_exception_hierarchy() -> None:
    for cls in (PermissionDenied, AuthError, ValidationError, ConfigurationError, ApiError, WaitTimeoutError):
        assert issubclass(cls, InferenceKeyError)
    assert issubclass(InferenceKeyError, Exception)
    assert issubclass(DriftError, ValidationError)
    assert issubclass(ApiConnectionError, ApiError)
    assert issubclass(ApiTimeoutError, ApiError)
    assert issubclass(ApiTimeoutError, TimeoutError)
    assert issubclass(WaitTimeoutError, TimeoutError)
    assert not issubclass(WaitTimeoutError, ApiError)
    assert issubclass(DriftWarning, UserWarning)
    for cls in (PermissionDenied, AuthError, ValidationError, ConfigurationError, ApiError):
        assert not issubclass(cls, TimeoutError)


def test_exception_attributes_str_and_repr() -> None:
    exc = AuthError(
        "authentication failed: nope", status_code=401, code="unauthorized", request_id="req_1", body={"a": 1}
    )
    assert str(exc) == "authentication failed: nope"
    assert exc.message == "authentication failed: nope"
    assert (exc.status_code, exc.code, exc.request_id, exc.body) == (401, "unauthorized", "req_1", {"a": 1})
    text = repr(exc)
    for part in ("AuthError", "authentication failed: nope", "401", "unauthorized", "req_1"):
        assert part in text
    bare = InferenceKeyError("plain")
    assert (bare.status_code, bare.code, bare.request_id, bare.body) == (None, None, None, None)


def test_drift_error_and_warning_carry_the_plan() -> None:
    plan = Plan(action="update", project="p", workload_slug="w", changes=(FieldChange("name", "a", "b"),))
    exc = DriftError("workload drifted from spec: name", plan=plan)
    assert exc.plan is plan
    assert isinstance(exc, ValidationError)
    warning = DriftWarning("workload drifted", plan=plan)
    assert warning.plan is plan


def test_workload_spec_fields_and_defaults() -> None:
    assert not WorkloadSpec.__dataclass_params__.frozen  # type: ignore[attr-defined]
    fields = [(f.name, f.default) for f in dataclasses.fields(WorkloadSpec)]
    assert fields == [
        ("name", dataclasses.MISSING),
        ("slug", dataclasses.MISSING),
        ("model", dataclasses.MISSING),
        ("backend", dataclasses.MISSING),
        ("project", None),
        ("description", None),
        ("command", None),
        ("vllm_version", None),
        ("task_type", None),
        ("config", None),
        ("execution_policy", None),
        ("execution_policy_config", None),
        ("worker_id", None),
        ("gpu_resource_id", None),
    ]


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (EndpointRef, [("project_slug", dataclasses.MISSING), ("workload_slug", dataclasses.MISSING)]),
        (
            TextResult,
            [
                ("text", dataclasses.MISSING),
                ("model", dataclasses.MISSING),
                ("finish_reason", None),
                ("usage", None),
                ("tool_calls", dataclasses.MISSING),  # a fresh empty list (default_factory)
            ],
        ),
        (TextChunk, [("text", dataclasses.MISSING), ("finish_reason", None), ("usage", None)]),
        (
            ReadinessEvent,
            [("phase", dataclasses.MISSING), ("message", dataclasses.MISSING), ("elapsed_ms", 0), ("step", None)],
        ),
        (EmbedResult, [("embeddings", dataclasses.MISSING), ("model", dataclasses.MISSING), ("usage", None)]),
        (
            Usage,
            [
                ("prompt_tokens", dataclasses.MISSING),
                ("completion_tokens", dataclasses.MISSING),
                ("total_tokens", dataclasses.MISSING),
            ],
        ),
        (ToolCall, [("id", dataclasses.MISSING), ("name", dataclasses.MISSING), ("arguments", dataclasses.MISSING)]),
        (RerankItem, [("index", dataclasses.MISSING), ("relevance_score", dataclasses.MISSING)]),
        (RerankResult, [("results", dataclasses.MISSING), ("model", dataclasses.MISSING)]),
    ],
)
def test_frozen_result_dataclasses(cls: Any, expected: list[tuple[str, Any]]) -> None:
    assert cls.__dataclass_params__.frozen
    fields = [(f.name, f.default) for f in dataclasses.fields(cls) if f.name != "raw"]
    assert fields == expected


@pytest.mark.parametrize(
    "build",
    [
        lambda: TextResult(text="a", model="m"),
        lambda: TextChunk(text="a"),
        lambda: EmbedResult(embeddings=[], model="m"),
        lambda: RerankResult(results=[], model="m"),
    ],
)
def test_raw_defaults_to_a_fresh_empty_dict(build: Any) -> None:
    first, second = build(), build()
    assert first.raw == {}
    assert first.raw is not second.raw
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.raw = {"x": 1}


def test_plan_renders_and_reports_drift() -> None:
    change = FieldChange(field="command", live="a", desired="b")
    plan = Plan(
        action="update", project="local", workload_slug="w", changes=(change,), rendered='~ command: "a" -> "b"'
    )
    assert str(plan) == '~ command: "a" -> "b"'
    assert plan.drifted is True
    noop = Plan(action="noop", project="local", workload_slug="w")
    assert noop.changes == ()
    assert noop.drifted is False
    assert (change.field, change.live, change.desired) == ("command", "a", "b")


def parameters(func: Any) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of every parameter after `self` / `cls`."""
    params = list(inspect.signature(func).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (
            ManagementClient.__init__,
            [
                ("base_url", KW, REQUIRED),
                ("sdk_token", KW, REQUIRED),
                ("project", KW, None),
                ("timeout", KW, 600.0),
                ("connect_timeout", KW, 10.0),
                ("max_retries", KW, 2),
                ("default_headers", KW, None),
                ("verify", KW, True),
                ("cert", KW, None),
                ("proxy", KW, None),
            ],
        ),
        (
            ManagementClient.ensure,
            [
                ("spec", inspect.Parameter.POSITIONAL_OR_KEYWORD, REQUIRED),
                ("on_drift", KW, OnDrift.RECONCILE),
                ("project", KW, None),
            ],
        ),
        (
            ManagementClient.wait_until_ready,
            [
                ("workload_slug", inspect.Parameter.POSITIONAL_OR_KEYWORD, REQUIRED),
                ("project", KW, None),
                ("timeout", KW, 600.0),
                ("on_progress", KW, None),
                ("silent", KW, False),
            ],
        ),
        (
            ManagementClient.delete,
            [("workload_slug", inspect.Parameter.POSITIONAL_OR_KEYWORD, REQUIRED), ("project", KW, None)],
        ),
        (
            DataClient.__init__,
            [
                ("base_url", KW, REQUIRED),
                ("project", KW, REQUIRED),
                ("api_key", KW, None),
                ("timeout", KW, 600.0),
                ("connect_timeout", KW, 10.0),
                ("max_retries", KW, 2),
                ("default_headers", KW, None),
                ("verify", KW, True),
                ("cert", KW, None),
                ("proxy", KW, None),
            ],
        ),
        (
            DataClient.endpoint,
            [("workload_slug", inspect.Parameter.POSITIONAL_OR_KEYWORD, REQUIRED), ("api_key", KW, None)],
        ),
        # The reference's four, then what this SDK adds beside them (OpenAI's names, each omitted when None).
        (Endpoint.generate_text, [*REFERENCE_CHAT, *CHAT_OPTIONS, ("extra_body", KW, None), *PER_CALL]),
        (
            Endpoint.generate_text_stream,
            [*REFERENCE_CHAT, *CHAT_OPTIONS, ("stream_options", KW, None), ("extra_body", KW, None), *PER_CALL],
        ),
        (Endpoint.embed, [("input", KW, REQUIRED), ("dimensions", KW, None), ("extra_body", KW, None)]),
        (Endpoint.rerank, [("query", KW, REQUIRED), ("documents", KW, REQUIRED), ("top_n", KW, None)]),
    ],
    ids=lambda value: getattr(value, "__qualname__", ""),
)
def test_documented_signatures(func: Any, expected: list[tuple[str, Any, Any]]) -> None:
    assert parameters(func) == expected


def test_async_twins_take_the_same_chat_parameters() -> None:
    assert parameters(AsyncEndpoint.generate_text) == parameters(Endpoint.generate_text)
    assert parameters(AsyncEndpoint.generate_text_stream) == parameters(Endpoint.generate_text_stream)


def test_chat_options_pass_in_the_binding_order() -> None:
    # The surface hands the options to the binding as a tuple in the binding's order: the names must agree.
    names = [name for name, _, _ in CHAT_OPTIONS] + ["stream_options", "extra_body"]
    assert sorted(names) == sorted(_core.chat_option_names())  # the order itself: tests/test_chat_api.py


@pytest.mark.parametrize(
    ("func", "names"),
    [
        (ManagementClient.from_env, ["base_url", "project", "sdk_token"]),
        (DataClient.from_env, ["base_url", "project", "api_key"]),
    ],
)
def test_from_env_signatures_start_as_documented(func: Any, names: list[str]) -> None:
    params = parameters(func)
    assert [(name, kind, default) for name, kind, default in params[:3]] == [(n, KW, None) for n in names]
    assert isinstance(inspect.getattr_static(func.__self__, "from_env"), classmethod)


# Public submodules a user may import (`inferencekey.types`, ...); importing them sets them on the package.
PUBLIC_MODULES = {"chat", "cli", "enums", "exceptions", "local", "pytest_plugin", "testing", "types"}


def test_the_namespace_shows_only_the_public_surface() -> None:
    # `@py_builtins` and `@pytest_ar`: pytest's assertion rewriting of the plugin's package, only under pytest.
    stray = [n for n in dir(inferencekey) if n[0] not in "_@" and n not in inferencekey.__all__]
    assert set(stray) <= PUBLIC_MODULES, stray


def test_exported_classes_report_the_package_as_their_module() -> None:
    classes = [getattr(inferencekey, n) for n in inferencekey.__all__ if isinstance(getattr(inferencekey, n), type)]
    assert len(classes) > 30
    for cls in classes:
        assert cls.__module__ == "inferencekey", cls
        assert f"{cls.__module__}.{cls.__qualname__}" == f"inferencekey.{cls.__name__}"


def test_pickles_naming_the_defining_modules_still_load() -> None:
    # What earlier releases wrote: the classes under their defining modules (`inferencekey.types.TextResult`).
    import pickle

    from inferencekey import ApiError, Backend, FieldChange

    for obj, old_module in [
        (FieldChange(field="command", live="a", desired="b"), "inferencekey.types"),
        (Backend.VLLM, "inferencekey.enums"),
        (ApiError("boom", status_code=500, code="x", request_id="req_1", body=None), "inferencekey.exceptions"),
    ]:
        new = pickle.dumps(obj, protocol=0)
        name = type(obj).__qualname__.encode()
        assert b"cinferencekey\n" + name + b"\n" in new
        old = new.replace(b"cinferencekey\n" + name, b"c" + old_module.encode() + b"\n" + name)
        loaded = pickle.loads(old)
        assert type(loaded) is type(obj)
        assert repr(loaded) == repr(obj)


def test_package_modules_import_the_module_they_mean() -> None:
    # Each module of the package imports what it uses from the module that defines it (`from inferencekey._core import
    # …`, `from inferencekey.types import …`), never through the package face: `from inferencekey import X` inside the
    # package would make the layering depend on `__init__`'s import order and hide cycles from import tools.
    import ast
    from pathlib import Path

    package = Path(inferencekey.__file__).parent
    sources = sorted(package.glob("*.py"))
    assert len(sources) > 15
    offenders = []
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "inferencekey":
                offenders.append(f"{source.name}:{node.lineno}: from inferencekey import …")
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                offenders.append(f"{source.name}:{node.lineno}: relative import")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{source.name}:{node.lineno}: import inferencekey" for a in node.names if a.name == "inferencekey"
                ]
    assert offenders == []


def test_the_asyncio_classes_still_load_from_their_earlier_module() -> None:
    # Earlier builds defined them in inferencekey._async; pickles naming that module must still load.
    import pickle

    from inferencekey import _async

    for name in ("AsyncDataClient", "AsyncEndpoint", "AsyncManagementClient", "AsyncTextStream"):
        assert getattr(_async, name) is getattr(inferencekey, name)
    old = pickle.dumps(inferencekey.ApiError, protocol=0).replace(
        b"inferencekey\nApiError", b"inferencekey._async\nAsyncDataClient"
    )
    assert pickle.loads(old) is inferencekey.AsyncDataClient
