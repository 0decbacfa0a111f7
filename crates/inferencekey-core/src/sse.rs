//! An incremental, byte-level Server-Sent Events decoder following the WHATWG specification: any split of
//! the input into reads yields the same events; buffers are reused, so steady-state decoding does not allocate.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` type; `None` for the default (`message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event ID of the stream (it persists across events, as the specification says).
    pub id: Option<String>,
    /// The reconnection time last set by a `retry:` field, in milliseconds.
    pub retry: Option<u64>,
}

/// A dispatched event borrowing the decoder's buffers: the zero-copy form the SDK's pipelines use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EventRef<'a> {
    /// The `event:` type bytes; empty for the default type.
    pub(crate) event: &'a [u8],
    /// The data bytes (lines joined with `\n`), not yet UTF-8 checked.
    pub(crate) data: &'a [u8],
    /// The last event ID bytes; empty when none.
    pub(crate) id: &'a [u8],
    /// The reconnection time last set, in milliseconds.
    pub(crate) retry: Option<u64>,
}

impl EventRef<'_> {
    /// An owned event (invalid UTF-8 replaced, as the specification's decoding step does).
    pub(crate) fn to_event(self) -> SseEvent {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        SseEvent {
            event: (!self.event.is_empty()).then(|| text(self.event)),
            data: text(self.data),
            id: (!self.id.is_empty()).then(|| text(self.id)),
            retry: self.retry,
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The largest event the decoder holds: the bytes of one event's lines, not yet dispatched (16 MiB). Real
/// events are a few hundred bytes to a few MiB (a large embedding batch is not streamed); past this, a stream
/// that keeps sending one endless line would grow the client's memory without bound while the idle timeout
/// never fires, so the decoder stops and reports [`SseDecoder::overflowed`].
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The decoder. Feed it the bytes of a stream in reads of any size; call `finish` at the end.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The unterminated tail of the previous read(s).
    line: Vec<u8>,
    /// The previous read ended in CR: an LF at the start of the next read belongs to the same line end.
    after_cr: bool,
    /// No line has been completed yet (a leading BOM is stripped from the first line).
    first_line: bool,
    data: Vec<u8>,
    event: Vec<u8>,
    last_id: Vec<u8>,
    retry: Option<u64>,
    /// An event grew past [`MAX_EVENT_BYTES`]: the buffers were dropped and the rest of the stream is ignored.
    overflowed: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self {
            first_line: true,
            ..Self::default()
        }
    }

    /// Decode `bytes`, appending every event they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        self.feed_with(bytes, |event| out.push(event.to_event()));
    }

    /// End of stream: appends the pending event when all its lines were terminated but the closing blank line
    /// never came (servers that close right after the last `data:` line); an unterminated last line is
    /// dropped as possibly truncated. The decoder is then ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        self.finish_with(|event| out.push(event.to_event()));
    }

    /// True once an event grew past [`MAX_EVENT_BYTES`] (a line that never ends, or endless `data:` lines
    /// without a blank one): nothing more is decoded, and the caller should fail the stream.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Drop what is buffered and ignore the rest of the stream.
    fn overflow(&mut self) {
        self.overflowed = true;
        self.line = Vec::new();
        self.data = Vec::new();
        self.event = Vec::new();
    }

    /// `feed`, handing each event to `on_event` as borrowed bytes (no allocation per event).
    pub(crate) fn feed_with(&mut self, bytes: &[u8], mut on_event: impl FnMut(EventRef<'_>)) {
        if self.overflowed {
            return;
        }
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, terminator_and_rest) = rest.split_at(end);
            if self.line.is_empty() {
                self.process_line(line, &mut on_event);
            } else {
                // Complete the carried-over tail; the buffer is taken and put back to keep its capacity.
                let mut carried = std::mem::take(&mut self.line);
                carried.extend_from_slice(line);
                self.process_line(&carried, &mut on_event);
                carried.clear();
                self.line = carried;
            }
            rest = match terminator_and_rest {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
            if self.overflowed {
                return;
            }
        }
        if self.line.len() + rest.len() + self.data.len() > MAX_EVENT_BYTES {
            self.overflow();
            return;
        }
        self.line.extend_from_slice(rest);
    }

    /// `finish`, handing the last event (if any) to `on_event` as borrowed bytes.
    pub(crate) fn finish_with(&mut self, mut on_event: impl FnMut(EventRef<'_>)) {
        if self.line.is_empty() && !self.overflowed {
            self.dispatch(&mut on_event);
        }
        self.line.clear();
        self.data.clear();
        self.event.clear();
        self.last_id.clear();
        self.retry = None;
        self.after_cr = false;
        self.first_line = true;
        self.overflowed = false;
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(EventRef<'_>)) {
        let mut line = line;
        if self.first_line {
            self.first_line = false;
            if let Some(tail) = line.strip_prefix(BOM) {
                line = tail;
            }
        }
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() >= MAX_EVENT_BYTES {
                    self.overflow();
                    return;
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            // An id holding NUL is ignored, as the specification says.
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Absurdly long digit runs saturate instead of being ignored.
                self.retry = Some(value.iter().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                }));
            }
            _ => {}
        }
    }

    /// The blank-line step: an event with no data lines is not dispatched; the type resets either way.
    fn dispatch(&mut self, on_event: &mut impl FnMut(EventRef<'_>)) {
        if !self.data.is_empty() {
            let data = &self.data[..self.data.len() - 1];
            on_event(EventRef {
                event: &self.event,
                data,
                id: &self.last_id,
                retry: self.retry,
            });
        }
        self.data.clear();
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_endless_line_overflows_at_the_cap_and_holds_no_more() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"data: {\"a\": 1}\n\ndata: ", &mut out);
        assert_eq!(out.len(), 1);
        let chunk = vec![b'x'; 1 << 20];
        let mut fed = 0;
        while !decoder.overflowed() {
            decoder.feed(&chunk, &mut out);
            fed += chunk.len();
            assert!(fed <= MAX_EVENT_BYTES + chunk.len());
        }
        assert!(decoder.line.capacity() == 0 && decoder.data.capacity() == 0);
        decoder.feed(b"\n\ndata: more\n\n", &mut out);
        decoder.finish(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn endless_data_lines_without_a_blank_line_overflow_too() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        let line = [b"data: ".as_slice(), &vec![b'y'; 1 << 16], b"\n"].concat();
        for _ in 0..(MAX_EVENT_BYTES / line.len() + 2) {
            decoder.feed(&line, &mut out);
        }
        assert!(decoder.overflowed());
        assert!(out.is_empty());
    }

    #[test]
    fn an_event_just_under_the_cap_is_decoded() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        let body = vec![b'z'; MAX_EVENT_BYTES - 16];
        for part in [
            b"data: ".as_slice(),
            &body[..body.len() / 2],
            &body[body.len() / 2..],
            b"\n\n",
        ] {
            decoder.feed(part, &mut out);
        }
        assert!(!decoder.overflowed());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len(), body.len());
    }

    fn decode(input: &[u8]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(input, &mut out);
        decoder.finish(&mut out);
        out
    }

    fn decode_split(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, input.len());
            decoder.feed(&input[start..cut], &mut out);
            start = cut;
        }
        decoder.feed(&input[start..], &mut out);
        decoder.finish(&mut out);
        out
    }

    fn data(d: &str) -> SseEvent {
        SseEvent {
            data: d.to_owned(),
            ..SseEvent::default()
        }
    }

    fn datas(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn line_endings_lf_crlf_cr() {
        for input in [
            "data: a\n\ndata: b\n\n",
            "data: a\r\n\r\ndata: b\r\n\r\n",
            "data: a\r\rdata: b\r\r",
            "data: a\r\n\rdata: b\n\r\n",
        ] {
            assert_eq!(
                decode(input.as_bytes()),
                vec![data("a"), data("b")],
                "{input:?}"
            );
        }
    }

    #[test]
    fn cr_at_end_of_one_read_lf_at_start_of_next() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"data: a\r", &mut out);
        decoder.feed(b"\ndata: b\r", &mut out);
        decoder.feed(b"\n\r", &mut out);
        decoder.feed(b"\n", &mut out);
        assert_eq!(datas(&out), ["a\nb"]);
    }

    #[test]
    fn multi_line_data_joined_with_lf() {
        assert_eq!(
            decode(b"data: {\"a\":\ndata: 1}\n\n"),
            vec![data("{\"a\":\n1}")]
        );
        assert_eq!(decode(b"data\ndata\n\n"), vec![data("\n")]);
    }

    #[test]
    fn one_optional_space_after_colon() {
        assert_eq!(
            datas(&decode(b"data:x\n\ndata: x\n\ndata:  x\n\n")),
            ["x", "x", " x"]
        );
    }

    #[test]
    fn field_without_colon_and_empty_data() {
        assert_eq!(decode(b"data\n\n"), vec![data("")]);
        // No data line at all: nothing dispatched.
        assert!(decode(b"event: ping\n\n").is_empty());
        assert!(decode(b"id: 3\n\n\n\n").is_empty());
    }

    #[test]
    fn comments_and_unknown_fields_ignored() {
        let events = decode(b": keep-alive\n:\nfoo: bar\ndata: x\nerror: {\"e\":1}\n\n");
        assert_eq!(events, vec![data("x")]);
    }

    #[test]
    fn event_id_retry_fields() {
        let events = decode(
            b"event: error\nid: 7\nretry: 1500\ndata: boom\n\ndata: next\n\nid\ndata: z\n\n",
        );
        assert_eq!(
            events[0],
            SseEvent {
                event: Some("error".into()),
                data: "boom".into(),
                id: Some("7".into()),
                retry: Some(1500)
            }
        );
        // The event type resets after each dispatch; the last event ID and retry persist; an empty `id` clears.
        assert_eq!(
            events[1],
            SseEvent {
                event: None,
                data: "next".into(),
                id: Some("7".into()),
                retry: Some(1500)
            }
        );
        assert_eq!(events[2].id, None);
        assert_eq!(decode(b"retry: 1x\ndata: a\n\n")[0].retry, None);
        assert_eq!(decode(b"id: a\0b\ndata: a\n\n")[0].id, None);
    }

    #[test]
    fn event_type_reset_even_without_dispatch() {
        assert_eq!(decode(b"event: a\n\ndata: x\n\n"), vec![data("x")]);
    }

    #[test]
    fn leading_bom_ignored_once() {
        assert_eq!(decode(b"\xEF\xBB\xBFdata: a\n\n"), vec![data("a")]);
        // A second BOM is part of the field name, which is then unknown.
        assert!(decode(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n").is_empty());
        // A BOM split across reads.
        assert_eq!(
            decode_split(b"\xEF\xBB\xBFdata: a\n\n", &[1, 2]),
            vec![data("a")]
        );
        // Not at the start: not stripped.
        assert!(decode(b"\n\xEF\xBB\xBFdata: a\n\n").is_empty());
    }

    #[test]
    fn utf8_split_across_reads_reassembled() {
        let input = "data: ¡Hola, señor! 🦀\n\n".as_bytes();
        for cut in 0..input.len() {
            assert_eq!(
                decode_split(input, &[cut]),
                vec![data("¡Hola, señor! 🦀")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn finish_dispatches_terminated_but_drops_unterminated() {
        assert_eq!(decode(b"data: [DONE]\n"), vec![data("[DONE]")]);
        assert_eq!(decode(b"data: a\n\ndata: {\"trunc"), vec![data("a")]);
        assert!(decode(b"data: [DONE]").is_empty());
    }

    #[test]
    fn decoder_is_reusable_after_finish() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"event: x\ndata: partial", &mut out);
        decoder.finish(&mut out);
        decoder.feed(b"\xEF\xBB\xBFdata: fresh\n\n", &mut out);
        assert_eq!(out, vec![data("fresh")]);
    }

    #[test]
    fn borrowed_events_match_owned() {
        let mut decoder = SseDecoder::new();
        let mut seen = Vec::new();
        decoder.feed_with(b"event: e\ndata: {\"x\":1}\n\n", |ev| {
            seen.push((ev.event.to_vec(), ev.data.to_vec()));
        });
        assert_eq!(seen, vec![(b"e".to_vec(), b"{\"x\":1}".to_vec())]);
    }

    #[test]
    fn engine_stream_vector() {
        let input =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n: ping\n\ndata: [DONE]\n\n";
        assert_eq!(
            datas(&decode(input)),
            ["{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}", "[DONE]"]
        );
    }

    /// Streams built from SSE-ish pieces, so the property exercises terminators, fields and UTF-8 often.
    fn sse_like_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"event: x".to_vec()),
            Just(b"id: 1".to_vec()),
            Just(b"retry: 20".to_vec()),
            Just(b": c".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just("ñ🦀".as_bytes().to_vec()),
            "[a-z{}\":, ]{0,6}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(input in sse_like_bytes(), cuts in proptest::collection::vec(0usize..400, 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(decode_split(&input, &cuts), decode(&input));
        }

        #[test]
        fn byte_at_a_time_equals_one_read(input in sse_like_bytes()) {
            let cuts: Vec<usize> = (1..input.len()).collect();
            prop_assert_eq!(decode_split(&input, &cuts), decode(&input));
        }

        #[test]
        fn arbitrary_bytes_any_split(input in proptest::collection::vec(any::<u8>(), 0..300), cuts in proptest::collection::vec(0usize..300, 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(decode_split(&input, &cuts), decode(&input));
        }

        #[test]
        fn data_round_trips(lines in proptest::collection::vec("[^\r\n]{0,20}", 1..5)) {
            let mut input = Vec::new();
            for line in &lines {
                input.extend_from_slice(b"data: ");
                input.extend_from_slice(line.as_bytes());
                input.extend_from_slice(b"\r\n");
            }
            input.extend_from_slice(b"\r\n");
            let events = decode(&input);
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].data, &lines.join("\n"));
        }
    }
}
