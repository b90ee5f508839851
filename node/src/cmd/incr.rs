//! INCR, DECR, INCRBY, DECRBY.

use bytes::Bytes;

use super::args::{int_arg, NOT_INTEGER};
use super::{KeyOp, Plan};
use crate::resp::Frame;

pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    let by = match name {
        "INCR" => 1,
        "DECR" => -1,
        "INCRBY" => int_arg(&args[1])?,
        _ => int_arg(&args[1])?
            .checked_neg()
            .ok_or_else(|| Frame::error(NOT_INTEGER))?,
    };
    Ok(Plan::one(args[0].clone(), KeyOp::IncrBy(by)))
}
