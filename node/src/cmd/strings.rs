//! APPEND, STRLEN.

use bytes::Bytes;

use super::{KeyOp, ParseContext, Plan};
use crate::resp::Frame;

pub fn parse(name: &str, args: &[Bytes], ctx: &ParseContext) -> Result<Plan, Frame> {
    Ok(match name {
        "APPEND" => Plan::one(
            args[0].clone(),
            KeyOp::Append {
                value: args[1].clone(),
                max_len: ctx.max_bulk_len,
            },
        ),
        _ => Plan::one(args[0].clone(), KeyOp::StrLen),
    })
}
