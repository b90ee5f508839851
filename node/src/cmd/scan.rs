//! SCAN cursor [MATCH pattern] [COUNT n] [TYPE t], KEYS pattern.
//!
//! Cursors are handed out by the node (see `context::cursors`): each names the last key
//! returned, so a scan walks keys in order and stays exact across fragment splits and
//! moves.

use bytes::Bytes;

use super::args::{self, upper};
use super::{FanoutCmd, Plan};
use crate::resp::Frame;
use crate::shard::fanout::ScanType;

pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    if name == "KEYS" {
        return Ok(Plan::Fanout(FanoutCmd::Keys(args[0].clone())));
    }
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Frame::error("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut type_filter = None;
    let mut i = 1;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return Err(Frame::error(args::SYNTAX));
        };
        match upper(&args[i]).as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => {
                count = match args::parse_i64(value) {
                    Some(n) if n >= 1 => n as usize,
                    Some(_) => return Err(Frame::error(args::SYNTAX)),
                    None => return Err(Frame::error(args::NOT_INTEGER)),
                };
            }
            "TYPE" => type_filter = Some(ScanType::parse(value)),
            _ => return Err(Frame::error(args::SYNTAX)),
        }
        i += 2;
    }
    Ok(Plan::Fanout(FanoutCmd::Scan {
        cursor,
        pattern,
        count: count.min(100_000),
        type_filter,
    }))
}
