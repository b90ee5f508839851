//! INCRBYFLOAT's arithmetic and its reply format.
//!
//! Redis adds in `long double` and prints with `%.17Lf`, trimming trailing zeros, so
//! that small decimals come back as typed (10.5 + 0.1 is "10.6", 0.1 + 0.2 is "0.3").
//! Rust has no `long double`; adding in `f64` would print 0.30000000000000004. So
//! plain decimals (up to 17 places, 36 digits) are added exactly, which gives the
//! answer Redis's extra precision is there to give; anything else (huge exponents,
//! more places) is added in `f64` and printed the way Redis prints.

pub const NOT_FLOAT: &str = "ERR value is not a valid float";
const NAN_OR_INF: &str = "ERR increment would produce NaN or Infinity";
/// Redis's `MAX_LONG_DOUBLE_CHARS`: longer input is not a float.
const MAX_FLOAT_CHARS: usize = 5 * 1024;
/// Digits after the point Redis prints (`%.17Lf`).
const PLACES: u32 = 17;
/// Exact sums stay well inside i128 with this many digits.
const MAX_DIGITS: u32 = 36;

/// A float as Redis's `string2ld` accepts it: no spaces, not NaN; infinity parses.
pub fn parse(b: &[u8]) -> Option<f64> {
    if b.is_empty() || b.len() >= MAX_FLOAT_CHARS {
        return None;
    }
    let text = std::str::from_utf8(b).ok()?;
    let v: f64 = text.parse().ok()?;
    // An infinity from overflow ("1e999") is a range error, as strtold's ERANGE.
    let overflowed = v.is_infinite() && !text.to_ascii_lowercase().contains("inf");
    (!v.is_nan() && !overflowed).then_some(v)
}

/// `current + by` as INCRBYFLOAT stores and replies it, or the error to reply.
pub fn add(current: &[u8], by: &[u8]) -> Result<String, &'static str> {
    let (a, b) = (
        parse(current).ok_or(NOT_FLOAT)?,
        parse(by).ok_or(NOT_FLOAT)?,
    );
    if let (Some(x), Some(y)) = (Decimal::parse(current), Decimal::parse(by)) {
        if let Some(sum) = x.add(y) {
            return Ok(sum.to_string());
        }
    }
    let sum = a + b;
    if !sum.is_finite() {
        return Err(NAN_OR_INF);
    }
    Ok(human(&format!("{sum:.17}")))
}

/// Trim trailing zeros after the point, then the point; "-0" is "0".
fn human(s: &str) -> String {
    let t = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    };
    if t == "-0" {
        "0".into()
    } else {
        t.into()
    }
}

/// `mantissa / 10^scale`, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    mantissa: i128,
    scale: u32,
}

impl Decimal {
    /// `[+-]digits[.digits][(e|E)[+-]digits]`, if it is exact within our bounds.
    fn parse(b: &[u8]) -> Option<Decimal> {
        let (neg, rest) = match b.first()? {
            b'-' => (true, &b[1..]),
            b'+' => (false, &b[1..]),
            _ => (false, b),
        };
        let (number, exp) = match rest.iter().position(|c| matches!(c, b'e' | b'E')) {
            Some(at) => (&rest[..at], parse_exponent(&rest[at + 1..])?),
            None => (rest, 0),
        };
        let (int, frac) = match number.iter().position(|&c| c == b'.') {
            Some(at) => (&number[..at], &number[at + 1..]),
            None => (number, &b""[..]),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut mantissa: i128 = 0;
        let mut digits = 0u32;
        for &c in int.iter().chain(frac) {
            if !c.is_ascii_digit() {
                return None;
            }
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(c - b'0'))?;
            if mantissa != 0 {
                digits += 1;
            }
            if digits > MAX_DIGITS {
                return None;
            }
        }
        let mut scale = frac.len() as i64 - exp;
        while scale < 0 {
            mantissa = mantissa.checked_mul(10)?;
            scale += 1;
        }
        let mut d = Decimal {
            mantissa: if neg { -mantissa } else { mantissa },
            scale: u32::try_from(scale).ok()?,
        };
        d.normalise();
        (d.scale <= PLACES && d.mantissa.unsigned_abs() < 10u128.pow(MAX_DIGITS)).then_some(d)
    }

    fn normalise(&mut self) {
        while self.scale > 0 && self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.scale -= 1;
        }
    }

    fn add(self, other: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let widen = |d: Decimal| d.mantissa.checked_mul(10i128.checked_pow(scale - d.scale)?);
        let mut sum = Decimal {
            mantissa: widen(self)?.checked_add(widen(other)?)?,
            scale,
        };
        sum.normalise();
        Some(sum)
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

fn parse_exponent(b: &[u8]) -> Option<i64> {
    let digits = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if b.first() == Some(&b'-') { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(a: &str, b: &str) -> String {
        add(a.as_bytes(), b.as_bytes()).unwrap()
    }

    #[test]
    fn small_decimals_come_back_as_typed() {
        assert_eq!(ok("10.50", "0.1"), "10.6");
        assert_eq!(ok("0.1", "0.2"), "0.3");
        assert_eq!(ok("5.0e3", "2.0e2"), "5200");
        assert_eq!(ok("0", "3.0"), "3");
        assert_eq!(ok("1", "-1"), "0");
        assert_eq!(ok("-0.5", "0.25"), "-0.25");
        assert_eq!(ok("10", "-20.125"), "-10.125");
        assert_eq!(ok("1", ".5"), "1.5");
        assert_eq!(ok("+1", "5."), "6");
        assert_eq!(ok("1", "1e-17"), "1.00000000000000001");
        assert_eq!(ok("0", "-0"), "0");
    }

    #[test]
    fn beyond_exact_range_prints_like_redis() {
        // More places than %.17Lf keeps: rounded to 17 places.
        assert_eq!(ok("0", "1e-20"), "0");
        let big = ok("1e300", "0");
        assert_eq!(big.len(), 301);
        assert!(big.starts_with("1000000000000000") && !big.contains('.'));
    }

    #[test]
    fn errors_use_redis_texts() {
        for bad in ["abc", "", " 1", "1 ", "nan", "1.2.3", "0x"] {
            assert_eq!(add(b"1", bad.as_bytes()), Err(NOT_FLOAT), "{bad:?}");
            assert_eq!(add(bad.as_bytes(), b"1"), Err(NOT_FLOAT), "{bad:?}");
        }
        assert_eq!(add(b"1", b"inf"), Err(NAN_OR_INF));
        assert_eq!(add(b"inf", b"-inf"), Err(NAN_OR_INF));
        assert_eq!(add(b"1.7e308", b"1.7e308"), Err(NAN_OR_INF));
        assert_eq!(parse(&vec![b'1'; MAX_FLOAT_CHARS]), None);
        assert_eq!(parse(b"1e999"), None);
        assert_eq!(parse(b"-Infinity"), Some(f64::NEG_INFINITY));
    }
}
