//! From the bytes of a feed to unfolded text lines.
//!
//! Calendar feeds in the wild carry a byte order mark, fold lines in the middle of a multi-byte
//! UTF-8 character, and mix in stray Windows-1252 bytes. Unfolding therefore works on bytes,
//! before decoding (RFC 5545, 3.1), and decoding never fails: a byte that is not UTF-8 is read
//! as Windows-1252 and reported. This module knows nothing of properties or components.

/// The text of a feed after unfolding and decoding, and whether decoding had to guess.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// Unfolded lines joined by `\n`.
    pub text: String,
    /// How many bytes were not UTF-8 and were read as Windows-1252.
    pub guessed_bytes: usize,
}

/// Unfolds and decodes a feed.
pub(crate) fn decode(bytes: &[u8]) -> Decoded {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let unfolded = unfold(bytes);
    let (text, guessed_bytes) = decode_lenient(&unfolded);
    Decoded { text, guessed_bytes }
}

/// Joins continuation lines (a line break followed by a space or a tab) and turns every line
/// break into `\n`. Bare `\n` and bare `\r` line ends are accepted as well.
fn unfold(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let break_len = match (b, bytes.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r' | b'\n', _) => 1,
            _ => 0,
        };
        if break_len == 0 {
            out.push(b);
            i += 1;
            continue;
        }
        i += break_len;
        if matches!(bytes.get(i), Some(b' ' | b'\t')) {
            i += 1;
        } else {
            out.push(b'\n');
        }
    }
    out
}

/// Decodes UTF-8, reading each byte that does not fit as Windows-1252.
fn decode_lenient(bytes: &[u8]) -> (String, usize) {
    let mut text = String::with_capacity(bytes.len());
    let mut guessed = 0;
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                return (text, guessed);
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // The prefix was just checked to be UTF-8.
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(after.len()).max(1);
                for &b in &after[..bad] {
                    text.push(windows_1252(b));
                    guessed += 1;
                }
                rest = &after[bad..];
            }
        }
    }
}

/// The character of a Windows-1252 byte above ASCII; the five unassigned bytes become U+FFFD.
fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{FFFD}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{FFFD}', 'Ž',
        '\u{FFFD}', '\u{FFFD}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ',
        '\u{FFFD}', 'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fold_inside_a_utf8_character_joins_before_decoding() {
        let d = decode(b"\xEF\xBB\xBFSUMMARY:R\xC3\r\n \xA9union\r\nLOCATION:B\xE9ta\r\n");
        assert_eq!(d.text, "SUMMARY:Réunion\nLOCATION:Béta\n");
        assert_eq!(d.guessed_bytes, 1);
    }

    #[test]
    fn bare_line_feeds_and_tabs_fold_too() {
        assert_eq!(decode(b"A:1\n\t2\nB:3").text, "A:12\nB:3");
    }
}
