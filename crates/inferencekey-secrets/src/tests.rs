#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use proptest::prelude::*;

const SDK: &str =
    "ik_sdk_a1b2c3d4_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const HF: &str = "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh";
const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const JWT: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

/// One secret of every recognised format, with what redaction may show of it.
fn samples() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("ik sdk", SDK.to_owned(), "ik_sdk_a1b2c3d4"),
        (
            "ik live",
            "ik_live_proj1234_ffffffffffffffffffffffffffffffff".into(),
            "ik_live_proj1234",
        ),
        (
            "ik admin",
            "ik_admin_0a1b2c3d_00112233445566778899aabbccddeeff".into(),
            "ik_admin_0a1b2c3d",
        ),
        (
            "ik upper",
            "IK_SDK_A1B2C3D4_0123456789ABCDEF0123456789ABCDEF".into(),
            "IK_SDK_A1B2C3D4",
        ),
        (
            "ik url-encoded",
            "ik%5Fsdk%5Fa1b2c3d4%5F0123456789abcdef0123".into(),
            "ik%5Fsdk%5Fa1b2c3d4",
        ),
        (
            "ik slug",
            "ik-sdk-a1b2c3d4-0123456789abcdef0123456789".into(),
            "ik-sdk-a1b2c3d4",
        ),
        ("hugging face", HF.to_owned(), "hf_"),
        (
            "hf org",
            "api_org_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh".into(),
            "api_org_",
        ),
        (
            "openai",
            "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL".into(),
            "sk-",
        ),
        (
            "openai project",
            "sk-proj-Ab3dEfGhIjKlMnOpQrStUvWxYz_0123-456789".into(),
            "sk-proj-",
        ),
        (
            "anthropic",
            "sk-ant-api03-Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789".into(),
            "sk-ant-",
        ),
        (
            "stripe",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(),
            "sk_live_",
        ),
        ("aws key id", AWS_ID.to_owned(), "AKIA"),
        (
            "github",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789".into(),
            "ghp_",
        ),
        (
            "github pat",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz".into(),
            "github_pat_",
        ),
        ("gitlab", "glpat-abcdefghij0123456789".into(), "glpat-"),
        (
            "slack",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKl".into(),
            "xoxb-",
        ),
        (
            "google",
            "AIzaSyA-1234567890abcdefghijklmnopqrstu".into(),
            "AIza",
        ),
        (
            "npm",
            "npm_abcdefghijklmnopqrstuvwxyz0123456789".into(),
            "npm_",
        ),
        ("jwt", JWT.to_owned(), "eyJ"),
        (
            "pem",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq\n-----END RSA PRIVATE KEY-----"
                .into(),
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        (
            "url password",
            "https://alice:s3cr3t-pa55@example.com/x".into(),
            "https://alice:",
        ),
        (
            "bearer",
            "Bearer 0123456789abcdefghijKLMN".into(),
            "Bearer ",
        ),
        (
            "env assignment",
            format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}"),
            "AWS_SECRET_ACCESS_KEY=",
        ),
        (
            "json key",
            "{\"password\": \"correct-horse-battery\"}".into(),
            "{\"password\": \"",
        ),
        (
            "flag",
            "vllm serve m --api-key abcdefgh12345678".into(),
            "vllm serve m --api-key ",
        ),
        (
            "flag with =",
            "llama-server --hf-token=abcdefgh12345678".into(),
            "llama-server --hf-token=",
        ),
    ]
}

#[test]
fn every_format_is_found_and_cut_to_what_may_be_shown() {
    for (name, secret, shown) in samples() {
        assert!(
            contains_secret(&secret).is_some(),
            "{name}: not found in {secret:?}"
        );
        let redacted = redact(&secret);
        assert!(
            redacted.starts_with(&format!("{shown}{ELLIPSIS}")),
            "{name}: {redacted:?}"
        );
        assert_eq!(redact(&redacted), redacted, "{name}: not idempotent");
    }
}

#[test]
fn kinds_are_named_in_words() {
    assert_eq!(contains_secret(HF), Some(Kind::HuggingFace));
    assert_eq!(contains_secret(AWS_ID), Some(Kind::Aws));
    assert_eq!(contains_secret(SDK), Some(Kind::InferenceKey));
    assert_eq!(Kind::HuggingFace.describe(), "a Hugging Face token");
}

#[test]
fn ordinary_text_is_not_a_secret() {
    for text in [
        "meta-llama/Llama-3.1-8B-Instruct",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
        "/models/llama/ggml-model-q4_0.gguf",
        "vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8192 --tensor-parallel-size 2",
        "llama-server -m /models/x.gguf --port 8080 --ctx-size 4096 --api-key $LLAMA_KEY",
        "the data plane requires an ik_live_ key; the control plane an ik_sdk_ token",
        "ik_sdk_-dash",
        "IK_SDK_VERSION=12",
        "ik-sdk-demo",
        "disk-0123456789abcdefghijklmnop",
        "task-classification-0123456789abc",
        "HF_HUB_ENABLE_HF_TRANSFER=1",
        "hf_transfer",
        "{\"max_tokens\": 256, \"bos_token\": \"<|begin_of_text|>\", \"eos_token\": \"</s>\"}",
        "{\"tokenizer\": \"meta-llama/Llama-3.1-8B\", \"tokenizer_mode\": \"auto\"}",
        "HF_TOKEN=$HF_TOKEN",
        "password: <your password here>",
        "token is not scoped to project \"acme\"",
        "Bearer authentication required",
        "https://huggingface.co/meta-llama/Llama-3.1-8B:main",
        "http://127.0.0.1:8080/v1/chat/completions",
        "eyJ short",
        "",
    ] {
        assert_eq!(find(text), vec![], "{text:?}");
        assert_eq!(redact(text), text);
    }
}

#[test]
fn several_secrets_in_one_text() {
    let text = format!("Bearer {SDK} and hf={HF}, key {AWS_ID}.");
    assert_eq!(
        redact(&text),
        "Bearer ik_sdk_a1b2c3d4\u{2026} and hf=hf_\u{2026}, key AKIA\u{2026}."
    );
}

#[test]
fn inferencekey_tokens_keep_their_historic_redaction() {
    assert_eq!(
        redact("x ik_sdk_abcdefghijklmnop y"),
        "x ik_sdk_abcdefgh\u{2026} y"
    );
    assert_eq!(redact("ik_live_ab_secret"), "ik_live_ab\u{2026}");
    assert_eq!(
        redact("é ik_sdk_a1b2c3d4_s3cr3t ü"),
        "é ik_sdk_a1b2c3d4\u{2026} ü"
    );
    assert_eq!(redact("ik_sdk_"), "ik_sdk_");
}

#[test]
fn secret_names() {
    for name in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "OPENAI_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "password",
        "db.password",
        "client_secret",
        "GITHUB_TOKEN",
        "private_key",
    ] {
        assert!(secret_named(name), "{name}");
    }
    for name in [
        "max_tokens",
        "bos_token",
        "eos_token",
        "pad_token",
        "tokenizer",
        "num_tokens",
        "model",
        "key",
        "AWS_ACCESS_KEY_ID",
        "PWD",
        "",
    ] {
        assert!(!secret_named(name), "{name}");
    }
}

#[test]
fn json_paths_name_where_the_secret_is() {
    let config = serde_json::json!({
        "max_model_len": 4096,
        "env": {"HF_HUB_OFFLINE": "1", "HF_TOKEN": "not-an-hf-shape-but-named"},
    });
    assert_eq!(
        find_in_json(&config, "config"),
        Some(("config.env.HF_TOKEN".to_owned(), Kind::Named))
    );
    let args = serde_json::json!({"args": ["--model", "x", HF]});
    assert_eq!(
        find_in_json(&args, "config"),
        Some(("config.args[2]".to_owned(), Kind::HuggingFace))
    );
    let clean = serde_json::json!({"env": {"HF_TOKEN": "$HF_TOKEN"}, "bos_token": "<s>"});
    assert_eq!(find_in_json(&clean, "config"), None);
}

#[test]
fn redacted_json_hides_named_values_and_strings() {
    let value = serde_json::json!({"env": {"PASSWORD": "hunter2hunter2"}, "cmd": format!("x {HF}"), "n": 3});
    let redacted = redact_json(value);
    assert_eq!(
        redacted,
        serde_json::json!({"env": {"PASSWORD": "\u{2026}"}, "cmd": "x hf_\u{2026}", "n": 3})
    );
    assert_eq!(redact_json(redacted.clone()), redacted);
}

#[test]
fn long_dashed_text_is_scanned_in_linear_time() {
    let text = "a-".repeat(200_000);
    assert_eq!(find(&text), vec![]);
}

/// The part of a sample that must never survive redaction.
fn hidden_part(secret: &str, shown: &str) -> String {
    secret[shown.len()..].to_owned()
}

proptest! {
    #[test]
    fn any_recognised_secret_in_any_text_is_redacted(
        index in 0usize..27,
        // Secrets start at a word boundary: what comes before ends with something other than a letter or digit.
        before in "([ a-z.,:;(){}\\[\\]\"'=\n]{0,20}[ .,;(\"'=\n])?",
        after in "[ .,;)}\\]\"'\n]{0,20}",
    ) {
        let samples = samples();
        let (name, secret, shown) = &samples[index % samples.len()];
        let text = format!("{before}{secret}{after}");
        let redacted = redact(&text);
        let hidden = hidden_part(secret, shown);
        // The longest secret run of each sample is what must disappear.
        let core: String = hidden.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
        prop_assert!(!redacted.contains(&core) || core.len() < 8, "{name}: {redacted:?}");
        prop_assert_eq!(redact(&redacted), redacted.clone());
    }

    #[test]
    fn redaction_never_panics_and_is_idempotent(text in "\\PC{0,200}") {
        let once = redact(&text);
        prop_assert_eq!(redact(&once), once.clone());
    }
}
