//! The Rust floor of the client benchmarks (`benches/run.py`): a minimal Rust consumer of the same streams,
//! chat completions and embeddings the Python clients are timed on, through this crate's public API
//! (`DataClient`, `Endpoint::chat_stream` + `ChatStream::next_batch`, `Endpoint::chat`, `Endpoint::embed`).
//!
//! `cargo run --release -p inferencekey-core --example bench_floor -- --url URL --project P --key KEY
//! --chat SLUG --embed SLUG` then one JSON command per line on stdin, one JSON answer per line on stdout:
//!
//! - `{"op": "stream", "tokens": [20000], "concurrency": 1, "expected": {"26": ["¡Hola", ...]}}`: one stream
//!   per entry of `tokens` (its `max_tokens`), at most `concurrency` open at once; with `expected`, each
//!   stream's non-empty chunk texts are compared with the entry for its length and `mismatches` counts the
//!   chunks lost, extra or out of place.
//! - `{"op": "chat", "requests": 500, "concurrency": 8}`: non-streamed chat completions of 16 tokens.
//! - `{"op": "embed", "requests": 10, "texts": [...], "format": "base64"}`: embeddings, `float` or `base64`.
//! - `{"op": "chunks", "tokens": 50}` / `{"op": "chat_text"}` / `{"op": "embed_sum", "texts": [...]}`: the data
//!   the benchmark compares across clients before timing.
//!
//! Timed answers carry `wall` and `cpu` (seconds) and `units`; every answer carries `peak_rss_kib`. CPU is
//! the whole process (all threads, including the runtime's I/O workers), read precisely (nanoseconds) from
//! `/proc/self/task/*/schedstat`; the runtime is built like the Python binding's (2 I/O workers).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io::{BufRead, Write};
use std::time::Instant;

use inferencekey_core::{ChatRequest, DataClient, EmbeddingFormat, Endpoint, TransportOptions};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn StdError + Send + Sync>>;

/// Chunks taken per `next_batch`, as the Python binding does.
const STREAM_BATCH: usize = 256;
/// Tokens of each non-streamed chat completion, as the Python legs ask.
const CHAT_TOKENS: u64 = 16;

struct Args {
    url: String,
    project: String,
    key: String,
    chat: String,
    embed: String,
}

fn args() -> Result<Args> {
    let mut found: HashMap<String, String> = HashMap::new();
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        found.insert(flag.trim_start_matches('-').to_string(), value);
    }
    let mut take = |name: &str| {
        found
            .remove(name)
            .ok_or_else(|| format!("--{name} is required"))
    };
    Ok(Args {
        url: take("url")?,
        project: take("project")?,
        key: take("key")?,
        chat: take("chat")?,
        embed: take("embed")?,
    })
}

/// CPU seconds used so far by every live thread of this process (sum_exec_runtime, in nanoseconds).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// Peak resident memory of this process (VmHWM), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn chat_request(tokens: u64) -> ChatRequest {
    ChatRequest {
        prompt: Some("bench".to_string()),
        max_tokens: Some(tokens),
        ..ChatRequest::default()
    }
}

/// Drains one stream: its non-empty chunk texts when `keep`, else only its text's length in bytes (what the
/// Python legs sum).
async fn stream_once(endpoint: &Endpoint, tokens: u64, keep: bool) -> Result<(usize, Vec<String>)> {
    let mut stream = endpoint.chat_stream(&chat_request(tokens)).await?;
    let mut length = 0;
    let mut texts = Vec::new();
    loop {
        let batch = stream.next_batch(STREAM_BATCH).await?;
        if batch.is_empty() {
            return Ok((length, texts));
        }
        for chunk in batch {
            length += chunk.text.len();
            if keep && !chunk.text.is_empty() {
                texts.push(chunk.text);
            }
        }
    }
}

/// Chunks of `got` lost, extra or out of place against `expected`.
fn misplaced(got: &[String], expected: &[String]) -> u64 {
    let differing = got.iter().zip(expected).filter(|(a, b)| a != b).count();
    (differing + got.len().abs_diff(expected.len())) as u64
}

/// Runs one stream per entry of `tokens` on `concurrency` tasks; returns the chunks misplaced against `expected`.
async fn streams(
    endpoint: &Endpoint,
    tokens: Vec<u64>,
    concurrency: usize,
    expected: Option<HashMap<u64, Vec<String>>>,
) -> Result<u64> {
    let concurrency = concurrency.clamp(1, tokens.len().max(1));
    if concurrency == 1 && expected.is_none() {
        for n in tokens {
            stream_once(endpoint, n, false).await?;
        }
        return Ok(0);
    }
    let expected = std::sync::Arc::new(expected);
    let mut shares: Vec<Vec<u64>> = vec![Vec::new(); concurrency];
    for (i, n) in tokens.into_iter().enumerate() {
        shares[i % concurrency].push(n);
    }
    let mut workers = Vec::with_capacity(concurrency);
    for share in shares {
        let endpoint = endpoint.clone();
        let expected = expected.clone();
        workers.push(tokio::spawn(async move {
            let mut mismatches = 0u64;
            for n in share {
                let (_, texts) = stream_once(&endpoint, n, expected.is_some()).await?;
                if let Some(expected) = expected.as_ref() {
                    mismatches += misplaced(&texts, expected.get(&n).map_or(&[], Vec::as_slice));
                }
            }
            Ok::<u64, Box<dyn StdError + Send + Sync>>(mismatches)
        }));
    }
    let mut mismatches = 0;
    for worker in workers {
        mismatches += worker.await??;
    }
    Ok(mismatches)
}

async fn chats(endpoint: &Endpoint, requests: usize, concurrency: usize) -> Result<()> {
    let concurrency = concurrency.clamp(1, requests.max(1));
    let request = chat_request(CHAT_TOKENS);
    if concurrency == 1 {
        for _ in 0..requests {
            endpoint.chat(&request).await?;
        }
        return Ok(());
    }
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let share = requests / concurrency + usize::from(worker < requests % concurrency);
        let endpoint = endpoint.clone();
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..share {
                endpoint.chat(&request).await?;
            }
            Ok::<(), inferencekey_core::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

fn strings(value: &Value, field: &str) -> Result<Vec<String>> {
    let items = value[field]
        .as_array()
        .ok_or_else(|| format!("`{field}` must be a list"))?;
    Ok(items
        .iter()
        .map(|item| item.as_str().unwrap_or_default().to_string())
        .collect())
}

fn format_of(command: &Value) -> EmbeddingFormat {
    match command["format"].as_str() {
        Some("base64") => EmbeddingFormat::Base64,
        _ => EmbeddingFormat::Float,
    }
}

/// Runs one command; the answer's timing covers the work only.
async fn handle(chat: &Endpoint, embed: &Endpoint, command: &Value) -> Result<Value> {
    let count = |field: &str, default: u64| command[field].as_u64().unwrap_or(default);
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let mut answer = match command["op"].as_str().unwrap_or_default() {
        "stream" => {
            let tokens: Vec<u64> = command["tokens"]
                .as_array()
                .ok_or("`tokens` must be a list")?
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            let expected = command["expected"].as_object().map(|map| {
                map.iter()
                    .filter_map(|(n, texts)| Some((n.parse().ok()?, texts.as_array()?)))
                    .map(|(n, texts)| {
                        let texts = texts.iter().filter_map(Value::as_str).map(str::to_string);
                        (n, texts.collect())
                    })
                    .collect()
            });
            let units: u64 = tokens.iter().sum();
            let concurrency = count("concurrency", 1) as usize;
            let mismatches = streams(chat, tokens, concurrency, expected).await?;
            json!({"units": units, "mismatches": mismatches})
        }
        "chat" => {
            let requests = count("requests", 1) as usize;
            chats(chat, requests, count("concurrency", 1) as usize).await?;
            json!({"units": requests})
        }
        "embed" => {
            let texts = strings(command, "texts")?;
            let requests = count("requests", 1);
            for _ in 0..requests {
                embed.embed(texts.clone(), format_of(command)).await?;
            }
            json!({"units": requests})
        }
        "chunks" => json!({"chunks": stream_once(chat, count("tokens", 50), true).await?.1}),
        "chat_text" => json!({"text": chat.chat(&chat_request(CHAT_TOKENS)).await?.text}),
        "embed_sum" => {
            let vectors = embed
                .embed(strings(command, "texts")?, format_of(command))
                .await?
                .vectors;
            let total: f64 = vectors.iter().flatten().map(|x| f64::from(*x)).sum();
            json!({"rows": vectors.len(), "dim": vectors.first().map_or(0, Vec::len), "sum": total})
        }
        other => return Err(format!("unknown op {other:?}").into()),
    };
    answer["wall"] = json!(wall.elapsed().as_secs_f64());
    answer["cpu"] = json!(cpu_seconds() - cpu);
    Ok(answer)
}

fn main() -> Result<()> {
    let args = args()?;
    // As the Python binding: one multi-thread runtime with 2 I/O workers, the consumer on the calling thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-floor-io")
        .enable_all()
        .build()?;
    let client = DataClient::new(
        Some(&args.url),
        Some(&args.project),
        Some(&args.key),
        TransportOptions::default(),
    )?;
    let chat = client.endpoint(&args.chat, None)?;
    let embed = client.endpoint(&args.embed, None)?;
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let command: Value = serde_json::from_str(&line)?;
        if command["op"] == "exit" {
            break;
        }
        let mut answer = match runtime.block_on(handle(&chat, &embed, &command)) {
            Ok(answer) => answer,
            Err(error) => json!({"error": error.to_string()}),
        };
        answer["peak_rss_kib"] = json!(peak_rss_kib());
        let mut out = stdout.lock();
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}
