//! The SSE decoder (`SseDecoder`): it never panics, it agrees with a naive line-by-line model of the WHATWG
//! algorithm, and any split of the input into reads (byte-at-a-time included) gives the same events, also on a
//! decoder reused after `finish`.
#![no_main]

use inferencekey_core::{SseDecoder, SseEvent};
use inferencekey_fuzz::{bytewise, cuts, split};
use libfuzzer_sys::fuzz_target;

fn decode(decoder: &mut SseDecoder, reads: &[&[u8]]) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for read in reads {
        decoder.feed(read, &mut out);
    }
    decoder.finish(&mut out);
    out
}

/// The specification, read literally over the whole input at once: strip one leading BOM, cut the stream into
/// lines at CRLF, CR or LF, process each line; the decoder's end-of-stream choice (dispatch the pending event
/// when the last line was terminated) ends it.
fn model(input: &[u8]) -> Vec<SseEvent> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < input.len() {
        match input[i] {
            b'\r' => {
                lines.push(&input[start..i]);
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            b'\n' => {
                lines.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (mut data, mut event, mut id, mut retry) = (Vec::new(), Vec::new(), Vec::new(), None);
    let mut events = Vec::new();
    let mut dispatch = |data: &mut Vec<u8>, event: &mut Vec<u8>, id: &[u8], retry: Option<u64>| {
        if !data.is_empty() {
            data.pop();
            events.push(SseEvent {
                event: (!event.is_empty()).then(|| text(event)),
                data: text(data),
                id: (!id.is_empty()).then(|| text(id)),
                retry,
            });
        }
        data.clear();
        event.clear();
    };
    for line in lines {
        if line.is_empty() {
            dispatch(&mut data, &mut event, &id, retry);
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => (
                &line[..c],
                line[c + 1..].strip_prefix(b" ").unwrap_or(&line[c + 1..]),
            ),
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            b"event" => event = value.to_vec(),
            b"id" if !value.contains(&0) => id = value.to_vec(),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                retry = Some(value.iter().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                }));
            }
            _ => {}
        }
    }
    if start == input.len() {
        dispatch(&mut data, &mut event, &id, retry);
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = SseDecoder::new();
    let whole = decode(&mut decoder, &[data]);
    assert_eq!(whole, model(data), "decoder and model disagree");
    for event in &whole {
        assert!(!event.data.contains('\r'), "CR in data");
        for field in event.event.iter().chain(&event.id) {
            assert!(!field.contains(['\r', '\n']), "line break in a field");
        }
        assert!(
            !event.id.as_deref().unwrap_or("").contains('\0'),
            "NUL in id"
        );
    }
    // The same decoder, reused after `finish`, split in two different ways.
    let one = split(data, &cuts(data, 1));
    assert_eq!(
        decode(&mut decoder, &one),
        whole,
        "split {:?}",
        cuts(data, 1)
    );
    let two = split(data, &cuts(data, 2));
    assert_eq!(
        decode(&mut decoder, &two),
        whole,
        "split {:?}",
        cuts(data, 2)
    );
    if data.len() <= 4096 {
        assert_eq!(
            decode(&mut SseDecoder::new(), &bytewise(data)),
            whole,
            "byte at a time"
        );
    }
});
