//! Server-sent event streams: the byte framing (with the framing faults), and the producer task
//! that writes a stream body as raw bytes, applying the stream faults exactly.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dialects::{inband_error, ChatStream, Dialect};
use crate::event::SseEvent;
use crate::faults::{Fault, Framing, StallAt};
use crate::readiness::ReadinessEvents;
use crate::real::UpstreamEvents;

/// Bench mode hands the socket writes of about this size.
const BATCH_BYTES: usize = 32 * 1024;
/// Pause between the two halves of a split UTF-8 character, so they travel in separate reads.
const SPLIT_PAUSE: Duration = Duration::from_millis(5);
/// The body of a `malformed_json` fault: a `data:` line that is not JSON.
const MALFORMED: &[u8] = br#"{"id": "chatcmpl-broken", "choices": [{"delta": {"content": "oo"#;
const BOM: &[u8] = "\u{feff}".as_bytes();
/// The endless line of an `endless_line` fault goes out in writes of this size...
const ENDLESS_CHUNK: usize = 64 * 1024;
/// ...and ends (still without a newline) after this many bytes, should a client never give up.
const ENDLESS_CAP: u64 = 2 * 1024 * 1024 * 1024;
/// Stands in for the end of a wait too long to represent (a stall of `u64::MAX` ms): never, in
/// practice.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

/// Where a stream's events come from.
pub enum EventSource {
    /// A chat completion in an engine dialect.
    Chat(ChatStream),
    /// A workload's readiness.
    Readiness(ReadinessEvents),
    /// A real engine's stream, passed on event by event.
    Upstream(UpstreamEvents),
}

impl EventSource {
    /// The next event; `Err` when the client went away while waiting for it (a readiness stream
    /// can wait forever on a stuck workload: its task must not outlive the client).
    async fn next(&mut self, out: &mut Writer) -> Result<Option<SseEvent>, Closed> {
        match self {
            EventSource::Chat(stream) => Ok(stream.next_event()),
            EventSource::Upstream(events) => {
                // A client that goes away drops the engine's stream, which ends its work.
                let event = tokio::select! {
                    event = events.next() => event,
                    () = out.tx.closed() => return Err(Closed),
                };
                out.schedule.resume(Instant::now());
                Ok(event)
            }
            EventSource::Readiness(events) => {
                let event = tokio::select! {
                    event = events.next() => event,
                    () = out.tx.closed() => return Err(Closed),
                };
                // The wait for a transition is not on the stream's schedule.
                out.schedule.resume(Instant::now());
                Ok(event)
            }
        }
    }
}

/// A `text/event-stream` response whose body a spawned task writes from `source`, shaped by
/// `fault`. `dialect` picks the error frames (`None` on readiness); `bench` batches writes.
pub fn stream_response(
    source: EventSource,
    fault: Option<Fault>,
    dialect: Option<Dialect>,
    bench: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let writer = Writer {
        tx,
        drip: match &fault {
            Some(Fault::Drip {
                bytes_per_write,
                interval_ms,
            }) => Some((*bytes_per_write, Duration::from_millis(*interval_ms))),
            _ => None,
        },
        batch: bench.then(|| BytesMut::with_capacity(BATCH_BYTES * 2)),
        schedule: Schedule::starting(Instant::now()),
    };
    tokio::spawn(async move {
        // An Err only means the client went away; there is nobody left to tell.
        let _ = produce(source, fault, dialect, writer).await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<Bytes, std::convert::Infallible>(bytes), rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// When a stream's writes are due.
///
/// Latencies and drip intervals are offsets on one timeline from the stream's start (token k at
/// ttft + k·itl, drip piece k at k·interval): a task that wakes late catches up instead of pushing
/// every later write back by its lateness, so delays never add up to more than the timeline says.
/// A silence (a stall, the split-UTF-8 pause) is different: it lasts at least its length from the
/// moment it begins, however late that is, and the timeline goes on from its end; so does a wait
/// for the source (the next readiness transition), which is not on the timeline at all.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// When the last wait on the timeline ends (or ended).
    due: Instant,
}

impl Schedule {
    fn starting(at: Instant) -> Self {
        Self { due: at }
    }

    /// The end of a wait of `duration` on the timeline: `duration` after the previous one's end.
    fn next(&mut self, duration: Duration) -> Instant {
        self.due = later(self.due, duration);
        self.due
    }

    /// The end of a silence of `duration` that begins at `now`; the timeline resumes from it.
    fn silence(&mut self, now: Instant, duration: Duration) -> Instant {
        self.due = later(self.due.max(now), duration);
        self.due
    }

    /// The timeline resumes at `now`, after a wait that was not on it.
    fn resume(&mut self, now: Instant) {
        self.due = self.due.max(now);
    }
}

/// `at` + `duration`, or a far-off instant when that cannot be represented.
fn later(at: Instant, duration: Duration) -> Instant {
    at.checked_add(duration).unwrap_or(at + FAR_FUTURE)
}

/// The client is gone (the body was dropped).
struct Closed;

/// Writes body bytes to the response: directly, dripped, or batched (bench mode), waiting on the
/// stream's [`Schedule`].
struct Writer {
    tx: mpsc::Sender<Bytes>,
    drip: Option<(usize, Duration)>,
    batch: Option<BytesMut>,
    schedule: Schedule,
}

impl Writer {
    async fn write(&mut self, bytes: Bytes) -> Result<(), Closed> {
        if let Some((size, interval)) = self.drip {
            let mut rest = bytes;
            while !rest.is_empty() {
                let piece = rest.split_to(size.min(rest.len()));
                self.send(piece).await?;
                self.pause(interval).await?;
            }
            return Ok(());
        }
        if let Some(batch) = &mut self.batch {
            batch.extend_from_slice(&bytes);
            if batch.len() < BATCH_BYTES {
                return Ok(());
            }
            return self.flush().await;
        }
        self.send(bytes).await
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        match &mut self.batch {
            Some(batch) if !batch.is_empty() => {
                let bytes = batch.split().freeze();
                self.send(bytes).await
            }
            _ => Ok(()),
        }
    }

    async fn send(&self, bytes: Bytes) -> Result<(), Closed> {
        self.tx.send(bytes).await.map_err(|_| Closed)
    }

    /// Waits `duration` on the schedule (a latency, a drip interval).
    async fn pause(&mut self, duration: Duration) -> Result<(), Closed> {
        if duration.is_zero() {
            return Ok(());
        }
        self.flush().await?;
        let due = self.schedule.next(duration);
        self.sleep_until(due).await
    }

    /// Sends nothing for at least `duration` from now (a stall, the split pause).
    async fn silence(&mut self, duration: Duration) -> Result<(), Closed> {
        if duration.is_zero() {
            return Ok(());
        }
        self.flush().await?;
        let due = self.schedule.silence(Instant::now(), duration);
        self.sleep_until(due).await
    }

    /// Sleeps until `due`, cut short when the client goes away.
    async fn sleep_until(&self, due: Instant) -> Result<(), Closed> {
        tokio::select! {
            () = tokio::time::sleep_until(due) => Ok(()),
            () = self.tx.closed() => Err(Closed),
        }
    }
}

async fn produce(
    mut source: EventSource,
    fault: Option<Fault>,
    dialect: Option<Dialect>,
    mut out: Writer,
) -> Result<(), Closed> {
    let framing = match &fault {
        Some(Fault::Framing(framing)) => framing.clone(),
        _ => Framing::default(),
    };
    if let Some(Fault::Stall {
        at: StallAt::FirstChunk,
        ms,
    }) = fault
    {
        out.silence(Duration::from_millis(ms)).await?;
    }
    if framing.bom {
        out.write(Bytes::from_static(BOM)).await?;
    }
    let mut sent = 0usize;
    let mut malformed_sent = false;
    let mut padding = framing.huge_frame_bytes;
    let mut split_pending = framing.split_utf8;
    let endless_after = match &fault {
        Some(Fault::EndlessLine { after_events }) => Some(*after_events),
        _ => None,
    };
    loop {
        // Due before the next event: do not wait for it (a stuck workload's may never come).
        if endless_after.is_some_and(|after| sent >= after) {
            return endless_line(&mut out, ENDLESS_CAP).await;
        }
        let Some(mut event) = source.next(&mut out).await? else {
            break;
        };
        out.pause(event.delay).await?;
        let cut_here = |after: usize| event.terminal || sent >= after;
        match &fault {
            Some(Fault::EndlessLine { .. }) if event.terminal => {
                return endless_line(&mut out, ENDLESS_CAP).await;
            }
            Some(Fault::Truncate {
                after_finish: true, ..
            }) if &event.data[..] == b"[DONE]" => break,
            Some(Fault::Truncate {
                after_events,
                after_finish: false,
            }) if cut_here(*after_events) => break,
            Some(Fault::InbandError {
                after_events,
                shape,
                message,
            }) if cut_here(*after_events) => {
                for error in inband_error(dialect, *shape, message) {
                    out.write(encode(&error, &framing)).await?;
                }
                break;
            }
            Some(Fault::MalformedJson { after_events })
                if !malformed_sent && cut_here(*after_events) =>
            {
                malformed_sent = true;
                let bad = SseEvent::data(Bytes::from_static(MALFORMED), false);
                out.write(encode(&bad, &Framing::default())).await?;
            }
            _ => {}
        }
        if let Some(bytes) = padding.take() {
            event = event.padded(bytes);
        }
        let encoded = encode(&event, &framing);
        match split_point(&encoded).filter(|_| split_pending) {
            Some(at) => {
                split_pending = false;
                let mut first = encoded;
                let second = first.split_off(at);
                out.write(first).await?;
                out.silence(SPLIT_PAUSE).await?;
                out.write(second).await?;
            }
            None => out.write(encoded).await?,
        }
        sent += 1;
        if let Some(Fault::Stall {
            at: StallAt::MidStream,
            ms,
        }) = fault
        {
            if sent == 1 {
                out.silence(Duration::from_millis(ms)).await?;
            }
        }
    }
    out.flush().await
}

/// `data: ` and then `x` bytes with no newline, in writes of [`ENDLESS_CHUNK`], as fast as the
/// client reads them (the channel holds a few writes), until `cap` bytes of `x` went out, or
/// until the client goes away: then the next write fails at once and the task ends.
async fn endless_line(out: &mut Writer, cap: u64) -> Result<(), Closed> {
    out.flush().await?;
    out.send(Bytes::from_static(b"data: ")).await?;
    let chunk = Bytes::from(vec![b'x'; ENDLESS_CHUNK]);
    let mut sent = 0u64;
    while sent < cap {
        let size =
            usize::try_from(cap - sent).map_or(ENDLESS_CHUNK, |left| left.min(ENDLESS_CHUNK));
        out.send(chunk.slice(..size)).await?;
        sent += size as u64;
    }
    Ok(())
}

/// A position inside the first multi-byte UTF-8 character of `bytes` (after its lead byte).
fn split_point(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b >= 0xC0).map(|lead| lead + 1)
}

/// The bytes of `event` framed per `framing`.
fn encode(event: &SseEvent, framing: &Framing) -> Bytes {
    let eol = framing.line_ending.as_bytes();
    let mut out = BytesMut::with_capacity(event.data.len() + 32);
    if framing.comments {
        out.put_slice(b": keep-alive");
        out.put_slice(eol);
    }
    if let Some(name) = event.name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_slice(eol);
    }
    let lines = if framing.multiline {
        split_json_lines(&event.data)
    } else {
        vec![&event.data[..]]
    };
    for line in lines {
        out.put_slice(b"data: ");
        out.put_slice(line);
        out.put_slice(eol);
        if framing.comments {
            out.put_slice(b": keep-alive");
            out.put_slice(eol);
        }
    }
    out.put_slice(eol);
    out.freeze()
}

/// JSON text cut after each `,` outside strings: joined again with `\n` (as SSE joins `data:`
/// lines) it is the same JSON, since a newline is whitespace between tokens.
fn split_json_lines(json: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (i, byte) in json.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if *byte == b'"' {
            in_string = true;
        } else if *byte == b',' {
            lines.push(&json[start..=i]);
            start = i + 1;
        }
    }
    lines.push(&json[start..]);
    lines
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::faults::LineEnding;
    use serde_json::{json, Value};

    #[test]
    fn multiline_split_rejoins_to_the_same_json() {
        let value = json!({"a": "x,\"y\",z", "b": [1, 2, {"c": "日本,"}]});
        let text = serde_json::to_vec(&value).unwrap();
        let lines = split_json_lines(&text);
        assert!(lines.len() > 3);
        let joined = lines
            .iter()
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), value);
    }

    #[test]
    fn framing_variants() {
        let event = SseEvent::json(&json!({"a": 1, "b": 2}), false).named("error");
        assert_eq!(
            &encode(&event, &Framing::default())[..],
            b"event: error\ndata: {\"a\":1,\"b\":2}\n\n"
        );
        let framing = Framing {
            line_ending: LineEnding::Crlf,
            multiline: true,
            comments: true,
            ..Framing::default()
        };
        assert_eq!(
            &encode(&SseEvent::json(&json!({"a": 1, "b": 2}), false), &framing)[..],
            &b": keep-alive\r\ndata: {\"a\":1,\r\n: keep-alive\r\ndata: \"b\":2}\r\n: keep-alive\r\n\r\n"[..]
        );
    }

    #[test]
    fn split_point_lands_inside_a_character() {
        let bytes = "data: ¡Hola".as_bytes();
        let at = split_point(bytes).unwrap();
        assert!(std::str::from_utf8(&bytes[..at]).is_err());
        assert_eq!(split_point(b"ascii"), None);
    }

    /// A readiness stream waiting on a stuck workload ends its task when the client goes away
    /// (the task holds the clock's receiver: the count falls back to zero).
    #[tokio::test]
    async fn readiness_task_ends_when_the_client_goes_away() {
        use crate::readiness::{Profile, ReadinessClock};
        let clock =
            tokio::sync::watch::Sender::new(ReadinessClock::start(Profile::Stuck, "x", "m"));
        let source = EventSource::Readiness(ReadinessEvents::new(clock.subscribe()));
        let response = stream_response(source, None, None, false);
        let mut body = response.into_body();
        // Snapshot, then provisioning at 40 ms; then nothing ever again.
        for _ in 0..2 {
            let frame = http_body_util::BodyExt::frame(&mut body).await;
            assert!(frame.is_some());
        }
        assert_eq!(clock.receiver_count(), 1);
        drop(body);
        task_ends(&clock).await;
    }

    /// Waits (at most 5 s) until the stream task holding `clock`'s receiver has ended.
    async fn task_ends<T>(clock: &tokio::sync::watch::Sender<T>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while clock.receiver_count() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream task leaked"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// An endless line goes on while the client reads and its task ends as soon as the client goes
    /// away, even after events and on a readiness stream that would wait forever.
    #[tokio::test]
    async fn endless_line_task_ends_when_the_client_goes_away() {
        use crate::readiness::{Profile, ReadinessClock};
        let clock =
            tokio::sync::watch::Sender::new(ReadinessClock::start(Profile::Stuck, "x", "m"));
        let source = EventSource::Readiness(ReadinessEvents::new(clock.subscribe()));
        let fault = Fault::EndlessLine { after_events: 1 };
        let response = stream_response(source, Some(fault), None, false);
        let mut body = response.into_body();
        let mut read = Vec::new();
        while read.len() < 3 * 1024 * 1024 {
            let frame = http_body_util::BodyExt::frame(&mut body).await;
            read.extend_from_slice(&frame.unwrap().unwrap().into_data().unwrap());
        }
        let text = String::from_utf8(read).unwrap();
        let (snapshot, line) = text.split_once("\n\n").unwrap();
        assert!(snapshot.starts_with("data: {"), "{snapshot}");
        let xs = line.strip_prefix("data: ").unwrap();
        assert!(xs.len() > 3_000_000 && xs.bytes().all(|b| b == b'x'));
        drop(body);
        task_ends(&clock).await;
    }

    #[tokio::test]
    async fn endless_line_stops_at_its_cap_without_a_newline() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut writer = Writer {
            tx,
            drip: None,
            batch: Some(BytesMut::new()),
            schedule: Schedule::starting(Instant::now()),
        };
        writer.write(Bytes::from_static(b"data: 1\n\n")).await.ok();
        let cap = 3 * ENDLESS_CHUNK as u64 + 10;
        let task = tokio::spawn(async move { endless_line(&mut writer, cap).await.is_ok() });
        let mut bytes = Vec::new();
        while let Some(piece) = rx.recv().await {
            assert!(piece.len() <= ENDLESS_CHUNK);
            bytes.extend_from_slice(&piece);
        }
        assert!(task.await.unwrap());
        let line = bytes.strip_prefix(b"data: 1\n\ndata: ".as_slice()).unwrap();
        assert_eq!(line.len() as u64, cap);
        assert!(line.iter().all(|b| *b == b'x'));
    }

    #[test]
    fn latencies_are_offsets_from_the_start_whenever_the_task_wakes() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut schedule = Schedule::starting(start);
        // Time to first token 300 ms, then 40 ms per token: due instants never depend on when the
        // task got to run, so a late wake is caught up, not carried over to every later token.
        assert_eq!(schedule.next(ms(300)), start + ms(300));
        assert_eq!(schedule.next(ms(40)), start + ms(340));
        assert_eq!(schedule.next(ms(40)), start + ms(380));
        // A wait for the source (a readiness transition) moves the timeline to its end, never back.
        schedule.resume(start + ms(500));
        assert_eq!(schedule.next(ms(40)), start + ms(540));
        schedule.resume(start + ms(100));
        assert_eq!(schedule.next(ms(40)), start + ms(580));
    }

    #[test]
    fn a_silence_lasts_its_length_from_when_it_begins_and_moves_the_schedule() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut schedule = Schedule::starting(start);
        schedule.next(ms(100));
        // A stall that begins 50 ms late still lasts its full 400 ms...
        assert_eq!(schedule.silence(start + ms(150), ms(400)), start + ms(550));
        // ...and the next token is due one latency after it, not at 100 + 40 ms.
        assert_eq!(schedule.next(ms(40)), start + ms(590));
        // A silence that begins early (before the timeline's due instant) starts from that instant.
        let mut early = Schedule::starting(start + ms(10));
        assert_eq!(early.silence(start, ms(5)), start + ms(15));
        // A wait that cannot be represented is a far-off one, not a panic.
        assert!(early.next(Duration::MAX) > start + ms(15));
    }

    /// The body of a vLLM chat stream of `tokens` as the producer hands it over, one frame per
    /// write, each with the time it came.
    async fn chat_frames(
        tokens: &[&str],
        fault: Option<Fault>,
        latency: (Duration, Duration),
    ) -> Vec<(Duration, Bytes)> {
        let head = crate::dialects::ChatHead {
            id: "chatcmpl-1".to_string(),
            created: 1,
            model: "m".to_string(),
        };
        let tokens = tokens.iter().map(|t| t.to_string()).collect();
        let stream = ChatStream::new(
            Dialect::Vllm,
            head,
            crate::dialects::Tokens::text(tokens),
            "stop",
            None,
            latency,
        );
        let begun = Instant::now();
        let response =
            stream_response(EventSource::Chat(stream), fault, Some(Dialect::Vllm), false);
        let mut body = response.into_body();
        let mut frames = Vec::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            frames.push((begun.elapsed(), frame.unwrap().into_data().unwrap()));
        }
        frames
    }

    #[tokio::test]
    async fn drip_writes_pieces_of_at_most_its_size_one_interval_apart() {
        let none = (Duration::ZERO, Duration::ZERO);
        let events = chat_frames(&["¡Hola", " mundo"], None, none).await;
        let drip = Fault::Drip {
            bytes_per_write: 7,
            interval_ms: 1,
        };
        let pieces = chat_frames(&["¡Hola", " mundo"], Some(drip), none).await;
        assert!(
            pieces.iter().all(|(_, piece)| piece.len() <= 7),
            "{pieces:?}"
        );
        let expected: usize = events.iter().map(|(_, e)| e.len().div_ceil(7)).sum();
        assert_eq!(pieces.len(), expected);
        let bytes = |frames: &[(Duration, Bytes)]| -> Vec<u8> {
            frames.iter().flat_map(|(_, b)| b.to_vec()).collect()
        };
        assert_eq!(bytes(&pieces), bytes(&events));
        // Piece k is due k ms after the start: none comes sooner, however the task is scheduled.
        for (k, (at, _)) in pieces.iter().enumerate() {
            let k = u32::try_from(k).unwrap();
            assert!(*at >= Duration::from_millis(1) * k, "piece {k} at {at:?}");
        }
    }

    #[tokio::test]
    async fn tokens_come_no_sooner_than_their_place_on_the_schedule() {
        let (ttft, itl) = (Duration::from_millis(30), Duration::from_millis(20));
        let frames = chat_frames(&["a", "b", "c"], None, (ttft, itl)).await;
        let tokens: Vec<Duration> = frames
            .iter()
            .filter(|(_, data)| {
                let text = String::from_utf8_lossy(data);
                ["a", "b", "c"]
                    .iter()
                    .any(|t| text.contains(&format!("\"content\":\"{t}\"")))
            })
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(tokens.len(), 3, "{frames:?}");
        for (k, at) in tokens.iter().enumerate() {
            let k = u32::try_from(k).unwrap();
            assert!(*at >= ttft + itl * k, "token {k} at {at:?}");
        }
    }

    #[test]
    fn padding_adds_an_unknown_field() {
        let event = SseEvent::json(&json!({"a": 1}), false).padded(100);
        let value: Value = serde_json::from_slice(&event.data).unwrap();
        assert_eq!(value["x_padding"].as_str().unwrap().len(), 100);
        assert_eq!(&SseEvent::done().padded(10).data[..], b"[DONE]");
    }
}
