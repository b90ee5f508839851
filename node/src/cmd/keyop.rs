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

impl KeyRequest {
    /// Every key the request touches: its own, and MSETNX's others (all must be
    /// on the same core, which the shard checks).
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        let others: &[(Bytes, Bytes)] = match &self.op {
            KeyOp::MSetNx { pairs, .. } => pairs,
            _ => &[],
        };
        std::iter::once(&self.key).chain(others.iter().map(|(k, _)| k))
    }
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
    /// GETEX: the value, and the TTL change (`None`: leave it; `Clear`: PERSIST;
    /// `At` in the past: delete after reading).
    GetEx(Option<Ttl>),
    /// GETRANGE/SUBSTR with Redis's inclusive, negative-from-the-end indexes.
    GetRange {
        start: i64,
        end: i64,
    },
    /// SETRANGE: `offset` is checked non-negative by the parser.
    SetRange {
        offset: u64,
        value: Bytes,
        max_len: usize,
    },
    /// INCRBYFLOAT: the increment as sent (checked to be a valid float by the parser).
    IncrByFloat(Bytes),
    Object(ObjectField),
    /// MSETNX: set the request's key to `first` and every other pair, only if none
    /// exists; executed by the shard (`Shard::execute`), which needs every key on
    /// its core. `apply` refuses it: one fragment cannot do it all or nothing.
    MSetNx {
        first: Bytes,
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// RENAME/COPY's read: `[value, expire_at_ms or -1]`, or Null.
    GetWithExpiry,
    /// RENAME's last step: delete the key only if it still holds what was copied,
    /// so a write that came in between is not lost. 1 if deleted.
    DelIfSame {
        value: Bytes,
        expire_at_ms: Option<u64>,
    },
    /// HSET, HGET, ...: see `cmd::hash`.
    Hash(super::hash::HashOp),
}

/// What OBJECT asks about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ObjectField {
    Encoding,
    Freq,
    IdleTime,
    RefCount,
}

impl KeyOp {
    /// Bytes of value this operation carries (for batching by size).
    pub fn payload_len(&self) -> usize {
        match self {
            KeyOp::Set { value, .. }
            | KeyOp::SetNx(value)
            | KeyOp::Append { value, .. }
            | KeyOp::SetRange { value, .. } => value.len(),
            KeyOp::MSetNx { first, pairs } => {
                first.len() + pairs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            }
            KeyOp::Hash(h) => h.payload_len(),
            _ => 0,
        }
    }

    /// Whether the operation may change the key (telemetry counts it as a write).
    pub fn is_write(&self) -> bool {
        if let KeyOp::Hash(h) = self {
            return h.is_write();
        }
        !matches!(
            self,
            KeyOp::Get
                | KeyOp::StrLen
                | KeyOp::Ttl { .. }
                | KeyOp::ExpireTime { .. }
                | KeyOp::Exists
                | KeyOp::Type
                | KeyOp::GetRange { .. }
                | KeyOp::Object(_)
                | KeyOp::GetEx(None)
                | KeyOp::GetWithExpiry
        )
    }

    /// Writes that add data are refused with -OOM when `maxmemory` is reached.
    pub fn grows(&self) -> bool {
        if let KeyOp::Hash(h) = self {
            return h.grows();
        }
        matches!(
            self,
            KeyOp::Set { .. }
                | KeyOp::SetNx(_)
                | KeyOp::IncrBy(_)
                | KeyOp::Append { .. }
                | KeyOp::SetRange { .. }
                | KeyOp::IncrByFloat(_)
                | KeyOp::MSetNx { .. }
        )
    }

    /// Operations on a string's value: on a hash they answer WRONGTYPE.
    fn reads_a_string(&self) -> bool {
        matches!(
            self,
            KeyOp::Get
                | KeyOp::GetDel
                | KeyOp::Set { get: true, .. }
                | KeyOp::IncrBy(_)
                | KeyOp::Append { .. }
                | KeyOp::StrLen
                | KeyOp::GetEx(_)
                | KeyOp::GetRange { .. }
                | KeyOp::SetRange { .. }
                | KeyOp::IncrByFloat(_)
        )
    }
}

fn bulk(v: &[u8]) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(v))
}

/// Apply `op` to `key` in `frag` at time `now`. `StoreError::Full` leaves the
/// fragment unchanged, so the caller can make room and apply again.
pub fn apply(frag: &mut Fragment, key: &[u8], op: &KeyOp, now: u64) -> Result<Frame, StoreError> {
    if let KeyOp::Hash(h) = op {
        return super::hash::apply(frag, key, h, now);
    }
    // `holds_hash` is a memory lookup: string-only fragments pay nothing more.
    if frag.holds_hash(key) && frag.get(key, now)?.is_some() {
        match op {
            _ if op.reads_a_string() => return Ok(Frame::error(super::hash::WRONGTYPE)),
            KeyOp::GetWithExpiry => {
                return Ok(Frame::error(
                    "ERR RENAME and COPY of a hash are not supported yet",
                ))
            }
            KeyOp::Object(ObjectField::Encoding) => {
                // Redis's names: small hashes are listpacks (by field count only here).
                let fields = frag.get(key, now)?.and_then(|r| r.hash_header());
                let small = fields.is_some_and(|h| h.fields <= 128);
                return Ok(Frame::bulk(if small { "listpack" } else { "hashtable" }));
            }
            _ => {}
        }
    }
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
            // A plain SET needs nothing of the old record: don't look it up or copy it.
            let needs_old = *get || *cond != SetCond::Always || matches!(ttl, Ttl::Keep);
            let old = if needs_old {
                frag.get(key, now)?.map(|r| {
                    let value = if *get {
                        Bytes::copy_from_slice(r.value)
                    } else {
                        Bytes::new()
                    };
                    (value, r.expire_at_ms)
                })
            } else {
                None
            };
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
            let Some((_, old)) = current(frag)? else {
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
                // Keeps the record's type: EXPIRE on a hash stays a hash.
                frag.set_expiry(key, Some(new as u64), now)?;
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
            Some((_, Some(_))) => {
                frag.set_expiry(key, None, now)?;
                Frame::Integer(1)
            }
            _ => Frame::Integer(0),
        },
        KeyOp::Del => Frame::Integer(frag.delete(key, now)? as i64),
        KeyOp::Exists => Frame::Integer(frag.get(key, now)?.is_some() as i64),
        KeyOp::Type => Frame::simple(match frag.get(key, now)? {
            Some(r) if r.is_hash() => "hash",
            Some(_) => "string",
            None => "none",
        }),
        KeyOp::GetEx(ttl) => {
            let Some((value, expire)) = current(frag)? else {
                return Ok(Frame::Null);
            };
            match ttl {
                None | Some(Ttl::Keep) => {}
                // PERSIST on a key without a TTL changes nothing (no rewrite).
                Some(Ttl::Clear) if expire.is_none() => {}
                Some(Ttl::Clear) => frag.put(key, &value, None)?,
                // EXAT/PXAT in the past: Redis replies with the value, then deletes.
                Some(Ttl::At(t)) if *t <= now => {
                    frag.delete(key, now)?;
                }
                Some(Ttl::At(t)) => frag.put(key, &value, Some(*t))?,
            }
            Frame::Bulk(value)
        }
        KeyOp::GetRange { start, end } => match frag.get(key, now)? {
            Some(r) => bulk(super::strings::range_of(r.value, *start, *end)),
            None => Frame::Bulk(Bytes::new()),
        },
        KeyOp::SetRange {
            offset,
            value,
            max_len,
        } => {
            let old = frag
                .get(key, now)?
                .map(|r| (r.value.to_vec(), r.expire_at_ms));
            // Writing nothing changes nothing, even past the limit (as Redis).
            if value.is_empty() {
                return Ok(Frame::Integer(old.map_or(0, |(v, _)| v.len() as i64)));
            }
            let Some(end) = offset
                .checked_add(value.len() as u64)
                .filter(|&e| e <= *max_len as u64)
            else {
                return Ok(Frame::error(super::strings::TOO_LONG));
            };
            let (mut joined, expire) = old.unwrap_or_default();
            let (start, end) = (*offset as usize, end as usize);
            if joined.len() < end {
                joined.resize(end, 0);
            }
            joined[start..end].copy_from_slice(value);
            frag.put(key, &joined, expire)?;
            Frame::Integer(joined.len() as i64)
        }
        KeyOp::IncrByFloat(by) => {
            let (value, expire) = match frag.get(key, now)? {
                Some(r) => (r.value.to_vec(), r.expire_at_ms),
                None => (b"0".to_vec(), None),
            };
            match super::float::add(&value, by) {
                Ok(sum) => {
                    frag.put(key, sum.as_bytes(), expire)?;
                    Frame::Bulk(Bytes::from(sum))
                }
                Err(e) => Frame::error(e),
            }
        }
        KeyOp::Object(field) => {
            let Some(r) = frag.get(key, now)? else {
                return Ok(Frame::Null);
            };
            super::object::answer(*field, r.value)
        }
        KeyOp::MSetNx { .. } => Frame::error("ERR internal: MSETNX runs in the shard"),
        KeyOp::Hash(_) => Frame::error("ERR internal: hash ops are applied above"),
        KeyOp::GetWithExpiry => match frag.get(key, now)? {
            Some(r) => Frame::Array(vec![
                bulk(r.value),
                Frame::Integer(r.expire_at_ms.map_or(-1, |t| t as i64)),
            ]),
            None => Frame::Null,
        },
        KeyOp::DelIfSame {
            value,
            expire_at_ms,
        } => match current(frag)? {
            Some((v, e)) if v == *value && e == *expire_at_ms => {
                Frame::Integer(frag.delete(key, now)? as i64)
            }
            _ => Frame::Integer(0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Geometry;

    const NOW: u64 = 1_000_000;

    fn fragment() -> Fragment {
        Fragment::create(
            1,
            Bytes::new(),
            None,
            Geometry::sized_for(1 << 20, 64),
            1,
            false,
        )
        .expect("fragment")
    }

    fn run(frag: &mut Fragment, key: &str, op: KeyOp) -> Frame {
        apply(frag, key.as_bytes(), &op, NOW).expect("apply")
    }

    fn set(frag: &mut Fragment, key: &str, value: &str, expire: Option<u64>) {
        frag.put(key.as_bytes(), value.as_bytes(), expire)
            .expect("put");
    }

    fn expiry(frag: &Fragment, key: &str) -> Option<Option<u64>> {
        frag.get(key.as_bytes(), NOW)
            .expect("get")
            .map(|r| r.expire_at_ms)
    }

    fn setrange(offset: u64, value: &str, max_len: usize) -> KeyOp {
        KeyOp::SetRange {
            offset,
            value: Bytes::copy_from_slice(value.as_bytes()),
            max_len,
        }
    }

    #[test]
    fn getex_changes_ttl_after_reading() {
        let mut f = fragment();
        assert_eq!(run(&mut f, "k", KeyOp::GetEx(None)), Frame::Null);
        set(&mut f, "k", "v", Some(NOW + 5_000));
        assert_eq!(run(&mut f, "k", KeyOp::GetEx(None)), Frame::bulk("v"));
        assert_eq!(expiry(&f, "k"), Some(Some(NOW + 5_000)));
        run(&mut f, "k", KeyOp::GetEx(Some(Ttl::At(NOW + 9_000))));
        assert_eq!(expiry(&f, "k"), Some(Some(NOW + 9_000)));
        run(&mut f, "k", KeyOp::GetEx(Some(Ttl::Clear)));
        assert_eq!(expiry(&f, "k"), Some(None));
        // An absolute time in the past: the value is returned, then the key is gone.
        assert_eq!(
            run(&mut f, "k", KeyOp::GetEx(Some(Ttl::At(NOW - 1)))),
            Frame::bulk("v")
        );
        assert_eq!(expiry(&f, "k"), None);
    }

    #[test]
    fn getrange_of_missing_key_is_empty() {
        let mut f = fragment();
        let op = KeyOp::GetRange { start: 0, end: -1 };
        assert_eq!(run(&mut f, "k", op.clone()), Frame::bulk(""));
        set(&mut f, "k", "Hello World", None);
        assert_eq!(
            run(&mut f, "k", KeyOp::GetRange { start: -5, end: -1 }),
            Frame::bulk("World")
        );
    }

    #[test]
    fn setrange_pads_keeps_ttl_and_bounds_length() {
        let mut f = fragment();
        // Nothing to write on a missing key: 0, and no key is created.
        assert_eq!(run(&mut f, "k", setrange(5, "", 100)), Frame::Integer(0));
        assert_eq!(expiry(&f, "k"), None);
        assert_eq!(run(&mut f, "k", setrange(3, "ab", 100)), Frame::Integer(5));
        assert_eq!(run(&mut f, "k", KeyOp::Get), Frame::bulk(&b"\0\0\0ab"[..]));
        set(&mut f, "w", "Hello World", Some(NOW + 7_000));
        assert_eq!(
            run(&mut f, "w", setrange(6, "Redis", 100)),
            Frame::Integer(11)
        );
        assert_eq!(run(&mut f, "w", KeyOp::Get), Frame::bulk("Hello Redis"));
        assert_eq!(expiry(&f, "w"), Some(Some(NOW + 7_000)));
        assert_eq!(run(&mut f, "w", setrange(0, "", 1)), Frame::Integer(11));
        assert_eq!(
            run(&mut f, "w", setrange(99, "xy", 100)),
            Frame::error(super::super::strings::TOO_LONG)
        );
        assert_eq!(
            run(&mut f, "w", setrange(u64::MAX, "xy", 100)),
            Frame::error(super::super::strings::TOO_LONG)
        );
        assert_eq!(run(&mut f, "w", KeyOp::Get), Frame::bulk("Hello Redis"));
        assert_eq!(
            run(&mut f, "w", setrange(98, "xy", 100)),
            Frame::Integer(100)
        );
    }

    #[test]
    fn incrbyfloat_keeps_ttl_and_refuses_non_numbers() {
        let mut f = fragment();
        let by = |s: &str| KeyOp::IncrByFloat(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(run(&mut f, "n", by("10.5")), Frame::bulk("10.5"));
        assert_eq!(run(&mut f, "n", by("0.1")), Frame::bulk("10.6"));
        set(&mut f, "t", "1", Some(NOW + 3_000));
        assert_eq!(run(&mut f, "t", by("-1.5")), Frame::bulk("-0.5"));
        assert_eq!(expiry(&f, "t"), Some(Some(NOW + 3_000)));
        set(&mut f, "s", "hello", None);
        assert_eq!(
            run(&mut f, "s", by("1")),
            Frame::error("ERR value is not a valid float")
        );
        assert_eq!(
            run(&mut f, "n", by("inf")),
            Frame::error("ERR increment would produce NaN or Infinity")
        );
        assert_eq!(run(&mut f, "n", KeyOp::Get), Frame::bulk("10.6"));
    }

    #[test]
    fn object_of_missing_key_is_null() {
        let mut f = fragment();
        let op = KeyOp::Object(ObjectField::Encoding);
        assert_eq!(run(&mut f, "k", op.clone()), Frame::Null);
        set(&mut f, "k", "123", None);
        assert_eq!(run(&mut f, "k", op), Frame::bulk("int"));
    }
}
