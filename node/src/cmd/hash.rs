//! Hash commands: HSET, HSETNX, HMSET, HGET, HMGET, HDEL, HLEN, HEXISTS, HSTRLEN,
//! HINCRBY, HINCRBYFLOAT, HGETALL, HKEYS, HVALS, HSCAN, HRANDFIELD. Each is one
//! `KeyOp::Hash` on the hash's key; the layout is in `store::hash` (decision 0013).

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::Rng;

use super::args::{self, upper};
use super::{float, KeyOp, Plan};
use crate::resp::Frame;
use crate::store::hash::{field_record_len, header_record_len, HashLookup};
use crate::store::layout::{self, HashHeader};
use crate::store::{Fragment, HashView, StoreError};

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INTEGER: &str = "ERR hash value is not an integer";
const NOT_FLOAT: &str = "ERR hash value is not a float";
const OVERFLOW: &str = "ERR increment or decrement would overflow";
const FIELD_TOO_LONG: &str = "ERR hash key and field together exceed 65533 bytes";
/// Largest HRANDFIELD reply with a negative count (repeats allowed): a peer may not
/// make the node build an unbounded reply.
pub const MAX_RANDOM_FIELDS: u64 = 1 << 20;
/// HSCAN's COUNT is capped as SCAN's is.
const MAX_SCAN_COUNT: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetReply {
    /// HSET: the number of fields added.
    Added,
    /// HMSET: OK.
    Ok,
    /// HSETNX: 1 if set, 0 if the field existed (and nothing changed).
    IfAbsent,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum HashOp {
    Set {
        pairs: Vec<(Bytes, Bytes)>,
        reply: SetReply,
    },
    Get(Bytes),
    MGet(Vec<Bytes>),
    Del(Vec<Bytes>),
    Len,
    Exists(Bytes),
    StrLen(Bytes),
    IncrBy(Bytes, i64),
    /// The increment as sent (checked to be a float by the parser).
    IncrByFloat(Bytes, Bytes),
    GetAll,
    Keys,
    Vals,
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
        novalues: bool,
    },
    RandField {
        /// None: one field (bulk reply); Some: an array, negative allows repeats.
        count: Option<i64>,
        with_values: bool,
    },
}

impl HashOp {
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            HashOp::Set { .. } | HashOp::Del(_) | HashOp::IncrBy(..) | HashOp::IncrByFloat(..)
        )
    }

    pub fn grows(&self) -> bool {
        matches!(
            self,
            HashOp::Set { .. } | HashOp::IncrBy(..) | HashOp::IncrByFloat(..)
        )
    }

    pub fn payload_len(&self) -> usize {
        match self {
            HashOp::Set { pairs, .. } => pairs.iter().map(|(f, v)| f.len() + v.len()).sum(),
            _ => 0,
        }
    }
}

/// Parse a hash command (`args` after the name; arity already checked by the table).
pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    let key = args[0].clone();
    let rest = &args[1..];
    let op = match name {
        "HSET" | "HMSET" => {
            if rest.len() % 2 != 0 {
                return Err(args::wrong_arity(name));
            }
            HashOp::Set {
                pairs: rest
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
                reply: if name == "HSET" {
                    SetReply::Added
                } else {
                    SetReply::Ok
                },
            }
        }
        "HSETNX" => HashOp::Set {
            pairs: vec![(rest[0].clone(), rest[1].clone())],
            reply: SetReply::IfAbsent,
        },
        "HGET" => HashOp::Get(rest[0].clone()),
        "HMGET" => HashOp::MGet(rest.to_vec()),
        "HDEL" => HashOp::Del(rest.to_vec()),
        "HLEN" => HashOp::Len,
        "HEXISTS" => HashOp::Exists(rest[0].clone()),
        "HSTRLEN" => HashOp::StrLen(rest[0].clone()),
        "HINCRBY" => HashOp::IncrBy(rest[0].clone(), args::int_arg(&rest[1])?),
        "HINCRBYFLOAT" => {
            if float::parse(&rest[1]).is_none() {
                return Err(Frame::error(float::NOT_FLOAT));
            }
            HashOp::IncrByFloat(rest[0].clone(), rest[1].clone())
        }
        "HGETALL" => HashOp::GetAll,
        "HKEYS" => HashOp::Keys,
        "HVALS" => HashOp::Vals,
        "HSCAN" => parse_scan(rest)?,
        "HRANDFIELD" => parse_randfield(rest)?,
        _ => return Err(Frame::error("ERR internal: not a hash command")),
    };
    Ok(Plan::one(key, KeyOp::Hash(op)))
}

fn parse_scan(rest: &[Bytes]) -> Result<HashOp, Frame> {
    let cursor = std::str::from_utf8(&rest[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Frame::error("ERR invalid cursor"))?;
    let (mut pattern, mut count, mut novalues) = (None, 10usize, false);
    let mut i = 1;
    while i < rest.len() {
        let word = upper(&rest[i]);
        if word == "NOVALUES" {
            novalues = true;
            i += 1;
            continue;
        }
        let Some(value) = rest.get(i + 1) else {
            return Err(Frame::error(args::SYNTAX));
        };
        match word.as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => {
                count = match args::parse_i64(value) {
                    Some(n) if n >= 1 => (n as usize).min(MAX_SCAN_COUNT),
                    Some(_) => return Err(Frame::error(args::SYNTAX)),
                    None => return Err(Frame::error(args::NOT_INTEGER)),
                }
            }
            _ => return Err(Frame::error(args::SYNTAX)),
        }
        i += 2;
    }
    Ok(HashOp::Scan {
        cursor,
        pattern,
        count,
        novalues,
    })
}

fn parse_randfield(rest: &[Bytes]) -> Result<HashOp, Frame> {
    let count = match rest.first() {
        None => None,
        Some(c) => {
            let n = args::int_arg(c)?;
            if n.unsigned_abs() > MAX_RANDOM_FIELDS && n < 0 {
                return Err(Frame::error(format!(
                    "ERR count is out of range (at most {MAX_RANDOM_FIELDS} with repeats)"
                )));
            }
            Some(n)
        }
    };
    let with_values = match rest.get(1) {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"WITHVALUES") => true,
        Some(_) => return Err(Frame::error(args::SYNTAX)),
    };
    if rest.len() > 2 {
        return Err(Frame::error(args::SYNTAX));
    }
    Ok(HashOp::RandField { count, with_values })
}

fn bulk(v: &[u8]) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(v))
}

/// The fields of a `Set`, each once (the last value wins, as in Redis).
fn distinct(pairs: &[(Bytes, Bytes)]) -> BTreeMap<&Bytes, &Bytes> {
    pairs.iter().map(|(f, v)| (f, v)).collect()
}

/// Apply a hash operation to `key` in `frag` at `now`. `StoreError::Full` leaves the
/// fragment unchanged: every write checks for room for all its records first.
pub fn apply(frag: &mut Fragment, key: &[u8], op: &HashOp, now: u64) -> Result<Frame, StoreError> {
    let view = match frag.hash_at(key, now)? {
        HashLookup::String => return Ok(Frame::error(WRONGTYPE)),
        HashLookup::Missing => None,
        HashLookup::Hash(v) => Some(v),
    };
    let field_of = |frag: &Fragment, field: &[u8]| -> Result<Option<Bytes>, StoreError> {
        match &view {
            Some(v) => Ok(frag.hash_field(key, v, field)?.map(Bytes::copy_from_slice)),
            None => Ok(None),
        }
    };
    Ok(match op {
        HashOp::Set { pairs, reply } => {
            let fields = distinct(pairs);
            if fields.keys().any(|f| layout::field_key(key, f).is_none()) {
                return Ok(Frame::error(FIELD_TOO_LONG));
            }
            if *reply == SetReply::IfAbsent && field_of(frag, &pairs[0].0)?.is_some() {
                return Ok(Frame::Integer(0));
            }
            let mut added = 0u64;
            for f in fields.keys() {
                added += field_of(frag, f)?.is_none() as u64;
            }
            let values: Vec<(&[u8], &[u8])> =
                fields.iter().map(|(f, v)| (&f[..], &v[..])).collect();
            write_fields(frag, key, view, &values, added)?;
            match reply {
                SetReply::Added => Frame::Integer(added as i64),
                SetReply::Ok => Frame::ok(),
                SetReply::IfAbsent => Frame::Integer(1),
            }
        }
        HashOp::Get(field) => field_of(frag, field)?.map_or(Frame::Null, Frame::Bulk),
        HashOp::MGet(fields) => {
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                out.push(field_of(frag, f)?.map_or(Frame::Null, Frame::Bulk));
            }
            Frame::Array(out)
        }
        HashOp::Del(fields) => {
            let Some(v) = view else {
                return Ok(Frame::Integer(0));
            };
            let mut present = Vec::new();
            for f in fields {
                if !present.contains(&f) && frag.hash_field(key, &v, f)?.is_some() {
                    present.push(f);
                }
            }
            if present.is_empty() {
                return Ok(Frame::Integer(0));
            }
            let bytes: usize = present
                .iter()
                .map(|f| layout::record_len(2 + key.len() + f.len(), 0, false))
                .sum::<usize>()
                + header_record_len(key, v.expire_at_ms.is_some());
            frag.check_room(bytes, 0)?;
            for f in &present {
                frag.delete_field(key, f)?;
            }
            let header = HashHeader {
                incarnation: v.header.incarnation,
                fields: v.header.fields.saturating_sub(present.len() as u64),
            };
            // No fields left: the header becomes a tombstone and the key is gone.
            frag.put_hash_header(key, header, v.expire_at_ms)?;
            Frame::Integer(present.len() as i64)
        }
        HashOp::Len => Frame::Integer(view.map_or(0, |v| v.header.fields as i64)),
        HashOp::Exists(field) => Frame::Integer(field_of(frag, field)?.is_some() as i64),
        HashOp::StrLen(field) => {
            Frame::Integer(field_of(frag, field)?.map_or(0, |v| v.len() as i64))
        }
        HashOp::IncrBy(field, by) => {
            let old = field_of(frag, field)?;
            let n = match &old {
                None => 0,
                Some(v) => match args::parse_i64(v) {
                    Some(n) => n,
                    None => return Ok(Frame::error(NOT_INTEGER)),
                },
            };
            let Some(next) = n.checked_add(*by) else {
                return Ok(Frame::error(OVERFLOW));
            };
            if layout::field_key(key, field).is_none() {
                return Ok(Frame::error(FIELD_TOO_LONG));
            }
            let mut digits = itoa::Buffer::new();
            let text = digits.format(next).as_bytes();
            write_fields(frag, key, view, &[(field, text)], old.is_none() as u64)?;
            Frame::Integer(next)
        }
        HashOp::IncrByFloat(field, by) => {
            let old = field_of(frag, field)?;
            let base = old.clone().unwrap_or_else(|| Bytes::from_static(b"0"));
            if float::parse(&base).is_none() {
                return Ok(Frame::error(NOT_FLOAT));
            }
            let sum = match float::add(&base, by) {
                Ok(s) => s,
                Err(e) => return Ok(Frame::error(e)),
            };
            if layout::field_key(key, field).is_none() {
                return Ok(Frame::error(FIELD_TOO_LONG));
            }
            write_fields(
                frag,
                key,
                view,
                &[(field, sum.as_bytes())],
                old.is_none() as u64,
            )?;
            Frame::Bulk(Bytes::from(sum))
        }
        HashOp::GetAll | HashOp::Keys | HashOp::Vals => {
            let Some(v) = view else {
                return Ok(match op {
                    HashOp::GetAll => Frame::Map(Vec::new()),
                    _ => Frame::Array(Vec::new()),
                });
            };
            let entries = all_fields(frag, key, &v)?;
            match op {
                HashOp::GetAll => Frame::Map(
                    entries
                        .into_iter()
                        .map(|(f, v)| (Frame::Bulk(f), Frame::Bulk(v)))
                        .collect(),
                ),
                HashOp::Keys => {
                    Frame::Array(entries.into_iter().map(|(f, _)| Frame::Bulk(f)).collect())
                }
                _ => Frame::Array(entries.into_iter().map(|(_, v)| Frame::Bulk(v)).collect()),
            }
        }
        HashOp::Scan {
            cursor,
            pattern,
            count,
            novalues,
        } => scan(
            frag,
            key,
            view,
            *cursor,
            pattern.as_deref(),
            *count,
            *novalues,
        )?,
        HashOp::RandField { count, with_values } => {
            random_fields(frag, key, view, *count, *with_values)?
        }
    })
}

/// Write `values` (distinct fields) into the hash `key` (`view`: its header, None if
/// it does not exist), `added` of them new: room for every record is checked first.
fn write_fields(
    frag: &mut Fragment,
    key: &[u8],
    view: Option<HashView>,
    values: &[(&[u8], &[u8])],
    added: u64,
) -> Result<(), StoreError> {
    let expire = view.and_then(|v| v.expire_at_ms);
    let header_changes = view.is_none() || added > 0;
    let bytes: usize = values
        .iter()
        .map(|(f, v)| field_record_len(key, f, v.len()))
        .sum::<usize>()
        + if header_changes {
            header_record_len(key, expire.is_some())
        } else {
            0
        };
    frag.check_room(bytes, values.len() + 1)?;
    let incarnation = view.map_or_else(|| frag.new_incarnation(), |v| v.header.incarnation);
    // Header first: it starts the field-name set a new hash's fields go into.
    if header_changes {
        let header = HashHeader {
            incarnation,
            fields: view.map_or(0, |v| v.header.fields) + added,
        };
        frag.put_hash_header(key, header, expire)?;
    }
    for (f, v) in values {
        frag.put_field(key, incarnation, f, v)?;
    }
    Ok(())
}

fn all_fields(
    frag: &Fragment,
    key: &[u8],
    view: &HashView,
) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
    let Some(names) = frag.hash_field_names(key, view) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(names.len());
    for (_, name) in names {
        if let Some(v) = frag.hash_field(key, view, name)? {
            out.push((name.clone(), Bytes::copy_from_slice(v)));
        }
    }
    Ok(out)
}

/// HSCAN: fields in `(xxh3(field), field)` order from position `cursor`; the next
/// cursor is one past the last position returned (0 when done). A field present for
/// the whole scan is returned (positions never move); fields sharing a position are
/// returned together, so none is skipped.
fn scan(
    frag: &Fragment,
    key: &[u8],
    view: Option<HashView>,
    cursor: u64,
    pattern: Option<&[u8]>,
    count: usize,
    novalues: bool,
) -> Result<Frame, StoreError> {
    let empty = || Frame::Array(vec![bulk(b"0"), Frame::Array(Vec::new())]);
    let Some(v) = view else {
        return Ok(empty());
    };
    let Some(names) = frag.hash_field_names(key, &v) else {
        return Ok(empty());
    };
    let mut out = Vec::new();
    let mut next = 0u64;
    let mut taken = 0usize;
    let mut last: Option<u64> = None;
    for (order, name) in names.range((cursor, Bytes::new())..) {
        if taken >= count && last != Some(*order) {
            next = *order;
            break;
        }
        taken += 1;
        last = Some(*order);
        if pattern.is_some_and(|p| !crate::glob::matches(p, name)) {
            continue;
        }
        out.push(Frame::Bulk(name.clone()));
        if !novalues {
            let value = frag.hash_field(key, &v, name)?.unwrap_or_default();
            out.push(bulk(value));
        }
    }
    let mut digits = itoa::Buffer::new();
    Ok(Frame::Array(vec![
        bulk(digits.format(next).as_bytes()),
        Frame::Array(out),
    ]))
}

fn random_fields(
    frag: &Fragment,
    key: &[u8],
    view: Option<HashView>,
    count: Option<i64>,
    with_values: bool,
) -> Result<Frame, StoreError> {
    let names: Vec<&Bytes> = match &view {
        Some(v) => frag
            .hash_field_names(key, v)
            .map(|n| n.iter().map(|(_, f)| f).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut rng = rand::thread_rng();
    let Some(count) = count else {
        return Ok(match names.choose(&mut rng) {
            Some(f) => Frame::Bulk((*f).clone()),
            None => Frame::Null,
        });
    };
    let picked: Vec<&Bytes> = if names.is_empty() {
        Vec::new()
    } else if count >= 0 {
        names
            .choose_multiple(&mut rng, (count as u64).min(names.len() as u64) as usize)
            .copied()
            .collect()
    } else {
        (0..count.unsigned_abs())
            .map(|_| names[rng.gen_range(0..names.len())])
            .collect()
    };
    let mut out = Vec::with_capacity(picked.len() * if with_values { 2 } else { 1 });
    for f in picked {
        out.push(Frame::Bulk(f.clone()));
        if with_values {
            let value = match &view {
                Some(v) => frag.hash_field(key, v, f)?.map(Bytes::copy_from_slice),
                None => None,
            };
            out.push(value.map_or(Frame::Null, Frame::Bulk));
        }
    }
    Ok(Frame::Array(out))
}
