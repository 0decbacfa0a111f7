//! What counts as a secret and how it is redacted, shared by the SDK core and the local platform: credential
//! shapes found in any text, secret-named keys and flags, and JSON walked with key paths. See README.md.

use serde_json::{Map, Value};

/// What a redacted secret ends with (U+2026): the part before it is all that is shown.
pub const ELLIPSIS: char = '\u{2026}';

/// The kind of a recognised secret, for messages that name what was found without echoing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ik_sdk_`, `ik_live_`, `ik_admin_` tokens, in any case, URL-encoded or in slug form.
    InferenceKey,
    /// `hf_…`, `api_org_…`.
    HuggingFace,
    /// `sk-…`, `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…`.
    OpenAi,
    /// `sk-ant-…`.
    Anthropic,
    /// `sk_live_…`, `rk_live_…`, `whsec_…` and their test twins.
    Stripe,
    /// `AKIA…` / `ASIA…` access key ids.
    Aws,
    /// `ghp_…`, `gho_…`, `ghu_…`, `ghs_…`, `ghr_…`, `github_pat_…`.
    GitHub,
    /// `glpat-…`.
    GitLab,
    /// `xoxb-…` and the other Slack token kinds.
    Slack,
    /// `AIza…`.
    Google,
    /// `npm_…`.
    Npm,
    /// `pypi-…`.
    PyPi,
    /// A JSON Web Token (`eyJ….eyJ….…`).
    Jwt,
    /// A PEM `-----BEGIN … PRIVATE KEY-----` block.
    PrivateKey,
    /// The password of `scheme://user:password@host`.
    UrlPassword,
    /// The credential after `Bearer `.
    Bearer,
    /// The value of a secret-named key or flag (`HF_TOKEN=…`, `"password": "…"`, `--api-key …`).
    Named,
}

impl Kind {
    /// What was found, in words (`"a Hugging Face token"`), never the secret itself.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::InferenceKey => "an InferenceKey token",
            Kind::HuggingFace => "a Hugging Face token",
            Kind::OpenAi => "an OpenAI API key",
            Kind::Anthropic => "an Anthropic API key",
            Kind::Stripe => "a Stripe key",
            Kind::Aws => "an AWS access key",
            Kind::GitHub => "a GitHub token",
            Kind::GitLab => "a GitLab token",
            Kind::Slack => "a Slack token",
            Kind::Google => "a Google API key",
            Kind::Npm => "an npm token",
            Kind::PyPi => "a PyPI token",
            Kind::Jwt => "a JSON Web Token",
            Kind::PrivateKey => "a private key",
            Kind::UrlPassword => "a password in a URL",
            Kind::Bearer => "a bearer credential",
            Kind::Named => "a secret-named value",
        }
    }
}

/// One secret in a text: bytes `start..shown` may be shown, `shown..end` never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// Where the secret starts.
    pub start: usize,
    /// Where the part that may be shown (a prefix, a token id) ends.
    pub shown: usize,
    /// Where the secret ends.
    pub end: usize,
    /// What it is.
    pub kind: Kind,
}

/// A credential shape: a prefix at a word boundary, then a body of characters and length real ones have.
struct Shape {
    prefix: &'static str,
    kind: Kind,
    body: fn(u8) -> bool,
    min: usize,
    /// The body must be exactly `min` long.
    exact: bool,
    /// Random credentials of this shape hold a digit (so `sk-learn-…` style prose is not one).
    needs_digit: bool,
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn alnum_underscore(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

const fn shape(prefix: &'static str, kind: Kind, body: fn(u8) -> bool, min: usize) -> Shape {
    Shape {
        prefix,
        kind,
        body,
        min,
        exact: false,
        needs_digit: false,
    }
}

const fn with_digit(mut s: Shape) -> Shape {
    s.needs_digit = true;
    s
}

const fn exactly(mut s: Shape) -> Shape {
    s.exact = true;
    s
}

/// Longer prefixes first where one starts another (`sk-ant-` before `sk-`).
const SHAPES: &[Shape] = &[
    with_digit(shape("sk-ant-", Kind::Anthropic, key_char, 20)),
    with_digit(shape("sk-proj-", Kind::OpenAi, key_char, 20)),
    with_digit(shape("sk-svcacct-", Kind::OpenAi, key_char, 20)),
    with_digit(shape("sk-admin-", Kind::OpenAi, key_char, 20)),
    with_digit(shape("sk-", Kind::OpenAi, key_char, 20)),
    shape("sk_live_", Kind::Stripe, alnum, 16),
    shape("sk_test_", Kind::Stripe, alnum, 16),
    shape("rk_live_", Kind::Stripe, alnum, 16),
    shape("rk_test_", Kind::Stripe, alnum, 16),
    shape("whsec_", Kind::Stripe, alnum, 24),
    shape("hf_", Kind::HuggingFace, alnum, 30),
    shape("api_org_", Kind::HuggingFace, alnum, 30),
    exactly(shape("AKIA", Kind::Aws, upper_digit, 16)),
    exactly(shape("ASIA", Kind::Aws, upper_digit, 16)),
    shape("ghp_", Kind::GitHub, alnum, 30),
    shape("gho_", Kind::GitHub, alnum, 30),
    shape("ghu_", Kind::GitHub, alnum, 30),
    shape("ghs_", Kind::GitHub, alnum, 30),
    shape("ghr_", Kind::GitHub, alnum, 30),
    shape("github_pat_", Kind::GitHub, alnum_underscore, 30),
    shape("glpat-", Kind::GitLab, key_char, 20),
    shape("xoxb-", Kind::Slack, alnum_dash, 10),
    shape("xoxp-", Kind::Slack, alnum_dash, 10),
    shape("xoxa-", Kind::Slack, alnum_dash, 10),
    shape("xoxr-", Kind::Slack, alnum_dash, 10),
    shape("xoxs-", Kind::Slack, alnum_dash, 10),
    shape("xoxe-", Kind::Slack, alnum_dash, 10),
    shape("xapp-", Kind::Slack, alnum_dash, 10),
    shape("AIza", Kind::Google, key_char, 30),
    shape("npm_", Kind::Npm, alnum, 36),
    shape("pypi-", Kind::PyPi, key_char, 50),
];

/// How many characters of an InferenceKey token's id survive redaction.
const SHOWN_ID_CHARS: usize = 8;
/// A secret-named value or a quoted run is looked at up to this length.
const MAX_VALUE: usize = 4096;
/// Key and flag names longer than this are not looked at.
const MAX_NAME: usize = 64;

/// Every secret in `text`, in order, not overlapping.
pub fn find(text: &str) -> Vec<Found> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match find_at(bytes, at, true) {
            Some(hit) => {
                found.push(hit);
                at = hit.end.max(at + 1);
            }
            None => at += 1,
        }
    }
    found
}

/// The first secret in `text`, if any: what the spec guard refuses.
pub fn contains_secret(text: &str) -> Option<Kind> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find_map(|at| find_at(bytes, at, true).map(|hit| hit.kind))
}

/// `text` with every secret cut to the part that may be shown and `…`. Text without secrets comes back
/// unchanged, and redacting twice changes nothing.
pub fn redact(text: &str) -> String {
    let found = find(text);
    if found.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for hit in found {
        out.push_str(&text[copied..hit.shown]);
        copied = hit.end;
        // Text redacted once keeps its one ellipsis.
        if !text[copied..].starts_with(ELLIPSIS) {
            out.push(ELLIPSIS);
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// A secret starting exactly at `at`. `named` allows the key/flag rule (off when looking inside a value).
fn find_at(bytes: &[u8], at: usize, named: bool) -> Option<Found> {
    let first = *bytes.get(at)?;
    let boundary = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
    if let Some(hit) = inferencekey_token(bytes, at, boundary) {
        return Some(hit);
    }
    if first == b':' {
        return url_password(bytes, at);
    }
    if !boundary {
        return None;
    }
    if let Some(hit) = SHAPES
        .iter()
        .filter(|s| s.prefix.as_bytes()[0] == first)
        .find_map(|s| shaped(bytes, at, s))
    {
        return Some(hit);
    }
    let special = match first {
        b'e' => jwt(bytes, at),
        b'-' => private_key(bytes, at),
        b'B' | b'b' => bearer(bytes, at),
        _ => None,
    };
    special.or_else(|| {
        (named && (first.is_ascii_alphabetic() || first == b'-'))
            .then(|| named_value(bytes, at))
            .flatten()
    })
}

fn run(bytes: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    bytes[from.min(bytes.len())..]
        .iter()
        .take_while(|b| ok(**b))
        .count()
}

fn shaped(bytes: &[u8], at: usize, s: &Shape) -> Option<Found> {
    let body_start = at + s.prefix.len();
    if !bytes[at..].starts_with(s.prefix.as_bytes()) {
        return None;
    }
    let len = run(bytes, body_start, s.body);
    let body = &bytes[body_start..body_start + len];
    let long_enough = if s.exact { len == s.min } else { len >= s.min };
    if !long_enough || (s.needs_digit && !body.iter().any(u8::is_ascii_digit)) {
        return None;
    }
    Some(Found {
        start: at,
        shown: body_start,
        end: body_start + len,
        kind: s.kind,
    })
}

/// A separator of the InferenceKey prefix: `_`, `-` (slug form) or `%5F` (URL-encoded). Its length.
fn separator(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'_' | b'-' => Some(1),
        b'%' if bytes.get(at + 1) == Some(&b'5')
            && bytes
                .get(at + 2)
                .is_some_and(|b| b.eq_ignore_ascii_case(&b'f')) =>
        {
            Some(3)
        }
        _ => None,
    }
}

/// `ik_sdk_<id>_<secret>` and its kin. The plain lower-case form counts as soon as a letter or digit follows the
/// prefix (prose such as "an ik_live_ key" does not); upper-case, URL-encoded and slug forms need the full shape
/// (`<id><sep><16+ characters>`) so names like `IK_SDK_VERSION` stay names.
fn inferencekey_token(bytes: &[u8], at: usize, boundary: bool) -> Option<Found> {
    if !bytes[at..].get(..2)?.eq_ignore_ascii_case(b"ik") {
        return None;
    }
    let sep1 = separator(bytes, at + 2)?;
    let word_at = at + 2 + sep1;
    let word = ["sdk", "live", "admin"].into_iter().find(|w| {
        bytes
            .get(word_at..word_at + w.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(w.as_bytes()))
    })?;
    let sep2 = separator(bytes, word_at + word.len())?;
    let id_start = word_at + word.len() + sep2;
    let id_len = run(bytes, id_start, alnum);
    if id_len == 0 {
        return None;
    }
    let plain = &bytes[at..id_start];
    let lower_plain = plain == b"ik_sdk_" || plain == b"ik_live_" || plain == b"ik_admin_";
    let end = if lower_plain {
        id_start + run(bytes, id_start, alnum_underscore)
    } else {
        if !boundary {
            return None;
        }
        let sep3 = separator(bytes, id_start + id_len)?;
        let secret_start = id_start + id_len + sep3;
        let secret_len = run(bytes, secret_start, alnum);
        if secret_len < 16 {
            return None;
        }
        secret_start + secret_len
    };
    Some(Found {
        start: at,
        shown: id_start + id_len.min(SHOWN_ID_CHARS),
        end,
        kind: Kind::InferenceKey,
    })
}

fn base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `eyJ<header>.<payload>.<signature>`.
fn jwt(bytes: &[u8], at: usize) -> Option<Found> {
    if !bytes[at..].starts_with(b"eyJ") {
        return None;
    }
    let mut end = at;
    for (part, min) in [8, 8, 0].into_iter().enumerate() {
        let len = run(bytes, end, base64url);
        if len < min {
            return None;
        }
        end += len;
        if part < 2 {
            if bytes.get(end) != Some(&b'.') {
                return None;
            }
            end += 1;
        }
    }
    Some(Found {
        start: at,
        shown: at + 3,
        end,
        kind: Kind::Jwt,
    })
}

fn find_from(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// `-----BEGIN … PRIVATE KEY-----` up to its `END` line (or the end of the text).
fn private_key(bytes: &[u8], at: usize) -> Option<Found> {
    if !bytes[at..].starts_with(b"-----BEGIN ") {
        return None;
    }
    let marker = b"PRIVATE KEY-----";
    let header_end = find_from(bytes, at, marker)? + marker.len();
    // A block redacted once is its header and `…`.
    if header_end - at > 64 || bytes[header_end..].starts_with("\u{2026}".as_bytes()) {
        return None;
    }
    let end = find_from(bytes, header_end, b"-----END ")
        .and_then(|end| find_from(bytes, end + 9, b"-----").map(|tail| tail + 5))
        .unwrap_or(bytes.len());
    Some(Found {
        start: at,
        shown: header_end,
        end,
        kind: Kind::PrivateKey,
    })
}

/// The password of `scheme://user:password@host`, found at the `:` of `://`.
fn url_password(bytes: &[u8], at: usize) -> Option<Found> {
    if !bytes[at..].starts_with(b"://") || at == 0 || !bytes[at - 1].is_ascii_alphanumeric() {
        return None;
    }
    let userinfo = at + 3;
    let len = bytes[userinfo..]
        .iter()
        .take(MAX_VALUE)
        .take_while(|b| {
            !matches!(
                b,
                b'/' | b'?' | b'#' | b'@' | b'"' | b'\'' | b'<' | b'>' | b'\\'
            ) && !b.is_ascii_whitespace()
        })
        .count();
    let end = userinfo + len;
    if bytes.get(end) != Some(&b'@') {
        return None;
    }
    let colon = bytes[userinfo..end].iter().position(|b| *b == b':')? + userinfo + 1;
    let password = &bytes[colon..end];
    if password.is_empty() || password == "\u{2026}".as_bytes() {
        return None;
    }
    Some(Found {
        start: colon,
        shown: colon,
        end,
        kind: Kind::UrlPassword,
    })
}

fn bearer_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
}

/// `Bearer <credential>` (16+ characters with a digit). A credential of a known shape is left to its own rule,
/// which shows more of it (an InferenceKey token's id).
fn bearer(bytes: &[u8], at: usize) -> Option<Found> {
    if !bytes[at..].get(..7)?.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let value = at + 7 + run(bytes, at + 7, |b| b == b' ');
    if find_at(bytes, value, false).is_some() {
        return None;
    }
    let len = run(bytes, value, bearer_char);
    let token = &bytes[value..value + len];
    if len < 16 || !token.iter().any(u8::is_ascii_digit) {
        return None;
    }
    Some(Found {
        start: value,
        shown: value,
        end: value + len,
        kind: Kind::Bearer,
    })
}

fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// The value given to a secret-named key or flag: `HF_TOKEN=v`, `"api_key": "v"`, `password: v`,
/// `--api-key v`, `--hf-token=v`, also inside JSON that was itself put in a string (`\"`).
fn named_value(bytes: &[u8], at: usize) -> Option<Found> {
    let flag = bytes[at..].starts_with(b"--");
    let name_start = if flag { at + 2 } else { at };
    if !bytes.get(name_start)?.is_ascii_alphabetic() {
        return None;
    }
    // Names are short; a cap keeps a scan of long dashed text linear.
    let name_len = bytes[name_start..]
        .iter()
        .take(MAX_NAME + 1)
        .take_while(|b| name_char(**b))
        .count();
    if name_len > MAX_NAME {
        return None;
    }
    let name = std::str::from_utf8(&bytes[name_start..name_start + name_len]).ok()?;
    if !secret_named(name) {
        return None;
    }
    let mut i = name_start + name_len;
    i += run(bytes, i, |b| matches!(b, b'"' | b'\'' | b'\\')).min(2);
    let spaces = run(bytes, i, |b| b == b' ' || b == b'\t');
    i += spaces;
    match bytes.get(i) {
        Some(b'=') | Some(b':') => i += 1,
        Some(_) if flag && spaces > 0 => {}
        _ => return None,
    }
    i += run(bytes, i, |b| b == b' ' || b == b'\t');
    let quotes = run(bytes, i, |b| matches!(b, b'"' | b'\'' | b'\\')).min(2);
    let quoted = quotes > 0 && bytes[i + quotes - 1] != b'\\';
    i += quotes;
    // A value of a known shape is reported as that shape, which names it better and shows its prefix.
    if let Some(hit) = find_at(bytes, i, false) {
        return Some(hit);
    }
    let len = bytes[i..]
        .iter()
        .take(MAX_VALUE)
        .take_while(|b| {
            let stop = matches!(b, b'"' | b'\'' | b'\\')
                || (!quoted
                    && (b.is_ascii_whitespace()
                        || matches!(b, b',' | b';' | b'&' | b'}' | b')' | b']' | b'<' | b'>')));
            !stop
        })
        .count();
    let value = std::str::from_utf8(&bytes[i..i + len]).ok()?;
    if !credential_like(value) {
        return None;
    }
    Some(Found {
        start: i,
        shown: i,
        end: i + len,
        kind: Kind::Named,
    })
}

/// The words of a key or flag name, lower-cased: `HF_TOKEN` → `hf token`, `apiKey` → `api key`.
fn name_words(name: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// True for names that hold credentials: ending in `token`, `secret`, `password`, `passwd`, `passphrase`,
/// `apikey`, `credential(s)`, or in `api key`, `access key`, `secret key`, `private key`, `auth key`, ... Names of
/// tokenizer tokens and counts (`bos_token`, `max_tokens`) are not.
pub fn secret_named(name: &str) -> bool {
    const LAST: &[&str] = &[
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "apikey",
        "credential",
        "credentials",
        "secretkey",
        "accesskey",
        "privatekey",
    ];
    const PAIRS: &[(&str, &str)] = &[
        ("api", "key"),
        ("access", "key"),
        ("secret", "key"),
        ("private", "key"),
        ("auth", "key"),
        ("signing", "key"),
        ("encryption", "key"),
        ("master", "key"),
        ("license", "key"),
    ];
    const NOT_FIRST: &[&str] = &[
        "bos", "eos", "pad", "unk", "sep", "cls", "mask", "max", "min", "num", "special", "stop",
        "start", "end", "image", "audio", "video",
    ];
    let words = name_words(name);
    let Some(last) = words.last() else {
        return false;
    };
    if words.len() > 1 && NOT_FIRST.contains(&words[0].as_str()) {
        return false;
    }
    if LAST.contains(&last.as_str()) {
        return true;
    }
    words.len() >= 2 && {
        let pair = (words[words.len() - 2].as_str(), last.as_str());
        PAIRS.iter().any(|(a, b)| *a == pair.0 && *b == pair.1)
    }
}

/// True when a value given to a secret-named key looks like a credential rather than a reference or a
/// placeholder: 8 or more characters, no white space, not `$VAR`, `${VAR}`, `<placeholder>`, `{{template}}`, a
/// path, or text already redacted.
pub fn credential_like(value: &str) -> bool {
    let value = value.trim();
    value.chars().count() >= 8
        && !value.chars().any(char::is_whitespace)
        && !value.contains(ELLIPSIS)
        && !["$", "<", "{", "%", "/", "./", "../", "~"]
            .iter()
            .any(|p| value.starts_with(p))
}

/// The first secret in a JSON value: its path below `path` (`config.env.HF_TOKEN`, `config.args[2]`) and kind.
/// Strings are searched, keys too, and a string under a secret-named key counts when it looks like a credential.
pub fn find_in_json(value: &Value, path: &str) -> Option<(String, Kind)> {
    match value {
        Value::String(text) => contains_secret(text).map(|kind| (path.to_owned(), kind)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_in_json(item, &format!("{path}[{i}]"))),
        Value::Object(map) => find_in_map(map, path),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// [`find_in_json`] for an object's entries.
pub fn find_in_map(map: &Map<String, Value>, path: &str) -> Option<(String, Kind)> {
    map.iter().find_map(|(key, value)| {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if let Some(kind) = contains_secret(key) {
            // The key itself is the secret: name the object, not the key.
            return Some((path.to_owned(), kind));
        }
        find_in_json(value, &here).or_else(|| match value {
            Value::String(text) if secret_named(key) && credential_like(text) => {
                Some((here, Kind::Named))
            }
            _ => None,
        })
    })
}

/// `value` with every string redacted and every credential-like string under a secret-named key hidden.
pub fn redact_json(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(redact(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = match value {
                        // A value of a known shape keeps its prefix; any other credential under a secret name
                        // is hidden whole.
                        Value::String(text)
                            if secret_named(&key)
                                && credential_like(&text)
                                && find(&text).is_empty() =>
                        {
                            Value::String(ELLIPSIS.to_string())
                        }
                        other => redact_json(other),
                    };
                    (redact(&key), value)
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests;
