//! Strings quoted in messages the way Python's `repr()` quotes them, so a message the core builds reads exactly
//! like the one the Python surface documents (`got 'sometimes'`, `workload 'support-bot' drifted ...`).
//! A leaf module: `plan` and `control` both quote, and `plan` must not import anything that imports it.

use std::fmt::Write as _;

/// `text` as Python's `repr(text)` shows it: single quotes, or double quotes when the text holds a single quote
/// and no double quote; backslashes, the chosen quote, `\t` `\n` `\r` and characters Python does not print
/// (controls, separators other than the space, format and private-use characters) escaped as Python does.
/// Unassigned code points are the one difference: Python escapes them, this keeps them.
pub(crate) fn py_repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if c == quote => {
                out.push('\\');
                out.push(c);
            }
            _ if printable(c) => out.push(c),
            // Writing to a String cannot fail.
            _ => {
                let code = u32::from(c);
                let _ = if code <= 0xff {
                    write!(out, "\\x{code:02x}")
                } else if code <= 0xffff {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one character, for every assigned code point: false for controls (Cc),
/// separators (Zs except the space, Zl, Zp), format characters (Cf) and private use (Co).
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() {
        return false;
    }
    !matches!(
        u32::from(c),
        // Zs other than the space, Zl, Zp.
        0xa0 | 0x1680 | 0x2000..=0x200a | 0x2028 | 0x2029 | 0x202f | 0x205f | 0x3000
        // Cf.
        | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890 | 0x891 | 0x8e2 | 0x180e
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff
        | 0xfff9..=0xfffb | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3
        | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f
        // Co.
        | 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values are what CPython 3.12 prints for repr() of the same string.
    #[test]
    fn quotes_like_python() {
        assert_eq!(py_repr_str("sometimes"), "'sometimes'");
        assert_eq!(py_repr_str(""), "''");
        assert_eq!(py_repr_str("it's"), "\"it's\"");
        assert_eq!(py_repr_str("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(py_repr_str("say \"hi\""), "'say \"hi\"'");
        assert_eq!(py_repr_str("a\\b"), "'a\\\\b'");
    }

    #[test]
    fn escapes_like_python() {
        assert_eq!(py_repr_str("a\tb\nc\rd"), "'a\\tb\\nc\\rd'");
        assert_eq!(py_repr_str("\0\x1b\x7f"), "'\\x00\\x1b\\x7f'");
        assert_eq!(py_repr_str("\u{85}\u{a0}\u{ad}"), "'\\x85\\xa0\\xad'");
        assert_eq!(
            py_repr_str("\u{200b}\u{2028}\u{feff}"),
            "'\\u200b\\u2028\\ufeff'"
        );
        assert_eq!(
            py_repr_str("\u{e0001}\u{10fffd}"),
            "'\\U000e0001\\U0010fffd'"
        );
        assert_eq!(
            py_repr_str("café ünïcode 日本 🙂"),
            "'café ünïcode 日本 🙂'"
        );
    }
}
