//! Drift detection: the spec compared with the live workload (platform-wire section 5: fixed field order,
//! declared-keys dict comparison, numbers by value), the create plan, and the PATCH body a plan implies.

use serde_json::{Map, Number, Value};

use crate::plan::{FieldChange, Plan, PlanAction};
use crate::spec::{canonical_slug, WorkloadSpec, DEFAULT_TASK_TYPE};
use crate::wire::Workload;

/// The plan for a workload that does not exist: create, listing what the create sets.
pub(crate) fn create_plan(spec: &WorkloadSpec, project: &str) -> Plan {
    let mut changes = Vec::new();
    let mut set = |field: &str, value: Value| {
        changes.push(FieldChange {
            field: field.to_owned(),
            live: None,
            desired: value,
        })
    };
    set("name", Value::String(spec.name.clone()));
    set("backend", Value::String(spec.backend.clone()));
    set("model", Value::String(spec.model.clone()));
    if let Some(description) = &spec.description {
        set("description", Value::String(description.clone()));
    }
    set(
        "task_type",
        Value::String(
            spec.task_type
                .as_deref()
                .unwrap_or(DEFAULT_TASK_TYPE)
                .to_owned(),
        ),
    );
    if let Some(command) = &spec.command {
        set("command", Value::String(command.clone()));
    }
    if let Some(version) = &spec.vllm_version {
        set("vllm_version", Value::String(version.clone()));
    }
    for (key, value) in declared_config(spec) {
        set(&format!("config.{key}"), value.clone());
    }
    for (field, value) in [
        ("worker_id", &spec.worker_id),
        ("gpu_resource_id", &spec.gpu_resource_id),
    ] {
        if let Some(value) = value {
            set(field, Value::String(value.clone()));
        }
    }
    if let Some(policy) = &spec.execution_policy {
        set("execution_policy", Value::String(policy.clone()));
    }
    if let Some(policy_config) = &spec.execution_policy_config {
        for (key, value) in policy_config {
            set(&format!("execution_policy_config.{key}"), value.clone());
        }
    }
    Plan {
        action: PlanAction::Create,
        project: project.to_owned(),
        workload_slug: canonical_slug(&spec.slug),
        workload_id: None,
        changes,
    }
}

/// The `config` keys compared as `config.<key>`: the user's dict without the keys that the explicit
/// `command` / `vllm_version` fields replace.
fn declared_config(spec: &WorkloadSpec) -> impl Iterator<Item = (&String, &Value)> {
    spec.config
        .iter()
        .flatten()
        .filter(move |(key, _)| match key.as_str() {
            "command" => spec.command.is_none(),
            "vllm_version" => spec.vllm_version.is_none(),
            _ => true,
        })
}

/// The plan for an existing workload: the fields of section 5 in order; an unset spec field never drifts.
pub(crate) fn diff(spec: &WorkloadSpec, live: &Workload, project: &str) -> Plan {
    let mut changes = Vec::new();
    let mut compare = |field: &str, desired: &str, live: Option<&Value>| {
        if live.and_then(Value::as_str) != Some(desired) {
            changes.push(FieldChange {
                field: field.to_owned(),
                live: live.cloned(),
                desired: Value::String(desired.to_owned()),
            });
        }
    };
    let raw = live.raw.as_object();
    let raw_field = |key: &str| raw.and_then(|map| map.get(key));
    let live_config = raw_field("config").and_then(Value::as_object);
    let config_field = |key: &str| live_config.and_then(|map| map.get(key));

    compare("name", &spec.name, raw_field("name"));
    compare("backend", &spec.backend, raw_field("backend"));
    compare("model", &spec.model, raw_field("model_name"));
    if let Some(description) = &spec.description {
        compare("description", description, raw_field("description"));
    }
    if let Some(task_type) = &spec.task_type {
        compare("task_type", task_type, raw_field("task_type"));
    }
    if let Some(command) = &spec.command {
        compare("command", command, config_field("command"));
    }
    if let Some(version) = &spec.vllm_version {
        compare("vllm_version", version, config_field("vllm_version"));
    }
    for (key, desired) in declared_config(spec) {
        diff_value(
            &format!("config.{key}"),
            desired,
            config_field(key),
            &mut changes,
        );
    }
    for (field, value) in [
        ("worker_id", &spec.worker_id),
        ("gpu_resource_id", &spec.gpu_resource_id),
    ] {
        if let Some(value) = value {
            diff_value(
                field,
                &Value::String(value.clone()),
                raw_field(field),
                &mut changes,
            );
        }
    }
    if let Some(policy) = &spec.execution_policy {
        diff_value(
            "execution_policy",
            &Value::String(policy.clone()),
            raw_field("execution_policy"),
            &mut changes,
        );
    }
    if let Some(policy_config) = &spec.execution_policy_config {
        let live_policy_config = raw_field("execution_policy_config").and_then(Value::as_object);
        diff_declared(
            "execution_policy_config",
            policy_config,
            live_policy_config,
            &mut changes,
        );
    }
    Plan {
        action: if changes.is_empty() {
            PlanAction::Noop
        } else {
            PlanAction::Update
        },
        project: project.to_owned(),
        workload_slug: live.slug.clone(),
        workload_id: Some(live.id.clone()),
        changes,
    }
}

/// Every key `desired` declares must be present in `live` and equal (recursively); extra live keys are fine.
fn diff_declared(
    prefix: &str,
    desired: &Map<String, Value>,
    live: Option<&Map<String, Value>>,
    changes: &mut Vec<FieldChange>,
) {
    for (key, want) in desired {
        diff_value(
            &format!("{prefix}.{key}"),
            want,
            live.and_then(|map| map.get(key)),
            changes,
        );
    }
}

/// Compare one declared value; dicts recurse by declared keys, a declared `null` accepts an absent key.
fn diff_value(field: &str, desired: &Value, live: Option<&Value>, changes: &mut Vec<FieldChange>) {
    let in_sync = match (desired, live) {
        (Value::Object(want), Some(Value::Object(have))) => {
            diff_declared(field, want, Some(have), changes);
            return;
        }
        (Value::Null, None) => true,
        (_, Some(have)) => values_equal(desired, have),
        (_, None) => false,
    };
    if !in_sync {
        changes.push(FieldChange {
            field: field.to_owned(),
            live: live.cloned(),
            desired: desired.clone(),
        });
    }
}

/// Structural equality where numbers compare by value (`5 == 5.0`).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

fn numbers_equal(x: &Number, y: &Number) -> bool {
    if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
        return p == q;
    }
    if let (Some(p), Some(q)) = (x.as_u64(), y.as_u64()) {
        return p == q;
    }
    matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
}

/// The PATCH (C3) body for an update plan: one key per drifted wire field, values from the spec; the whole
/// wire `config` when any of `command` / `vllm_version` / `config.*` drifted; `execution_policy_config` (when
/// declared) alongside a drifted `execution_policy`.
pub(crate) fn patch_body(spec: &WorkloadSpec, plan: &Plan) -> Value {
    let mut body = Map::new();
    let string = |value: &str| Value::String(value.to_owned());
    for change in &plan.changes {
        let field = change.field.as_str();
        match field {
            "name" => {
                body.insert("name".to_owned(), string(&spec.name));
            }
            "backend" => {
                body.insert("backend".to_owned(), string(&spec.backend));
            }
            "model" => {
                body.insert("model_name".to_owned(), string(&spec.model));
            }
            "command" | "vllm_version" => {
                body.insert(
                    "config".to_owned(),
                    Value::Object(spec.wire_config().unwrap_or_default()),
                );
            }
            "execution_policy" => {
                if let Some(policy) = &spec.execution_policy {
                    body.insert("execution_policy".to_owned(), string(policy));
                }
                if let Some(policy_config) = &spec.execution_policy_config {
                    body.insert(
                        "execution_policy_config".to_owned(),
                        Value::Object(policy_config.clone()),
                    );
                }
            }
            _ if field.starts_with("config.") => {
                body.insert(
                    "config".to_owned(),
                    Value::Object(spec.wire_config().unwrap_or_default()),
                );
            }
            _ if field.starts_with("execution_policy_config.") => {
                if let Some(policy_config) = &spec.execution_policy_config {
                    body.insert(
                        "execution_policy_config".to_owned(),
                        Value::Object(policy_config.clone()),
                    );
                }
            }
            // The remaining fields carry the same name on the wire: description, task_type, worker_id, gpu_resource_id.
            _ => {
                body.insert(field.to_owned(), change.desired.clone());
            }
        }
    }
    Value::Object(body)
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::spec::test_support::{obj, spec_of_model};
    use serde_json::json;

    fn spec() -> WorkloadSpec {
        spec_of_model("m")
    }

    fn live(extra: Value) -> Workload {
        let mut raw = obj(
            json!({"id": "wl_1", "slug": "support-bot", "name": "support-bot", "backend": "vllm",
            "model_name": "m", "task_type": "text2text", "description": null, "config": null}),
        );
        raw.extend(obj(extra));
        Workload::from_value(Value::Object(raw)).unwrap()
    }

    #[test]
    fn in_sync_is_noop() {
        let plan = diff(&spec(), &live(json!({})), "acme");
        assert_eq!(plan.action, PlanAction::Noop);
        assert!(plan.changes.is_empty());
        assert_eq!(plan.workload_id.as_deref(), Some("wl_1"));
        assert_eq!(plan.render(), "= support-bot is in sync (project acme)");
        assert_eq!(patch_body(&spec(), &plan), json!({}));
    }

    #[test]
    fn unset_spec_fields_never_drift() {
        let plan = diff(
            &spec(),
            &live(
                json!({"description": "set by someone", "task_type": "embedding", "config": {"command": "x"},
                "worker_id": "w9", "execution_policy": "fixed", "execution_policy_config": {"a": 1}}),
            ),
            "acme",
        );
        assert_eq!(plan.action, PlanAction::Noop);
    }

    #[test]
    fn always_compared_fields_in_order() {
        let mut s = spec();
        s.name = "New".into();
        s.model = "m2".into();
        s.backend = "sglang".into();
        let plan = diff(&s, &live(json!({})), "acme");
        assert_eq!(plan.drifted_fields(), ["name", "backend", "model"]);
        assert_eq!(
            patch_body(&s, &plan),
            json!({"name": "New", "backend": "sglang", "model_name": "m2"})
        );
    }

    #[test]
    fn missing_live_field_counts_as_drift() {
        let w = Workload::from_value(json!({"id": "1", "slug": "support-bot"})).unwrap();
        let plan = diff(&spec(), &w, "acme");
        assert_eq!(plan.drifted_fields(), ["name", "backend", "model"]);
        assert_eq!(plan.changes[0].live, None);
    }

    #[test]
    fn full_comparison_order_and_names() {
        let s = WorkloadSpec {
            description: Some("d".into()),
            task_type: Some("embedding".into()),
            command: Some("vllm serve m --max-model-len 16384".into()),
            vllm_version: Some("0.7.0".into()),
            config: Some(obj(
                json!({"max_model_len": 16384, "env": {"A": "1", "B": {"C": 2}}}),
            )),
            worker_id: Some("w2".into()),
            gpu_resource_id: Some("g2".into()),
            execution_policy: Some("autoscaling".into()),
            execution_policy_config: Some(obj(json!({"min": 1, "max": 3}))),
            ..spec()
        };
        let w = live(
            json!({"model_name": "old", "config": {"command": "vllm serve m", "vllm_version": "0.6.3",
            "max_model_len": 8192, "env": {"A": "1", "B": {"C": 1}}}, "execution_policy": "fixed",
            "execution_policy_config": {"min": 1, "max": 2}}),
        );
        let plan = diff(&s, &w, "acme");
        assert_eq!(plan.action, PlanAction::Update);
        assert_eq!(
            plan.drifted_fields(),
            [
                "model",
                "description",
                "task_type",
                "command",
                "vllm_version",
                "config.max_model_len",
                "config.env.B.C",
                "worker_id",
                "gpu_resource_id",
                "execution_policy",
                "execution_policy_config.max"
            ]
        );
        let body = patch_body(&s, &plan);
        assert_eq!(
            body,
            json!({"model_name": "m", "description": "d", "task_type": "embedding",
                "config": {"max_model_len": 16384, "env": {"A": "1", "B": {"C": 2}},
                           "command": "vllm serve m --max-model-len 16384", "vllm_version": "0.7.0"},
                "worker_id": "w2", "gpu_resource_id": "g2", "execution_policy": "autoscaling",
                "execution_policy_config": {"min": 1, "max": 3}})
        );
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "model_name",
                "description",
                "task_type",
                "config",
                "worker_id",
                "gpu_resource_id",
                "execution_policy",
                "execution_policy_config"
            ]
        );
    }

    #[test]
    fn declared_keys_only_and_numbers_by_value() {
        let mut s = spec();
        s.config = Some(obj(
            json!({"max_model_len": 8192, "ratio": 0.5, "flags": [1, 2.0], "nested": {"a": 5}}),
        ));
        let w = live(
            json!({"config": {"max_model_len": 8192.0, "ratio": 0.5, "flags": [1.0, 2], "nested": {"a": 5.0, "b": "server"},
            "added_by_server": true}}),
        );
        assert_eq!(diff(&s, &w, "acme").action, PlanAction::Noop);
    }

    #[test]
    fn nested_dict_where_live_is_not_a_dict() {
        let mut s = spec();
        s.config = Some(obj(json!({"env": {"A": "1"}, "empty": {}})));
        let plan = diff(&s, &live(json!({"config": {"env": "flat"}})), "acme");
        assert_eq!(plan.drifted_fields(), ["config.env", "config.empty"]);
        assert_eq!(plan.changes[0].live, Some(json!("flat")));
        assert_eq!(plan.changes[1].live, None);
        let plan = diff(
            &s,
            &live(json!({"config": {"env": {"A": "1", "Z": 0}, "empty": {"x": 1}}})),
            "acme",
        );
        assert_eq!(plan.action, PlanAction::Noop);
    }

    #[test]
    fn declared_null_accepts_absent() {
        let mut s = spec();
        s.config = Some(obj(json!({"k": null})));
        assert_eq!(
            diff(&s, &live(json!({"config": {}})), "acme").action,
            PlanAction::Noop
        );
        assert_eq!(
            diff(&s, &live(json!({"config": {"k": null}})), "acme").action,
            PlanAction::Noop
        );
        assert_eq!(
            diff(&s, &live(json!({"config": {"k": 0}})), "acme").drifted_fields(),
            ["config.k"]
        );
    }

    #[test]
    fn explicit_command_shadows_config_command() {
        let mut s = spec();
        s.command = Some("a".into());
        s.config = Some(obj(json!({"command": "ignored"})));
        let plan = diff(&s, &live(json!({"config": {"command": "a"}})), "acme");
        assert_eq!(plan.action, PlanAction::Noop);
        let mut s = spec();
        s.config = Some(obj(json!({"command": "b"})));
        assert_eq!(
            diff(&s, &live(json!({"config": {"command": "a"}})), "acme").drifted_fields(),
            ["config.command"]
        );
    }

    #[test]
    fn string_fields_compare_exactly() {
        let mut s = spec();
        s.command = Some("5".into());
        s.worker_id = Some("7".into());
        let plan = diff(
            &s,
            &live(json!({"config": {"command": 5}, "worker_id": 7})),
            "acme",
        );
        assert_eq!(plan.drifted_fields(), ["command", "worker_id"]);
    }

    #[test]
    fn execution_policy_drift_sends_declared_config() {
        let mut s = spec();
        s.execution_policy = Some("autoscaling".into());
        s.execution_policy_config = Some(obj(json!({"max": 2})));
        let plan = diff(
            &s,
            &live(json!({"execution_policy": "fixed", "execution_policy_config": {"max": 2}})),
            "acme",
        );
        assert_eq!(plan.drifted_fields(), ["execution_policy"]);
        assert_eq!(
            patch_body(&s, &plan),
            json!({"execution_policy": "autoscaling", "execution_policy_config": {"max": 2}})
        );
        s.execution_policy_config = None;
        assert_eq!(
            patch_body(&s, &plan),
            json!({"execution_policy": "autoscaling"})
        );
    }

    #[test]
    fn config_key_drift_patches_whole_config() {
        let mut s = spec();
        s.vllm_version = Some("0.6.3".into());
        s.config = Some(obj(json!({"max_model_len": 16384})));
        let plan = diff(
            &s,
            &live(json!({"config": {"vllm_version": "0.6.3", "max_model_len": 8192}})),
            "acme",
        );
        assert_eq!(plan.drifted_fields(), ["config.max_model_len"]);
        assert_eq!(
            patch_body(&s, &plan),
            json!({"config": {"max_model_len": 16384, "vllm_version": "0.6.3"}})
        );
    }

    #[test]
    fn render_update() {
        let mut s = spec();
        s.command = Some("vllm serve m --max-model-len 16384".into());
        s.config = Some(obj(json!({"max_model_len": 16384})));
        s.description = Some("d".into());
        let w = live(json!({"config": {"command": "vllm serve m", "max_model_len": 8192}}));
        let rendered = diff(&s, &w, "acme").render();
        assert_eq!(
            rendered,
            "~ update support-bot in project acme\n  ~ description: null -> \"d\"\n  ~ command: \"vllm serve m\" -> \"vllm serve m --max-model-len 16384\"\n  ~ config.max_model_len: 8192 -> 16384"
        );
        let bare = Workload::from_value(
            json!({"id": "1", "slug": "support-bot", "name": "support-bot", "backend": "vllm"}),
        )
        .unwrap();
        assert!(diff(&spec(), &bare, "acme")
            .render()
            .ends_with("~ model: (unset) -> \"m\""));
    }

    #[test]
    fn create_plan_lists_what_is_set() {
        let mut s = spec();
        s.slug = "Support Bot".into();
        s.command = Some("c".into());
        s.config = Some(obj(json!({"command": "shadowed", "k": 1})));
        let plan = create_plan(&s, "acme");
        assert_eq!(plan.action, PlanAction::Create);
        assert_eq!(plan.workload_slug, "support-bot");
        assert_eq!(plan.workload_id, None);
        assert_eq!(
            plan.drifted_fields(),
            [
                "name",
                "backend",
                "model",
                "task_type",
                "command",
                "config.k"
            ]
        );
        assert!(plan.changes.iter().all(|c| c.live.is_none()));
        let rendered = plan.render();
        assert!(
            rendered.starts_with("+ create support-bot in project acme\n  + name: \"support-bot\""),
            "{rendered}"
        );
        assert!(rendered.contains("\n  + task_type: \"text2text\""));
        assert_eq!(PlanAction::Create.as_str(), "create");
        assert_eq!(PlanAction::Update.as_str(), "update");
        assert_eq!(PlanAction::Noop.as_str(), "noop");
    }

    #[test]
    fn render_and_debug_redact_live_tokens() {
        let mut s = spec();
        s.command = Some("serve".into());
        let plan = diff(
            &s,
            &live(json!({"config": {"command": "serve --key ik_live_a1b2c3d4_topsecret"}})),
            "acme",
        );
        assert!(!plan.render().contains("topsecret"));
        assert!(!format!("{plan:?}").contains("topsecret"));
    }
}
