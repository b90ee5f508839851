//! SET (NX XX GET EX PX EXAT PXAT KEEPTTL), SETNX, SETEX, PSETEX, GETSET, MSET, MSETNX.

use bytes::Bytes;

use super::args::{self, int_arg, upper};
use super::keyop::{SetCond, Ttl};
use super::{Combine, KeyOp, KeyPlan, KeyRequest, ParseContext, Plan};
use crate::resp::Frame;

fn invalid_expire(cmd: &str) -> Frame {
    Frame::error(format!("ERR invalid expire time in '{cmd}' command"))
}

/// An absolute expiry in ms from a relative or absolute amount, refusing <= 0 and
/// overflow as Redis does.
pub fn expiry_at(
    amount: i64,
    unit_ms: i64,
    absolute: bool,
    now_ms: u64,
    cmd: &str,
) -> Result<u64, Frame> {
    if amount <= 0 {
        return Err(invalid_expire(cmd));
    }
    let ms = amount
        .checked_mul(unit_ms)
        .ok_or_else(|| invalid_expire(cmd))?;
    let at = if absolute {
        Some(ms)
    } else {
        ms.checked_add(now_ms as i64)
    };
    at.map(|t| t as u64).ok_or_else(|| invalid_expire(cmd))
}

pub fn parse(name: &str, args: &[Bytes], ctx: &ParseContext) -> Result<Plan, Frame> {
    let set = |value: &Bytes, ttl, cond, get| KeyOp::Set {
        value: value.clone(),
        ttl,
        cond,
        get,
    };
    Ok(match name {
        "SETNX" => Plan::one(args[0].clone(), KeyOp::SetNx(args[1].clone())),
        "GETSET" => Plan::one(
            args[0].clone(),
            set(&args[1], Ttl::Clear, SetCond::Always, true),
        ),
        "SETEX" | "PSETEX" => {
            let unit = if name == "SETEX" { 1000 } else { 1 };
            let at = expiry_at(
                int_arg(&args[1])?,
                unit,
                false,
                ctx.now_ms,
                &name.to_ascii_lowercase(),
            )?;
            Plan::one(
                args[0].clone(),
                set(&args[2], Ttl::At(at), SetCond::Always, false),
            )
        }
        "MSET" => {
            if !args.len().is_multiple_of(2) {
                return Err(args::wrong_arity("mset"));
            }
            Plan::Keys(KeyPlan {
                reqs: args
                    .chunks(2)
                    .map(|kv| KeyRequest {
                        key: kv[0].clone(),
                        op: set(&kv[1], Ttl::Clear, SetCond::Always, false),
                    })
                    .collect(),
                combine: Combine::Ok,
            })
        }
        "MSETNX" => {
            if !args.len().is_multiple_of(2) {
                return Err(args::wrong_arity("msetnx"));
            }
            // One request, routed by its first key; the shard runs it all or
            // nothing, and refuses keys spread over cores (see `Shard::msetnx`).
            Plan::one(
                args[0].clone(),
                KeyOp::MSetNx {
                    first: args[1].clone(),
                    pairs: args[2..]
                        .chunks(2)
                        .map(|kv| (kv[0].clone(), kv[1].clone()))
                        .collect(),
                },
            )
        }
        _ => parse_set(args, ctx)?,
    })
}

fn parse_set(args: &[Bytes], ctx: &ParseContext) -> Result<Plan, Frame> {
    let mut cond = SetCond::Always;
    let mut ttl = Ttl::Clear;
    let mut ttl_given = false;
    let mut get = false;
    let mut i = 2;
    while i < args.len() {
        let opt = upper(&args[i]);
        match opt.as_str() {
            "NX" if cond == SetCond::Always => cond = SetCond::IfAbsent,
            "XX" if cond == SetCond::Always => cond = SetCond::IfPresent,
            "GET" => get = true,
            "KEEPTTL" if !ttl_given => {
                ttl = Ttl::Keep;
                ttl_given = true;
            }
            "EX" | "PX" | "EXAT" | "PXAT" if !ttl_given && i + 1 < args.len() => {
                let amount = int_arg(&args[i + 1])?;
                let unit = if opt.starts_with("EX") { 1000 } else { 1 };
                let absolute = opt.ends_with("AT");
                ttl = Ttl::At(expiry_at(amount, unit, absolute, ctx.now_ms, "set")?);
                ttl_given = true;
                i += 1;
            }
            _ => return Err(Frame::error(args::SYNTAX)),
        }
        i += 1;
    }
    Ok(Plan::one(
        args[0].clone(),
        KeyOp::Set {
            value: args[1].clone(),
            ttl,
            cond,
            get,
        },
    ))
}
