//! The workload spec: local validation (required fields, then the secret scan), the platform's canonical
//! slug, and the create body of platform-wire section 3 (with the config merge decision).

use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::token::{contains_secret, redact, Kind};

/// The task type sent when the spec sets none (the platform's default).
pub(crate) const DEFAULT_TASK_TYPE: &str = "text2text";

/// A declarative workload definition, as the user wrote it (spec field names, not wire names).
#[derive(Clone, Default, PartialEq)]
pub struct WorkloadSpec {
    /// Display name. Required.
    pub name: String,
    /// Stable identifier and the idempotency key of `ensure`; canonicalised before use. Required.
    pub slug: String,
    /// Model reference (wire `model_name`). Required.
    pub model: String,
    /// Backend wire string (`vllm`, `ollama`, ... or a custom backend slug). Required.
    pub backend: String,
    /// Project slug overriding the client's project for this spec.
    pub project: Option<String>,
    /// Free-text note.
    pub description: Option<String>,
    /// Launch command; sent inside wire `config`.
    pub command: Option<String>,
    /// vLLM image version; sent inside wire `config`.
    pub vllm_version: Option<String>,
    /// Workload modality; `text2text` when unset.
    pub task_type: Option<String>,
    /// Backend-specific configuration; `command`/`vllm_version` are laid over it.
    pub config: Option<Map<String, Value>>,
    /// `fixed` / `scheduled` / `autoscaling` (other strings go to the server as they are).
    pub execution_policy: Option<String>,
    /// Policy settings, passed through.
    pub execution_policy_config: Option<Map<String, Value>>,
    /// Pin to a worker.
    pub worker_id: Option<String>,
    /// Pin to a GPU resource.
    pub gpu_resource_id: Option<String>,
}

/// A spec field's value, borrowed: a string (the required four are always `Some`) or a table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// A string field.
    Text(Option<&'a String>),
    /// A table field (`config`, `execution_policy_config`), as a JSON object.
    Table(Option<&'a Map<String, Value>>),
}

/// How a spec field takes a value.
#[derive(Clone, Copy)]
pub enum FieldSetter {
    /// A string.
    Text(fn(&mut WorkloadSpec, String)),
    /// A table, as a JSON object.
    Table(fn(&mut WorkloadSpec, Map<String, Value>)),
}

/// One field of the spec: its name (the same in Python, in manifests and in messages), whether it is required, and
/// how to read and set it.
#[derive(Clone, Copy)]
pub struct SpecField {
    /// The field's name.
    pub name: &'static str,
    /// Whether a spec must set it (a non-blank string).
    pub required: bool,
    get: for<'a> fn(&'a WorkloadSpec) -> FieldValue<'a>,
    /// How to set it.
    pub set: FieldSetter,
}

impl SpecField {
    /// The field's value in `spec`.
    pub fn get<'a>(&self, spec: &'a WorkloadSpec) -> FieldValue<'a> {
        (self.get)(spec)
    }

    /// Whether the field holds a table rather than a string.
    pub fn is_table(&self) -> bool {
        matches!(self.set, FieldSetter::Table(_))
    }
}

/// Builds one `SpecField` entry; `required` fields are plain `String`s, the others `Option`s.
macro_rules! spec_field {
    (required $name:ident) => {
        SpecField {
            name: stringify!($name),
            required: true,
            get: |spec| FieldValue::Text(Some(&spec.$name)),
            set: FieldSetter::Text(|spec, text| spec.$name = text),
        }
    };
    (text $name:ident) => {
        SpecField {
            name: stringify!($name),
            required: false,
            get: |spec| FieldValue::Text(spec.$name.as_ref()),
            set: FieldSetter::Text(|spec, text| spec.$name = Some(text)),
        }
    };
    (table $name:ident) => {
        SpecField {
            name: stringify!($name),
            required: false,
            get: |spec| FieldValue::Table(spec.$name.as_ref()),
            set: FieldSetter::Table(|spec, map| spec.$name = Some(map)),
        }
    };
}

/// The spec's fields in `WorkloadSpec` order: the one list the manifest reader, the binding (which reads a Python
/// `WorkloadSpec` and hands manifests over as its fields) and the Python dataclass are held to.
pub const SPEC_FIELDS: [SpecField; 14] = [
    spec_field!(required name),
    spec_field!(required slug),
    spec_field!(required model),
    spec_field!(required backend),
    spec_field!(text project),
    spec_field!(text description),
    spec_field!(text command),
    spec_field!(text vllm_version),
    spec_field!(text task_type),
    spec_field!(table config),
    spec_field!(text execution_policy),
    spec_field!(table execution_policy_config),
    spec_field!(text worker_id),
    spec_field!(text gpu_resource_id),
];

/// The field of that name, if the spec has one.
pub fn spec_field(name: &str) -> Option<&'static SpecField> {
    SPEC_FIELDS.iter().find(|field| field.name == name)
}

impl WorkloadSpec {
    /// Check the spec locally, before any request: `name`, `slug`, `model`, `backend` must not be blank (in
    /// that order), the slug must canonicalise to something, and no string anywhere may hold a token.
    pub fn validate(&self) -> Result<()> {
        for field in SPEC_FIELDS.iter().filter(|field| field.required) {
            let blank = match field.get(self) {
                FieldValue::Text(value) => value.is_none_or(|value| value.trim().is_empty()),
                FieldValue::Table(_) => false,
            };
            if blank {
                return Err(Error::validation(format_args!(
                    "{} must not be empty",
                    field.name
                )));
            }
        }
        checked_slug(&self.slug)?;
        if let Some((field, kind)) = self.find_secret() {
            return Err(secret_error(&field, kind));
        }
        Ok(())
    }

    /// Where the spec holds a secret (the field's path, `config.env.HF_TOKEN`) and of what kind: any string,
    /// dict keys and values included, at any depth.
    fn find_secret(&self) -> Option<(String, Kind)> {
        // Strings first, then tables: a secret in a plain field is named before one deep in a config.
        let text = SPEC_FIELDS.iter().find_map(|field| match field.get(self) {
            FieldValue::Text(value) => {
                contains_secret(value?).map(|kind| (field.name.to_owned(), kind))
            }
            FieldValue::Table(_) => None,
        });
        text.or_else(|| {
            SPEC_FIELDS.iter().find_map(|field| match field.get(self) {
                FieldValue::Table(map) => inferencekey_secrets::find_in_map(map?, field.name),
                FieldValue::Text(_) => None,
            })
        })
    }

    /// The wire `config`: the user's `config` with `command` and `vllm_version` laid over it (the explicit
    /// fields win); `None` when that leaves it empty.
    pub(crate) fn wire_config(&self) -> Option<Map<String, Value>> {
        let mut config = self.config.clone().unwrap_or_default();
        if let Some(command) = &self.command {
            config.insert("command".to_owned(), Value::String(command.clone()));
        }
        if let Some(version) = &self.vllm_version {
            config.insert("vllm_version".to_owned(), Value::String(version.clone()));
        }
        Some(config).filter(|c| !c.is_empty())
    }

    /// The create (C2) body: wire names, canonical slug, `task_type` defaulted, optional fields only when set.
    /// `project` is never in a body.
    pub fn create_body(&self) -> Value {
        let mut body = Map::new();
        body.insert("name".to_owned(), Value::String(self.name.clone()));
        body.insert("slug".to_owned(), Value::String(canonical_slug(&self.slug)));
        if let Some(description) = &self.description {
            body.insert("description".to_owned(), Value::String(description.clone()));
        }
        let task_type = self.task_type.as_deref().unwrap_or(DEFAULT_TASK_TYPE);
        body.insert("task_type".to_owned(), Value::String(task_type.to_owned()));
        body.insert("backend".to_owned(), Value::String(self.backend.clone()));
        body.insert("model_name".to_owned(), Value::String(self.model.clone()));
        if let Some(config) = self.wire_config() {
            body.insert("config".to_owned(), Value::Object(config));
        }
        if let Some(policy) = &self.execution_policy {
            body.insert("execution_policy".to_owned(), Value::String(policy.clone()));
        }
        if let Some(policy_config) = &self.execution_policy_config {
            body.insert(
                "execution_policy_config".to_owned(),
                Value::Object(policy_config.clone()),
            );
        }
        if let Some(worker) = &self.worker_id {
            body.insert("worker_id".to_owned(), Value::String(worker.clone()));
        }
        if let Some(gpu) = &self.gpu_resource_id {
            body.insert("gpu_resource_id".to_owned(), Value::String(gpu.clone()));
        }
        Value::Object(body)
    }
}

/// Shows the spec with any token redacted (a spec holding one is rejected, but may be logged first).
impl fmt::Debug for WorkloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Required fields show as strings, optional ones as options, as a derived Debug would.
        let mut debug = f.debug_struct("WorkloadSpec");
        for field in &SPEC_FIELDS {
            let shown = match field.get(self) {
                FieldValue::Text(value) => value.map(|s| redact(s)),
                FieldValue::Table(map) => {
                    map.map(|m| redact(&Value::Object(m.clone()).to_string()))
                }
            };
            match (field.required, shown) {
                (true, Some(shown)) => debug.field(field.name, &shown),
                (_, shown) => debug.field(field.name, &shown),
            };
        }
        debug.finish()
    }
}

/// The `ConfigurationError` for a secret found in `field`: it names the field and the kind, never the secret.
pub(crate) fn secret_error(field: &str, kind: Kind) -> Error {
    Error::configuration(format!(
        "configuration error: secrets must never go in specs ({field} holds {})",
        kind.describe()
    ))
}

/// The platform's canonical slug: every character that is not an ASCII letter or digit becomes `-`, the
/// result is lower-cased, runs of `-` collapse, leading and trailing `-` are dropped. May be empty.
pub fn canonical_slug(raw: &str) -> String {
    let mut slug = String::with_capacity(raw.len());
    let mut pending_dash = false;
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_dash && !slug.is_empty() {
                slug.push('-');
            }
            pending_dash = false;
            slug.push(c.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
    }
    slug
}

/// The canonical slug, or a `ValidationError` when it would be empty.
pub fn checked_slug(raw: &str) -> Result<String> {
    if raw.trim().is_empty() {
        return Err(Error::validation("slug must not be empty"));
    }
    // A credential pasted as a slug would go into a URL path, and its slug form (`ik-sdk-…`) into messages.
    if let Some(kind) = contains_secret(raw) {
        return Err(segment_secret_error("slug", kind));
    }
    let slug = canonical_slug(raw);
    if slug.is_empty() {
        return Err(Error::validation(format_args!(
            "slug {raw:?} has no ASCII letter or digit"
        )));
    }
    Ok(slug)
}

/// A project slug checked before it goes into a URL path: no secret, and never `.` or `..`, which URL
/// normalisation would collapse so that the request (and its credential) reached another route.
pub(crate) fn checked_project(project: String) -> Result<String> {
    if let Some(kind) = contains_secret(&project) {
        return Err(segment_secret_error("project", kind));
    }
    if project == "." || project == ".." {
        return Err(Error::validation(format_args!(
            "project {project:?} is not a project slug"
        )));
    }
    Ok(project)
}

/// The `ConfigurationError` for a secret given where a name goes into a URL.
fn segment_secret_error(what: &str, kind: Kind) -> Error {
    Error::configuration(format!(
        "configuration error: {what} holds {}; secrets must never go in slugs or URLs",
        kind.describe()
    ))
}

/// Fixtures shared by the unit tests of specs and of drift plans.
#[cfg(test)]
pub(crate) mod test_support {
    #![allow(clippy::panic)]
    use super::WorkloadSpec;
    use serde_json::{Map, Value};

    /// The `support-bot` spec on vLLM serving `model`.
    pub(crate) fn spec_of_model(model: &str) -> WorkloadSpec {
        WorkloadSpec {
            name: "support-bot".into(),
            slug: "support-bot".into(),
            model: model.into(),
            backend: "vllm".into(),
            ..WorkloadSpec::default()
        }
    }

    /// The map of a JSON object literal.
    pub(crate) fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::test_support::{obj, spec_of_model};
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    #[test]
    fn each_spec_field_sets_and_reads_its_own_member() {
        let mut spec = WorkloadSpec::default();
        for (i, field) in SPEC_FIELDS.iter().enumerate() {
            match field.set {
                FieldSetter::Text(set) => set(&mut spec, format!("v{i}")),
                FieldSetter::Table(set) => set(&mut spec, obj(json!({ "k": i }))),
            }
        }
        for (i, field) in SPEC_FIELDS.iter().enumerate() {
            match field.get(&spec) {
                FieldValue::Text(value) => {
                    assert_eq!(value.unwrap(), &format!("v{i}"), "{}", field.name)
                }
                FieldValue::Table(map) => {
                    assert_eq!(map.unwrap(), &obj(json!({ "k": i })), "{}", field.name)
                }
            }
        }
        // Every member is in the table: this exhaustive pattern stops compiling when a member is added, and the
        // loop above gave each member a distinct value through the table.
        let WorkloadSpec {
            name,
            slug,
            model,
            backend,
            project,
            description,
            command,
            vllm_version,
            task_type,
            config,
            execution_policy,
            execution_policy_config,
            worker_id,
            gpu_resource_id,
        } = &spec;
        let texts = [name, slug, model, backend];
        let options = [
            project,
            description,
            command,
            vllm_version,
            task_type,
            execution_policy,
            worker_id,
            gpu_resource_id,
        ];
        assert!(texts.iter().all(|text| text.starts_with('v')));
        assert!(options.iter().all(|text| text.is_some()));
        assert!(config.is_some() && execution_policy_config.is_some());
        let names: Vec<&str> = SPEC_FIELDS.iter().map(|field| field.name).collect();
        assert_eq!(names.len(), 14);
        assert_eq!(
            SPEC_FIELDS
                .iter()
                .filter(|field| field.required)
                .map(|field| field.name)
                .collect::<Vec<_>>(),
            ["name", "slug", "model", "backend"]
        );
        assert!(spec_field("config").unwrap().is_table());
        assert!(spec_field("nope").is_none());
    }

    fn spec() -> WorkloadSpec {
        spec_of_model("meta-llama/Llama-3.1-8B-Instruct")
    }

    #[test]
    fn canonical_slugs() {
        assert_eq!(
            canonical_slug("Gemma 4 26B (llama.cpp / GGUF) on R9700"),
            "gemma-4-26b-llama-cpp-gguf-on-r9700"
        );
        assert_eq!(canonical_slug("  Mixed_Case--Slug  "), "mixed-case-slug");
        assert_eq!(canonical_slug("support-bot"), "support-bot");
        assert_eq!(canonical_slug("café-au-lait"), "caf-au-lait");
        assert_eq!(canonical_slug("---"), "");
        assert_eq!(canonical_slug(""), "");
        assert_eq!(canonical_slug("A"), "a");
    }

    #[test]
    fn checked_slug_rejects_empty_canonical_forms() {
        assert_eq!(checked_slug(" Support Bot ").unwrap(), "support-bot");
        let err = checked_slug("  ").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(err.message, "validation error: slug must not be empty");
        let err = checked_slug("--- ").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(
            err.message,
            "validation error: slug \"--- \" has no ASCII letter or digit"
        );
    }

    #[test]
    fn required_fields_in_order() {
        let empty = WorkloadSpec::default();
        assert_eq!(
            empty.validate().unwrap_err().message,
            "validation error: name must not be empty"
        );
        let cases = [
            ("name", "validation error: name must not be empty"),
            ("slug", "validation error: slug must not be empty"),
            ("model", "validation error: model must not be empty"),
            ("backend", "validation error: backend must not be empty"),
        ];
        for (field, message) in cases {
            let mut s = spec();
            match field {
                "name" => s.name = " \t".into(),
                "slug" => s.slug = "   ".into(),
                "model" => s.model = String::new(),
                _ => s.backend = "\n".into(),
            }
            let err = s.validate().unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation, "{field}");
            assert_eq!(err.message, message);
            assert_eq!(err.status, None);
        }
        let mut s = spec();
        s.model = String::new();
        s.backend = String::new();
        assert_eq!(
            s.validate().unwrap_err().message,
            "validation error: model must not be empty"
        );
        assert!(spec().validate().is_ok());
    }

    #[test]
    fn slug_of_symbols_only_is_invalid() {
        let mut s = spec();
        s.slug = "(/)".into();
        assert_eq!(s.validate().unwrap_err().kind, ErrorKind::Validation);
    }

    #[test]
    fn secret_scan_everywhere() {
        let token = "ik_live_a1b2c3d4_ffff";
        let secret_message = "configuration error: secrets must never go in specs";
        let hf = "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh";
        let mut placements: Vec<(WorkloadSpec, &str)> = Vec::new();
        let mut s = spec();
        s.command = Some(format!("vllm serve m --api-key {token}"));
        placements.push((s, "command holds an InferenceKey token"));
        let mut s = spec();
        s.description = Some("ik_sdk_0".into());
        placements.push((s, "description holds an InferenceKey token"));
        let mut s = spec();
        s.config = Some(obj(
            json!({"env": {"list": [1, {"deep": format!("x{token}")}]}}),
        ));
        placements.push((s, "config.env.list[1].deep holds an InferenceKey token"));
        let mut s = spec();
        s.execution_policy_config = Some(obj(json!({"headers": [token]})));
        placements.push((
            s,
            "execution_policy_config.headers[0] holds an InferenceKey token",
        ));
        let mut s = spec();
        s.config = Some(obj(json!({token: 1})));
        placements.push((s, "config holds an InferenceKey token"));
        let mut s = spec();
        s.worker_id = Some(token.into());
        placements.push((s, "worker_id holds an InferenceKey token"));
        let mut s = spec();
        s.config = Some(obj(json!({"env": {"HF_TOKEN": hf}})));
        placements.push((s, "config.env.HF_TOKEN holds a Hugging Face token"));
        let mut s = spec();
        s.config = Some(obj(
            json!({"env": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}),
        ));
        placements.push((
            s,
            "config.env.AWS_SECRET_ACCESS_KEY holds a secret-named value",
        ));
        let mut s = spec();
        s.model = "https://user:hunter2hunter2@models.example/x".into();
        placements.push((s, "model holds a password in a URL"));
        for (s, what) in placements {
            let err = s.validate().unwrap_err();
            assert_eq!(err.kind, ErrorKind::Configuration);
            assert_eq!(err.message, format!("{secret_message} ({what})"));
            assert!(!err.message.contains("ffff") && !err.message.contains("AbCd"));
        }
    }

    #[test]
    fn slugs_and_projects_cannot_leave_their_path_segment_or_hold_secrets() {
        let token = "ik_sdk_a1b2c3d4_0123456789abcdef0123456789abcdef";
        for slug in [token, "IK-SDK-A1B2C3D4-0123456789ABCDEF0123"] {
            let err = checked_slug(slug).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Configuration);
            assert_eq!(
                err.message,
                "configuration error: slug holds an InferenceKey token; secrets must never go in slugs or URLs"
            );
        }
        for project in [".", ".."] {
            let err = checked_project(project.to_owned()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation);
        }
        assert_eq!(checked_project("...".to_owned()).unwrap(), "...");
        assert_eq!(
            checked_project(token.to_owned()).unwrap_err().kind,
            ErrorKind::Configuration
        );
    }

    #[test]
    fn prefixes_without_token_are_not_secrets() {
        let mut s = spec();
        s.description = Some("uses an ik_live_ key, never an ik_sdk_-token".into());
        s.config = Some(obj(
            json!({"note": "ik_sdk_", "n": 3, "b": true, "z": null}),
        ));
        assert!(s.validate().is_ok());
        // What real specs hold: model names, revisions, paths, commands with references, tokenizer tokens.
        let mut s = spec();
        s.model = "meta-llama/Llama-3.1-8B-Instruct".into();
        s.command =
            Some("vllm serve meta-llama/Llama-3.1-8B-Instruct --api-key $VLLM_API_KEY".into());
        s.config = Some(obj(json!({
            "revision": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
            "download_dir": "/models/cache",
            "env": {"HF_TOKEN": "$HF_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER": "1"},
            "max_tokens": 4096,
            "bos_token": "<|begin_of_text|>",
        })));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn debug_redacts() {
        let mut s = spec();
        s.command = Some("serve ik_sdk_a1b2c3d4_supersecretvalue".into());
        let shown = format!("{s:?}");
        assert!(!shown.contains("supersecretvalue"), "{shown}");
        assert!(shown.contains("ik_sdk_a1b2c3d4\u{2026}"));
    }

    #[test]
    fn minimal_create_body() {
        assert_eq!(
            spec().create_body(),
            json!({"name": "support-bot", "slug": "support-bot", "task_type": "text2text", "backend": "vllm",
                   "model_name": "meta-llama/Llama-3.1-8B-Instruct"})
        );
    }

    #[test]
    fn full_create_body_with_config_merge() {
        let s = WorkloadSpec {
            name: "Support Bot".into(),
            slug: "Support Bot".into(),
            model: "m".into(),
            backend: "my-custom".into(),
            project: Some("acme".into()),
            description: Some("d".into()),
            command: Some("vllm serve m".into()),
            vllm_version: Some("0.6.3".into()),
            task_type: Some("embedding".into()),
            config: Some(obj(json!({"max_model_len": 8192, "command": "ignored"}))),
            execution_policy: Some("autoscaling".into()),
            execution_policy_config: Some(obj(json!({"min": 0, "max": 2}))),
            worker_id: Some("w1".into()),
            gpu_resource_id: Some("g1".into()),
        };
        let body = s.create_body();
        assert_eq!(
            body,
            json!({"name": "Support Bot", "slug": "support-bot", "description": "d", "task_type": "embedding",
                   "backend": "my-custom", "model_name": "m",
                   "config": {"max_model_len": 8192, "command": "vllm serve m", "vllm_version": "0.6.3"},
                   "execution_policy": "autoscaling", "execution_policy_config": {"min": 0, "max": 2},
                   "worker_id": "w1", "gpu_resource_id": "g1"})
        );
        assert!(body.get("project").is_none());
    }

    #[test]
    fn vllm_version_without_command_and_empty_config() {
        let mut s = spec();
        s.vllm_version = Some("0.6.3".into());
        assert_eq!(s.create_body()["config"], json!({"vllm_version": "0.6.3"}));
        let mut s = spec();
        s.config = Some(Map::new());
        assert!(s.create_body().get("config").is_none());
    }
}
