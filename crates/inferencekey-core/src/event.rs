//! The typed decode of one streamed chat event. It is a single pass that validates the JSON exactly as a
//! `serde_json::Value` parse would (UTF-8 of every string, number range, nesting depth, duplicate keys resolved
//! last-wins) but keeps only what the stream needs, so no JSON tree is allocated per chunk.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::data::Usage;

/// What the stream reads from one event.
#[derive(Default)]
pub(crate) struct EventFields {
    /// An in-band error: a top-level object with a non-null `error` or `"object": "error"`.
    pub is_error: bool,
    /// `choices[0].delta.content` as text (a string, or the `text` of each part of list-form content).
    pub text: String,
    /// `choices[0].finish_reason` when it is a string.
    pub finish_reason: Option<String>,
    /// The top-level `usage` object, when the event carries one (not `null`).
    pub usage: Option<Usage>,
    /// `choices[0].delta.tool_calls`, when the event carries any: fragments of the calls, keyed by `index`.
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl ToolCallDelta {
    /// A whole call as one fragment (a reply that came in one piece).
    pub fn whole(call: crate::data::ToolCall) -> Self {
        Self {
            index: None,
            id: Some(call.id),
            name: Some(call.name),
            arguments: Some(call.arguments),
        }
    }
}

/// One fragment of a streamed tool call: the first names the call (`id`, `name`); the others add to `arguments`.
/// Engines differ in which fields each fragment repeats (see engine-dialects), so every one is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the reply this adds to (its position when the engine sends no index).
    pub index: Option<u64>,
    /// The call's id.
    pub id: Option<String>,
    /// The function's name.
    pub name: Option<String>,
    /// More of the arguments' JSON text.
    pub arguments: Option<String>,
}

/// Decode one event's data; the error is the one a `Value` parse of the same bytes reports.
pub(crate) fn decode(data: &[u8]) -> serde_json::Result<EventFields> {
    // One UTF-8 check of the whole event is cheaper than one per string; bytes that fail it take the slice
    // parser, which reports the error exactly where a `Value` parse would.
    match std::str::from_utf8(data) {
        Ok(text) => serde_json::from_str::<Decode<EventFields>>(text),
        Err(_) => serde_json::from_slice::<Decode<EventFields>>(data),
    }
    .map(|decoded| decoded.0)
}

/// A part of the JSON the decode looks into. Every kind of value a shape does not read is still fully
/// validated (`IgnoredAny` would skip strings and numbers unchecked) and gives the shape's default.
trait Shape: Default {
    fn null() -> Self {
        Self::default()
    }

    /// A boolean or a number.
    fn scalar() -> Self {
        Self::default()
    }

    fn from_str(text: &str) -> Self {
        let _ = text;
        Self::default()
    }

    /// A non-negative integer (`scalar` unless the shape keeps it).
    fn from_u64(value: u64) -> Self {
        let _ = value;
        Self::scalar()
    }

    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Decode<()>>()?.is_some() {}
        Ok(Self::default())
    }

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<Decode<()>, Decode<()>>()?.is_some() {}
        Ok(Self::default())
    }
}

/// Any value, validated and dropped.
impl Shape for () {}

/// A string, kept; anything else is `None`.
impl Shape for Option<String> {
    fn from_str(text: &str) -> Self {
        Some(text.to_owned())
    }
}

/// Whether the value is not `null`.
#[derive(Default)]
struct NotNull(bool);

impl Shape for NotNull {
    fn null() -> Self {
        Self(false)
    }

    fn scalar() -> Self {
        Self(true)
    }

    fn from_str(_: &str) -> Self {
        Self(true)
    }

    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        <()>::from_seq(seq).map(|()| Self(true))
    }

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        <()>::from_map(map).map(|()| Self(true))
    }
}

/// Whether the value is the string `"error"` (without copying it).
#[derive(Default)]
struct IsErrorString(bool);

impl Shape for IsErrorString {
    fn from_str(text: &str) -> Self {
        Self(text == "error")
    }
}

impl Shape for EventFields {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut error, mut object_error, mut choice) = (false, false, Choice::default());
        let mut usage = None;
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "error" => error = map.next_value::<Decode<NotNull>>()?.0 .0,
                "object" => object_error = map.next_value::<Decode<IsErrorString>>()?.0 .0,
                "choices" => choice = map.next_value::<Decode<Choices>>()?.0 .0,
                "usage" => usage = map.next_value::<Decode<UsageField>>()?.0 .0,
                _ => map.next_value::<Decode<()>>().map(drop)?,
            }
        }
        Ok(Self {
            is_error: error || object_error,
            text: choice.text,
            finish_reason: choice.finish_reason,
            usage,
            tool_calls: choice.tool_calls,
        })
    }
}

/// `choices[0]`, or the empty default when `choices` is not a non-empty list.
#[derive(Default)]
struct Choices(Choice);

impl Shape for Choices {
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let first = seq.next_element::<Decode<Choice>>()?;
        <()>::from_seq(seq)?;
        Ok(Self(first.map(|choice| choice.0).unwrap_or_default()))
    }
}

#[derive(Default)]
struct Choice {
    text: String,
    finish_reason: Option<String>,
    tool_calls: Option<Vec<ToolCallDelta>>,
}

impl Shape for Choice {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut choice = Self::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "delta" => {
                    let delta = map.next_value::<Decode<Delta>>()?.0;
                    choice.text = delta.text;
                    choice.tool_calls = delta.tool_calls;
                }
                "finish_reason" => {
                    choice.finish_reason = map.next_value::<Decode<Option<String>>>()?.0;
                }
                _ => map.next_value::<Decode<()>>().map(drop)?,
            }
        }
        Ok(choice)
    }
}

/// The text of a `delta`'s `content`, and its tool-call fragments.
#[derive(Default)]
struct Delta {
    text: String,
    tool_calls: Option<Vec<ToolCallDelta>>,
}

impl Shape for Delta {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut delta = Self::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "content" => delta.text = map.next_value::<Decode<Content>>()?.0 .0,
                "tool_calls" => delta.tool_calls = map.next_value::<Decode<ToolCalls>>()?.0 .0,
                _ => map.next_value::<Decode<()>>().map(drop)?,
            }
        }
        Ok(delta)
    }
}

/// A list of tool-call fragments (`null` or anything else: none).
#[derive(Default)]
struct ToolCalls(Option<Vec<ToolCallDelta>>);

impl Shape for ToolCalls {
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut calls = Vec::new();
        while let Some(call) = seq.next_element::<Decode<ToolCallDelta>>()? {
            calls.push(call.0);
        }
        Ok(Self(Some(calls)))
    }
}

impl Shape for ToolCallDelta {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut call = Self::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "index" => call.index = map.next_value::<Decode<Count>>()?.0 .0,
                "id" => call.id = map.next_value::<Decode<Option<String>>>()?.0,
                "function" => {
                    let function = map.next_value::<Decode<Function>>()?.0;
                    call.name = function.name;
                    call.arguments = function.arguments;
                }
                _ => map.next_value::<Decode<()>>().map(drop)?,
            }
        }
        Ok(call)
    }
}

/// A tool call's `function`: its name and (more of) its arguments. Arguments given as an object rather than
/// JSON text are not read here; the unary decode handles that shape.
#[derive(Default)]
struct Function {
    name: Option<String>,
    arguments: Option<String>,
}

impl Shape for Function {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut function = Self::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "name" => function.name = map.next_value::<Decode<Option<String>>>()?.0,
                "arguments" => function.arguments = map.next_value::<Decode<Option<String>>>()?.0,
                _ => map.next_value::<Decode<()>>().map(drop)?,
            }
        }
        Ok(function)
    }
}

/// A non-negative integer, kept.
#[derive(Default)]
struct Count(Option<u64>);

impl Shape for Count {
    fn from_u64(value: u64) -> Self {
        Self(Some(value))
    }
}

/// The `usage` object: its three counts (a missing total is the sum of the others); `null` is none.
#[derive(Default)]
struct UsageField(Option<Usage>);

impl Shape for UsageField {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut prompt, mut completion, mut total) = (None, None, None);
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "prompt_tokens" => prompt = map.next_value::<Decode<Count>>()?.0 .0,
                "completion_tokens" => completion = map.next_value::<Decode<Count>>()?.0 .0,
                "total_tokens" => total = map.next_value::<Decode<Count>>()?.0 .0,
                _ => map.next_value::<Decode<()>>().map(drop)?,
            }
        }
        Ok(Self(Usage::from_counts(prompt, completion, total)))
    }
}

/// Message content as text: a string, or the joined `text` of each part of a list.
#[derive(Default)]
struct Content(String);

impl Shape for Content {
    fn from_str(text: &str) -> Self {
        Self(text.to_owned())
    }

    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut text = String::new();
        while let Some(part) = seq.next_element::<Decode<PartText>>()? {
            text.push_str(part.0 .0.as_deref().unwrap_or_default());
        }
        Ok(Self(text))
    }
}

/// The `text` of a content part, when it is a string.
#[derive(Default)]
struct PartText(Option<String>);

impl Shape for PartText {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut text = None;
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "text" => text = map.next_value::<Decode<Option<String>>>()?.0,
                _ => map.next_value::<Decode<()>>().map(drop)?,
            }
        }
        Ok(Self(text))
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any JSON value decoded as the shape `S`.
struct Decode<S>(S);

impl<'de, S: Shape> Deserialize<'de> for Decode<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ShapeVisitor(PhantomData))
            .map(Decode)
    }
}

struct ShapeVisitor<S>(PhantomData<S>);

impl<'de, S: Shape> Visitor<'de> for ShapeVisitor<S> {
    type Value = S;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<S, E> {
        Ok(S::null())
    }

    fn visit_bool<E>(self, _: bool) -> Result<S, E> {
        Ok(S::scalar())
    }

    fn visit_i64<E>(self, value: i64) -> Result<S, E> {
        Ok(u64::try_from(value).map_or_else(|_| S::scalar(), S::from_u64))
    }

    fn visit_u64<E>(self, value: u64) -> Result<S, E> {
        Ok(S::from_u64(value))
    }

    fn visit_f64<E>(self, _: f64) -> Result<S, E> {
        Ok(S::scalar())
    }

    fn visit_str<E>(self, text: &str) -> Result<S, E> {
        Ok(S::from_str(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<S, A::Error> {
        S::from_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<S, A::Error> {
        S::from_map(map)
    }
}
