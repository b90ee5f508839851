//! DEL, UNLINK, EXISTS, TOUCH, TYPE.
//!
//! TOUCH counts existing keys like EXISTS: augur keeps no access times to update.

use bytes::Bytes;

use super::{Combine, KeyOp, KeyPlan, KeyRequest, Plan};
use crate::resp::Frame;

pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    if name == "TYPE" {
        return Ok(Plan::one(args[0].clone(), KeyOp::Type));
    }
    let op = if name == "EXISTS" || name == "TOUCH" {
        KeyOp::Exists
    } else {
        KeyOp::Del
    };
    Ok(Plan::Keys(KeyPlan {
        reqs: args
            .iter()
            .map(|k| KeyRequest {
                key: k.clone(),
                op: op.clone(),
            })
            .collect(),
        combine: Combine::Sum,
    }))
}
