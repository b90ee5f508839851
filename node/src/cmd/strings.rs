//! APPEND, STRLEN, GETEX, GETRANGE, SUBSTR, SETRANGE, INCRBYFLOAT.

use bytes::Bytes;

use super::args::{self, int_arg, upper};
use super::keyop::Ttl;
use super::set::expiry_at;
use super::{KeyOp, ParseContext, Plan};
use crate::resp::Frame;

/// Redis's reply when a write would make a string longer than `proto-max-bulk-len`.
pub const TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

pub fn parse(name: &str, args: &[Bytes], ctx: &ParseContext) -> Result<Plan, Frame> {
    let key = args[0].clone();
    let op = match name {
        "APPEND" => KeyOp::Append {
            value: args[1].clone(),
            max_len: ctx.max_bulk_len,
        },
        "STRLEN" => KeyOp::StrLen,
        "GETEX" => KeyOp::GetEx(getex_ttl(&args[1..], ctx.now_ms)?),
        "GETRANGE" | "SUBSTR" => KeyOp::GetRange {
            start: int_arg(&args[1])?,
            end: int_arg(&args[2])?,
        },
        "SETRANGE" => {
            let offset = int_arg(&args[1])?;
            if offset < 0 {
                return Err(Frame::error("ERR offset is out of range"));
            }
            KeyOp::SetRange {
                offset: offset as u64,
                value: args[2].clone(),
                max_len: ctx.max_bulk_len,
            }
        }
        _ => {
            // INCRBYFLOAT: a bad increment is refused before the key is looked at.
            super::float::parse(&args[1]).ok_or_else(|| Frame::error(super::float::NOT_FLOAT))?;
            KeyOp::IncrByFloat(args[1].clone())
        }
    };
    Ok(Plan::one(key, op))
}

/// GETEX's options: at most one of EX PX EXAT PXAT PERSIST; anything else, or a
/// second one, is a syntax error (as Redis's `parseExtendedStringArgumentsOrReply`).
fn getex_ttl(opts: &[Bytes], now_ms: u64) -> Result<Option<Ttl>, Frame> {
    let mut ttl = None;
    let mut i = 0;
    while i < opts.len() {
        let opt = upper(&opts[i]);
        if ttl.is_some() {
            return Err(Frame::error(args::SYNTAX));
        }
        if opt == "PERSIST" {
            ttl = Some(Ttl::Clear);
            i += 1;
            continue;
        }
        let (unit, absolute) = match opt.as_str() {
            "EX" => (1000, false),
            "PX" => (1, false),
            "EXAT" => (1000, true),
            "PXAT" => (1, true),
            _ => return Err(Frame::error(args::SYNTAX)),
        };
        let Some(amount) = opts.get(i + 1) else {
            return Err(Frame::error(args::SYNTAX));
        };
        let at = expiry_at(int_arg(amount)?, unit, absolute, now_ms, "getex")?;
        ttl = Some(Ttl::At(at));
        i += 2;
    }
    Ok(ttl)
}

/// The bytes GETRANGE returns: `start..=end`, negative indexes counting from the
/// end, clamped to the string (Redis's `getrangeCommand`).
pub fn range_of(value: &[u8], start: i64, end: i64) -> &[u8] {
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    let start = if start < 0 { len + start } else { start }.max(0);
    let end = if end < 0 { len + end } else { end }.max(0).min(len - 1);
    if len == 0 || start > end {
        return &[];
    }
    &value[start as usize..=end as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_matches_redis_indexing() {
        let v = b"This is a string";
        assert_eq!(range_of(v, 0, 3), b"This");
        assert_eq!(range_of(v, -3, -1), b"ing");
        assert_eq!(range_of(v, 0, -1), v);
        assert_eq!(range_of(v, 10, 100), b"string");
        assert_eq!(range_of(v, 100, 200), b"");
        assert_eq!(range_of(v, -1, -5), b"");
        assert_eq!(range_of(v, 5, 3), b"");
        assert_eq!(range_of(v, -100, 2), b"Thi");
        assert_eq!(range_of(v, i64::MIN, i64::MAX), v);
        assert_eq!(range_of(b"", 0, -1), b"");
        assert_eq!(range_of(b"", -1, 0), b"");
    }
}
