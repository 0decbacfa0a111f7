//! Platform JSON, decoded tolerantly: a workload needs only `id` and `slug` (unknown strings kept, unknown
//! keys ignored, odd list items skipped), the list body in all its shapes, and readiness events.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A workload as the platform returned it: typed fields where present, the whole object in `raw`.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Server-assigned id (C3/C4 address it).
    pub id: String,
    /// Canonical slug.
    pub slug: String,
    /// The object exactly as received.
    pub raw: Value,
    /// Display name.
    pub name: Option<String>,
    /// Project the workload lives in, when the server says.
    pub project_slug: Option<String>,
    /// Free-text note.
    pub description: Option<String>,
    /// Modality string (unknown values kept).
    pub task_type: Option<String>,
    /// Backend string (unknown values kept).
    pub backend: Option<String>,
    /// Model reference (wire `model_name`).
    pub model_name: Option<String>,
    /// Backend configuration (holds `command`, `vllm_version`).
    pub config: Option<Map<String, Value>>,
    /// Execution policy string (unknown values kept).
    pub execution_policy: Option<String>,
    /// Execution policy settings.
    pub execution_policy_config: Option<Map<String, Value>>,
    /// Worker pin.
    pub worker_id: Option<String>,
    /// GPU resource pin.
    pub gpu_resource_id: Option<String>,
}

impl Workload {
    /// Decode one workload object; `None` when it is not an object or lacks a usable `id` or `slug`.
    pub(crate) fn from_value(value: Value) -> Option<Self> {
        let map = value.as_object()?;
        let id = scalar_string(map.get("id"))?;
        let slug = string(map, "slug").or_else(|| string(map, "workload_slug"))?;
        Some(Self {
            id,
            slug,
            name: string(map, "name"),
            project_slug: string(map, "project_slug"),
            description: string(map, "description"),
            task_type: string(map, "task_type"),
            backend: string(map, "backend"),
            model_name: string(map, "model_name"),
            config: object(map, "config"),
            execution_policy: string(map, "execution_policy"),
            execution_policy_config: object(map, "execution_policy_config"),
            worker_id: scalar_string(map.get("worker_id")),
            gpu_resource_id: scalar_string(map.get("gpu_resource_id")),
            raw: value,
        })
    }

    /// Decode a single-workload response body (C2, C3).
    pub(crate) fn from_body(body: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(body).map_err(|err| {
            Error::api(format!(
                "malformed response: workload body is not JSON ({err})"
            ))
        })?;
        // Some servers wrap the object: {"workload": {...}}.
        let value = match value {
            Value::Object(mut map)
                if !map.contains_key("id") && map.get("workload").is_some_and(Value::is_object) =>
            {
                map.remove("workload").unwrap_or(Value::Null)
            }
            other => other,
        };
        Self::from_value(value).ok_or_else(|| {
            Error::api("malformed response: workload object without a string id and slug")
        })
    }
}

/// A non-empty string field.
fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A string or integer field as text (ids are sometimes numeric).
fn scalar_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn object(map: &Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    map.get(key).and_then(Value::as_object).cloned()
}

/// Decode a list (C1) body: a bare array, `{"workloads": [...]}`, `{"workloads": null}` or `null`.
/// Items that are not usable workloads are skipped (logged), so one odd workload never breaks the others.
pub(crate) fn decode_workload_list(body: &[u8]) -> Result<Vec<Workload>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        Error::api(format!(
            "malformed response: workload list is not JSON ({err})"
        ))
    })?;
    let items = match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("workloads") {
            Some(Value::Array(items)) => items,
            Some(Value::Null) => Vec::new(),
            _ => return Err(Error::api("malformed response: expected a workload list")),
        },
        _ => return Err(Error::api("malformed response: expected a workload list")),
    };
    let total = items.len();
    let workloads: Vec<Workload> = items.into_iter().filter_map(Workload::from_value).collect();
    if workloads.len() < total {
        log::warn!(
            "skipped {} workload(s) without a string id and slug in the list",
            total - workloads.len()
        );
    }
    Ok(workloads)
}

/// A readiness event as decoded from one C5 `data:` payload (before the SDK stamps its own elapsed time).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReadinessPayload {
    pub(crate) phase: String,
    pub(crate) message: String,
    pub(crate) step: Option<String>,
}

/// Decode a readiness payload; `None` when it is not an object with a string `phase`.
pub(crate) fn decode_readiness(data: &[u8]) -> Option<ReadinessPayload> {
    let value: Value = serde_json::from_slice(data).ok()?;
    let map = value.as_object()?;
    let phase = map.get("phase")?.as_str()?.trim().to_owned();
    if phase.is_empty() {
        return None;
    }
    Some(ReadinessPayload {
        phase,
        message: map
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        step: string(map, "step"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn full_object_decodes() {
        let value = json!({"id": "wl_1", "project_id": "p", "project_slug": "acme", "name": "Support Bot",
            "slug": "support-bot", "workload_slug": "support-bot", "description": null, "task_type": "text2text",
            "backend": "vllm", "model_name": "m", "config": {"command": "c", "vllm_version": "0.6.3"},
            "execution_policy": null, "execution_policy_config": null, "worker_id": null, "gpu_resource_id": null,
            "created_at": "2026-06-15T09:12:44Z"});
        let w = Workload::from_value(value.clone()).unwrap();
        assert_eq!(w.id, "wl_1");
        assert_eq!(w.slug, "support-bot");
        assert_eq!(w.project_slug.as_deref(), Some("acme"));
        assert_eq!(w.description, None);
        assert_eq!(w.model_name.as_deref(), Some("m"));
        assert_eq!(w.config.unwrap()["command"], json!("c"));
        assert_eq!(w.raw, value);
    }

    #[test]
    fn unknown_strings_kept_and_odd_types_tolerated() {
        let w = Workload::from_value(
            json!({"id": 42, "slug": "x", "backend": "tpu-magic", "task_type": "dreaming",
            "execution_policy": "whenever", "config": "not-an-object", "surprise": [1, 2]}),
        )
        .unwrap();
        assert_eq!(w.id, "42");
        assert_eq!(w.backend.as_deref(), Some("tpu-magic"));
        assert_eq!(w.task_type.as_deref(), Some("dreaming"));
        assert_eq!(w.execution_policy.as_deref(), Some("whenever"));
        assert_eq!(w.config, None);
    }

    #[test]
    fn missing_id_or_slug_is_not_a_workload() {
        assert!(Workload::from_value(json!({"slug": "x"})).is_none());
        assert!(Workload::from_value(json!({"id": "1"})).is_none());
        assert!(Workload::from_value(json!({"id": "1", "slug": 5})).is_none());
        assert!(Workload::from_value(json!("x")).is_none());
        assert_eq!(
            Workload::from_value(json!({"id": "1", "workload_slug": "w"}))
                .unwrap()
                .slug,
            "w"
        );
    }

    #[test]
    fn list_shapes() {
        let item = json!({"id": "1", "slug": "a"});
        for body in [json!([item]), json!({"workloads": [item], "total": 1})] {
            let list = decode_workload_list(body.to_string().as_bytes()).unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].slug, "a");
        }
        for body in ["null", "{\"workloads\": null}", "[]", "", "  \n"] {
            assert!(
                decode_workload_list(body.as_bytes()).unwrap().is_empty(),
                "{body}"
            );
        }
    }

    #[test]
    fn odd_items_are_skipped() {
        let body =
            json!([{"id": "1", "slug": "a"}, {"slug": "no-id"}, 7, null, {"id": "3", "slug": "c"}]);
        let list = decode_workload_list(body.to_string().as_bytes()).unwrap();
        let slugs: Vec<&str> = list.iter().map(|w| w.slug.as_str()).collect();
        assert_eq!(slugs, ["a", "c"]);
    }

    #[test]
    fn malformed_list_is_an_api_error() {
        for body in [
            "<html>",
            "{\"items\": []}",
            "\"text\"",
            "{\"workloads\": 3}",
        ] {
            let err = decode_workload_list(body.as_bytes()).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::Api, "{body}");
            assert!(err.message.starts_with("malformed response"));
        }
    }

    #[test]
    fn single_body_plain_or_wrapped() {
        assert_eq!(
            Workload::from_body(br#"{"id": "1", "slug": "a"}"#)
                .unwrap()
                .id,
            "1"
        );
        assert_eq!(
            Workload::from_body(br#"{"workload": {"id": "2", "slug": "b"}}"#)
                .unwrap()
                .id,
            "2"
        );
        assert!(Workload::from_body(b"{}").is_err());
        assert!(Workload::from_body(b"oops").is_err());
    }

    #[test]
    fn readiness_payloads() {
        let p = decode_readiness(
            br#"{"phase":"bootstrapping","message":"loading","elapsed_ms":5,"step":"model_load"}"#,
        )
        .unwrap();
        assert_eq!(p.phase, "bootstrapping");
        assert_eq!(p.message, "loading");
        assert_eq!(p.step.as_deref(), Some("model_load"));
        let p = decode_readiness(br#"{"phase":"ready","message":null}"#).unwrap();
        assert_eq!(p.message, "");
        assert_eq!(p.step, None);
        assert!(decode_readiness(br#"{"message":"x"}"#).is_none());
        assert!(decode_readiness(b"not json").is_none());
    }
}
