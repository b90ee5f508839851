//! Argument helpers shared by the command parsers, with Redis's error texts.

use bytes::Bytes;

use crate::resp::Frame;

pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const SYNTAX: &str = "ERR syntax error";

pub fn wrong_arity(name: &str) -> Frame {
    Frame::error(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

/// Parse an integer the way Redis's `string2ll` does: optional `-`, digits, no
/// spaces, no `+`, no leading zeros.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) || b == b"-0" {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

pub fn int_arg(b: &Bytes) -> Result<i64, Frame> {
    parse_i64(b).ok_or_else(|| Frame::error(NOT_INTEGER))
}

/// An argument upper-cased for matching against command and option names. Those
/// are short, so the usual case needs no heap allocation (one per request and per
/// option was measurable, `docs/perf.md`).
pub enum Upper {
    Short { buf: [u8; SHORT], len: u8 },
    Long(String),
}

/// Longer than every command and option name.
const SHORT: usize = 22;

impl Upper {
    pub fn as_str(&self) -> &str {
        match self {
            // Only ASCII bytes are ever stored inline, so this cannot fail.
            Upper::Short { buf, len } => std::str::from_utf8(&buf[..*len as usize]).unwrap_or(""),
            Upper::Long(s) => s,
        }
    }
}

impl std::ops::Deref for Upper {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<&str> for Upper {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Upper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Upper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

pub fn upper(b: &[u8]) -> Upper {
    if b.len() <= SHORT && b.is_ascii() {
        let mut buf = [0u8; SHORT];
        for (d, s) in buf.iter_mut().zip(b) {
            *d = s.to_ascii_uppercase();
        }
        return Upper::Short {
            buf,
            len: b.len() as u8,
        };
    }
    Upper::Long(String::from_utf8_lossy(b).to_ascii_uppercase())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::parse_i64;

    #[test]
    fn strict_integers() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        assert_eq!(parse_i64(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"01",
            b"-0",
            b"1.0",
            b"99999999999999999999",
            b"-",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    }
}
