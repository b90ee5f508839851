//! The operations on one key, and how each is applied to the fragment holding it.
//! Every command that names keys becomes one `KeyRequest` per key, routed by key to
//! the core that owns the key's fragment; this file is all the data path runs there.

use bytes::Bytes;

use crate::resp::Frame;
use crate::store::{Fragment, StoreError};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyRequest {
    pub key: Bytes,
    pub op: KeyOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetCond {
    Always,
    IfAbsent,
    IfPresent,
}

/// What a write does to the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ttl {
    Clear,
    Keep,
    At(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpireCond {
    Always,
    IfNone,
    IfSome,
    IfGreater,
    IfLess,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum KeyOp {
    Get,
    GetDel,
    Set {
        value: Bytes,
        ttl: Ttl,
        cond: SetCond,
        /// Reply with the old value (SET ... GET, GETSET).
        get: bool,
    },
    /// SETNX: like `Set` with `IfAbsent` but replies 1/0.
    SetNx(Bytes),
    IncrBy(i64),
    Append {
        value: Bytes,
        max_len: usize,
    },
    StrLen,
    /// Absolute unix ms; in the past means delete.
    Expire {
        at_ms: i64,
        cond: ExpireCond,
    },
    Ttl {
        millis: bool,
    },
    ExpireTime {
        millis: bool,
    },
    Persist,
    Del,
    Exists,
    Type,
}

impl KeyOp {
    /// Bytes of value this operation carries (for batching by size).
    pub fn payload_len(&self) -> usize {
        match self {
            KeyOp::Set { value, .. } | KeyOp::SetNx(value) | KeyOp::Append { value, .. } => {
                value.len()
            }
            _ => 0,
        }
    }

    /// Whether the operation may change the key (telemetry counts it as a write).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            KeyOp::Get
                | KeyOp::StrLen
                | KeyOp::Ttl { .. }
                | KeyOp::ExpireTime { .. }
                | KeyOp::Exists
                | KeyOp::Type
        )
    }

    /// Writes that add data are refused with -OOM when `maxmemory` is reached.
    pub fn grows(&self) -> bool {
        matches!(
            self,
            KeyOp::Set { .. } | KeyOp::SetNx(_) | KeyOp::IncrBy(_) | KeyOp::Append { .. }
        )
    }
}

fn bulk(v: &[u8]) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(v))
}

/// Apply `op` to `key` in `frag` at time `now`. `StoreError::Full` leaves the
/// fragment unchanged, so the caller can make room and apply again.
pub fn apply(frag: &mut Fragment, key: &[u8], op: &KeyOp, now: u64) -> Result<Frame, StoreError> {
    let current = |frag: &Fragment| -> Result<Option<(Bytes, Option<u64>)>, StoreError> {
        Ok(frag
            .get(key, now)?
            .map(|r| (Bytes::copy_from_slice(r.value), r.expire_at_ms)))
    };
    Ok(match op {
        KeyOp::Get => match frag.get(key, now)? {
            Some(r) => bulk(r.value),
            None => Frame::Null,
        },
        KeyOp::GetDel => match current(frag)? {
            Some((v, _)) => {
                frag.delete(key, now)?;
                Frame::Bulk(v)
            }
            None => Frame::Null,
        },
        KeyOp::Set {
            value,
            ttl,
            cond,
            get,
        } => {
            let old = current(frag)?;
            let old_reply = || match &old {
                Some((v, _)) => Frame::Bulk(v.clone()),
                None => Frame::Null,
            };
            let blocked = match cond {
                SetCond::Always => false,
                SetCond::IfAbsent => old.is_some(),
                SetCond::IfPresent => old.is_none(),
            };
            if blocked {
                return Ok(if *get { old_reply() } else { Frame::Null });
            }
            let expire = match ttl {
                Ttl::Clear => None,
                Ttl::Keep => old.as_ref().and_then(|(_, e)| *e),
                Ttl::At(t) => Some(*t),
            };
            frag.put(key, value, expire)?;
            if *get {
                old_reply()
            } else {
                Frame::ok()
            }
        }
        KeyOp::SetNx(value) => {
            if frag.get(key, now)?.is_some() {
                Frame::Integer(0)
            } else {
                frag.put(key, value, None)?;
                Frame::Integer(1)
            }
        }
        KeyOp::IncrBy(by) => {
            let (n, expire) = match frag.get(key, now)? {
                Some(r) => match super::args::parse_i64(r.value) {
                    Some(n) => (n, r.expire_at_ms),
                    None => return Ok(Frame::error(super::args::NOT_INTEGER)),
                },
                None => (0, None),
            };
            let Some(next) = n.checked_add(*by) else {
                return Ok(Frame::error("ERR increment or decrement would overflow"));
            };
            let mut digits = itoa::Buffer::new();
            frag.put(key, digits.format(next).as_bytes(), expire)?;
            Frame::Integer(next)
        }
        KeyOp::Append { value, max_len } => {
            let (mut joined, expire) = match frag.get(key, now)? {
                Some(r) => (r.value.to_vec(), r.expire_at_ms),
                None => (Vec::new(), None),
            };
            if joined.len() + value.len() > *max_len {
                return Ok(Frame::error(
                    "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
                ));
            }
            joined.extend_from_slice(value);
            frag.put(key, &joined, expire)?;
            Frame::Integer(joined.len() as i64)
        }
        KeyOp::StrLen => Frame::Integer(frag.get(key, now)?.map_or(0, |r| r.value.len() as i64)),
        KeyOp::Expire { at_ms, cond } => {
            let Some((value, old)) = current(frag)? else {
                return Ok(Frame::Integer(0));
            };
            let new = *at_ms;
            let allowed = match (cond, old) {
                (ExpireCond::Always, _) => true,
                (ExpireCond::IfNone, o) => o.is_none(),
                (ExpireCond::IfSome, o) => o.is_some(),
                (ExpireCond::IfGreater, Some(o)) => new > o as i64,
                (ExpireCond::IfGreater, None) => false,
                (ExpireCond::IfLess, Some(o)) => new < o as i64,
                (ExpireCond::IfLess, None) => true,
            };
            if !allowed {
                return Ok(Frame::Integer(0));
            }
            if new <= now as i64 {
                frag.delete(key, now)?;
            } else {
                frag.put(key, &value, Some(new as u64))?;
            }
            Frame::Integer(1)
        }
        KeyOp::Ttl { millis } => match frag.get(key, now)? {
            None => Frame::Integer(-2),
            Some(r) => match r.expire_at_ms {
                None => Frame::Integer(-1),
                Some(t) => {
                    let left = t.saturating_sub(now) as i64;
                    Frame::Integer(if *millis { left } else { (left + 500) / 1000 })
                }
            },
        },
        KeyOp::ExpireTime { millis } => match frag.get(key, now)? {
            None => Frame::Integer(-2),
            Some(r) => match r.expire_at_ms {
                None => Frame::Integer(-1),
                Some(t) => Frame::Integer(if *millis { t as i64 } else { (t / 1000) as i64 }),
            },
        },
        KeyOp::Persist => match current(frag)? {
            Some((value, Some(_))) => {
                frag.put(key, &value, None)?;
                Frame::Integer(1)
            }
            _ => Frame::Integer(0),
        },
        KeyOp::Del => Frame::Integer(frag.delete(key, now)? as i64),
        KeyOp::Exists => Frame::Integer(frag.get(key, now)?.is_some() as i64),
        KeyOp::Type => Frame::simple(if frag.get(key, now)?.is_some() {
            "string"
        } else {
            "none"
        }),
    })
}
