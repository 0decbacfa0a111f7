//! Deploy manifests: a TOML file of `[[workload]]` tables with `WorkloadSpec`'s field names, read into specs
//! with the checks of the Python API (required fields, the secret scan) plus those a file needs (unknown
//! fields, value types, duplicate slugs). Every message is one line naming the file and, when known, the line.

use std::path::Path;

use serde_json::{Map, Number, Value};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{Error, ErrorKind, Result};
use crate::spec::{canonical_slug, spec_field, FieldSetter, WorkloadSpec, SPEC_FIELDS};
use crate::token::contains_secret;

/// The top-level key holding the workloads (`[[workload]]`).
const WORKLOAD_KEY: &str = "workload";

/// The message of the secret scan, as `WorkloadSpec::validate` words it.
const SECRET_MESSAGE: &str = "configuration error: secrets must never go in specs";

/// Read the deploy manifest at `path` and return its workloads, in file order, each one checked as
/// `WorkloadSpec::validate` checks it. A file that cannot be read, or that holds a token anywhere (comments
/// included), is a `Configuration` error; a syntax error, an unknown field, a value of the wrong type, a missing
/// or blank required field or two workloads with the same canonical slug is a `Validation` error.
pub fn load_manifest(path: &Path) -> Result<Vec<WorkloadSpec>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| {
        Error::configuration(format!("configuration error: cannot read {origin}: {err}"))
    })?;
    parse_manifest(&text, &origin)
}

/// Parse manifest `text`; `origin` names it in messages (the path, as the user gave it). See [`load_manifest`].
pub fn parse_manifest(text: &str, origin: &str) -> Result<Vec<WorkloadSpec>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Before parsing, so that no message (a syntax error quoting its line, say) can ever hold the token.
    if let Some((line, kind)) = text
        .lines()
        .enumerate()
        .find_map(|(line, text)| Some((line, contains_secret(text)?)))
    {
        return Err(Error::configuration(format!(
            "{SECRET_MESSAGE} ({origin}:{} holds {})",
            line + 1,
            kind.describe()
        )));
    }
    let file = File { text, origin };
    let root = DeTable::parse(text).map_err(|err| file.syntax_error(&err))?;
    let items = file.workload_items(root.get_ref())?;
    let mut specs: Vec<WorkloadSpec> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let spec = file.workload(index + 1, item)?;
        let slug = canonical_slug(&spec.slug);
        if let Some(first) = specs.iter().position(|s| canonical_slug(&s.slug) == slug) {
            return Err(file.invalid(
                item.span().start,
                format_args!(
                    "workload #{} ({:?}) has the slug {slug:?} of workload #{}",
                    index + 1,
                    spec.slug,
                    first + 1
                ),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// The manifest being read, for positions and messages.
struct File<'a> {
    text: &'a str,
    origin: &'a str,
}

impl File<'_> {
    /// `origin:line` for a byte offset of the text.
    fn at(&self, offset: usize) -> String {
        let before = self
            .text
            .as_bytes()
            .get(..offset)
            .unwrap_or(self.text.as_bytes());
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        format!("{}:{line}", self.origin)
    }

    /// A validation error at `offset`: `validation error: origin:line: detail`.
    fn invalid(&self, offset: usize, detail: impl std::fmt::Display) -> Error {
        Error::validation(format_args!("{}: {detail}", self.at(offset)))
    }

    /// A TOML syntax error, on one line, at the position the parser reports.
    fn syntax_error(&self, err: &toml::de::Error) -> Error {
        let detail = one_line(err.message());
        match err.span() {
            Some(span) => {
                let line_start = self.text.get(..span.start).map_or(0, |before| {
                    before.rfind('\n').map_or(0, |newline| newline + 1)
                });
                let column = self
                    .text
                    .get(line_start..span.start)
                    .map_or(1, |part| part.chars().count() + 1);
                Error::validation(format_args!(
                    "{}:{column}: invalid TOML: {detail}",
                    self.at(span.start)
                ))
            }
            None => Error::validation(format_args!("{}: invalid TOML: {detail}", self.origin)),
        }
    }

    /// The `[[workload]]` tables of the document (at least one); no other top-level key is allowed.
    fn workload_items<'d, 'i>(&self, root: &'d DeTable<'i>) -> Result<&'d [Spanned<DeValue<'i>>]> {
        let mut items = None;
        for (key, value) in root {
            if key.get_ref() != WORKLOAD_KEY {
                return Err(self.invalid(
                    key.span().start,
                    format_args!(
                        "unknown top-level key {:?} (declare each workload in a [[workload]] table)",
                        key.get_ref()
                    ),
                ));
            }
            match value.get_ref() {
                DeValue::Array(array) if array.iter().all(|item| item.get_ref().is_table()) => {
                    items = Some(&array[..]);
                }
                _ => {
                    return Err(self.invalid(
                        key.span().start,
                        "\"workload\" must be an array of tables: declare each workload in a [[workload]] table",
                    ))
                }
            }
        }
        match items {
            Some(items) if !items.is_empty() => Ok(items),
            _ => Err(Error::validation(format_args!(
                "{}: declares no workload (add a [[workload]] table)",
                self.origin
            ))),
        }
    }

    /// The spec of workload #`index` (1-based), checked field by field, then as `WorkloadSpec::validate` checks.
    fn workload(&self, index: usize, item: &Spanned<DeValue<'_>>) -> Result<WorkloadSpec> {
        let Some(table) = item.get_ref().as_table() else {
            return Err(self.invalid(
                item.span().start,
                format_args!("workload #{index} must be a table"),
            ));
        };
        // Messages name the workload by its slug too, when it has a string one.
        let named = match table.get("slug").and_then(|slug| slug.get_ref().as_str()) {
            Some(slug) => format!("workload #{index} ({slug:?})"),
            None => format!("workload #{index}"),
        };
        let mut spec = WorkloadSpec::default();
        for (key, value) in table {
            let field = key.get_ref().as_ref();
            let Some(spec_field) = spec_field(field) else {
                return Err(self.invalid(
                    key.span().start,
                    format_args!("{named}: unknown field {field:?}"),
                ));
            };
            let wrong_type = |expected: &str| {
                self.invalid(
                    value.span().start,
                    format_args!(
                        "{named}: {field} must be a {expected}, got {}",
                        value.get_ref().type_str()
                    ),
                )
            };
            match spec_field.set {
                FieldSetter::Text(set) => {
                    let text = value
                        .get_ref()
                        .as_str()
                        .ok_or_else(|| wrong_type("string"))?;
                    set(&mut spec, text.to_owned());
                }
                FieldSetter::Table(set) => {
                    let table = value
                        .get_ref()
                        .as_table()
                        .ok_or_else(|| wrong_type("table"))?;
                    set(&mut spec, self.json_table(table, field, &named)?);
                }
            }
        }
        if let Some(missing) = SPEC_FIELDS
            .iter()
            .find(|field| field.required && !table.contains_key(field.name))
        {
            let missing = missing.name;
            return Err(self.invalid(
                item.span().start,
                format_args!("{named}: missing required field {missing:?}"),
            ));
        }
        spec.validate()
            .map_err(|err| in_context(err, &format!("{}: {named}", self.at(item.span().start))))?;
        Ok(spec)
    }

    /// A TOML table as a JSON object; `path` is its dotted field name, for messages.
    fn json_table(
        &self,
        table: &DeTable<'_>,
        path: &str,
        named: &str,
    ) -> Result<Map<String, Value>> {
        let mut map = Map::new();
        for (key, value) in table {
            let key = key.get_ref().as_ref();
            let value = self.json_value(value, &format!("{path}.{key}"), named)?;
            map.insert(key.to_owned(), value);
        }
        Ok(map)
    }

    /// A TOML value as JSON: a datetime becomes its TOML text; a float JSON cannot carry (nan, inf) is refused.
    fn json_value(&self, value: &Spanned<DeValue<'_>>, path: &str, named: &str) -> Result<Value> {
        let not_json =
            |what: &str| self.invalid(value.span().start, format_args!("{named}: {path}: {what}"));
        Ok(match value.get_ref() {
            DeValue::String(text) => Value::String(text.to_string()),
            DeValue::Boolean(flag) => Value::Bool(*flag),
            DeValue::Datetime(datetime) => Value::String(datetime.to_string()),
            DeValue::Integer(integer) => i64::from_str_radix(integer.as_str(), integer.radix())
                .map(Value::from)
                .map_err(|_| not_json("integer out of the 64-bit range"))?,
            DeValue::Float(float) => float
                .as_str()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| not_json("nan and inf are not JSON numbers"))?,
            DeValue::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.json_value(item, &format!("{path}[{i}]"), named))
                    .collect::<Result<_>>()?,
            ),
            DeValue::Table(table) => Value::Object(self.json_table(table, path, named)?),
        })
    }
}

/// `err` (from `WorkloadSpec::validate`) with `context` (file, line, workload) in its message, still one line:
/// `validation error: <context>: <detail>`, or `<message> (<context>)` for the secret scan's fixed wording.
fn in_context(err: Error, context: &str) -> Error {
    match err.kind {
        ErrorKind::Validation => {
            let detail = err
                .message
                .strip_prefix("validation error: ")
                .unwrap_or(&err.message);
            Error::validation(format_args!("{context}: {detail}"))
        }
        // `head (detail)` becomes `head (context: detail)`: one parenthesis, where first, then what.
        _ => match err
            .message
            .strip_suffix(')')
            .and_then(|m| m.split_once(" ("))
        {
            Some((head, detail)) => Error::new(err.kind, format!("{head} ({context}: {detail})")),
            None => Error::new(err.kind, format!("{} ({context})", err.message)),
        },
    }
}

/// `text` on one line: runs of whitespace (newlines included) become one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::spec::test_support::obj;
    use serde_json::json;

    const TWO: &str = r#"
# Two workloads of one service.
[[workload]]
name = "Support Bot"
slug = "support-bot"
model = "meta-llama/Llama-3.1-8B-Instruct"
backend = "vllm"
command = "vllm serve meta-llama/Llama-3.1-8B-Instruct"
vllm_version = "0.6.3"

[workload.config]
max_model_len = 8192
gpu_memory_utilization = 0.9
enforce_eager = true
stop = ["</s>", "<|eot_id|>"]
released = 2026-06-15
env = { HF_HOME = "/models" }

[[workload]]
name = "Embedder"
slug = "embedder"
model = "BAAI/bge-small-en-v1.5"
backend = "ollama"
project = "search"
description = "query embeddings"
task_type = "embedding"
execution_policy = "autoscaling"
execution_policy_config = { min = 0, max = 0x10 }
worker_id = "w1"
gpu_resource_id = "g1"
"#;

    fn parse(text: &str) -> Result<Vec<WorkloadSpec>> {
        parse_manifest(text, "deploy.toml")
    }

    fn message(text: &str) -> String {
        let err = parse(text).unwrap_err();
        assert!(!err.message.contains('\n'), "{}", err.message);
        err.message
    }

    fn workload(body: &str) -> String {
        format!("[[workload]]\nname = \"Bot\"\nslug = \"bot\"\nmodel = \"m\"\nbackend = \"vllm\"\n{body}")
    }

    #[test]
    fn every_field_in_file_order() {
        let specs = parse(TWO).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[0],
            WorkloadSpec {
                name: "Support Bot".into(),
                slug: "support-bot".into(),
                model: "meta-llama/Llama-3.1-8B-Instruct".into(),
                backend: "vllm".into(),
                command: Some("vllm serve meta-llama/Llama-3.1-8B-Instruct".into()),
                vllm_version: Some("0.6.3".into()),
                config: Some(obj(json!({
                    "max_model_len": 8192, "gpu_memory_utilization": 0.9, "enforce_eager": true,
                    "stop": ["</s>", "<|eot_id|>"], "released": "2026-06-15", "env": {"HF_HOME": "/models"}
                }))),
                ..WorkloadSpec::default()
            }
        );
        let keys: Vec<&String> = specs[0].config.as_ref().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "max_model_len",
                "gpu_memory_utilization",
                "enforce_eager",
                "stop",
                "released",
                "env"
            ]
        );
        assert_eq!(
            specs[1],
            WorkloadSpec {
                name: "Embedder".into(),
                slug: "embedder".into(),
                model: "BAAI/bge-small-en-v1.5".into(),
                backend: "ollama".into(),
                project: Some("search".into()),
                description: Some("query embeddings".into()),
                task_type: Some("embedding".into()),
                execution_policy: Some("autoscaling".into()),
                execution_policy_config: Some(obj(json!({"min": 0, "max": 16}))),
                worker_id: Some("w1".into()),
                gpu_resource_id: Some("g1".into()),
                ..WorkloadSpec::default()
            }
        );
    }

    #[test]
    fn inline_array_of_tables_and_a_bom() {
        let text = "\u{feff}workload = [{ name = \"A\", slug = \"a\", model = \"m\", backend = \"vllm\" }]\n";
        assert_eq!(parse(text).unwrap()[0].slug, "a");
    }

    #[test]
    fn unknown_field_names_the_field_the_workload_and_the_line() {
        let text = format!(
            "{}\n{}",
            workload(""),
            workload("modle = \"x\"").replace("\"bot\"", "\"chat\"")
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(
            err.message,
            "validation error: deploy.toml:12: workload #2 (\"chat\"): unknown field \"modle\""
        );
        assert_eq!(
            message("[[workload]]\nslug = 5\nextra = 1\n"),
            "validation error: deploy.toml:2: workload #1: slug must be a string, got integer"
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            message(&workload("description = 3")),
            "validation error: deploy.toml:6: workload #1 (\"bot\"): description must be a string, got integer"
        );
        assert_eq!(
            message(&workload("config = \"max_model_len=8192\"")),
            "validation error: deploy.toml:6: workload #1 (\"bot\"): config must be a table, got string"
        );
        assert_eq!(
            message(&workload("[workload.execution_policy_config]\nmax = nan")),
            "validation error: deploy.toml:7: workload #1 (\"bot\"): execution_policy_config.max: nan and inf are \
             not JSON numbers"
        );
        assert_eq!(
            message(&workload("config = { limits = [1, inf] }")),
            "validation error: deploy.toml:6: workload #1 (\"bot\"): config.limits[1]: nan and inf are not JSON \
             numbers"
        );
        let text = "[[workload]]\nname = true\nslug = \"x\"\nmodel = \"m\"\nbackend = \"vllm\"\n";
        assert!(message(text).ends_with("workload #1 (\"x\"): name must be a string, got boolean"));
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            message("[[workload]]\nname = \"Bot\"\nslug = \"bot\"\nbackend = \"vllm\"\n"),
            "validation error: deploy.toml:1: workload #1 (\"bot\"): missing required field \"model\""
        );
        let blank = workload("").replace("model = \"m\"", "model = \"  \"");
        let err = parse(&blank).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(
            err.message,
            "validation error: deploy.toml:1: workload #1 (\"bot\"): model must not be empty"
        );
        assert_eq!(
            message(&workload("").replace("slug = \"bot\"", "slug = \"(/)\"")),
            "validation error: deploy.toml:1: workload #1 (\"(/)\"): slug \"(/)\" has no ASCII letter or digit"
        );
    }

    #[test]
    fn duplicate_canonical_slugs() {
        let text = format!(
            "{}\n{}",
            workload(""),
            workload("").replace("slug = \"bot\"", "slug = \"Bot\"")
        );
        assert_eq!(
            message(&text),
            "validation error: deploy.toml:7: workload #2 (\"Bot\") has the slug \"bot\" of workload #1"
        );
    }

    #[test]
    fn document_shape() {
        assert_eq!(
            message(""),
            "validation error: deploy.toml: declares no workload (add a [[workload]] table)"
        );
        assert_eq!(
            message("workload = []"),
            "validation error: deploy.toml: declares no workload (add a [[workload]] table)"
        );
        assert_eq!(
            message("title = \"x\"\n"),
            "validation error: deploy.toml:1: unknown top-level key \"title\" (declare each workload in a \
             [[workload]] table)"
        );
        for text in [
            "[workload]\nname = \"x\"\n",
            "workload = 1\n",
            "workload = [1, 2]\n",
        ] {
            assert_eq!(
                message(text),
                "validation error: deploy.toml:1: \"workload\" must be an array of tables: declare each workload \
                 in a [[workload]] table",
                "{text}"
            );
        }
    }

    #[test]
    fn syntax_errors_are_one_line_with_line_and_column() {
        let err = parse("[[workload]]\nname = \"Bot\nslug = \"x\"\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert!(
            err.message.starts_with("validation error: deploy.toml:2:"),
            "{}",
            err.message
        );
        assert!(err.message.contains("invalid TOML: "), "{}", err.message);
        assert!(!err.message.contains('\n'));
        let duplicate = message(&workload("name = \"again\""));
        assert!(
            duplicate.starts_with("validation error: deploy.toml:6:1: invalid TOML: "),
            "{duplicate}"
        );
    }

    #[test]
    fn integers_beyond_64_bits_are_refused() {
        assert!(message(&workload("config = { n = 0xffffffffffffffff }"))
            .ends_with("config.n: integer out of the 64-bit range"));
    }

    #[test]
    fn a_token_anywhere_is_refused_without_showing_it() {
        let token = "ik_live_a1b2c3d4_0123456789abcdef";
        for (body, line) in [
            (format!("command = \"vllm serve m --api-key {token}\""), 6),
            (format!("# my key: {token}"), 6),
            (format!("config = {{ headers = [\"Bearer {token}\"] }}"), 6),
            (format!("[workload.config]\n\"{token}\" = 1"), 7),
            (format!("oops = \"{token}\""), 6),
            (format!("description = \"unterminated {token}"), 6),
            ("description = \"ik_sdk_0\"".to_owned(), 6),
        ] {
            let err = parse(&workload(&body)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Configuration, "{body}");
            assert_eq!(
                err.message,
                format!(
                    "configuration error: secrets must never go in specs (deploy.toml:{line} holds an InferenceKey token)"
                )
            );
        }
        // An escaped token is only a token once parsed: the spec's own scan finds it.
        let escaped = workload("worker_id = \"ik\\u005Flive_a1b2c3d4_0123456789abcdef\"");
        let err = parse(&escaped).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Configuration);
        assert_eq!(
            err.message,
            "configuration error: secrets must never go in specs (deploy.toml:1: workload #1 (\"bot\"): worker_id \
             holds an InferenceKey token)"
        );
    }

    #[test]
    fn prose_about_tokens_is_not_a_token() {
        let specs = parse(&workload("description = \"needs an ik_live_ key\"")).unwrap();
        assert_eq!(
            specs[0].description.as_deref(),
            Some("needs an ik_live_ key")
        );
    }

    #[test]
    fn unreadable_files_are_configuration_errors() {
        let dir = std::env::temp_dir().join(format!("ik-manifest-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.toml");
        let err = load_manifest(&missing).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Configuration);
        assert!(
            err.message.starts_with(&format!(
                "configuration error: cannot read {}: ",
                missing.display()
            )),
            "{}",
            err.message
        );
        let file = dir.join("deploy.toml");
        std::fs::write(&file, workload("")).unwrap();
        assert_eq!(load_manifest(&file).unwrap()[0].slug, "bot");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
