//! The data plane against the local platform: chat, streamed chat in every engine dialect and framing,
//! in-band errors, truncation, non-SSE replies, errors at open, closing early, embeddings and rerank.

use std::time::Duration;

use inferencekey_core::{
    ChatChunk, ChatRequest, ChatStream, EmbeddingFormat, Endpoint, ErrorKind, TransportOptions,
};
use serde_json::{json, Value};

use crate::common::{options, prompt, Local, ENDLESS_MS};

const BACKENDS: [&str; 4] = ["vllm", "llamacpp", "ollama", "sglang"];

/// Every chunk of a stream, or the error that ended it with the chunks before it.
async fn collect(stream: &mut ChatStream) -> (Vec<ChatChunk>, Option<inferencekey_core::Error>) {
    let mut chunks = Vec::new();
    loop {
        match stream.next_batch(64).await {
            Ok(batch) if batch.is_empty() => return (chunks, None),
            Ok(batch) => chunks.extend(batch),
            Err(err) => return (chunks, Some(err)),
        }
    }
}

fn text(chunks: &[ChatChunk]) -> String {
    chunks.iter().map(|c| c.text.as_str()).collect()
}

/// Opens a stream for `request` and reads it to the end.
async fn stream_chunks(
    endpoint: &Endpoint,
    request: &ChatRequest,
) -> (Vec<ChatChunk>, Option<inferencekey_core::Error>) {
    let mut stream = endpoint.chat_stream(request).await.unwrap();
    collect(&mut stream).await
}

async fn streamed_text(endpoint: &Endpoint, request: &ChatRequest) -> String {
    let (chunks, err) = stream_chunks(endpoint, request).await;
    assert!(err.is_none(), "{err:?}");
    text(&chunks)
}

#[tokio::test]
async fn chat_in_every_dialect_matches_its_stream() {
    let local = Local::start();
    for backend in BACKENDS {
        let endpoint = local.workload(&format!("bot-{backend}"), backend).await;
        let request = prompt("Hola, ¿qué tal?");
        let completion = endpoint.chat(&request).await.unwrap();
        assert!(!completion.text.is_empty(), "{backend}");
        assert!(completion.finish_reason.is_some(), "{backend}");
        assert!(!completion.model.is_empty());
        assert_eq!(
            completion.raw()["choices"][0]["message"]["content"],
            json!(completion.text)
        );

        let (chunks, err) = stream_chunks(&endpoint, &request).await;
        assert!(err.is_none(), "{backend}: {err:?}");
        assert_eq!(text(&chunks), completion.text, "{backend}");
        let finishes: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c.finish_reason.as_deref())
            .collect();
        assert_eq!(
            finishes.len(),
            1,
            "{backend}: one chunk carries the finish reason"
        );
        assert!(chunks.iter().all(|c| c.raw().is_object()));
    }
}

#[tokio::test]
async fn chat_body_is_exactly_what_was_set() {
    let local = Local::start();
    let endpoint = local.workload("exact", "vllm").await;
    local.clear_journal().await;
    let messages = vec![
        json!({"role": "system", "content": "be brief", "name": "sys"}),
        json!({"role": "user", "content": [{"type": "text", "text": "hi"}]}),
    ];
    let request = ChatRequest {
        messages: Some(messages.clone()),
        temperature: Some(0.2),
        max_tokens: Some(5),
        ..Default::default()
    };
    endpoint.chat(&request).await.unwrap();
    endpoint.chat_stream(&prompt("x")).await.unwrap().close();
    let journal = local.journal().await;
    assert_eq!(
        journal[0]["path"],
        format!("/endpoint/{}/exact/v1/chat/completions", local.project())
    );
    assert_eq!(
        journal[0]["body"],
        json!({"model": "exact", "messages": messages, "stream": false, "temperature": 0.2, "max_tokens": 5})
    );
    assert_eq!(
        journal[1]["body"],
        json!({"model": "exact", "messages": [{"role": "user", "content": "x"}], "stream": true, "max_tokens": 12})
    );
    assert_eq!(journal[1]["headers"]["accept"], "text/event-stream");
    assert!(journal[1]["headers"]["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer ik_live_"));
}

#[tokio::test]
async fn every_framing_gives_the_same_text() {
    let local = Local::start();
    let endpoint = local.workload("framed", "llamacpp").await;
    let request = prompt("the same words, framed differently ñ 🦀");
    let plain = streamed_text(&endpoint, &request).await;
    let framings = [
        json!({"type": "framing", "line_ending": "crlf"}),
        json!({"type": "framing", "line_ending": "cr"}),
        json!({"type": "framing", "bom": true, "comments": true}),
        json!({"type": "framing", "multiline": true, "line_ending": "cr"}),
        json!({"type": "framing", "split_utf8": true}),
        json!({"type": "framing", "huge_frame_bytes": 1_048_576}),
        json!({"type": "drip", "bytes_per_write": 3, "interval_ms": 0}),
    ];
    for fault in framings {
        local
            .fault(json!({"route": "chat_stream", "fault": fault}))
            .await;
        assert_eq!(streamed_text(&endpoint, &request).await, plain, "{fault}");
    }
    let fired: Vec<Value> = local
        .admin(reqwest::Method::GET, "/_local/faults", None)
        .await
        .1
        .as_array()
        .unwrap()
        .clone();
    assert!(fired.iter().all(|rule| rule["fired"] == 1), "{fired:?}");
}

#[tokio::test]
async fn truncated_stream_is_an_error_after_its_chunks() {
    let local = Local::start();
    let endpoint = local.workload("cut", "vllm").await;
    local
        .fault(json!({"route": "chat_stream", "fault": {"type": "truncate", "after_events": 3}}))
        .await;
    let mut stream = endpoint
        .chat_stream(&prompt("a long enough answer please"))
        .await
        .unwrap();
    let (chunks, err) = collect(&mut stream).await;
    assert_eq!(chunks.len(), 3);
    let err = err.unwrap();
    assert_eq!(err.kind, ErrorKind::Api);
    assert!(
        err.message.starts_with("stream ended before completion"),
        "{}",
        err.message
    );
    assert!(stream.next_batch(8).await.unwrap().is_empty());
}

#[tokio::test]
async fn in_band_errors_in_every_shape() {
    let local = Local::start();
    for (backend, shape) in [
        ("vllm", "nested"),
        ("llamacpp", "nested"),
        ("sglang", "flat"),
        ("ollama", "event"),
    ] {
        let slug = format!("err-{backend}");
        let endpoint = local.workload(&slug, backend).await;
        local
            .fault(json!({"route": "chat_stream", "workload": slug, "fault":
                {"type": "inband_error", "after_events": 2, "shape": shape, "message": "GPU fell off the bus"}}))
            .await;
        let (chunks, err) = stream_chunks(&endpoint, &prompt("hello there")).await;
        assert_eq!(chunks.len(), 2, "{backend}/{shape}");
        let err = err.unwrap_or_else(|| panic!("{backend}/{shape}: no error"));
        assert_eq!(err.kind, ErrorKind::Api);
        assert!(
            err.message.ends_with("GPU fell off the bus"),
            "{backend}/{shape}: {}",
            err.message
        );
    }
}

#[tokio::test]
async fn malformed_json_frame_is_an_error() {
    let local = Local::start();
    let endpoint = local.workload("garbled", "ollama").await;
    local
        .fault(
            json!({"route": "chat_stream", "fault": {"type": "malformed_json", "after_events": 1}}),
        )
        .await;
    let (chunks, err) = stream_chunks(&endpoint, &prompt("hi")).await;
    assert_eq!(chunks.len(), 1);
    assert!(err
        .unwrap()
        .message
        .starts_with("malformed JSON in a stream event"));
}

#[tokio::test]
async fn non_sse_reply_is_one_chunk() {
    let local = Local::start();
    let endpoint = local.workload("plain", "vllm").await;
    let request = prompt("hi there");
    let expected = endpoint.chat(&request).await.unwrap();
    local
        .fault(json!({"route": "chat_stream", "fault": {"type": "non_sse"}}))
        .await;
    let (chunks, err) = stream_chunks(&endpoint, &request).await;
    assert!(err.is_none());
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].text, expected.text);
    assert_eq!(chunks[0].finish_reason, expected.finish_reason);
}

#[tokio::test]
async fn errors_raise_when_the_stream_opens() {
    let local = Local::start();
    let endpoint = local.workload("guarded", "vllm").await;
    let bogus = "ik_live_deadbeef_0000000000000000000000000000000000000000000000000000000000000000";
    let wrong = local.data().endpoint("guarded", Some(bogus)).unwrap();
    let err = wrong.chat_stream(&prompt("hi")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(!err.message.contains("0000000000000000"));

    local
        .fault(
            json!({"route": "chat_stream", "fault": {"type": "status", "status": 422,
        "body": {"detail": "max_tokens too large"}}}),
        )
        .await;
    let err = endpoint.chat_stream(&prompt("hi")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Validation);
    assert_eq!(err.message, "validation error: max_tokens too large");

    let other = local
        .token(json!({"kind": "live", "project": local.project(), "workload": "someone-else"}))
        .await;
    let err = local
        .data()
        .endpoint("guarded", Some(&other))
        .unwrap()
        .chat(&prompt("hi"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
    assert_eq!(err.status, Some(403));
}

#[tokio::test]
async fn post_retries_only_with_retry_after() {
    let local = Local::start();
    let endpoint = local.workload("limited", "vllm").await;
    local.clear_journal().await;
    local.fault(json!({"route": "chat_stream", "fault": {"type": "status", "status": 429, "retry_after": 0}})).await;
    assert!(!streamed_text(&endpoint, &prompt("hi")).await.is_empty());
    local
        .fault(json!({"route": "chat", "fault": {"type": "status", "status": 502}}))
        .await;
    assert_eq!(
        endpoint.chat(&prompt("hi")).await.unwrap_err().status,
        Some(502)
    );
    local
        .fault(json!({"route": "chat", "fault": {"type": "status", "status": 429}}))
        .await;
    assert_eq!(
        endpoint.chat(&prompt("hi")).await.unwrap_err().status,
        Some(429)
    );
    assert_eq!(local.journal().await.len(), 4);
}

#[tokio::test]
async fn closing_early_disconnects() {
    let local = Local::start();
    let endpoint = local.workload("chatty", "vllm").await;
    local.settings("chatty", json!({"itl_ms": 50})).await;
    local.clear_journal().await;
    let mut request = prompt("talk for a while");
    request.max_tokens = Some(200);
    let mut stream = endpoint.chat_stream(&request).await.unwrap();
    assert!(!stream.next_batch(4).await.unwrap().is_empty());
    drop(stream);
    let entries = local.settled_entries("/chat/completions").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["outcome"], "client_disconnected",
        "{}",
        entries[0]
    );
}

#[tokio::test]
async fn idle_stream_times_out() {
    let local = Local::start();
    let endpoint_slug = "stalled";
    local.workload(endpoint_slug, "vllm").await;
    let data = local.data_with(TransportOptions {
        read_timeout: Duration::from_millis(300),
        ..options()
    });
    let endpoint = data.endpoint(endpoint_slug, None).unwrap();
    // The stall never ends: only the idle timeout can end the stream.
    local.fault(json!({"route": "chat_stream", "fault": {"type": "stall", "at": "mid_stream", "ms": ENDLESS_MS}})).await;
    let (_, err) = stream_chunks(&endpoint, &prompt("hello")).await;
    let err = err.unwrap();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
    assert!(err.message.contains("read timeout"), "{}", err.message);
}

#[tokio::test]
async fn embeddings_float_and_base64_agree() {
    let local = Local::start();
    let endpoint = local.typed_workload("embedder", "vllm", "embedding").await;
    local.clear_journal().await;
    let input = vec![
        "first text".to_owned(),
        "second".to_owned(),
        "third, ñ".to_owned(),
    ];
    let floats = endpoint
        .embed(input.clone(), EmbeddingFormat::Float)
        .await
        .unwrap();
    let packed = endpoint
        .embed(input.clone(), EmbeddingFormat::Base64)
        .await
        .unwrap();
    assert_eq!(floats.vectors.len(), 3);
    assert_eq!(floats.vectors[0].len(), 64);
    assert_eq!(floats.vectors, packed.vectors);
    assert_ne!(floats.vectors[0], floats.vectors[1]);
    let norm: f32 = floats.vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    let journal = local.journal().await;
    assert_eq!(
        journal[0]["body"],
        json!({"model": "embedder", "input": input})
    );
    assert_eq!(
        journal[1]["body"],
        json!({"model": "embedder", "input": input, "encoding_format": "base64"})
    );
}

#[tokio::test]
async fn base64_asked_floats_returned_still_decodes() {
    let local = Local::start();
    let endpoint = local
        .typed_workload("sg-embed", "sglang", "embedding")
        .await;
    let input = vec!["a".to_owned(), "b".to_owned()];
    let floats = endpoint
        .embed(input.clone(), EmbeddingFormat::Float)
        .await
        .unwrap();
    let asked = endpoint
        .embed(input, EmbeddingFormat::Base64)
        .await
        .unwrap();
    assert_eq!(floats.vectors, asked.vectors);
}

#[tokio::test]
async fn rerank_scores_documents() {
    let local = Local::start();
    let endpoint = local.typed_workload("ranker", "vllm", "reranker").await;
    let documents = vec![
        "cats purr".to_owned(),
        "dogs bark loudly".to_owned(),
        "the stock market".to_owned(),
    ];
    let rerank = endpoint
        .rerank("why do dogs bark", documents, Some(2))
        .await
        .unwrap();
    assert_eq!(rerank.results.len(), 2);
    assert_eq!(rerank.results[0].index, 1);
    assert!(rerank.results[0].relevance_score >= rerank.results[1].relevance_score);
}

#[tokio::test]
async fn a_200_that_is_neither_sse_nor_json_is_an_error() {
    let local = Local::start();
    let endpoint = local.workload("odd", "vllm").await;
    let plain_text = json!({"type": "status", "status": 200, "body": "<html>maintenance</html>"});
    local
        .fault(json!({"route": "chat_stream", "fault": plain_text}))
        .await;
    let err = endpoint.chat_stream(&prompt("hi")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Api);
    assert!(err.message.contains("text/plain"), "{}", err.message);
    local
        .fault(json!({"route": "chat", "fault": plain_text}))
        .await;
    let err = endpoint.chat(&prompt("hi")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Api);
    assert!(
        err.message
            .starts_with("malformed response: chat completion is not JSON"),
        "{}",
        err.message
    );
}

/// Poll `future` once in a blocking scope, outside any runtime's wait: a unary request on the direct path is done
/// in that one poll; `None` if it was not.
fn poll_blocking<F: std::future::Future>(
    future: F,
    interrupted: fn() -> bool,
) -> Option<F::Output> {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    inferencekey_core::direct::blocking_scope(interrupted, || {
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(value) => Some(value),
            Poll::Pending => None,
        }
    })
    .0
}

#[cfg(unix)]
#[tokio::test]
async fn the_direct_path_sends_what_the_pool_sends_and_fails_as_it_does() {
    let local = Local::start();
    let data = local.data_with(
        options()
            .with_default_headers(&[("x-team".to_owned(), "search".to_owned())])
            .unwrap(),
    );
    local.workload("direct", "vllm").await;
    let endpoint = data.endpoint("direct", None).unwrap();
    let request = prompt("hello");
    local.clear_journal().await;

    // The same answer, from the same request: every header the pool sends, with the same values.
    let pooled = endpoint.chat(&request).await.unwrap();
    let direct = poll_blocking(endpoint.chat(&request), || false)
        .expect("a unary call in a blocking scope ends in one poll")
        .unwrap();
    assert_eq!(direct.text, pooled.text);
    assert_eq!(direct.raw()["choices"], pooled.raw()["choices"]);
    let entries = local.journal().await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["headers"], entries[1]["headers"]);
    assert_eq!(entries[0]["body"], entries[1]["body"]);
    assert_eq!(entries[1]["headers"]["x-team"], "search");
    let embedder = local
        .typed_workload("direct-embed", "vllm", "embedding")
        .await;
    let embedded = poll_blocking(
        embedder.embed(vec!["a".into(), "b".into()], EmbeddingFormat::default()),
        || false,
    )
    .expect("ends in one poll")
    .unwrap();
    assert_eq!(embedded.vectors.len(), 2);
    // A body of many reads (256 x 1024 floats in base64, 1.4 MB) is read whole into one buffer: the same vectors.
    local
        .settings("direct-embed", json!({"embedding_dim": 1024}))
        .await;
    let texts: Vec<String> = (0..256).map(|i| format!("text {i}")).collect();
    let large_pooled = embedder
        .embed(texts.clone(), EmbeddingFormat::default())
        .await
        .unwrap();
    let large_direct = poll_blocking(embedder.embed(texts, EmbeddingFormat::default()), || false)
        .expect("ends in one poll")
        .unwrap();
    assert_eq!(large_direct.body.len(), large_pooled.body.len());
    assert!(large_direct.body.len() > 1_000_000);
    assert_eq!(large_direct.vectors, large_pooled.vectors);

    // A 429 with Retry-After is retried, a 502 is not (POST); the error carries the status and the request id.
    local.clear_journal().await;
    local
        .fault(json!({"route": "chat", "count": 1, "fault": {"type": "status", "status": 429, "retry_after": 0}}))
        .await;
    let retried = poll_blocking(endpoint.chat(&request), || false).unwrap();
    assert_eq!(retried.unwrap().text, pooled.text);
    local
        .fault(json!({"route": "chat", "count": 1, "fault": {"type": "status", "status": 502}}))
        .await;
    let failed = poll_blocking(endpoint.chat(&request), || false).unwrap();
    let failed = failed.unwrap_err();
    assert_eq!(failed.status, Some(502));
    assert!(failed.request_id.is_some(), "{failed:?}");
    assert_eq!(local.journal().await.len(), 3);

    // A reset before the answer is a connection error, not retried for a POST; the next call opens a new connection.
    local
        .fault(json!({"route": "chat", "count": 1, "fault": {"type": "reset"}}))
        .await;
    let reset = poll_blocking(endpoint.chat(&request), || false).unwrap();
    assert_eq!(reset.unwrap_err().kind, ErrorKind::Connection);
    let answered = || {
        poll_blocking(endpoint.chat(&request), || false)
            .expect("ends in one poll")
            .expect("answers")
            .text
    };
    assert_eq!(answered(), pooled.text);

    // A stalled answer ends when the scope says to stop, within a tick, and with the connection dropped.
    local
        .fault(json!({"route": "chat", "count": 1, "fault": {"type": "stall", "at": "headers", "ms": ENDLESS_MS}}))
        .await;
    let started = std::time::Instant::now();
    let interrupted = poll_blocking(endpoint.chat(&request), || true).unwrap();
    assert_eq!(interrupted.unwrap_err().kind, ErrorKind::Connection);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(answered(), pooled.text);

    // Nothing listening: the pool's wording.
    let gone = Local::start();
    let url = gone.url().to_owned();
    drop(gone);
    let dead = inferencekey_core::DataClient::new(
        Some(&url),
        Some(local.project()),
        Some(local.api_key()),
        options(),
    )
    .unwrap()
    .endpoint("direct", None)
    .unwrap();
    let refused = poll_blocking(dead.chat(&request), || false)
        .unwrap()
        .unwrap_err();
    let pooled_refusal = dead.chat(&request).await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Connection);
    assert_eq!(refused.kind, pooled_refusal.kind);
    assert!(
        refused
            .message
            .starts_with(&format!("could not connect to {}", &url[7..])),
        "{} / {}",
        refused.message,
        pooled_refusal.message
    );
}

/// Every batch of `stream` read as a sync reader reads it: each in one poll of a blocking scope.
fn collect_blocking(
    stream: &mut ChatStream,
    interrupted: fn() -> bool,
) -> (Vec<ChatChunk>, Option<inferencekey_core::Error>) {
    let mut chunks = Vec::new();
    loop {
        let batch = poll_blocking(stream.next_batch(64), interrupted)
            .expect("a direct stream's batch is read in one poll");
        match batch {
            Ok(batch) if batch.is_empty() => return (chunks, None),
            Ok(batch) => chunks.extend(batch),
            Err(err) => return (chunks, Some(err)),
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_direct_stream_reads_what_the_pool_reads_and_fails_as_it_does() {
    let local = Local::start();
    let request = prompt("a streamed answer of a few words");
    for backend in BACKENDS {
        let endpoint = local.workload(&format!("direct-{backend}"), backend).await;
        let (pooled, err) = stream_chunks(&endpoint, &request).await;
        assert!(err.is_none(), "{err:?}");
        local.clear_journal().await;
        let opened = poll_blocking(endpoint.chat_stream(&request), || false)
            .expect("a stream opens in one poll of a blocking scope");
        let mut stream = opened.unwrap();
        let (direct, err) = collect_blocking(&mut stream, || false);
        assert!(err.is_none(), "{backend}: {err:?}");
        assert_eq!(text(&direct), text(&pooled), "{backend}");
        assert_eq!(direct.len(), pooled.len(), "{backend}");
        // Each chunk the same, its raw event included (but for the id each response draws, and the second it was
        // made in: the two streams may straddle one).
        let parts = |chunks: &[ChatChunk]| {
            chunks
                .iter()
                .map(|c| {
                    let mut raw: Value = serde_json::from_slice(&c.data).unwrap();
                    if let Some(fields) = raw.as_object_mut() {
                        fields.remove("id");
                        fields.remove("created");
                    }
                    (c.text.clone(), c.finish_reason.clone(), raw)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(parts(&direct), parts(&pooled), "{backend}");
        let reply = poll_blocking(stream.final_result(), || false)
            .unwrap()
            .unwrap();
        assert_eq!(reply.text, text(&pooled));
        assert_eq!(local.journal().await.len(), 1);
    }
    let endpoint = local.workload("direct-faults", "vllm").await;

    // The stream request is the pool's, header for header (`accept: text/event-stream` among them), body for body.
    local.clear_journal().await;
    stream_chunks(&endpoint, &request).await;
    let mut stream = poll_blocking(endpoint.chat_stream(&request), || false)
        .unwrap()
        .unwrap();
    collect_blocking(&mut stream, || false);
    let entries = local.journal().await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["headers"], entries[1]["headers"]);
    assert_eq!(entries[0]["body"], entries[1]["body"]);
    assert_eq!(entries[1]["headers"]["accept"], "text/event-stream");

    // Cut after three events: the three chunks, then the error, with the request id.
    local
        .fault(json!({"route": "chat_stream", "count": 1, "fault": {"type": "truncate", "after_events": 3}}))
        .await;
    let mut stream = poll_blocking(endpoint.chat_stream(&request), || false)
        .unwrap()
        .unwrap();
    let (chunks, err) = collect_blocking(&mut stream, || false);
    assert_eq!(chunks.len(), 3);
    let err = err.expect("a truncated stream fails");
    assert!(err.request_id.is_some(), "{err:?}");
    assert!(
        err.message.starts_with("stream ended before completion")
            || err.message.contains("reading the stream from"),
        "{}",
        err.message
    );

    // A 429 at open is retried; an engine that answers with one JSON body gives one chunk.
    local
        .fault(json!({"route": "chat_stream", "count": 1, "fault": {"type": "status", "status": 429, "retry_after": 0}}))
        .await;
    let mut stream = poll_blocking(endpoint.chat_stream(&request), || false)
        .unwrap()
        .unwrap();
    assert!(collect_blocking(&mut stream, || false).1.is_none());
    local
        .fault(json!({"route": "chat_stream", "count": 1, "fault": {"type": "non_sse"}}))
        .await;
    let mut stream = poll_blocking(endpoint.chat_stream(&request), || false)
        .unwrap()
        .unwrap();
    let (chunks, err) = collect_blocking(&mut stream, || false);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(chunks.len(), 1);

    // Stalled mid-stream: the read ends when the scope says to stop, within a tick.
    local
        .fault(json!({"route": "chat_stream", "count": 1, "fault": {"type": "stall", "at": "mid_stream", "ms": ENDLESS_MS}}))
        .await;
    let mut stream = poll_blocking(endpoint.chat_stream(&request), || false)
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    let (_, err) = collect_blocking(&mut stream, || true);
    assert!(err.is_some());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Framings that split events, lines and UTF-8 across reads decode as they do on the pool.
    let plain = text(&stream_chunks(&endpoint, &request).await.0);
    for fault in [
        json!({"type": "drip", "bytes_per_write": 3, "interval_ms": 0}),
        json!({"type": "framing", "split_utf8": true}),
        json!({"type": "framing", "huge_frame_bytes": 1_048_576}),
    ] {
        local
            .fault(json!({"route": "chat_stream", "count": 1, "fault": fault}))
            .await;
        let mut stream = poll_blocking(endpoint.chat_stream(&request), || false)
            .unwrap()
            .unwrap();
        let (chunks, err) = collect_blocking(&mut stream, || false);
        assert!(err.is_none(), "{fault}: {err:?}");
        assert_eq!(text(&chunks), plain, "{fault}");
    }
}

/// Drive `future` as an event loop would: each poll in a loop scope, then a wait (on a poller of its own) for what
/// the suspended request names, until it is done; its output and every wait it asked for.
#[cfg(unix)]
fn drive_on_loop<F: std::future::Future>(
    future: F,
) -> (F::Output, Vec<inferencekey_core::direct::Want>) {
    use inferencekey_core::direct::{loop_scope, Want};
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;
    let mut future = std::pin::pin!(future);
    let mut poller = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(4);
    let mut waits = Vec::new();
    loop {
        let (polled, want) = loop_scope(|| {
            future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        });
        if let Poll::Ready(output) = polled {
            return (output, waits);
        }
        let want = want.expect("a suspended request says what it waits for");
        waits.push(want);
        match want {
            Want::Socket { fd, write, until } => {
                let fd = i32::try_from(fd).unwrap();
                let interest = if write {
                    mio::Interest::WRITABLE
                } else {
                    mio::Interest::READABLE
                };
                let mut source = mio::unix::SourceFd(&fd);
                poller
                    .registry()
                    .register(&mut source, mio::Token(0), interest)
                    .unwrap();
                let left = until.saturating_duration_since(Instant::now());
                poller.poll(&mut events, Some(left)).unwrap();
                poller.registry().deregister(&mut source).unwrap();
            }
            Want::Time { until } => {
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            }
            Want::Runtime => panic!("a request on the direct path was handed to the runtime"),
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_request_in_a_loop_scope_suspends_at_its_waits_and_ends_as_the_blocking_one() {
    use inferencekey_core::direct::Want;
    let local = Local::start();
    let endpoint = local.workload("looped", "vllm").await;
    let request = prompt("hello");
    local.clear_journal().await;
    let blocking = poll_blocking(endpoint.chat(&request), || false)
        .expect("ends in one poll")
        .unwrap();

    // The same answer from the same request, the thread never blocked.
    let (looped, _) = drive_on_loop(endpoint.chat(&request));
    assert_eq!(looped.unwrap().text, blocking.text);
    let entries = local.journal().await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["headers"], entries[1]["headers"]);
    assert_eq!(entries[0]["body"], entries[1]["body"]);
    // An answer that is late is waited for as its socket.
    local
        .fault(json!({"route": "chat", "count": 1, "fault": {"type": "stall", "at": "headers", "ms": 50}}))
        .await;
    let (late, waits) = drive_on_loop(endpoint.chat(&request));
    assert_eq!(late.unwrap().text, blocking.text);
    assert!(!waits.is_empty());
    assert!(
        waits.iter().all(|want| matches!(want, Want::Socket { .. })),
        "{waits:?}"
    );

    // A stream opened in a loop scope is read there, batch by batch, to the same reply.
    let (stream, _) = drive_on_loop(endpoint.chat_stream(&request));
    let mut stream = stream.unwrap();
    assert!(stream.is_direct());
    let (reply, _) = drive_on_loop(stream.final_result());
    assert_eq!(reply.unwrap().text, blocking.text);

    // A large answer (256 x 1024 floats, 1.4 MB) is read whole.
    let embedder = local
        .typed_workload("looped-embed", "vllm", "embedding")
        .await;
    local
        .settings("looped-embed", json!({"embedding_dim": 1024}))
        .await;
    let texts: Vec<String> = (0..256).map(|i| format!("text {i}")).collect();
    let expected = poll_blocking(
        embedder.embed(texts.clone(), EmbeddingFormat::default()),
        || false,
    )
    .expect("ends in one poll")
    .unwrap();
    let (vectors, _) = drive_on_loop(embedder.embed(texts, EmbeddingFormat::default()));
    assert_eq!(vectors.unwrap().vectors, expected.vectors);

    // A retry's backoff is a wait for a time, not a sleep.
    local
        .fault(json!({"route": "chat", "count": 1, "fault": {"type": "status", "status": 429, "retry_after": 1}}))
        .await;
    let (retried, waits) = drive_on_loop(endpoint.chat(&request));
    assert_eq!(retried.unwrap().text, blocking.text);
    assert!(
        waits.iter().any(|want| matches!(want, Want::Time { .. })),
        "{waits:?}"
    );

    // A stalled answer ends at the read timeout, as a timeout.
    let quick = local
        .data_with(TransportOptions {
            read_timeout: Duration::from_millis(300),
            max_retries: 0,
            ..options()
        })
        .endpoint("looped", None)
        .unwrap();
    local
        .fault(json!({"route": "chat", "count": 1, "fault": {"type": "stall", "at": "headers", "ms": ENDLESS_MS}}))
        .await;
    let (stalled, _) = drive_on_loop(quick.chat(&request));
    assert_eq!(stalled.unwrap_err().kind, ErrorKind::Timeout);

    // Through a proxy the request is the pool's: it asks for the runtime at its first poll, having sent nothing.
    let proxied = local
        .data_with(TransportOptions {
            proxy: Some("http://127.0.0.1:9".to_owned()),
            ..options()
        })
        .endpoint("looped", None)
        .unwrap();
    let (polled, want) = inferencekey_core::direct::loop_scope(|| {
        use std::future::Future as _;
        let mut future = std::pin::pin!(proxied.chat(&request));
        future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            .is_pending()
    });
    assert!(polled);
    assert_eq!(want, Some(Want::Runtime));
}
