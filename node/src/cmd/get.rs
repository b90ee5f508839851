//! GET, GETDEL, MGET.

use bytes::Bytes;

use super::{Combine, KeyOp, KeyPlan, KeyRequest, Plan};
use crate::resp::Frame;

pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    Ok(match name {
        "GET" => Plan::one(args[0].clone(), KeyOp::Get),
        "GETDEL" => Plan::one(args[0].clone(), KeyOp::GetDel),
        _ => Plan::Keys(KeyPlan {
            reqs: args
                .iter()
                .map(|k| KeyRequest {
                    key: k.clone(),
                    op: KeyOp::Get,
                })
                .collect(),
            combine: Combine::Array,
        }),
    })
}
