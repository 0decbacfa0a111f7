//! Unit tests of the data plane's pure parts and of the stream queue.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::client::*;
use super::request::*;
use super::response::*;
use super::stream::*;
use std::collections::VecDeque;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::TransportOptions;
use crate::error::Error;
use crate::event;
use crate::sse::SseDecoder;

use crate::error::ErrorKind;
use serde_json::json;

const LIVE: &str = "ik_live_a1b2c3d4_ffffffffffffffff";
const SDK: &str = "ik_sdk_0a1b2c3d_0123456789abcdef";

fn client(api_key: Option<&str>) -> DataClient {
    DataClient::new(
        Some("http://127.0.0.1:9"),
        Some("acme"),
        api_key,
        TransportOptions::default(),
    )
    .unwrap()
}

#[test]
fn blank_project_is_a_configuration_error() {
    for project in [None, Some(""), Some("  ")] {
        let err =
            DataClient::new(None, project, Some(LIVE), TransportOptions::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Configuration);
    }
}

#[test]
fn endpoint_key_resolution_and_checks() {
    let err = client(None).endpoint("Support Bot", None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Configuration);
    assert_eq!(
        err.message,
        "No ik_live_ key for workload \"support-bot\". Pass api_key= or set INFERENCEKEY_API_KEY."
    );
    let err = client(Some(LIVE))
        .endpoint("support-bot", Some(SDK))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_eq!(err.code.as_deref(), Some("wrong_credential_type"));
    assert_eq!(
        err.message,
        "permission denied [wrong_credential_type]: ik_sdk_0a1b2c3d\u{2026} is a control token; the data plane requires an ik_live_ key"
    );
    let err = client(Some(SDK)).endpoint("support-bot", None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    let ep = client(Some(LIVE))
        .endpoint(" Support Bot ", Some("  "))
        .unwrap();
    assert_eq!(ep.workload_slug(), "support-bot");
    assert_eq!(ep.project(), "acme");
    assert_eq!(
        ep.base_url(),
        "http://127.0.0.1:9/endpoint/acme/support-bot/v1"
    );
    assert!(!format!("{ep:?}").contains("ffffffff"));
    assert_eq!(
        client(Some(LIVE)).endpoint("__", None).unwrap_err().kind,
        ErrorKind::Validation
    );
}

#[test]
fn chat_body_exact_shapes() {
    let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
    let body = |r: &ChatRequest, stream| {
        serde_json::from_slice::<Value>(&ep.chat_body(r, stream).unwrap()).unwrap()
    };
    let prompt = ChatRequest {
        prompt: Some("Hola".into()),
        ..ChatRequest::default()
    };
    assert_eq!(
        body(&prompt, false),
        json!({"model": "support-bot", "messages": [{"role": "user", "content": "Hola"}], "stream": false})
    );
    let messages = vec![
        json!({"role": "system", "content": "x", "name": "n"}),
        json!({"role": "user", "content": [{"type": "text", "text": "hi"}]}),
    ];
    let full = ChatRequest {
        prompt: None,
        messages: Some(messages.clone()),
        temperature: Some(0.2),
        max_tokens: Some(300),
        options: None,
    };
    assert_eq!(
        body(&full, true),
        json!({"model": "support-bot", "messages": messages, "stream": true, "temperature": 0.2, "max_tokens": 300})
    );
    let keys: Vec<String> = body(&full, true)
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        ["model", "messages", "stream", "temperature", "max_tokens"]
    );
}

fn prompt_with(options: ChatOptions, stream: bool) -> crate::error::Result<ChatRequest> {
    ChatRequest::from_user(Some("Hola".into()), None, None, None)?.with_options(options, stream)
}

#[test]
fn chat_options_go_under_their_openai_names_and_extra_body_last() {
    let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
    let body = |request: &ChatRequest, stream: bool| -> Value {
        serde_json::from_slice(&ep.chat_body(request, stream).unwrap()).unwrap()
    };
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let options = ChatOptions {
        stop: Some(json!(["\n\n", "END"])),
        top_p: Some(0.9),
        seed: Some(-7),
        presence_penalty: Some(0.5),
        frequency_penalty: Some(-0.5),
        logprobs: Some(true),
        top_logprobs: Some(3),
        tools: Some(tools.clone()),
        tool_choice: Some(json!({"type": "function", "function": {"name": "get_weather"}})),
        response_format: Some(json!({"type": "json_object"})),
        stream_options: Some(json!({"include_usage": true})),
        extra_body: Some(json!({"top_k": 20, "temperature": 0.1})),
    };
    let request = prompt_with(options, true).unwrap();
    assert_eq!(
        body(&request, true),
        json!({
            "model": "support-bot", "messages": [{"role": "user", "content": "Hola"}], "stream": true,
            "stop": ["\n\n", "END"], "top_p": 0.9, "seed": -7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "logprobs": true, "top_logprobs": 3, "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_object"}, "stream_options": {"include_usage": true},
            "top_k": 20, "temperature": 0.1,
        })
    );
    assert!(request.options.as_ref().unwrap().include_usage());
    // Empty options are not kept: the request is the plain one.
    let plain = prompt_with(ChatOptions::default(), false).unwrap();
    assert!(plain.options.is_none());
    assert_eq!(
        body(&plain, false),
        json!({"model": "support-bot", "messages": [{"role": "user", "content": "Hola"}], "stream": false})
    );
}

#[test]
fn chat_option_refusals_name_the_argument() {
    let refused = |options: ChatOptions, stream: bool| -> String {
        let err = prompt_with(options, stream).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        err.message
    };
    let tool = |name: &str| json!({"type": "function", "function": {"name": name}});
    let cases: Vec<(ChatOptions, &str)> = vec![
        (
            ChatOptions {
                stop: Some(json!(["a", "b", "c", "d", "e"])),
                ..Default::default()
            },
            "stop takes at most 4 sequences, got 5",
        ),
        (
            ChatOptions {
                stop: Some(json!(["a", 1])),
                ..Default::default()
            },
            "stop[1] must be a str",
        ),
        (
            ChatOptions {
                stop: Some(json!(3)),
                ..Default::default()
            },
            "stop must be a str or a list of str",
        ),
        (
            ChatOptions {
                top_p: Some(0.0),
                ..Default::default()
            },
            "top_p must be a number greater than 0 and at most 1",
        ),
        (
            ChatOptions {
                top_p: Some(f64::NAN),
                ..Default::default()
            },
            "top_p must be",
        ),
        (
            ChatOptions {
                presence_penalty: Some(2.5),
                ..Default::default()
            },
            "presence_penalty must be a number from -2 to 2",
        ),
        (
            ChatOptions {
                frequency_penalty: Some(f64::INFINITY),
                ..Default::default()
            },
            "frequency_penalty must be",
        ),
        (
            ChatOptions {
                top_logprobs: Some(21),
                logprobs: Some(true),
                ..Default::default()
            },
            "top_logprobs must be an integer from 0 to 20",
        ),
        (
            ChatOptions {
                top_logprobs: Some(2),
                ..Default::default()
            },
            "top_logprobs needs logprobs=True",
        ),
        (
            ChatOptions {
                tools: Some(json!({})),
                ..Default::default()
            },
            "tools must be a list",
        ),
        (
            ChatOptions {
                tools: Some(json!([{"type": "web"}])),
                ..Default::default()
            },
            "tools[0].type must be \"function\"",
        ),
        (
            ChatOptions {
                tools: Some(json!([{"type": "function"}])),
                ..Default::default()
            },
            "tools[0].function is missing",
        ),
        (
            ChatOptions {
                tools: Some(json!([tool("a b")])),
                ..Default::default()
            },
            "tools[0].function.name must be 1 to 64",
        ),
        (
            ChatOptions {
                tools: Some(json!([tool("a"), tool("a")])),
                ..Default::default()
            },
            "tools[1].function.name \"a\" is used by an earlier tool",
        ),
        (
            ChatOptions {
                tools: Some(
                    json!([{"type": "function", "function": {"name": "a", "parameters": []}}]),
                ),
                ..Default::default()
            },
            "tools[0].function.parameters must be a dict",
        ),
        (
            ChatOptions {
                tool_choice: Some(json!("auto")),
                ..Default::default()
            },
            "tool_choice needs tools",
        ),
        (
            ChatOptions {
                tools: Some(json!([tool("a")])),
                tool_choice: Some(json!("any")),
                ..Default::default()
            },
            "tool_choice must be \"none\"",
        ),
        (
            ChatOptions {
                tools: Some(json!([tool("a")])),
                tool_choice: Some(json!({"type": "function", "function": {"name": "b"}})),
                ..Default::default()
            },
            "tool_choice names the function \"b\", which is not among tools",
        ),
        (
            ChatOptions {
                response_format: Some(json!({"type": "xml"})),
                ..Default::default()
            },
            "response_format.type must be",
        ),
        (
            ChatOptions {
                response_format: Some(json!({"type": "json_schema"})),
                ..Default::default()
            },
            "response_format.json_schema is missing",
        ),
        (
            ChatOptions {
                response_format: Some(
                    json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 1}}),
                ),
                ..Default::default()
            },
            "response_format.json_schema.schema must be a dict",
        ),
        (
            ChatOptions {
                extra_body: Some(json!({"stream": true})),
                ..Default::default()
            },
            "extra_body must not set stream",
        ),
        (
            ChatOptions {
                extra_body: Some(json!([1])),
                ..Default::default()
            },
            "extra_body must be a dict",
        ),
    ];
    for (options, expected) in cases {
        let message = refused(options, false);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
    let stream_only = ChatOptions {
        stream_options: Some(json!({"include_usage": true})),
        ..Default::default()
    };
    assert!(refused(stream_only.clone(), false)
        .contains("stream_options only goes with a streamed chat"));
    assert!(prompt_with(stream_only, true).is_ok());
    let bad_usage = ChatOptions {
        stream_options: Some(json!({"include_usage": "yes"})),
        ..Default::default()
    };
    assert!(refused(bad_usage, true).contains("stream_options.include_usage must be a bool"));
    // "none" needs no tools; a named tool among them is fine.
    assert!(prompt_with(
        ChatOptions {
            tool_choice: Some(json!("none")),
            ..Default::default()
        },
        false
    )
    .is_ok());
    let named = ChatOptions {
        tools: Some(json!([tool("a"), tool("b")])),
        tool_choice: Some(json!({"type": "function", "function": {"name": "b"}})),
        ..Default::default()
    };
    assert!(prompt_with(named, false).is_ok());
}

#[test]
fn chat_request_checks() {
    let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
    let both = ChatRequest {
        prompt: Some("a".into()),
        messages: Some(vec![]),
        ..ChatRequest::default()
    };
    let err = ep.chat_body(&both, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Validation);
    assert_eq!(
        err.message,
        "validation error: pass either prompt or messages, not both"
    );
    let err = ep.chat_body(&ChatRequest::default(), false).unwrap_err();
    assert_eq!(err.message, "validation error: pass prompt or messages");
    let nan = ChatRequest {
        prompt: Some("a".into()),
        temperature: Some(f64::NAN),
        ..ChatRequest::default()
    };
    assert_eq!(
        ep.chat_body(&nan, false).unwrap_err().kind,
        ErrorKind::Validation
    );
}

#[test]
fn chat_request_from_user_values() {
    let messages = json!([{"role": "user", "content": "hi"}]);
    let request = ChatRequest::from_user(None, Some(messages.clone()), Some(0.0), Some(7)).unwrap();
    assert_eq!(
        request,
        ChatRequest {
            options: None,
            prompt: None,
            messages: Some(vec![json!({"role": "user", "content": "hi"})]),
            temperature: Some(0.0),
            max_tokens: Some(7),
        }
    );
    // Null messages are "not given", the way a binding passes None.
    let request =
        ChatRequest::from_user(Some("Hola".into()), Some(Value::Null), None, None).unwrap();
    assert_eq!(request.messages, None);
    assert_eq!(request.prompt.as_deref(), Some("Hola"));
    assert_eq!(
        ChatRequest::from_user(Some("a".into()), None, None, Some(i64::MAX))
            .unwrap()
            .max_tokens,
        Some(i64::MAX.unsigned_abs())
    );
    // An empty list is a list: sent as given, the server judges it.
    assert_eq!(
        ChatRequest::from_user(None, Some(json!([])), None, None)
            .unwrap()
            .messages,
        Some(vec![])
    );
}

#[test]
fn chat_request_from_user_refusals_and_wording() {
    let refused =
        |prompt: Option<&str>, messages: Option<Value>, t: Option<f64>, n: Option<i64>| {
            let err =
                ChatRequest::from_user(prompt.map(str::to_owned), messages, t, n).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation);
            assert_eq!(err.status, None);
            err.message
        };
    let list = || Some(json!([{"role": "user", "content": "b"}]));
    for n in [0, -5, i64::MIN] {
        assert_eq!(
            refused(Some("a"), None, None, Some(n)),
            "validation error: max_tokens must be an integer of at least 1"
        );
    }
    for not_a_list in [json!({"role": "user"}), json!("hi"), json!(3), json!(true)] {
        assert_eq!(
            refused(None, Some(not_a_list), None, None),
            "validation error: messages must be a list"
        );
    }
    assert_eq!(
        refused(Some("a"), list(), None, None),
        "validation error: pass either prompt or messages, not both"
    );
    assert_eq!(
        refused(None, None, None, None),
        "validation error: pass prompt or messages"
    );
    assert_eq!(
        refused(None, None, Some(0.5), None),
        "validation error: pass prompt or messages"
    );
    for t in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(
            refused(Some("a"), None, Some(t), None),
            "validation error: temperature must be a finite number"
        );
    }
    // The order of the checks: bounds first, then the messages type, then prompt xor messages.
    assert_eq!(
        refused(Some("a"), Some(json!("x")), Some(f64::NAN), Some(0)),
        "validation error: max_tokens must be an integer of at least 1"
    );
    assert_eq!(
        refused(Some("a"), Some(json!("x")), Some(f64::NAN), None),
        "validation error: messages must be a list"
    );
}

#[test]
fn chat_request_check_applies_to_hand_built_requests() {
    let zero = ChatRequest {
        prompt: Some("a".into()),
        max_tokens: Some(0),
        ..ChatRequest::default()
    };
    assert_eq!(
        zero.check().unwrap_err().message,
        "validation error: max_tokens must be an integer of at least 1"
    );
    let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
    assert_eq!(
        ep.chat_body(&zero, false).unwrap_err().kind,
        ErrorKind::Validation
    );
    let fine = ChatRequest {
        prompt: Some("a".into()),
        max_tokens: Some(1),
        ..ChatRequest::default()
    };
    assert!(fine.check().is_ok());
}

#[test]
fn top_n_bounds() {
    assert_eq!(checked_top_n(1).unwrap(), 1);
    assert_eq!(checked_top_n(i64::from(u32::MAX)).unwrap(), u32::MAX);
    for bad in [0, -1, i64::MIN] {
        let err = checked_top_n(bad).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(
            err.message,
            "validation error: top_n must be an integer of at least 1"
        );
    }
    for bad in [i64::from(u32::MAX) + 1, i64::MAX] {
        let err = checked_top_n(bad).unwrap_err();
        assert_eq!(err.message, "validation error: top_n is too large");
    }
}

#[tokio::test]
async fn rerank_refuses_top_n_zero_before_any_request() {
    // Port 9 has no listener: an attempt would fail as a connection error, not a validation error.
    let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
    let err = ep.rerank("q", vec!["a".into()], Some(0)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Validation);
    assert_eq!(
        err.message,
        "validation error: top_n must be an integer of at least 1"
    );
}

#[test]
fn completion_parts_tolerate_nulls_and_refuse_missing_choices() {
    assert_eq!(
        completion_parts(
            &json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]})
        )
        .unwrap(),
        CompletionParts {
            text: "hi".to_owned(),
            finish_reason: Some("stop".to_owned()),
            usage: None,
            tool_calls: vec![],
        }
    );
    assert_eq!(
        completion_parts(&json!({"choices": [{"message": {"content": null}}]})).unwrap(),
        CompletionParts {
            text: String::new(),
            finish_reason: None,
            usage: None,
            tool_calls: vec![],
        }
    );
    // Usage and tool calls, arguments as text or (some engines) as an object; a missing total is the sum.
    let parts = completion_parts(&json!({
        "choices": [{"message": {"content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": {"b": [true]}}},
        ]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5},
    }))
    .unwrap();
    assert_eq!(
        parts.usage,
        Some(Usage {
            prompt_tokens: 7,
            completion_tokens: 5,
            total_tokens: 12
        })
    );
    assert_eq!(
        parts.tool_calls,
        vec![
            ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{\"a\": 1}".into()
            },
            ToolCall {
                id: "call_2".into(),
                name: "g".into(),
                arguments: "{\"b\":[true]}".into()
            },
        ]
    );
    assert_eq!(parts.finish_reason.as_deref(), Some("tool_calls"));
    for (body, why) in [
        (json!({"choices": []}), "with an empty choices list"),
        (json!({}), "without a choices list"),
        (json!({"choices": null}), "without a choices list"),
        (
            json!({"choices": [{"index": 0}]}),
            "choice without a message",
        ),
    ] {
        let err = completion_parts(&body).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Api);
        assert_eq!(
            err.message,
            format!("malformed response: chat completion {why}")
        );
    }
}

#[test]
fn inband_error_shapes() {
    let nested = json!({"error": {"message": "boom", "type": "InternalServerError", "code": 500}});
    let err = inband_error(&nested, "w").unwrap();
    assert_eq!(err.kind, ErrorKind::Api);
    assert_eq!(err.message, "workload \"w\" reported an error: boom");
    assert_eq!(err.code.as_deref(), Some("500"));
    let flat = json!({"object": "error", "message": "bad request", "type": "BadRequestError", "code": 400});
    assert!(inband_error(&flat, "w")
        .unwrap()
        .message
        .ends_with("bad request"));
    assert!(inband_error(&json!({"error": null, "choices": []}), "w").is_none());
    assert!(inband_error(&json!({"choices": []}), "w").is_none());
}

fn stream_events(input: &[u8]) -> (Vec<ChatChunk>, DecodeState<'static>) {
    let mut decoder = SseDecoder::new();
    let mut state = DecodeState {
        slug: "w",
        done: false,
        finished: false,
        model_seen: false,
        error: None,
    };
    let mut batch = Vec::new();
    decoder.feed_with(input, |event| state.on_event(event, &mut batch));
    decoder.finish_with(|event| state.on_event(event, &mut batch));
    (batch, state)
}

#[test]
fn stream_dialects_decode() {
    let llama = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"finish_reason\":null}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"timings\":{}}\n\n\
data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n\
data: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n";
    let (chunks, state) = stream_events(llama);
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["", "Hi", "", ""]);
    assert_eq!(chunks[2].finish_reason.as_deref(), Some("stop"));
    assert_eq!(chunks[0].finish_reason, None);
    assert_eq!(
        chunks[3].raw(),
        json!({"choices": [], "usage": {"total_tokens": 3}})
    );
    assert!(state.done && state.finished && state.error.is_none());
}

/// What the stream read from one event when it parsed a `Value` tree: the reference for `event::decode`.
fn decode_by_value(data: &[u8]) -> std::result::Result<(bool, String, Option<String>), String> {
    let raw: Value = serde_json::from_slice(data).map_err(|err| err.to_string())?;
    let choice = raw.get("choices").and_then(|c| c.get(0));
    let text = content_text(
        choice
            .and_then(|c| c.get("delta"))
            .and_then(|d| d.get("content")),
    );
    let finish_reason = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((inband_error(&raw, "w").is_some(), text, finish_reason))
}

#[test]
fn typed_event_decode_matches_a_value_parse() {
    let cases: &[&[u8]] = &[
        br#"{"choices":[{"delta":{"content":"a\u00e9\n"},"finish_reason":null}]}"#,
        br#"{"choices":[{"delta":{"content":[{"type":"text","text":"x"},{"text":5},"s",{"text":"y"}]}}]}"#,
        br#"{"choices":[{"delta":{"content":"a","content":null},"finish_reason":"stop","finish_reason":1}]}"#,
        br#"{"choices":[{"delta":{"content":"a"}}],"choices":{"0":{}}}"#,
        br#"{"choices":[5,{"delta":{"content":"b"}}]}"#,
        br#"{"choices":[],"usage":{"total_tokens":3}}"#,
        br#"{"ch\u006fices":[{"d\u0065lta":{"c\u006fntent":"esc"},"finish_reason":"l\u0065ngth"}]}"#,
        br#"{"error":null,"object":"chat.completion.chunk","choices":[]}"#,
        br#"{"error":{"message":"oom"},"error":null}"#,
        br#"{"error":false}"#,
        br#"{"error":0}"#,
        br#"{"object":"error","message":"m"}"#,
        br#"{"object":"\u0065rror"}"#,
        br#"{"object":["error"]}"#,
        br#"[{"choices":[{"delta":{"content":"x"}}]}]"#,
        br#""text""#,
        b"5",
        b"null",
        br#"{"a":1e400}"#,
        br#"{"a":-0,"b":18446744073709551615,"c":-9223372036854775808,"d":1.5e-300}"#,
        b"{\"a\":\"\xff\"}",
        b"{\"\xff\":1}",
        br#"{"a":"\ud800"}"#,
        br#"{"a":1,}"#,
        br#"{"a":1} x"#,
        br#"{"a":tru}"#,
        b"{\"a\":\"tab\there\"}",
    ];
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let nested = format!(r#"{{"x":{}1{}}}"#, "[".repeat(127), "]".repeat(127));
    for data in cases
        .iter()
        .copied()
        .chain([deep.as_bytes(), nested.as_bytes()])
    {
        let typed = event::decode(data)
            .map(|f| (f.is_error, f.text, f.finish_reason))
            .map_err(|err| err.to_string());
        assert_eq!(
            typed,
            decode_by_value(data),
            "{}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn stream_errors() {
    let (chunks, state) = stream_events(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"oom\",\"code\":500}}\n\ndata: [DONE]\n\n");
    assert_eq!(chunks.len(), 1);
    assert!(state.error.unwrap().message.ends_with("oom"));
    let (_, state) = stream_events(b"event: error\ndata: {\"message\":\"evt\"}\n\n");
    assert!(state.error.unwrap().message.ends_with("evt"));
    let (_, state) = stream_events(b"event: error\ndata: plain words\n\n");
    assert!(state.error.unwrap().message.ends_with("plain words"));
    let (_, state) = stream_events(b"data: {not json\n\n");
    assert!(state
        .error
        .unwrap()
        .message
        .starts_with("malformed JSON in a stream event"));
    let (chunks, state) = stream_events(b"data:\n\n: ping\n\ndata: [DONE]\n\n");
    assert!(chunks.is_empty() && state.done && state.error.is_none());
}

#[test]
fn embeddings_floats_and_base64_by_index() {
    let b64 = base64::engine::general_purpose::STANDARD
        .encode([1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
    let body = json!({"data": [{"index": 1, "embedding": b64}, {"index": 0, "embedding": [0.25, 1]}], "model": "e"});
    assert_eq!(
        decode_embeddings(&body, 2).unwrap(),
        vec![vec![0.25, 1.0], vec![1.5, -2.0]]
    );
    assert_eq!(
        decode_embeddings(&json!({"data": [{"embedding": [1]}]}), 1).unwrap(),
        vec![vec![1.0]]
    );
    let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(1.5f32.to_le_bytes());
    assert_eq!(
        decode_embeddings(&json!({"data": [{"embedding": unpadded}]}), 1).unwrap(),
        vec![vec![1.5]]
    );
    // Long vectors (the SIMD decoder's blocks and its tail), padded or not, with each length modulo 3 of bytes.
    for len in [1usize, 2, 3, 5, 1024, 1027] {
        let vector: Vec<f32> = (0..len).map(|i| i as f32 * 0.37 - 11.5).collect();
        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
        ] {
            let encoded = engine.encode(&bytes);
            assert_eq!(
                decode_embeddings(&json!({"data": [{"embedding": encoded}]}), 1).unwrap(),
                vec![vector.clone()],
                "{len}"
            );
        }
    }
    for bad in [
        json!({"data": [{"embedding": "AAA"}]}),
        json!({"data": [{"embedding": "AAAA==="}]}),
        json!({"data": [{"embedding": "not base64!"}]}),
        json!({"data": [{"embedding": ["x"]}]}),
        json!({"data": [{"index": "0", "embedding": [1]}]}),
        json!({"data": [{}]}),
        json!({"nodata": true}),
    ] {
        assert_eq!(
            decode_embeddings(&bad, 1).unwrap_err().kind,
            ErrorKind::Api,
            "{bad}"
        );
    }
    assert!(decode_embeddings(&json!({"data": [{"embedding": [1]}]}), 2).is_err());
}

#[test]
fn rerank_results() {
    let body =
        json!({"results": [{"index": 2, "relevance_score": 0.9}, {"index": 0, "score": 0.1}]});
    assert_eq!(
        decode_rerank(&body).unwrap(),
        vec![
            RerankResult {
                index: 2,
                relevance_score: 0.9
            },
            RerankResult {
                index: 0,
                relevance_score: 0.1
            }
        ]
    );
    assert!(decode_rerank(&json!({"results": [{"index": 0}]})).is_err());
    assert!(decode_rerank(&json!({})).is_err());
}

fn chunk(text: &str) -> ChatChunk {
    ChatChunk {
        text: text.into(),
        finish_reason: None,
        extras: None,
        data: Bytes::from_static(b"{}"),
    }
}

/// A stream fed by hand through the returned sender, as `pump` feeds a real one.
fn channel_stream() -> (mpsc::Sender<StreamMessage>, ChatStream) {
    let (sender, receiver) = mpsc::channel(8);
    let stream = ChatStream {
        receiver: Some(receiver),
        buffered: VecDeque::new(),
        failed: None,
        task: None,
        reply: StreamedReply::default(),
        fallback_model: "w".into(),
        direct: None,
    };
    (sender, stream)
}

#[tokio::test]
async fn batches_keep_order_and_error_comes_last() {
    let (sender, mut stream) = channel_stream();
    sender
        .send(StreamMessage::Chunks(vec![
            chunk("a"),
            chunk("b"),
            chunk("c"),
        ]))
        .await
        .unwrap();
    sender
        .send(StreamMessage::Chunks(vec![chunk("d"), chunk("e")]))
        .await
        .unwrap();
    sender
        .send(StreamMessage::Failed(Error::api("boom")))
        .await
        .unwrap();
    drop(sender);
    let texts = |batch: Vec<ChatChunk>| batch.into_iter().map(|c| c.text).collect::<Vec<_>>();
    assert_eq!(
        texts(stream.next_batch(4).await.unwrap()),
        ["a", "b", "c", "d"]
    );
    assert_eq!(texts(stream.next_batch(4).await.unwrap()), ["e"]);
    assert_eq!(stream.next_batch(4).await.unwrap_err().message, "boom");
    assert!(stream.next_batch(4).await.unwrap().is_empty());
}

#[tokio::test]
async fn batch_of_one_and_clean_end() {
    let (sender, mut stream) = channel_stream();
    sender
        .send(StreamMessage::Chunks(vec![chunk("a"), chunk("b")]))
        .await
        .unwrap();
    drop(sender);
    assert_eq!(stream.next_batch(0).await.unwrap().len(), 1);
    assert_eq!(stream.next_batch(1).await.unwrap()[0].text, "b");
    assert!(stream.next_batch(1).await.unwrap().is_empty());
}

#[tokio::test]
async fn ready_stream_yields_then_finishes() {
    let mut stream = ChatStream::ready(ChatChunk {
        text: "x".into(),
        finish_reason: Some("stop".into()),
        extras: None,
        data: Bytes::from_static(b"{}"),
    });
    let batch = stream.next_batch(8).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert!(stream.next_batch(8).await.unwrap().is_empty());
}

/// The reply a stream of `input` assembles, through the same decode and the same consumer as a real one.
async fn assembled(input: &[u8]) -> StreamedReply {
    let (chunks, state) = stream_events(input);
    assert!(state.error.is_none(), "{:?}", state.error);
    let (sender, mut stream) = channel_stream();
    sender.send(StreamMessage::Chunks(chunks)).await.unwrap();
    drop(sender);
    stream.final_result().await.unwrap()
}

#[tokio::test]
async fn streamed_usage_and_model_are_kept() {
    let vllm = b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"length\"}]}\n\n\
data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":32,\"total_tokens\":35,\"completion_tokens\":3}}\n\n\
data: [DONE]\n\n";
    let (chunks, _) = stream_events(vllm);
    assert_eq!(
        chunks[0].extras.as_ref().unwrap().model.as_deref(),
        Some("m")
    );
    assert!(chunks[1].extras.is_none());
    let usage = Usage {
        prompt_tokens: 32,
        completion_tokens: 3,
        total_tokens: 35,
    };
    assert_eq!(chunks[2].usage(), Some(usage));
    let reply = assembled(vllm).await;
    assert_eq!(
        (
            reply.text.as_str(),
            reply.model.as_deref(),
            reply.finish_reason.as_deref(),
            reply.usage
        ),
        ("Hi", Some("m"), Some("length"), Some(usage))
    );
    // SGLang's explicit nulls carry no usage.
    let sglang = b"data: {\"id\":\"1\",\"model\":\"s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\",\"tool_calls\":null},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
    let (chunks, _) = stream_events(sglang);
    let extras = chunks[0].extras.as_ref().unwrap();
    assert_eq!(
        (
            extras.usage,
            extras.tool_calls.as_ref(),
            extras.model.as_deref()
        ),
        (None, None, Some("s"))
    );
}

#[tokio::test]
async fn streamed_tool_calls_assemble_in_every_dialect_shape() {
    let expected = vec![ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{\"city\": \"Paris\"}".into(),
    }];
    // vLLM: the name first, then argument fragments carrying only the index.
    let vllm = b"data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"index\":0,\"function\":{\"name\":\"get_weather\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": \"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
    // SGLang: explicit nulls for the id and name after the first fragment.
    let sglang = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}],\"usage\":null}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":null,\"type\":\"function\",\"function\":{\"name\":null,\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]}}],\"usage\":null}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":null},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\ndata: [DONE]\n\n";
    // Ollama: each call whole in one chunk.
    let ollama = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"call_1\",\"index\":0,\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
    for (dialect, input) in [
        ("vllm", &vllm[..]),
        ("sglang", &sglang[..]),
        ("ollama", &ollama[..]),
    ] {
        let reply = assembled(input).await;
        assert_eq!(reply.tool_calls, expected, "{dialect}");
        assert_eq!(
            reply.finish_reason.as_deref(),
            Some("tool_calls"),
            "{dialect}"
        );
        assert_eq!(reply.text, "", "{dialect}");
    }
    // Two calls interleaved by index, and a fragment list without indexes (position is the index).
    let two = b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{\"}},{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"[\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"]\"}},{\"index\":1,\"function\":{\"arguments\":\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n";
    let reply = assembled(two).await;
    let got: Vec<(&str, &str, &str)> = reply
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
        .collect();
    assert_eq!(got, [("b", "g", "{}"), ("a", "f", "[]")]);
}

#[test]
fn the_one_pass_embeddings_decoder_agrees_with_the_general_path() {
    let b64 = base64::engine::general_purpose::STANDARD
        .encode([1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
    // Base64 with an escaped slash (legal JSON, not borrowable) must still decode, through the general path.
    let escaped = base64::engine::general_purpose::STANDARD
        .encode(f32::from_bits(0x3fff_fffc).to_le_bytes())
        .replace('/', "\\/");
    let bodies = [
        json!({"data": [{"index": 1, "embedding": b64}, {"index": 0, "embedding": [0.25, 1]}], "model": "e",
               "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
        json!({"data": [{"embedding": [1, 2]}, {"embedding": b64}]}),
        json!({"data": [{"index": null, "embedding": [1]}, {"embedding": [2]}]}),
        json!({"data": [{"embedding": [1]}, {"embedding": "AAA"}]}),
        json!({"data": [{"embedding": [1]}, {}]}),
        json!({"data": [{"embedding": [1]}, {"embedding": ["x"]}]}),
        json!({"data": [{"embedding": [1]}, {"embedding": [2]}], "error": {"message": "overloaded"}}),
        json!({"data": [{"embedding": [1]}, {"embedding": [2]}], "object": "error", "message": "no"}),
        json!({"data": [{"embedding": [1]}, {"embedding": [2]}], "model": 7}),
        json!({"data": [{"embedding": [1]}]}),
        json!({"nodata": true}),
    ];
    let mut texts: Vec<String> = bodies.iter().map(Value::to_string).collect();
    texts.push(format!(
        r#"{{"data": [{{"embedding": "{escaped}"}}, {{"embedding": [1]}}]}}"#
    ));
    texts.push(
        r#"{"data": [{"embedding": [1]}, {"embedding": [2]}], "model": "a", "model": "b"}"#
            .to_owned(),
    );
    texts.push("not json".to_owned());
    for text in texts {
        let general = answer_json(text.as_bytes(), "embeddings", "w").and_then(|raw| {
            Ok((
                decode_embeddings(&raw, 2)?,
                raw.get("model").and_then(Value::as_str).map(str::to_owned),
                Usage::of(&raw),
            ))
        });
        let fast = embed_parts(text.as_bytes(), 2, "w").map(|p| (p.vectors, p.model, p.usage));
        assert_same_outcome(&text, general, fast);
    }
}

/// The general and the one-pass decoding of `text` end alike: the same value, or the same error.
fn assert_same_outcome<T: PartialEq + std::fmt::Debug>(
    text: &str,
    general: crate::error::Result<T>,
    fast: crate::error::Result<T>,
) {
    match (general, fast) {
        (Ok(general), Ok(fast)) => assert_eq!(general, fast, "{text}"),
        (Err(general), Err(fast)) => {
            assert_eq!(
                (general.kind, general.message),
                (fast.kind, fast.message),
                "{text}"
            );
        }
        (general, fast) => panic!("{text}: {general:?} / {fast:?}"),
    }
}

#[test]
fn the_one_pass_chat_decoder_agrees_with_the_general_path() {
    let message = |m: Value| json!({"choices": [{"index": 0, "message": m, "finish_reason": "stop"}], "model": "m"});
    let bodies = [
        message(json!({"role": "assistant", "content": "hello"})),
        message(json!({"role": "assistant", "content": "tab\there \"quoted\" \u{e9}"})),
        message(json!({"role": "assistant", "content": null})),
        message(json!({"role": "assistant"})),
        message(json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})),
        message(
            json!({"content": "", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": "{\"x\":1}"}}]}),
        ),
        message(json!({"content": "x", "tool_calls": null})),
        message(json!("not an object")),
        message(Value::Null),
        json!({"choices": [{"delta": {"content": "d"}, "finish_reason": null}]}),
        json!({"choices": [{"message": {"content": "x"}, "finish_reason": 3}]}),
        json!({"choices": [], "model": "m"}),
        json!({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}),
        json!({"choices": [{"message": {"content": "x"}}], "usage": "lots"}),
        json!({"choices": [{"message": {"content": "x"}}], "error": {"message": "overloaded"}}),
        json!({"choices": [{"message": {"content": "x"}}], "error": null}),
        json!({"object": "error", "message": "no"}),
        json!({"model": 7, "choices": [{"message": {"content": "x"}}]}),
        json!({"nochoices": true}),
    ];
    let mut texts: Vec<String> = bodies.iter().map(Value::to_string).collect();
    texts.push(r#"{"choices": [{"message": {"content": "a", "content": "b"}}]}"#.to_owned());
    texts.push("not json".to_owned());
    for text in texts {
        let general = answer_json(text.as_bytes(), "chat completion", "w").and_then(|raw| {
            let model = raw.get("model").and_then(Value::as_str).map(str::to_owned);
            Ok((completion_parts(&raw)?, model))
        });
        assert_same_outcome(&text, general, chat_parts(text.as_bytes(), "w"));
    }
}
