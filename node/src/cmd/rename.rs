//! RENAME, RENAMENX, COPY.
//!
//! The two keys may live on different cores, so these run as three per-key steps
//! (see docs/decisions/rename-copy-across-cores.md): read the source with its expiry, write
//! the destination (conditionally for RENAMENX and COPY without REPLACE), then, for
//! RENAME, delete the source only if it still holds what was copied. A failure
//! before the last step leaves the source untouched; nothing is ever half-moved.
//! Not atomic to other clients: between the write and the delete, another client can
//! see both keys. The connection refuses keys owned by another node (`CROSSNODE`),
//! where a lost last step would leave both keys.

use std::future::Future;

use bytes::Bytes;

use super::args::{self, int_arg, upper};
use super::keyop::{SetCond, Ttl};
use super::{KeyOp, KeyRequest, Plan};
use crate::resp::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    Rename,
    RenameNx,
    Copy { replace: bool },
}

#[derive(Debug)]
pub struct MovePlan {
    pub kind: MoveKind,
    pub src: Bytes,
    pub dst: Bytes,
}

impl MovePlan {
    pub fn name(&self) -> &'static str {
        match self.kind {
            MoveKind::Rename => "rename",
            MoveKind::RenameNx => "renamenx",
            MoveKind::Copy { .. } => "copy",
        }
    }
}

pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    let kind = match name {
        "RENAME" => MoveKind::Rename,
        "RENAMENX" => MoveKind::RenameNx,
        _ => {
            let mut replace = false;
            let mut i = 2;
            while i < args.len() {
                match upper(&args[i]).as_str() {
                    "REPLACE" => replace = true,
                    "DB" if i + 1 < args.len() => {
                        // One database, as in Redis Cluster.
                        if int_arg(&args[i + 1])? != 0 {
                            return Err(Frame::error("ERR DB index is out of range"));
                        }
                        i += 1;
                    }
                    _ => return Err(Frame::error(args::SYNTAX)),
                }
                i += 1;
            }
            MoveKind::Copy { replace }
        }
    };
    Ok(Plan::Move(MovePlan {
        kind,
        src: args[0].clone(),
        dst: args[1].clone(),
    }))
}

/// Run `plan` with `run` executing one key request at a time (routed by key).
pub async fn execute<F, Fut>(plan: MovePlan, mut run: F) -> Frame
where
    F: FnMut(KeyRequest) -> Fut,
    Fut: Future<Output = Frame>,
{
    let (value, expire) = match run(KeyRequest {
        key: plan.src.clone(),
        op: KeyOp::GetWithExpiry,
    })
    .await
    {
        Frame::Array(parts) => match parts.as_slice() {
            [Frame::Bulk(v), Frame::Integer(e)] => (v.clone(), u64::try_from(*e).ok()),
            _ => return Frame::error("ERR internal: unexpected read reply"),
        },
        Frame::Null => {
            return match plan.kind {
                MoveKind::Copy { .. } => Frame::Integer(0),
                _ => Frame::error("ERR no such key"),
            }
        }
        err => return err,
    };
    if plan.src == plan.dst {
        return match plan.kind {
            MoveKind::Rename => Frame::ok(),
            MoveKind::RenameNx => Frame::Integer(0),
            MoveKind::Copy { .. } => {
                Frame::error("ERR source and destination objects are the same")
            }
        };
    }
    let cond = match plan.kind {
        MoveKind::Rename | MoveKind::Copy { replace: true } => SetCond::Always,
        MoveKind::RenameNx | MoveKind::Copy { replace: false } => SetCond::IfAbsent,
    };
    let written = run(KeyRequest {
        key: plan.dst.clone(),
        op: KeyOp::Set {
            value: value.clone(),
            ttl: expire.map_or(Ttl::Clear, Ttl::At),
            cond,
            get: false,
        },
    })
    .await;
    match written {
        Frame::Null => return Frame::Integer(0),
        e @ Frame::Error(_) => return e,
        _ => {}
    }
    if let MoveKind::Copy { .. } = plan.kind {
        return Frame::Integer(1);
    }
    // The destination holds the value; a failure here would leave both keys, so
    // say so rather than claim success.
    if let e @ Frame::Error(_) = run(KeyRequest {
        key: plan.src,
        op: KeyOp::DelIfSame {
            value,
            expire_at_ms: expire,
        },
    })
    .await
    {
        return e;
    }
    match plan.kind {
        MoveKind::RenameNx => Frame::Integer(1),
        _ => Frame::ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::store::{Fragment, Geometry};

    const NOW: u64 = 1_000_000;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Two fragments standing in for two cores: keys before "m" on one, the rest on
    /// the other.
    struct Two {
        frags: RefCell<[Fragment; 2]>,
    }

    impl Two {
        fn new() -> Two {
            let g = Geometry::sized_for(1 << 20, 64);
            let f = |id| Fragment::create(id, Bytes::new(), None, g, 1, false).expect("frag");
            Two {
                frags: RefCell::new([f(1), f(2)]),
            }
        }
        fn run(&self, req: KeyRequest) -> Frame {
            let i = usize::from(req.key.as_ref() >= &b"m"[..]);
            let mut frags = self.frags.borrow_mut();
            super::super::apply(&mut frags[i], &req.key, &req.op, NOW).expect("apply")
        }
        fn put(&self, key: &str, value: &str, expire: Option<u64>) {
            let set = KeyOp::Set {
                value: b(value),
                ttl: expire.map_or(Ttl::Clear, Ttl::At),
                cond: SetCond::Always,
                get: false,
            };
            self.run(KeyRequest {
                key: b(key),
                op: set,
            });
        }
        fn read(&self, key: &str) -> Frame {
            self.run(KeyRequest {
                key: b(key),
                op: KeyOp::GetWithExpiry,
            })
        }
        fn go(&self, words: &[&str]) -> Frame {
            let args: Vec<Bytes> = words[1..].iter().map(|w| b(w)).collect();
            let plan = match parse(&upper(words[0].as_bytes()), &args) {
                Ok(Plan::Move(p)) => p,
                Err(e) => return e,
                Ok(other) => panic!("{other:?}"),
            };
            futures::executor::block_on(execute(plan, |r| {
                let reply = self.run(r);
                async move { reply }
            }))
        }
    }

    fn pair(v: &str, e: i64) -> Frame {
        Frame::Array(vec![Frame::bulk(b(v)), Frame::Integer(e)])
    }

    #[test]
    fn rename_moves_value_and_ttl_across_fragments() {
        let t = Two::new();
        t.put("a", "1", Some(NOW + 5_000));
        assert_eq!(t.go(&["RENAME", "a", "z"]), Frame::ok());
        assert_eq!(t.read("a"), Frame::Null);
        assert_eq!(t.read("z"), pair("1", (NOW + 5_000) as i64));
        assert_eq!(t.go(&["RENAME", "a", "z"]), Frame::error("ERR no such key"));
        assert_eq!(t.go(&["RENAME", "z", "z"]), Frame::ok());
        t.put("b", "2", None);
        // Overwrites the destination, and its TTL.
        assert_eq!(t.go(&["RENAME", "b", "z"]), Frame::ok());
        assert_eq!(t.read("z"), pair("2", -1));
    }

    #[test]
    fn renamenx_and_copy_respect_existing_destination() {
        let t = Two::new();
        t.put("a", "1", None);
        t.put("y", "old", None);
        assert_eq!(t.go(&["RENAMENX", "a", "y"]), Frame::Integer(0));
        assert_eq!(t.read("a"), pair("1", -1));
        assert_eq!(t.go(&["RENAMENX", "a", "a"]), Frame::Integer(0));
        assert_eq!(t.go(&["RENAMENX", "a", "z"]), Frame::Integer(1));
        assert_eq!(t.read("a"), Frame::Null);
        assert_eq!(t.go(&["COPY", "z", "y"]), Frame::Integer(0));
        assert_eq!(t.go(&["COPY", "z", "y", "REPLACE"]), Frame::Integer(1));
        assert_eq!(t.read("y"), pair("1", -1));
        assert_eq!(t.read("z"), pair("1", -1));
        assert_eq!(t.go(&["COPY", "nope", "c"]), Frame::Integer(0));
        assert_eq!(t.go(&["COPY", "z", "c", "DB", "0"]), Frame::Integer(1));
        assert_eq!(
            t.go(&["COPY", "z", "z"]),
            Frame::error("ERR source and destination objects are the same")
        );
    }

    #[test]
    fn copy_option_errors() {
        let t = Two::new();
        assert_eq!(
            t.go(&["COPY", "a", "b", "DB", "1"]),
            Frame::error("ERR DB index is out of range")
        );
        assert_eq!(t.go(&["COPY", "a", "b", "DB"]), Frame::error(args::SYNTAX));
        assert_eq!(t.go(&["COPY", "a", "b", "FOO"]), Frame::error(args::SYNTAX));
        assert_eq!(
            t.go(&["COPY", "a", "b", "DB", "x"]),
            Frame::error(args::NOT_INTEGER)
        );
    }

    #[test]
    fn rename_keeps_a_source_written_in_between() {
        let t = Two::new();
        t.put("a", "1", None);
        let args = [b("a"), b("z")];
        let Ok(Plan::Move(plan)) = parse("RENAME", &args) else {
            panic!("not a move")
        };
        let mut step = 0;
        let reply = futures::executor::block_on(execute(plan, |r| {
            step += 1;
            if step == 3 {
                // Another client writes the source between copy and delete.
                t.put("a", "2", None);
            }
            let reply = t.run(r);
            async move { reply }
        }));
        assert_eq!(reply, Frame::ok());
        assert_eq!(t.read("z"), pair("1", -1));
        assert_eq!(t.read("a"), pair("2", -1));
    }
}
