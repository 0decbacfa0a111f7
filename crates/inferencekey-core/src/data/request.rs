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
        };
        request.check()?;
        Ok(request)
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
}

#[derive(Serialize)]
pub(super) struct RerankBody<'a> {
    pub(super) model: &'a str,
    pub(super) query: &'a str,
    pub(super) documents: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_n: Option<u32>,
}

pub(super) fn encode(body: &impl Serialize) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|err| Error::api(format!("cannot encode the request: {err}")))
}
