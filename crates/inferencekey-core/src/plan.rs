//! Drift plans as data: what applying a spec would do (create, update which fields, or nothing), its
//! terraform-like rendering and the drift warning text. A leaf module (tokens aside), so `error` can carry a plan
//! without importing the comparison logic, which lives in `drift`.

use std::fmt;
use std::fmt::Write as _;

use serde_json::Value;

use crate::quote::py_repr_str;
use crate::token::redact;

/// What applying a plan does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanAction {
    /// The workload does not exist and would be created.
    Create,
    /// The workload exists and some fields differ from the spec.
    Update,
    /// The workload exists and matches the spec.
    Noop,
}

impl PlanAction {
    /// `"create"`, `"update"` or `"noop"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Noop => "noop",
        }
    }
}

/// One field that differs (or, in a create plan, that would be set).
#[derive(Clone, PartialEq)]
pub struct FieldChange {
    /// The spec's name for the field: `model`, `command`, `config.max_model_len`, `config.a.b`, ...
    pub field: String,
    /// The live value; `None` when the workload lacks it (or does not exist yet).
    pub live: Option<Value>,
    /// The value the spec asks for.
    pub desired: Value,
}

impl fmt::Debug for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldChange")
            .field("field", &self.field)
            .field("live", &self.live.as_ref().map(|v| redact(&v.to_string())))
            .field("desired", &redact(&self.desired.to_string()))
            .finish()
    }
}

/// The difference between a spec and the platform, computed without changing anything.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Create, update or nothing.
    pub action: PlanAction,
    /// The project the workload lives in (the one in the URL).
    pub project: String,
    /// The canonical workload slug.
    pub workload_slug: String,
    /// The live workload's id, when it exists.
    pub workload_id: Option<String>,
    /// Update: the drifted fields in comparison order. Create: every field the create sets.
    pub changes: Vec<FieldChange>,
}

impl Plan {
    /// A terraform-like rendering, one change per line, values as JSON (tokens redacted):
    /// `+ create support-bot in project acme`, `~ config.max_model_len: 8192 -> 16384`, `= x is in sync ...`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = match self.action {
            PlanAction::Create => write!(
                out,
                "+ create {} in project {}",
                self.workload_slug, self.project
            ),
            PlanAction::Update => write!(
                out,
                "~ update {} in project {}",
                self.workload_slug, self.project
            ),
            PlanAction::Noop => write!(
                out,
                "= {} is in sync (project {})",
                self.workload_slug, self.project
            ),
        };
        for change in &self.changes {
            let _ = match self.action {
                PlanAction::Create => write!(out, "\n  + {}: {}", change.field, change.desired),
                PlanAction::Update | PlanAction::Noop => {
                    let live = match &change.live {
                        Some(value) => value.to_string(),
                        None => "(unset)".to_owned(),
                    };
                    write!(
                        out,
                        "\n  ~ {}: {} -> {}",
                        change.field, live, change.desired
                    )
                }
            };
        }
        redact(&out)
    }

    /// The changed field names, in comparison order.
    pub fn drifted_fields(&self) -> Vec<&str> {
        self.changes.iter().map(|c| c.field.as_str()).collect()
    }

    /// The warning `ensure(on_drift=Warn)` shows for this plan (tokens redacted):
    /// `workload 'support-bot' drifted from spec: command, config.k (on_drift=warn: not changed)`, a newline,
    /// then [`Plan::render`]. The slug is quoted as Python's `repr` quotes it, as the Python surface documents.
    pub fn drift_warning(&self) -> String {
        redact(&format!(
            "workload {} drifted from spec: {} (on_drift=warn: not changed)\n{}",
            py_repr_str(&self.workload_slug),
            self.drifted_fields().join(", "),
            self.render()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn update() -> Plan {
        Plan {
            action: PlanAction::Update,
            project: "acme".into(),
            workload_slug: "support-bot".into(),
            workload_id: Some("wl_1".into()),
            changes: vec![
                FieldChange {
                    field: "command".into(),
                    live: Some(json!("vllm serve m")),
                    desired: json!("vllm serve m --max-model-len 16384"),
                },
                FieldChange {
                    field: "config.max_model_len".into(),
                    live: None,
                    desired: json!(16384),
                },
            ],
        }
    }

    #[test]
    fn drift_warning_text() {
        assert_eq!(
            update().drift_warning(),
            "workload 'support-bot' drifted from spec: command, config.max_model_len (on_drift=warn: not changed)\n\
             ~ update support-bot in project acme\n  \
             ~ command: \"vllm serve m\" -> \"vllm serve m --max-model-len 16384\"\n  \
             ~ config.max_model_len: (unset) -> 16384"
        );
    }

    #[test]
    fn drift_warning_redacts_live_tokens() {
        let mut plan = update();
        plan.changes[0].live = Some(json!("serve --key ik_live_a1b2c3d4_topsecret"));
        let warning = plan.drift_warning();
        assert!(!warning.contains("topsecret"), "{warning}");
        assert!(warning.contains("ik_live_a1b2c3d4\u{2026}"), "{warning}");
    }
}
