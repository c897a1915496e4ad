//! Small helpers over raw JSON text: borrowed string decoding, whitespace-free (compact)
//! rendering, and lenient timestamp parsing. They work on text that serde_json has already
//! validated, so they never re-parse a value through `f64` or a `Value` tree.

use std::borrow::Cow;

use serde::de::IgnoredAny;

/// Decodes a JSON string token (`"..."`) without allocating when it has no escapes.
/// Returns `None` when `raw` is not a string token.
#[inline]
pub fn as_str(raw: &str) -> Option<Cow<'_, str>> {
    let b = raw.as_bytes();
    if b.len() < 2 || b[0] != b'"' {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    if !inner.as_bytes().contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// Decodes a JSON string token like [`as_str`], but never fails on a token serde_json has
/// validated: a lone surrogate escape (`"\ud800"`, valid JSON, not valid Unicode) becomes
/// U+FFFD. The flag says whether that happened, so the caller can keep the original text.
/// Returns `None` when `raw` is not a string token.
pub fn as_str_lossy(raw: &str) -> Option<(Cow<'_, str>, bool)> {
    if let Some(s) = as_str(raw) {
        return Some((s, false));
    }
    let b = raw.as_bytes();
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut lossy = false;
    let mut chars = inner.char_indices().peekable();
    let hex4 = |at: usize| -> Option<u32> {
        inner
            .get(at..at + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let (_, e) = chars.next()?;
        match e {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hi = hex4(i + 2)?;
                for _ in 0..4 {
                    chars.next();
                }
                if (0xD800..0xDC00).contains(&hi) {
                    // a high surrogate: a pair only if `\uDC00..\uDFFF` follows
                    let lo = if inner.get(i + 6..i + 8) == Some("\\u") {
                        hex4(i + 8).filter(|lo| (0xDC00..0xE000).contains(lo))
                    } else {
                        None
                    };
                    match lo {
                        Some(lo) => {
                            for _ in 0..6 {
                                chars.next();
                            }
                            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                        }
                        None => {
                            out.push('\u{FFFD}');
                            lossy = true;
                        }
                    }
                } else if (0xDC00..0xE000).contains(&hi) {
                    out.push('\u{FFFD}');
                    lossy = true;
                } else {
                    out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                }
            }
            _ => return None,
        }
    }
    Some((Cow::Owned(out), lossy))
}

/// Appends the compact form of valid JSON text to `out`: all insignificant whitespace removed,
/// every token (numbers included, however large) kept byte for byte.
pub fn write_compact(raw: &str, out: &mut String) {
    let b = raw.as_bytes();
    if !b.iter().any(|&c| matches!(c, b' ' | b'\n' | b'\r' | b'\t')) {
        out.push_str(raw);
        return;
    }
    let mut in_str = false;
    let mut esc = false;
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            out.push_str(&raw[start..i]);
            start = i + 1;
        }
    }
    out.push_str(&raw[start..]);
}

/// True when `text` is one complete JSON value.
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// Appends `s` as a JSON string token.
pub fn write_str_token(s: &str, out: &mut String) {
    // serde_json's escaping, without an intermediate allocation for the common case.
    if !s.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

fn digits(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

/// Parses an ISO-8601 timestamp into microseconds since the epoch, UTC.
///
/// Accepts what Defender and the Functions host send: `YYYY-MM-DD[(T| )hh:mm[:ss[.f…]]]`
/// with 0 to 9 fractional digits (digits past the 6th are truncated, Kusto's 100 ns ticks
/// become µs), then `Z`, an offset (`+hh:mm`, `+hhmm`, `+hh`), or nothing (= UTC).
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])? as u32;
    let day = digits(&b[8..10])? as u32;
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let mut i = 10;
    let (mut hh, mut mm, mut ss, mut micros) = (0i64, 0i64, 0i64, 0i64);
    if i < b.len() && matches!(b[i], b'T' | b't' | b' ') {
        if b.len() < i + 6 || b[i + 3] != b':' {
            return None;
        }
        hh = digits(&b[i + 1..i + 3])?;
        mm = digits(&b[i + 4..i + 6])?;
        i += 6;
        if i < b.len() && b[i] == b':' {
            if b.len() < i + 3 {
                return None;
            }
            ss = digits(&b[i + 1..i + 3])?;
            i += 3;
            if i < b.len() && (b[i] == b'.' || b[i] == b',') {
                i += 1;
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let frac = &b[start..i];
                if frac.is_empty() {
                    return None;
                }
                let take = frac.len().min(6);
                micros = digits(&frac[..take])? * 10i64.pow((6 - take) as u32);
            }
        }
        if hh > 23 || mm > 59 || ss > 59 {
            return None;
        }
    }
    let mut offset_secs = 0i64;
    if i < b.len() {
        match b[i] {
            b'Z' | b'z' if i + 1 == b.len() => {}
            b'+' | b'-' => {
                let sign = if b[i] == b'-' { -1 } else { 1 };
                let rest = &b[i + 1..];
                let (oh, om) = match rest.len() {
                    2 => (digits(rest)?, 0),
                    4 => (digits(&rest[0..2])?, digits(&rest[2..4])?),
                    5 if rest[2] == b':' => (digits(&rest[0..2])?, digits(&rest[3..5])?),
                    _ => return None,
                };
                if oh > 23 || om > 59 {
                    return None;
                }
                offset_secs = sign * (oh * 3600 + om * 60);
            }
            _ => return None,
        }
    }
    use chrono::Datelike;
    let days = date.num_days_from_ce() as i64 - UNIX_EPOCH_DAYS_FROM_CE;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_tokens_and_strings() {
        let mut out = String::new();
        write_compact(
            "{ \"a b\" : [1 , 2.50e3,\n 123456789012345678901234567890 ], \"c\\\" \":null}",
            &mut out,
        );
        assert_eq!(
            out,
            "{\"a b\":[1,2.50e3,123456789012345678901234567890],\"c\\\" \":null}"
        );
    }

    #[test]
    fn lone_surrogates_decode_to_replacement_characters() {
        assert_eq!(
            as_str_lossy(r#""host-\ud800-1""#),
            Some((Cow::Owned("host-\u{FFFD}-1".into()), true))
        );
        assert_eq!(
            as_str_lossy(r#""a\udc00b\ud83d""#).map(|(s, l)| (s.into_owned(), l)),
            Some(("a\u{FFFD}b\u{FFFD}".into(), true))
        );
        // a proper pair and ordinary escapes are not lossy
        assert_eq!(
            as_str_lossy(r#""\ud83d\ude00 \"q\" \u00e9\n""#).map(|(s, l)| (s.into_owned(), l)),
            Some(("\u{1F600} \"q\" é\n".into(), false))
        );
        assert_eq!(
            as_str_lossy(r#""x\ud800\u0041""#).map(|(s, l)| (s.into_owned(), l)),
            Some(("x\u{FFFD}A".into(), true))
        );
        assert!(as_str_lossy("12").is_none());
    }

    #[test]
    fn strings_borrow_when_unescaped() {
        assert!(matches!(as_str("\"abc\""), Some(Cow::Borrowed("abc"))));
        assert_eq!(as_str(r#""a\"b\u00e9""#).unwrap(), "a\"bé");
        assert!(as_str("12").is_none());
    }

    #[test]
    fn timestamps_with_any_precision() {
        let base = parse_timestamp_micros("2026-07-18T14:08:56Z").unwrap();
        assert_eq!(base, 1_784_383_736_000_000);
        assert_eq!(
            parse_timestamp_micros("2026-07-18T14:08:56.952Z").unwrap(),
            base + 952_000
        );
        assert_eq!(
            parse_timestamp_micros("2026-07-18T14:08:56.66648Z").unwrap(),
            base + 666_480
        );
        assert_eq!(
            parse_timestamp_micros("2026-07-18T14:08:56.666487Z").unwrap(),
            base + 666_487
        );
        // 7 digits: truncated to µs
        assert_eq!(
            parse_timestamp_micros("2026-07-18T14:08:56.2914446Z").unwrap(),
            base + 291_444
        );
        // no zone = UTC (Email* _TimeReceivedBySvc, host enqueued times)
        assert_eq!(
            parse_timestamp_micros("2026-07-18T14:08:56.0000000").unwrap(),
            base
        );
        assert_eq!(
            parse_timestamp_micros("2026-07-18T16:08:56+02:00").unwrap(),
            base
        );
        assert_eq!(parse_timestamp_micros("2026-07-18 14:08:56").unwrap(), base);
        assert_eq!(
            parse_timestamp_micros("1969-12-31T23:59:59Z").unwrap(),
            -1_000_000
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-07-18T25:00:00Z",
            "yesterday",
            "2026-07-18T14:08:56Zjunk",
            "2026-02-30",
        ] {
            assert!(parse_timestamp_micros(bad).is_none(), "{bad}");
        }
    }
}
