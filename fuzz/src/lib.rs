//! Helpers shared by the fuzz targets.

use inferencekey_core::redact;

/// Cut points in `0..=len`, sorted, drawn from a generator seeded by the bytes themselves: every input is split
/// the same way on every run (a crash reproduces from its file alone), and different inputs differently.
pub fn cuts(data: &[u8], salt: u64) -> Vec<usize> {
    // FNV-1a of the input, then xorshift.
    let mut state = data.iter().fold(0xcbf2_9ce4_8422_2325_u64 ^ salt, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let count = (next() % 9) as usize;
    let len = data.len() as u64 + 1;
    let mut out: Vec<usize> = (0..count).map(|_| (next() % len) as usize).collect();
    out.sort_unstable();
    out
}

/// `data` split at `cuts` (sorted offsets) into reads, empty reads included.
pub fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut reads = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, data.len());
        reads.push(&data[start..cut]);
        start = cut;
    }
    reads.push(&data[start..]);
    reads
}

/// `data` one byte per read.
pub fn bytewise(data: &[u8]) -> Vec<&[u8]> {
    data.chunks(1).collect()
}

/// Text that has left the SDK holds no full token: redacting it again changes nothing, and every token prefix
/// followed by a letter or digit shows at most 8 of them and then the ellipsis.
pub fn assert_redacted(what: &str, text: &str) {
    assert_eq!(redact(text), text, "{what} holds an unredacted token");
    let bytes = text.as_bytes();
    for prefix in ["ik_sdk_", "ik_live_"] {
        for (at, _) in text.match_indices(prefix) {
            let id = &bytes[at + prefix.len()..];
            let shown = id.iter().take_while(|b| b.is_ascii_alphanumeric()).count();
            if shown == 0 {
                continue;
            }
            assert!(shown <= 8, "{what} shows {shown} characters of a token id");
            assert!(
                id[shown..].starts_with("\u{2026}".as_bytes()),
                "{what}: a token id not followed by the ellipsis"
            );
        }
    }
}
