//! A deterministic JSON generator for a JSON schema: tool-call arguments and `json_schema`
//! replies. It covers the subset engines' guided decoding is asked for in practice (`type`,
//! `enum`, `const`, `properties`/`required`, `items`, `minItems`/`maxItems`, `minimum`/`maximum`
//! and their exclusive forms, `minLength`/`maxLength`, `anyOf`/`oneOf`/`allOf` by first branch),
//! and produces every property of an object, optional ones included.

use serde_json::{Map, Value};

use crate::rng::SplitMix64;

/// Words for generated strings: plain ASCII so a value fits any `pattern`-free string schema.
const STRING_WORDS: &[&str] = &[
    "alpha", "bravo", "paris", "tokyo", "blue", "green", "river", "stone", "delta", "amber",
];

/// How deep nested schemas are followed; below it every value is `null`.
const MAX_DEPTH: usize = 16;

/// A value valid against `schema`, drawn from `rng`.
pub fn generate(schema: &Value, rng: &mut SplitMix64) -> Value {
    value(schema, rng, 0)
}

fn value(schema: &Value, rng: &mut SplitMix64, depth: usize) -> Value {
    let Some(spec) = schema.as_object() else {
        // `true` or an unusable schema: anything goes.
        return Value::from(word(rng));
    };
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(constant) = spec.get("const") {
        return constant.clone();
    }
    if let Some(options) = spec.get("enum").and_then(Value::as_array) {
        if !options.is_empty() {
            let pick = rng.below(options.len() as u64) as usize;
            return options.get(pick).cloned().unwrap_or(Value::Null);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = spec
            .get(key)
            .and_then(Value::as_array)
            .and_then(|branches| branches.first())
        {
            return value(first, rng, depth + 1);
        }
    }
    match type_of(spec).as_str() {
        "object" => object(spec, rng, depth),
        "array" => array(spec, rng, depth),
        "string" => string(spec, rng),
        "integer" => integer(spec, rng),
        "number" => number(spec, rng),
        "boolean" => Value::Bool(rng.below(2) == 1),
        "null" => Value::Null,
        _ => Value::from(word(rng)),
    }
}

/// The schema's type: `type` (the first non-`null` of a list), else guessed from its keywords.
fn type_of(spec: &Map<String, Value>) -> String {
    match spec.get("type") {
        Some(Value::String(kind)) => return kind.clone(),
        Some(Value::Array(kinds)) => {
            let named: Vec<&str> = kinds.iter().filter_map(Value::as_str).collect();
            if let Some(kind) = named.iter().find(|kind| **kind != "null").or(named.first()) {
                return (*kind).to_string();
            }
        }
        _ => {}
    }
    if spec.contains_key("properties") {
        "object".to_string()
    } else if spec.contains_key("items") {
        "array".to_string()
    } else {
        "string".to_string()
    }
}

fn word(rng: &mut SplitMix64) -> &'static str {
    STRING_WORDS[rng.below(STRING_WORDS.len() as u64) as usize]
}

fn object(spec: &Map<String, Value>, rng: &mut SplitMix64, depth: usize) -> Value {
    let mut out = Map::new();
    if let Some(properties) = spec.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            out.insert(name.clone(), value(property, rng, depth + 1));
        }
    }
    // A required name without a property schema still gets a value.
    if let Some(required) = spec.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !out.contains_key(name) {
                out.insert(name.to_string(), Value::from(word(rng)));
            }
        }
    }
    Value::Object(out)
}

fn array(spec: &Map<String, Value>, rng: &mut SplitMix64, depth: usize) -> Value {
    let min = spec.get("minItems").and_then(Value::as_u64).unwrap_or(1);
    let max = spec
        .get("maxItems")
        .and_then(Value::as_u64)
        .unwrap_or(2)
        .max(min);
    // 1-2 elements, moved into [minItems, maxItems] when the schema says so (capped at 64).
    let wanted = 1 + rng.below(2);
    let count = wanted.max(min).min(max).min(64);
    let items = spec.get("items").cloned().unwrap_or(Value::Bool(true));
    Value::Array((0..count).map(|_| value(&items, rng, depth + 1)).collect())
}

fn string(spec: &Map<String, Value>, rng: &mut SplitMix64) -> Value {
    let format = spec.get("format").and_then(Value::as_str).unwrap_or("");
    let mut text = match format {
        "date" => format!("2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        "date-time" => format!(
            "2026-{:02}-{:02}T{:02}:00:00Z",
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24)
        ),
        "email" => format!("{}@example.com", word(rng)),
        "uuid" => {
            let hex = rng.hex(32);
            format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            )
        }
        _ => word(rng).to_string(),
    };
    let min = spec.get("minLength").and_then(Value::as_u64).unwrap_or(0);
    let max = spec.get("maxLength").and_then(Value::as_u64);
    while (text.len() as u64) < min.min(4096) {
        text.push('a');
    }
    if let Some(max) = max {
        text.truncate(usize::try_from(max).unwrap_or(usize::MAX).min(text.len()));
    }
    Value::from(text)
}

/// The bounds `[low, high]` of a numeric schema, exclusive bounds moved inward by `step`.
fn bounds(spec: &Map<String, Value>, step: f64, default: (f64, f64)) -> (f64, f64) {
    let get = |key: &str| spec.get(key).and_then(Value::as_f64);
    let low = match (get("minimum"), get("exclusiveMinimum")) {
        (Some(a), Some(b)) => a.max(b + step),
        (Some(a), None) => a,
        (None, Some(b)) => b + step,
        (None, None) => default.0,
    };
    let high = match (get("maximum"), get("exclusiveMaximum")) {
        (Some(a), Some(b)) => a.min(b - step),
        (Some(a), None) => a,
        (None, Some(b)) => b - step,
        (None, None) => default.1.max(low + 100.0),
    };
    // Only one bound given: stay near it.
    let low = if get("minimum").is_none() && get("exclusiveMinimum").is_none() {
        low.max(high - 100.0).min(high)
    } else {
        low
    };
    (low, high.max(low))
}

fn integer(spec: &Map<String, Value>, rng: &mut SplitMix64) -> Value {
    let (low, high) = bounds(spec, 1.0, (0.0, 100.0));
    let low = low.ceil() as i64;
    let high = (high.floor() as i64).max(low);
    let span = high.saturating_sub(low).saturating_add(1).max(1) as u64;
    Value::from(low.saturating_add(rng.below(span) as i64))
}

fn number(spec: &Map<String, Value>, rng: &mut SplitMix64) -> Value {
    let (low, high) = bounds(spec, 0.001, (0.0, 100.0));
    // Two decimals, kept inside the bounds.
    let raw = low + (high - low) * rng.unit();
    let rounded = (raw * 100.0).round() / 100.0;
    let picked = if rounded < low || rounded > high {
        raw
    } else {
        rounded
    };
    serde_json::Number::from_f64(picked).map_or(Value::from(0), Value::Number)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn gen(schema: Value, seed: u64) -> Value {
        generate(&schema, &mut SplitMix64::new(seed))
    }

    #[test]
    fn objects_have_every_property() {
        let schema = json!({"type": "object", "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 3},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "where": {"type": "object", "properties": {"lat": {"type": "number"}},
                      "required": ["lat", "lon"]},
        }, "required": ["city"]});
        for seed in 0..50 {
            let v = gen(schema.clone(), seed);
            assert!(v["city"].is_string());
            assert!(["c", "f"].contains(&v["unit"].as_str().unwrap()));
            assert!((1..=3).contains(&v["days"].as_i64().unwrap()));
            let ratio = v["ratio"].as_f64().unwrap();
            assert!(ratio > 0.0 && ratio <= 1.0, "{ratio}");
            assert!(v["ok"].is_boolean());
            let tags = v["tags"].as_array().unwrap();
            assert!((1..=2).contains(&tags.len()));
            assert!(v["where"]["lat"].is_number() && v["where"]["lon"].is_string());
        }
        assert_eq!(gen(schema.clone(), 1), gen(schema, 1));
    }

    #[test]
    fn edge_schemas() {
        assert_eq!(gen(json!({"const": 5}), 0), json!(5));
        assert!(
            gen(json!({"type": ["null", "integer"], "maximum": -10}), 0)
                .as_i64()
                .unwrap()
                <= -10
        );
        assert_eq!(
            gen(json!({"type": "string", "maxLength": 2}), 0)
                .as_str()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            gen(json!({"type": "string", "minLength": 9}), 0)
                .as_str()
                .unwrap()
                .len(),
            9
        );
        let items = gen(
            json!({"type": "array", "minItems": 3, "items": {"enum": [1]}}),
            0,
        );
        assert_eq!(items, json!([1, 1, 1]));
        assert!(gen(
            json!({"anyOf": [{"type": "integer"}, {"type": "string"}]}),
            0
        )
        .is_i64());
        assert!(gen(json!({}), 0).is_string());
        assert!(gen(json!({"type": "object"}), 0)
            .as_object()
            .unwrap()
            .is_empty());
    }
}
