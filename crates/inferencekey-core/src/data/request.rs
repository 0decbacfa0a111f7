//! What the data plane sends: the checked chat request and the JSON bodies of chat, embeddings and rerank.

use bytes::Bytes;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::args::{at_least, below_bound};
use crate::error::{Error, Result};

/// A chat request: exactly one of `prompt` / `messages`; unset parameters are not sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// One user turn.
    pub prompt: Option<String>,
    /// OpenAI-style message dicts, forwarded as given.
    pub messages: Option<Vec<Value>>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Completion length limit.
    pub max_tokens: Option<u64>,
    /// Every other parameter (sampling, tools, structured output, passthrough); `None` when none is set, which
    /// keeps the common request small.
    pub options: Option<Box<ChatOptions>>,
}

/// The chat parameters beyond the four above, under their OpenAI names, as the user gave them (`None`: not sent).
/// JSON-shaped ones stay JSON: they are checked in place and sent as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatOptions {
    /// A stop string, or a list of at most 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    /// Nucleus sampling mass, in (0, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// In [-2, 2].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// In [-2, 2].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Ask for the chosen tokens' log probabilities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// Alternatives per token, 0 to 20 (needs `logprobs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<i64>,
    /// Function tools: `[{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name"}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// `{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {"name", "schema"?, ...}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Streams only: `{"include_usage": true}` asks for a final usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Value>,
    /// Merged into the body last (its keys win), for engine parameters the SDK does not name.
    #[serde(skip)]
    pub extra_body: Option<Value>,
}

/// The most stop sequences a request may carry (OpenAI's limit).
const MAX_STOP: usize = 4;
/// The most alternatives per token `top_logprobs` may ask for.
const MAX_TOP_LOGPROBS: i64 = 20;

impl ChatOptions {
    /// Whether nothing is set (such options are not kept on a request).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Every rule of these options, before any request; `stream` says which call they are for (`stream_options`
    /// only goes with a stream).
    pub fn check(&self, stream: bool) -> Result<()> {
        if let Some(stop) = &self.stop {
            check_stop(stop)?;
        }
        if let Some(top_p) = self.top_p {
            if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
                return Err(Error::validation(
                    "top_p must be a number greater than 0 and at most 1",
                ));
            }
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && (-2.0..=2.0).contains(&v))) {
                return Err(Error::validation(format_args!(
                    "{name} must be a number from -2 to 2"
                )));
            }
        }
        if let Some(top) = self.top_logprobs {
            if !(0..=MAX_TOP_LOGPROBS).contains(&top) {
                return Err(Error::validation(format_args!(
                    "top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}"
                )));
            }
            if self.logprobs != Some(true) {
                return Err(Error::validation("top_logprobs needs logprobs=True"));
            }
        }
        let names = match &self.tools {
            Some(tools) => check_tools(tools)?,
            None => Vec::new(),
        };
        if let Some(choice) = &self.tool_choice {
            check_tool_choice(choice, self.tools.is_some(), &names)?;
        }
        if let Some(format) = &self.response_format {
            check_response_format(format)?;
        }
        if let Some(options) = &self.stream_options {
            if !stream {
                return Err(Error::validation(
                    "stream_options only goes with a streamed chat (generate_text_stream)",
                ));
            }
            check_stream_options(options)?;
        }
        if let Some(extra) = &self.extra_body {
            let Some(map) = extra.as_object() else {
                return Err(Error::validation("extra_body must be a dict"));
            };
            if map.contains_key("stream") {
                return Err(Error::validation(
                    "extra_body must not set stream: call generate_text or generate_text_stream instead",
                ));
            }
        }
        Ok(())
    }

    /// Whether the caller asked a stream for its usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// `stop`: one string, or a list of at most four strings.
fn check_stop(stop: &Value) -> Result<()> {
    match stop {
        Value::String(_) => Ok(()),
        Value::Array(items) if items.len() > MAX_STOP => Err(Error::validation(format_args!(
            "stop takes at most {MAX_STOP} sequences, got {}",
            items.len()
        ))),
        Value::Array(items) => match items.iter().position(|item| !item.is_string()) {
            Some(i) => Err(Error::validation(format_args!("stop[{i}] must be a str"))),
            None => Ok(()),
        },
        _ => Err(Error::validation("stop must be a str or a list of str")),
    }
}

/// A function name as OpenAI-compatible servers accept it: 1 to 64 of `a-z A-Z 0-9 _ -`.
fn valid_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The object at `key` of `parent` (named `path` in errors), if present.
fn object_at<'a>(
    parent: &'a Value,
    key: &str,
    path: &str,
) -> Result<Option<&'a serde_json::Map<String, Value>>> {
    match parent.get(key) {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(Error::validation(format_args!(
            "{path}.{key} must be a dict"
        ))),
    }
}

/// A required name at `key` of `map` (for `path`), checked as a function name.
fn name_at<'a>(map: &'a serde_json::Map<String, Value>, path: &str) -> Result<&'a str> {
    match map.get("name") {
        Some(Value::String(name)) if valid_function_name(name) => Ok(name),
        Some(Value::String(_)) => Err(Error::validation(format_args!(
            "{path}.name must be 1 to 64 letters, digits, underscores or dashes"
        ))),
        Some(_) => Err(Error::validation(format_args!("{path}.name must be a str"))),
        None => Err(Error::validation(format_args!("{path}.name is missing"))),
    }
}

/// `tools`: a list of function tools; returns their names, in order.
fn check_tools(tools: &Value) -> Result<Vec<&str>> {
    let Value::Array(items) = tools else {
        return Err(Error::validation("tools must be a list"));
    };
    let mut names = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        let path = format!("tools[{i}]");
        if !tool.is_object() {
            return Err(Error::validation(format_args!("{path} must be a dict")));
        }
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(Error::validation(format_args!(
                "{path}.type must be \"function\""
            )));
        }
        let Some(function) = object_at(tool, "function", &path)? else {
            return Err(Error::validation(format_args!(
                "{path}.function is missing"
            )));
        };
        let path = format!("{path}.function");
        let name = name_at(function, &path)?;
        if function.get("description").is_some_and(|d| !d.is_string()) {
            return Err(Error::validation(format_args!(
                "{path}.description must be a str"
            )));
        }
        if function.get("parameters").is_some_and(|p| !p.is_object()) {
            return Err(Error::validation(format_args!(
                "{path}.parameters must be a dict (a JSON schema)"
            )));
        }
        if function.get("strict").is_some_and(|s| !s.is_boolean()) {
            return Err(Error::validation(format_args!(
                "{path}.strict must be a bool"
            )));
        }
        if names.contains(&name) {
            return Err(Error::validation(format_args!(
                "{path}.name {name:?} is used by an earlier tool"
            )));
        }
        names.push(name);
    }
    Ok(names)
}

/// `tool_choice`: a mode, or one of the tools by name.
fn check_tool_choice(choice: &Value, has_tools: bool, names: &[&str]) -> Result<()> {
    let named = match choice {
        Value::String(mode) if mode == "none" => return Ok(()),
        Value::String(mode) if mode == "auto" || mode == "required" => None,
        Value::String(mode) => {
            return Err(Error::validation(format_args!(
                "tool_choice must be \"none\", \"auto\", \"required\" or a function, got {mode:?}"
            )))
        }
        Value::Object(_) => {
            if choice.get("type").and_then(Value::as_str) != Some("function") {
                return Err(Error::validation("tool_choice.type must be \"function\""));
            }
            let Some(function) = object_at(choice, "function", "tool_choice")? else {
                return Err(Error::validation("tool_choice.function is missing"));
            };
            Some(name_at(function, "tool_choice.function")?)
        }
        _ => return Err(Error::validation("tool_choice must be a str or a dict")),
    };
    if !has_tools {
        return Err(Error::validation("tool_choice needs tools"));
    }
    match named {
        Some(name) if !names.contains(&name) => Err(Error::validation(format_args!(
            "tool_choice names the function {name:?}, which is not among tools"
        ))),
        _ => Ok(()),
    }
}

/// `response_format`: plain text, any JSON object, or JSON valid against a named schema.
fn check_response_format(format: &Value) -> Result<()> {
    if !format.is_object() {
        return Err(Error::validation("response_format must be a dict"));
    }
    match format.get("type").and_then(Value::as_str) {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema") => {
            let Some(schema) = object_at(format, "json_schema", "response_format")? else {
                return Err(Error::validation(
                    "response_format.json_schema is missing (type \"json_schema\" needs it)",
                ));
            };
            let path = "response_format.json_schema";
            name_at(schema, path)?;
            if schema.get("schema").is_some_and(|s| !s.is_object()) {
                return Err(Error::validation(format_args!(
                    "{path}.schema must be a dict"
                )));
            }
            if schema.get("strict").is_some_and(|s| !s.is_boolean()) {
                return Err(Error::validation(format_args!(
                    "{path}.strict must be a bool"
                )));
            }
            Ok(())
        }
        _ => Err(Error::validation(
            "response_format.type must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

/// `stream_options`: a dict whose `include_usage`, when present, is a bool.
fn check_stream_options(options: &Value) -> Result<()> {
    if !options.is_object() {
        return Err(Error::validation("stream_options must be a dict"));
    }
    if options
        .get("include_usage")
        .is_some_and(|v| !v.is_boolean())
    {
        return Err(Error::validation(
            "stream_options.include_usage must be a bool",
        ));
    }
    Ok(())
}

impl ChatRequest {
    /// A request from the values a user passed, with every chat rule checked before any request: `max_tokens`
    /// at least 1, `messages` a JSON array (`Null` counts as not given, the way a binding passes `None`),
    /// then [`ChatRequest::check`]. Each failure is an `ErrorKind::Validation`.
    pub fn from_user(
        prompt: Option<String>,
        messages: Option<Value>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
    ) -> Result<Self> {
        let max_tokens = max_tokens
            .map(|n| at_least("max_tokens", n, 1))
            .transpose()?;
        let messages = match messages {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => return Err(Error::validation("messages must be a list")),
        };
        let request = Self {
            prompt,
            messages,
            temperature,
            max_tokens,
            options: None,
        };
        request.check()?;
        Ok(request)
    }

    /// The request with `options`, after their rules (`stream` says which call it is for); empty options are
    /// not kept.
    pub fn with_options(mut self, options: ChatOptions, stream: bool) -> Result<Self> {
        options.check(stream)?;
        self.options = (!options.is_empty()).then(|| Box::new(options));
        Ok(self)
    }

    /// The rules of a chat request, which `Endpoint::chat` and `chat_stream` also apply before sending:
    /// exactly one of `prompt` / `messages`, a finite `temperature`, `max_tokens` at least 1.
    pub fn check(&self) -> Result<()> {
        self.checked_messages().map(drop)
    }

    /// The messages to send, once every rule of `check` holds (one place for the rules and their wording).
    pub(super) fn checked_messages(&self) -> Result<Messages<'_>> {
        let messages = match (&self.prompt, &self.messages) {
            (Some(_), Some(_)) => {
                return Err(Error::validation(
                    "pass either prompt or messages, not both",
                ))
            }
            (None, None) => return Err(Error::validation("pass prompt or messages")),
            (Some(prompt), None) => Messages::Prompt(prompt),
            (None, Some(messages)) => Messages::List(messages),
        };
        if self.temperature.is_some_and(|t| !t.is_finite()) {
            return Err(Error::validation("temperature must be a finite number"));
        }
        if self.max_tokens == Some(0) {
            return Err(below_bound("max_tokens", 1));
        }
        Ok(messages)
    }
}

/// A rerank `top_n` from the value a user passed: at least 1 and at most `u32::MAX`, else an
/// `ErrorKind::Validation` (`validation error: top_n must be an integer of at least 1`, `… top_n is too large`).
pub fn checked_top_n(top_n: i64) -> Result<u32> {
    at_least("top_n", top_n, 1)
}

/// How embeddings travel on the wire. The SDK asks for base64 by default: 4x fewer bytes than JSON numbers
/// and no float parsing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// JSON arrays of numbers.
    Float,
    /// Base64 of little-endian float32; float replies are still accepted.
    #[default]
    Base64,
}

/// The chat body: exactly `model`, `messages`, `stream` and the parameters that are set.
#[derive(Serialize)]
pub(super) struct ChatBody<'a> {
    pub(super) model: &'a str,
    pub(super) messages: Messages<'a>,
    pub(super) stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_tokens: Option<u64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(super) options: Option<&'a ChatOptions>,
}

pub(super) enum Messages<'a> {
    Prompt(&'a str),
    List(&'a [Value]),
}

#[derive(Serialize)]
pub(super) struct UserMessage<'a> {
    pub(super) role: &'static str,
    pub(super) content: &'a str,
}

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Prompt(prompt) => {
                let mut seq = serializer.serialize_seq(Some(1))?;
                seq.serialize_element(&UserMessage {
                    role: "user",
                    content: prompt,
                })?;
                seq.end()
            }
            Self::List(messages) => messages.serialize(serializer),
        }
    }
}

#[derive(Serialize)]
pub(super) struct EmbedBody<'a> {
    pub(super) model: &'a str,
    pub(super) input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) encoding_format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dimensions: Option<u64>,
}

/// The embeddings parameters beyond `input`, as the user gave them (`None`: not sent).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmbedOptions {
    /// The vectors' size, for models that can shorten them (at least 1).
    pub dimensions: Option<u64>,
    /// Merged into the body last (its keys win), for engine parameters the SDK does not name.
    pub extra_body: Option<Value>,
}

impl EmbedOptions {
    /// Options from the values a user passed, checked: `dimensions` at least 1, `extra_body` a dict.
    pub fn from_user(dimensions: Option<i64>, extra_body: Option<Value>) -> Result<Self> {
        let dimensions = dimensions
            .map(|n| at_least("dimensions", n, 1))
            .transpose()?;
        if extra_body.as_ref().is_some_and(|extra| !extra.is_object()) {
            return Err(Error::validation("extra_body must be a dict"));
        }
        Ok(Self {
            dimensions,
            extra_body,
        })
    }
}

#[derive(Serialize)]
pub(super) struct RerankBody<'a> {
    pub(super) model: &'a str,
    pub(super) query: &'a str,
    pub(super) documents: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_n: Option<u32>,
}

/// `body` as a JSON object with `extra`'s keys laid over it (`extra_body`: merged last, its keys win).
pub(super) fn merged(
    body: &impl Serialize,
    extra: &serde_json::Map<String, Value>,
) -> Result<Value> {
    let mut value = serde_json::to_value(body)
        .map_err(|err| Error::api(format!("cannot encode the request: {err}")))?;
    if let Value::Object(map) = &mut value {
        for (key, item) in extra {
            map.insert(key.clone(), item.clone());
        }
    }
    Ok(value)
}

pub(super) fn encode(body: &impl Serialize) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|err| Error::api(format!("cannot encode the request: {err}")))
}
