//! Bench drain: starts the local platform in bench mode and drains streamed chat completions as
//! fast as a minimal Rust consumer can, printing chunks/s and CPU per chunk (server and client).

// `cargo run --release -p inferencekey-local --example drain -- [--streams 20] [--chunks 10000]
// [--backend vllm]`. CPU comes from /proc/self/task/*/stat (Linux), split by thread name: the
// platform's threads are named `inferencekey-local*`, the consumer runs on the main thread.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inferencekey_local::{Config, LocalPlatform};
use serde_json::json;

/// Clock ticks per second of /proc stat times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

struct Options {
    streams: usize,
    chunks: usize,
    backend: String,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        streams: 20,
        chunks: 10_000,
        backend: "vllm".to_string(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--streams" => options.streams = value.parse().map_err(|_| "bad --streams")?,
            "--chunks" => options.chunks = value.parse().map_err(|_| "bad --chunks")?,
            "--backend" => options.backend = value,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// CPU seconds used so far by this process's threads: (platform threads, other threads).
fn cpu_split() -> (f64, f64) {
    let mut server = 0.0;
    let mut client = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0.0, 0.0);
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
            .sum();
        // comm is cut to 15 bytes: "inferencekey-lo".
        if head.contains("(inferencekey-l") {
            server += ticks / TICKS_PER_SECOND;
        } else {
            client += ticks / TICKS_PER_SECOND;
        }
    }
    (server, client)
}

/// Drains one stream; returns the number of SSE events seen.
async fn drain(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    chunks: usize,
) -> Result<usize, String> {
    let body = json!({"model": "bench", "messages": [{"role": "user", "content": "go"}],
                      "stream": true, "max_tokens": chunks});
    let response = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut stream = response.bytes_stream();
    let mut events = 0;
    let mut tail = Vec::new();
    let mut done = false;
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.map_err(|e| e.to_string())?;
        tail.extend_from_slice(&bytes);
        // Count complete events ("\n\n"-terminated); keep the partial one for the next read.
        let mut start = 0;
        while let Some(end) = tail[start..].windows(2).position(|w| w == b"\n\n") {
            let event = &tail[start..start + end];
            done |= event == b"data: [DONE]";
            events += 1;
            start += end + 2;
        }
        tail.drain(..start);
    }
    if !done {
        return Err("stream ended without [DONE]".to_string());
    }
    Ok(events)
}

async fn run(options: Options) -> Result<(), String> {
    let platform = LocalPlatform::start(Config::default()).map_err(|e| e.to_string())?;
    let info = platform.info().clone();
    let client = reqwest::Client::new();
    let admin = client
        .put(format!("{}/_local/defaults", info.url))
        .bearer_auth(&info.admin_token)
        .body(json!({"readiness": "immediate", "bench": true}).to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if admin.status() != 204 {
        return Err(format!("cannot set bench defaults: {}", admin.status()));
    }
    let created = client
        .post(format!(
            "{}/api/projects/{}/workloads",
            info.url, info.project
        ))
        .bearer_auth(&info.sdk_token)
        .header("content-type", "application/json")
        .body(
            json!({"name": "bench", "slug": "bench", "model_name": "bench/model",
                   "backend": options.backend})
            .to_string(),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if created.status() != 201 {
        return Err(format!("cannot create the workload: {}", created.status()));
    }
    let url = format!(
        "{}/endpoint/{}/bench/v1/chat/completions",
        info.url, info.project
    );

    // One warm-up stream (connection, allocator), not measured.
    drain(&client, &url, &info.api_key, options.chunks).await?;
    let (server_before, client_before) = cpu_split();
    let begun = Instant::now();
    let mut per_stream = Vec::with_capacity(options.streams);
    let mut events = 0;
    for _ in 0..options.streams {
        let started = Instant::now();
        events += drain(&client, &url, &info.api_key, options.chunks).await?;
        per_stream.push(started.elapsed());
    }
    let wall = begun.elapsed();
    let (server_after, client_after) = cpu_split();
    platform.stop();

    let chunks = (options.streams * options.chunks) as f64;
    per_stream.sort();
    let median = per_stream[per_stream.len() / 2];
    let micros = |seconds: f64| seconds * 1e6 / chunks;
    let (server_cpu, client_cpu) = (server_after - server_before, client_after - client_before);
    println!(
        "inferencekey-local drain: {} streams x {} chunks, backend {}, bench mode ({events} SSE events)",
        options.streams, options.chunks, options.backend
    );
    println!(
        "wall {:.3} s, {:.0} chunks/s overall, median stream {:.1} ms ({:.0} chunks/s)",
        wall.as_secs_f64(),
        chunks / wall.as_secs_f64(),
        median.as_secs_f64() * 1e3,
        options.chunks as f64 / median.as_secs_f64().max(f64::EPSILON)
    );
    println!(
        "CPU per chunk: server {:.3} us, client {:.3} us, total {:.3} us ({:.2} s CPU in {:.2} s wall)",
        micros(server_cpu),
        micros(client_cpu),
        micros(server_cpu + client_cpu),
        server_cpu + client_cpu,
        wall.as_secs_f64()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("drain: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    // The consumer runs on this (main) thread only, so its CPU is told apart from the server's.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("drain: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(600), run(options)).await })
    {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(message)) => {
            eprintln!("drain: {message}");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("drain: timed out");
            std::process::ExitCode::FAILURE
        }
    }
}
