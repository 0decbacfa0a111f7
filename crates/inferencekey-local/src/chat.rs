//! The OpenAI chat request fields beyond messages and `max_tokens` that the synthetic engines
//! honour (`stop`, `seed`, sampling ranges, `logprobs`, `tools`/`tool_choice`, `response_format`),
//! and the reply they plan from them: text tokens cut at a stop string, or tool calls whose
//! arguments follow the function's schema. See README "Platform behaviour" for the rules.

use serde_json::{json, Map, Value};

use crate::engines;
use crate::rng::{fnv1a, SplitMix64, FNV_BASIS};
use crate::schema;

/// Most `top_logprobs` the engines return (vLLM's default `max_logprobs`, OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u64 = 20;
/// Characters per streamed piece of a JSON text (tool-call arguments, JSON replies).
const PIECE_CHARS: usize = 4;

/// A function the model may call.
#[derive(Debug, Clone)]
pub struct Tool {
    /// `function.name`.
    pub name: String,
    /// `function.parameters` (a JSON schema; an empty object schema when absent).
    pub parameters: Value,
}

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Never call a tool.
    None,
    /// Call the tools the last user message names (the default with tools).
    Auto,
    /// Call at least one tool.
    Required,
    /// Call this function.
    Named(String),
}

/// What `response_format` asks for.
#[derive(Debug, Clone)]
pub enum ResponseFormat {
    /// Plain text (also when absent).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema.
    JsonSchema(Value),
}

/// The request fields this module acts on.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Stop strings (empty ones dropped).
    pub stop: Vec<String>,
    /// `seed`, as its 64 bits.
    pub seed: Option<u64>,
    /// `logprobs: true`.
    pub logprobs: bool,
    /// `top_logprobs` (0 when absent).
    pub top_logprobs: usize,
    /// `tools` (empty when absent).
    pub tools: Vec<Tool>,
    /// `tool_choice` (`auto` with tools, `none` without, when absent).
    pub tool_choice: ToolChoice,
    /// `parallel_tool_calls` (default true): false keeps at most one call.
    pub parallel_tool_calls: bool,
    /// `response_format`.
    pub response_format: ResponseFormat,
}

fn present<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|value| !value.is_null())
}

/// A number field within `[low, high]` (`low` excluded when `open_low`).
fn check_range(
    body: &Map<String, Value>,
    key: &str,
    (low, high): (f64, f64),
    open_low: bool,
) -> Result<(), String> {
    let Some(value) = present(body, key) else {
        return Ok(());
    };
    let number = value
        .as_f64()
        .ok_or_else(|| format!("{key} must be a number"))?;
    let low_ok = if open_low {
        number > low
    } else {
        number >= low
    };
    if low_ok && number <= high {
        return Ok(());
    }
    let open = if open_low { "(" } else { "[" };
    Err(format!(
        "{key} must be in {open}{low}, {high}], got {number}"
    ))
}

impl ChatOptions {
    /// Parses and validates the fields; the error is the engine's message (a 400).
    pub fn parse(body: &Map<String, Value>) -> Result<Self, String> {
        check_range(body, "temperature", (0.0, 2.0), false)?;
        check_range(body, "top_p", (0.0, 1.0), true)?;
        check_range(body, "presence_penalty", (-2.0, 2.0), false)?;
        check_range(body, "frequency_penalty", (-2.0, 2.0), false)?;
        let stop = match present(body, "stop") {
            None => Vec::new(),
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| "stop must be a string or a list of strings".to_string())?,
            Some(_) => return Err("stop must be a string or a list of strings".to_string()),
        };
        let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
        let seed = match present(body, "seed") {
            None => None,
            Some(value) => Some(
                value
                    .as_i64()
                    .map(|n| n as u64)
                    .or_else(|| value.as_u64())
                    .ok_or_else(|| "seed must be an integer".to_string())?,
            ),
        };
        let logprobs = match present(body, "logprobs") {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => return Err("logprobs must be a boolean".to_string()),
        };
        let top_logprobs = match present(body, "top_logprobs") {
            None => 0,
            Some(value) => {
                let n = value
                    .as_u64()
                    .filter(|n| *n <= MAX_TOP_LOGPROBS)
                    .ok_or_else(|| {
                        format!("top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}")
                    })?;
                if n > 0 && !logprobs {
                    return Err("when using top_logprobs, logprobs must be set to true".to_string());
                }
                n as usize
            }
        };
        let tools = parse_tools(present(body, "tools"))?;
        let tool_choice = parse_tool_choice(present(body, "tool_choice"), &tools)?;
        let parallel_tool_calls = match present(body, "parallel_tool_calls") {
            None => true,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => return Err("parallel_tool_calls must be a boolean".to_string()),
        };
        let response_format = parse_response_format(present(body, "response_format"))?;
        Ok(Self {
            stop,
            seed,
            logprobs,
            top_logprobs,
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
        })
    }
}

fn parse_tools(tools: Option<&Value>) -> Result<Vec<Tool>, String> {
    let Some(tools) = tools else {
        return Ok(Vec::new());
    };
    let list = tools
        .as_array()
        .ok_or_else(|| "tools must be a list of tool objects".to_string())?;
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(format!("tools[{i}].type must be \"function\""));
            }
            let function = tool
                .get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("tools[{i}].function is required"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .ok_or_else(|| format!("tools[{i}].function.name is required"))?;
            let parameters = match function.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(_) => {
                    return Err(format!(
                        "tools[{i}].function.parameters must be a JSON schema object"
                    ))
                }
            };
            Ok(Tool {
                name: name.to_string(),
                parameters,
            })
        })
        .collect()
}

fn parse_tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, String> {
    const SHAPE: &str = "tool_choice must be \"none\", \"auto\", \"required\" or \
                         {\"type\": \"function\", \"function\": {\"name\": ...}}";
    let parsed = match choice {
        None if tools.is_empty() => ToolChoice::None,
        None => ToolChoice::Auto,
        Some(Value::String(mode)) => match mode.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            _ => return Err(SHAPE.to_string()),
        },
        Some(Value::Object(named)) => {
            let name = named
                .get("function")
                .and_then(|function| function.get("name"))
                .and_then(Value::as_str)
                .filter(|_| named.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| SHAPE.to_string())?;
            ToolChoice::Named(name.to_string())
        }
        Some(_) => return Err(SHAPE.to_string()),
    };
    match &parsed {
        ToolChoice::Required if tools.is_empty() => {
            Err("tool_choice \"required\" needs tools".to_string())
        }
        ToolChoice::Named(name) if !tools.iter().any(|tool| &tool.name == name) => Err(format!(
            "tool_choice names function \"{name}\", which is not in tools"
        )),
        _ => Ok(parsed),
    }
}

fn parse_response_format(format: Option<&Value>) -> Result<ResponseFormat, String> {
    let Some(format) = format else {
        return Ok(ResponseFormat::Text);
    };
    let kind = format.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| "response_format.json_schema is required".to_string())?;
            if !spec.get("name").is_some_and(Value::is_string) {
                return Err("response_format.json_schema.name is required".to_string());
            }
            match spec.get("schema") {
                None | Some(Value::Null) => {
                    Ok(ResponseFormat::JsonSchema(json!({"type": "object"})))
                }
                Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema(schema.clone())),
                Some(_) => Err("response_format.json_schema.schema must be an object".to_string()),
            }
        }
        _ => Err(
            "response_format.type must be \"text\", \"json_object\" or \"json_schema\"".to_string(),
        ),
    }
}

/// One tool call of a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call id in the engine's style.
    pub id: String,
    /// The function called.
    pub name: String,
    /// The arguments as compact JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The pieces a real engine would generate: the name, then the argument text in pieces.
    pub fn pieces(&self) -> Vec<String> {
        let mut out = vec![self.name.clone()];
        out.extend(split_pieces(&self.arguments));
        out
    }

    /// The OpenAI `tool_calls[]` element of a non-stream reply.
    pub fn json(&self) -> Value {
        json!({"id": self.id, "type": "function",
               "function": {"name": self.name, "arguments": self.arguments}})
    }
}

/// A planned reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Text in tokens.
    Content {
        /// The tokens sent (after a `max_tokens` or stop cut).
        tokens: Vec<String>,
        /// `stop` or `length`.
        finish_reason: &'static str,
        /// The stop string that ended the reply, if one did.
        stop: Option<String>,
    },
    /// Tool calls (`finish_reason: "tool_calls"`).
    Tools(Vec<ToolCall>),
}

impl Planned {
    /// Completion tokens: text tokens, or per call its name and its argument pieces.
    pub fn completion_tokens(&self) -> u64 {
        match self {
            Planned::Content { tokens, .. } => tokens.len() as u64,
            Planned::Tools(calls) => calls.iter().map(|call| call.pieces().len() as u64).sum(),
        }
    }
}

/// `text` in pieces of up to [`PIECE_CHARS`] characters.
pub fn split_pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(PIECE_CHARS)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// The text of the last user message (string content or its text parts).
fn last_user_text(messages: &Value) -> String {
    let Some(message) = messages.as_array().and_then(|list| {
        list.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    }) else {
        return String::new();
    };
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The tools to call: `auto` calls every tool whose name the last user message contains
/// (case-insensitive, in `tools` order), none when the last message is a tool result; `required` the same, else the first tool; a named
/// choice that function; `none` nothing. `parallel_tool_calls: false` keeps the first.
pub fn chosen_tools<'t>(options: &'t ChatOptions, messages: &Value) -> Vec<&'t Tool> {
    let text = last_user_text(messages).to_lowercase();
    let mentioned: Vec<&Tool> = options
        .tools
        .iter()
        .filter(|tool| text.contains(&tool.name.to_lowercase()))
        .collect();
    // After a tool result, `auto` answers in text (so a client's tool loop ends).
    let after_tool_result = messages
        .as_array()
        .and_then(|list| list.last())
        .and_then(|last| last.get("role"))
        .and_then(Value::as_str)
        == Some("tool");
    let mut chosen = match &options.tool_choice {
        ToolChoice::None => Vec::new(),
        ToolChoice::Auto if after_tool_result => Vec::new(),
        ToolChoice::Auto => mentioned,
        ToolChoice::Required if mentioned.is_empty() => options.tools.iter().take(1).collect(),
        ToolChoice::Required => mentioned,
        ToolChoice::Named(name) => options
            .tools
            .iter()
            .filter(|tool| &tool.name == name)
            .take(1)
            .collect(),
    };
    if !options.parallel_tool_calls {
        chosen.truncate(1);
    }
    chosen
}

/// The seed of everything generated for one request: the platform seed, the messages and the
/// request's `seed` (when given; without it the hash is today's text seed).
pub fn reply_seed(platform_seed: u64, messages: &Value, request_seed: Option<u64>) -> u64 {
    let rendered = serde_json::to_string(messages).unwrap_or_default();
    let base = fnv1a(FNV_BASIS ^ platform_seed, rendered.as_bytes());
    match request_seed {
        Some(seed) => fnv1a(base, &seed.to_le_bytes()),
        None => base,
    }
}

/// Plans the reply: tool calls when the tool rule picks any (ids from `new_id`), else text —
/// JSON text for a JSON `response_format` — cut at `max_tokens` (`length`), then before the
/// first stop string (`stop`).
pub fn plan(
    platform_seed: u64,
    messages: &Value,
    max_tokens: Option<u64>,
    options: &ChatOptions,
    mut new_id: impl FnMut() -> String,
) -> Planned {
    let seed = reply_seed(platform_seed, messages, options.seed);
    let tools = chosen_tools(options, messages);
    if !tools.is_empty() {
        return Planned::Tools(
            tools
                .into_iter()
                .enumerate()
                .map(|(index, tool)| {
                    let mut rng = SplitMix64::new(fnv1a(seed ^ index as u64, tool.name.as_bytes()));
                    let arguments = schema::generate(&tool.parameters, &mut rng);
                    ToolCall {
                        id: new_id(),
                        name: tool.name.clone(),
                        arguments: serde_json::to_string(&arguments).unwrap_or_default(),
                    }
                })
                .collect(),
        );
    }
    let natural = engines::complete_from(seed, messages, None);
    let tokens = match &options.response_format {
        ResponseFormat::Text => natural.tokens,
        ResponseFormat::JsonObject => {
            let object = json!({"answer": natural.tokens.concat()});
            split_pieces(&serde_json::to_string(&object).unwrap_or_default())
        }
        ResponseFormat::JsonSchema(schema) => {
            let value = schema::generate(schema, &mut SplitMix64::new(seed));
            split_pieces(&serde_json::to_string(&value).unwrap_or_default())
        }
    };
    let (mut tokens, mut finish_reason) = match max_tokens {
        Some(limit) if (limit as usize) < tokens.len() => {
            (tokens.into_iter().take(limit as usize).collect(), "length")
        }
        _ => (tokens, "stop"),
    };
    let mut stop = None;
    if let Some((cut, matched)) = cut_at_stop(&tokens, &options.stop) {
        tokens = cut;
        finish_reason = "stop";
        stop = Some(matched);
    }
    Planned::Content {
        tokens,
        finish_reason,
        stop,
    }
}

/// The tokens before the first occurrence of any stop string (the token it starts in kept up to
/// it), and that string; `None` when no stop string occurs.
fn cut_at_stop(tokens: &[String], stops: &[String]) -> Option<(Vec<String>, String)> {
    let text = tokens.concat();
    let (at, matched) = stops
        .iter()
        .filter_map(|stop| text.find(stop.as_str()).map(|at| (at, stop)))
        .min_by_key(|(at, _)| *at)?;
    let mut kept = Vec::new();
    let mut offset = 0;
    for token in tokens {
        if offset + token.len() <= at {
            kept.push(token.clone());
            offset += token.len();
            continue;
        }
        if let Some(head) = token.get(..at - offset).filter(|head| !head.is_empty()) {
            kept.push(head.to_string());
        }
        break;
    }
    Some((kept, matched.clone()))
}

/// Alternatives offered in `top_logprobs` after the chosen token.
const ALTERNATIVES: &[&str] = &[
    " the", " a", " and", " to", " of", " is", " in", " it", " that", " for", " on", " with",
    " as", " at", " by", " this", " be", " or", " from", " an", " not",
];

/// The logprob entry of `token` at `position`: a logprob in [-1, -0.001] from a hash of both, and
/// `top` alternatives: the token itself first, then others whose probabilities halve the rest
/// (so they sort descending and the probabilities sum below 1).
pub fn logprob_entry(token: &str, position: usize, top: usize) -> Value {
    let hash = fnv1a(FNV_BASIS ^ position as u64, token.as_bytes());
    let unit = (hash >> 11) as f64 / (1u64 << 53) as f64;
    let logprob = -(0.001 + 0.999 * unit);
    let rest = (1.0 - logprob.exp()).ln();
    let entry = |text: &str, logprob: f64| json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()});
    let mut alternatives = vec![entry(token, logprob)];
    alternatives.extend(
        ALTERNATIVES
            .iter()
            .filter(|alt| **alt != token)
            .take(top.saturating_sub(1))
            .enumerate()
            .map(|(k, alt)| entry(alt, rest - (k as f64 + 1.0) * std::f64::consts::LN_2)),
    );
    alternatives.truncate(top);
    json!({"token": token, "logprob": logprob, "bytes": token.as_bytes(),
           "top_logprobs": alternatives})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn options(body: Value) -> Result<ChatOptions, String> {
        ChatOptions::parse(body.as_object().unwrap())
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stop_cuts_inside_a_token() {
        let tokens = words(&["Hi", " there", " friend"]);
        let (cut, matched) = cut_at_stop(&tokens, &words(&["ere", "fr"])).unwrap();
        assert_eq!((cut, matched.as_str()), (words(&["Hi", " th"]), "ere"));
        let (cut, _) = cut_at_stop(&tokens, &words(&[" there"])).unwrap();
        assert_eq!(cut, words(&["Hi"]));
        assert!(cut_at_stop(&tokens, &words(&["zzz"])).is_none());
    }

    #[test]
    fn ranges_and_shapes_are_checked() {
        assert!(options(json!({"temperature": 2.5})).is_err());
        assert!(options(json!({"temperature": 0, "top_p": 1, "presence_penalty": -2})).is_ok());
        assert!(options(json!({"top_p": 0})).is_err());
        assert!(options(json!({"frequency_penalty": 2.1})).is_err());
        assert!(options(json!({"top_logprobs": 21, "logprobs": true})).is_err());
        assert!(options(json!({"top_logprobs": 2})).is_err());
        assert!(options(json!({"tools": {}})).is_err());
        assert!(options(json!({"tools": [{"type": "function", "function": {}}]})).is_err());
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        assert!(options(json!({"tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "g"}}}))
        .is_err());
        assert!(options(json!({"tool_choice": "required"})).is_err());
        assert!(options(json!({"response_format": {"type": "xml"}})).is_err());
        assert_eq!(
            options(json!({"tools": tools})).unwrap().tool_choice,
            ToolChoice::Auto
        );
    }

    #[test]
    fn logprobs_sort_descending_and_stay_below_zero() {
        for top in [0, 1, 5, 20] {
            let entry = logprob_entry(" the", 3, top);
            let alternatives = entry["top_logprobs"].as_array().unwrap();
            assert_eq!(alternatives.len(), top);
            let values: Vec<f64> = alternatives
                .iter()
                .map(|a| a["logprob"].as_f64().unwrap())
                .collect();
            assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
            assert!(entry["logprob"].as_f64().unwrap() < 0.0);
            let mass: f64 = values.iter().map(|v| v.exp()).sum();
            assert!(mass <= 1.0);
            if top > 0 {
                assert_eq!(alternatives[0]["token"], " the");
            }
        }
    }
}
