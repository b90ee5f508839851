//! EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (NX XX GT LT), TTL, PTTL, EXPIRETIME,
//! PEXPIRETIME, PERSIST.

use bytes::Bytes;

use super::args::{int_arg, upper};
use super::keyop::ExpireCond;
use super::{KeyOp, ParseContext, Plan};
use crate::resp::Frame;

pub fn parse(name: &str, args: &[Bytes], ctx: &ParseContext) -> Result<Plan, Frame> {
    let key = args[0].clone();
    let op = match name {
        "TTL" => KeyOp::Ttl { millis: false },
        "PTTL" => KeyOp::Ttl { millis: true },
        "EXPIRETIME" => KeyOp::ExpireTime { millis: false },
        "PEXPIRETIME" => KeyOp::ExpireTime { millis: true },
        "PERSIST" => KeyOp::Persist,
        _ => {
            let amount = int_arg(&args[1])?;
            let unit: i64 = if name.starts_with('P') { 1 } else { 1000 };
            let absolute = name.ends_with("AT");
            let invalid = || {
                Frame::error(format!(
                    "ERR invalid expire time in '{}' command",
                    name.to_ascii_lowercase()
                ))
            };
            let ms = amount.checked_mul(unit).ok_or_else(invalid)?;
            let at_ms = if absolute {
                ms
            } else {
                ms.checked_add(ctx.now_ms as i64).ok_or_else(invalid)?
            };
            KeyOp::Expire {
                at_ms,
                cond: expire_cond(&args[2..])?,
            }
        }
    };
    Ok(Plan::one(key, op))
}

fn expire_cond(opts: &[Bytes]) -> Result<ExpireCond, Frame> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in opts {
        match upper(o).as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            other => {
                return Err(Frame::error(format!("ERR Unsupported option {other}")));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Frame::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Frame::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => ExpireCond::IfNone,
        (_, _, true, _) => ExpireCond::IfGreater,
        (_, _, _, true) => ExpireCond::IfLess,
        (_, true, ..) => ExpireCond::IfSome,
        _ => ExpireCond::Always,
    })
}
