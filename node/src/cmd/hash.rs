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
            if !rest.len().is_multiple_of(2) {
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
            match float::parse(&rest[1]) {
                None => return Err(Frame::error(float::NOT_FLOAT)),
                Some(by) if by.is_infinite() => {
                    return Err(Frame::error("ERR value is NaN or Infinity"))
                }
                Some(_) => {}
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
    // Header first: it starts the field set a new hash's fields go into.
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
    let Some(entries) = frag.hash_entries(key, view) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(entries.len());
    for (_, offset) in entries {
        let (field, value) = frag.hash_entry(*offset)?;
        out.push((Bytes::copy_from_slice(field), Bytes::copy_from_slice(value)));
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
    let Some(entries) = frag.hash_entries(key, &v) else {
        return Ok(empty());
    };
    let mut out = Vec::new();
    let mut next = 0u64;
    let mut last: Option<u64> = None;
    for (taken, (order, offset)) in entries.range((cursor, 0)..).enumerate() {
        if taken >= count && last != Some(*order) {
            next = *order;
            break;
        }
        last = Some(*order);
        let (name, value) = frag.hash_entry(*offset)?;
        if pattern.is_some_and(|p| !crate::glob::matches(p, name)) {
            continue;
        }
        out.push(bulk(name));
        if !novalues {
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
    let names: Vec<usize> = match &view {
        Some(v) => frag
            .hash_entries(key, v)
            .map(|n| n.iter().map(|(_, offset)| *offset).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut rng = rand::thread_rng();
    let Some(count) = count else {
        return Ok(match names.choose(&mut rng) {
            Some(offset) => bulk(frag.hash_entry(*offset)?.0),
            None => Frame::Null,
        });
    };
    let picked: Vec<usize> = if names.is_empty() {
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
    for offset in picked {
        let (field, value) = frag.hash_entry(offset)?;
        out.push(bulk(field));
        if with_values {
            out.push(bulk(value));
        }
    }
    Ok(Frame::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::{apply as apply_key, KeyOp, ParseContext};
    use crate::store::Geometry;

    const NOW: u64 = 1_000_000;

    fn fragment(target: usize) -> Fragment {
        Fragment::create(
            1,
            Bytes::new(),
            None,
            Geometry::sized_for(target, 64),
            1,
            false,
        )
        .expect("fragment")
    }

    fn words(ws: &[&str]) -> Vec<Bytes> {
        ws.iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    /// Parse and apply one command to `f` at `now`, as a core would.
    fn at(f: &mut Fragment, now: u64, ws: &[&str]) -> Frame {
        let args = words(ws);
        let ctx = ParseContext {
            now_ms: now,
            max_bulk_len: 512 << 20,
        };
        let plan = match crate::cmd::parse(&args, &ctx) {
            Ok(Plan::Keys(p)) => p,
            Ok(other) => panic!("{ws:?}: {other:?}"),
            Err(e) => return e,
        };
        assert_eq!(plan.reqs.len(), 1);
        apply_key(f, &plan.reqs[0].key, &plan.reqs[0].op, now).expect("apply")
    }

    fn run(f: &mut Fragment, ws: &[&str]) -> Frame {
        at(f, NOW, ws)
    }

    fn int(n: i64) -> Frame {
        Frame::Integer(n)
    }

    fn strs(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// A flat array of bulks (or a map, flattened) as strings.
    fn texts(frame: Frame) -> Vec<String> {
        let items = match frame {
            Frame::Array(items) => items,
            Frame::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => panic!("not an array: {other:?}"),
        };
        items
            .into_iter()
            .map(|f| match f {
                Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
                Frame::Null => "(nil)".into(),
                other => panic!("not a bulk: {other:?}"),
            })
            .collect()
    }

    fn sorted_pairs(frame: Frame) -> Vec<(String, String)> {
        let t = texts(frame);
        let mut pairs: Vec<_> = t.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn hset_hget_hlen_and_replies() {
        let mut f = fragment(1 << 20);
        assert_eq!(
            run(&mut f, &["HSET", "h", "a", "1", "b", "2", "a", "3"]),
            int(2)
        );
        assert_eq!(run(&mut f, &["HGET", "h", "a"]), Frame::bulk("3"));
        assert_eq!(run(&mut f, &["HLEN", "h"]), int(2));
        assert_eq!(run(&mut f, &["HSET", "h", "a", "4", "c", "5"]), int(1));
        assert_eq!(run(&mut f, &["HSETNX", "h", "a", "9"]), int(0));
        assert_eq!(run(&mut f, &["HGET", "h", "a"]), Frame::bulk("4"));
        assert_eq!(run(&mut f, &["HSETNX", "h", "d", "9"]), int(1));
        assert_eq!(run(&mut f, &["HMSET", "h", "e", "6"]), Frame::ok());
        assert_eq!(run(&mut f, &["HLEN", "h"]), int(5));
        assert_eq!(
            texts(run(&mut f, &["HMGET", "h", "a", "zz", "e"])),
            strs(&["4", "(nil)", "6"])
        );
        assert_eq!(run(&mut f, &["HEXISTS", "h", "a"]), int(1));
        assert_eq!(run(&mut f, &["HEXISTS", "h", "zz"]), int(0));
        assert_eq!(run(&mut f, &["HSTRLEN", "h", "e"]), int(1));
        assert_eq!(run(&mut f, &["HSTRLEN", "h", "zz"]), int(0));
        assert_eq!(run(&mut f, &["HGET", "h", "zz"]), Frame::Null);
        assert_eq!(run(&mut f, &["TYPE", "h"]), Frame::simple("hash"));
        assert_eq!(
            sorted_pairs(run(&mut f, &["HGETALL", "h"])),
            vec![
                ("a".into(), "4".into()),
                ("b".into(), "2".into()),
                ("c".into(), "5".into()),
                ("d".into(), "9".into()),
                ("e".into(), "6".into())
            ]
        );
        let mut keys = texts(run(&mut f, &["HKEYS", "h"]));
        let vals = texts(run(&mut f, &["HVALS", "h"]));
        // HKEYS and HVALS walk the same order.
        for (k, v) in keys.iter().zip(&vals) {
            assert_eq!(
                run(&mut f, &["HGET", "h", k]),
                Frame::Bulk(Bytes::from(v.clone()))
            );
        }
        keys.sort();
        assert_eq!(keys, strs(&["a", "b", "c", "d", "e"]));
        assert_eq!(f.key_count(), 1, "fields are not keys");
    }

    #[test]
    fn missing_hashes_answer_like_redis() {
        let mut f = fragment(1 << 20);
        assert_eq!(run(&mut f, &["HGET", "no", "a"]), Frame::Null);
        assert_eq!(run(&mut f, &["HLEN", "no"]), int(0));
        assert_eq!(run(&mut f, &["HDEL", "no", "a"]), int(0));
        assert_eq!(run(&mut f, &["HGETALL", "no"]), Frame::Map(Vec::new()));
        assert_eq!(run(&mut f, &["HKEYS", "no"]), Frame::Array(Vec::new()));
        assert_eq!(run(&mut f, &["HRANDFIELD", "no"]), Frame::Null);
        assert_eq!(
            run(&mut f, &["HRANDFIELD", "no", "3"]),
            Frame::Array(Vec::new())
        );
        assert_eq!(
            run(&mut f, &["HSCAN", "no", "0"]),
            Frame::Array(vec![Frame::bulk("0"), Frame::Array(Vec::new())])
        );
        assert_eq!(run(&mut f, &["TYPE", "no"]), Frame::simple("none"));
    }

    #[test]
    fn hdel_of_the_last_field_deletes_the_key() {
        let mut f = fragment(1 << 20);
        run(&mut f, &["HSET", "h", "a", "1", "b", "2"]);
        assert_eq!(run(&mut f, &["HDEL", "h", "a", "a", "zz"]), int(1));
        assert_eq!(run(&mut f, &["HLEN", "h"]), int(1));
        assert_eq!(run(&mut f, &["HGET", "h", "a"]), Frame::Null);
        assert_eq!(run(&mut f, &["HDEL", "h", "b"]), int(1));
        assert_eq!(run(&mut f, &["EXISTS", "h"]), int(0));
        assert_eq!(run(&mut f, &["TYPE", "h"]), Frame::simple("none"));
        assert_eq!(f.key_count(), 0);
        // The key is free for a string now.
        assert_eq!(run(&mut f, &["SET", "h", "v"]), Frame::ok());
        assert_eq!(run(&mut f, &["GET", "h"]), Frame::bulk("v"));
    }

    #[test]
    fn hset_on_an_expired_hash_starts_a_new_one() {
        let mut f = fragment(1 << 20);
        run(&mut f, &["HSET", "h", "old", "1", "keep", "2"]);
        assert_eq!(run(&mut f, &["PEXPIRE", "h", "100"]), int(1));
        assert_eq!(
            run(&mut f, &["TYPE", "h"]),
            Frame::simple("hash"),
            "EXPIRE keeps the type"
        );
        assert_eq!(
            at(&mut f, NOW + 50, &["HGET", "h", "old"]),
            Frame::bulk("1")
        );
        // HSET keeps the TTL of a live hash.
        assert_eq!(at(&mut f, NOW + 50, &["HSET", "h", "mid", "3"]), int(1));
        assert_eq!(at(&mut f, NOW + 50, &["PTTL", "h"]), int(50));
        let later = NOW + 100;
        assert_eq!(at(&mut f, later, &["HGET", "h", "old"]), Frame::Null);
        assert_eq!(at(&mut f, later, &["HSET", "h", "new", "1"]), int(1));
        assert_eq!(at(&mut f, later, &["HLEN", "h"]), int(1));
        assert_eq!(
            at(&mut f, later, &["HGET", "h", "keep"]),
            Frame::Null,
            "old fields stay gone"
        );
        assert_eq!(at(&mut f, later, &["PTTL", "h"]), int(-1));
        assert_eq!(texts(at(&mut f, later, &["HKEYS", "h"])), strs(&["new"]));
        // Active expiry removes a hash in one step, whatever its size.
        run(&mut f, &["HSET", "big", "a", "1", "b", "2", "c", "3"]);
        run(&mut f, &["PEXPIRE", "big", "10"]);
        assert_eq!(f.expire_due(NOW + 10, 1).unwrap(), 1);
        assert_eq!(at(&mut f, NOW + 10, &["HLEN", "big"]), int(0));
        assert_eq!(at(&mut f, NOW + 10, &["PERSIST", "h"]), int(0));
    }

    #[test]
    fn wrongtype_both_ways() {
        let mut f = fragment(1 << 20);
        run(&mut f, &["SET", "s", "12"]);
        run(&mut f, &["HSET", "h", "a", "1"]);
        let wrong = Frame::error(WRONGTYPE);
        for cmd in [
            &["HGET", "s", "a"][..],
            &["HSET", "s", "a", "1"],
            &["HLEN", "s"],
            &["HGETALL", "s"],
            &["HDEL", "s", "a"],
            &["HINCRBY", "s", "a", "1"],
            &["HSCAN", "s", "0"],
            &["HRANDFIELD", "s"],
        ] {
            assert_eq!(run(&mut f, cmd), wrong, "{cmd:?}");
        }
        for cmd in [
            &["GET", "h"][..],
            &["INCR", "h"],
            &["APPEND", "h", "x"],
            &["STRLEN", "h"],
            &["GETRANGE", "h", "0", "1"],
            &["SETRANGE", "h", "0", "x"],
            &["INCRBYFLOAT", "h", "1"],
            &["GETDEL", "h"],
            &["GETEX", "h"],
            &["SET", "h", "x", "GET"],
        ] {
            assert_eq!(run(&mut f, cmd), wrong, "{cmd:?}");
        }
        assert_eq!(
            run(&mut f, &["GET", "s"]),
            Frame::bulk("12"),
            "string untouched"
        );
        assert_eq!(
            run(&mut f, &["HGET", "h", "a"]),
            Frame::bulk("1"),
            "hash untouched"
        );
        assert_eq!(
            run(&mut f, &["OBJECT", "ENCODING", "h"]),
            Frame::bulk("listpack")
        );
        // RENAME/COPY read with GetWithExpiry: refused for a hash, not mangled.
        assert!(matches!(
            apply_key(&mut f, b"h", &KeyOp::GetWithExpiry, NOW).unwrap(),
            Frame::Error(e) if e.starts_with(b"ERR RENAME")
        ));
        // SET replaces a hash, as in Redis; its fields go with it.
        assert_eq!(run(&mut f, &["SET", "h", "x"]), Frame::ok());
        assert_eq!(run(&mut f, &["GET", "h"]), Frame::bulk("x"));
        assert_eq!(run(&mut f, &["HSET", "h", "a", "1"]), wrong);
        assert_eq!(run(&mut f, &["DEL", "h"]), int(1));
        assert_eq!(run(&mut f, &["HSET", "h", "b", "1"]), int(1));
        assert_eq!(run(&mut f, &["HGET", "h", "a"]), Frame::Null);
    }

    #[test]
    fn hincrby_and_hincrbyfloat() {
        let mut f = fragment(1 << 20);
        assert_eq!(run(&mut f, &["HINCRBY", "h", "n", "5"]), int(5));
        assert_eq!(run(&mut f, &["HINCRBY", "h", "n", "-7"]), int(-2));
        run(
            &mut f,
            &["HSET", "h", "s", "hello", "big", "9223372036854775807"],
        );
        assert_eq!(
            run(&mut f, &["HINCRBY", "h", "s", "1"]),
            Frame::error("ERR hash value is not an integer")
        );
        assert_eq!(
            run(&mut f, &["HINCRBY", "h", "big", "1"]),
            Frame::error("ERR increment or decrement would overflow")
        );
        assert_eq!(
            run(&mut f, &["HINCRBY", "h", "n", "x"]),
            Frame::error(args::NOT_INTEGER)
        );
        assert_eq!(
            run(&mut f, &["HINCRBYFLOAT", "h", "x", "10.5"]),
            Frame::bulk("10.5")
        );
        assert_eq!(
            run(&mut f, &["HINCRBYFLOAT", "h", "x", "0.1"]),
            Frame::bulk("10.6")
        );
        assert_eq!(
            run(&mut f, &["HINCRBYFLOAT", "h", "s", "1"]),
            Frame::error("ERR hash value is not a float")
        );
        assert_eq!(
            run(&mut f, &["HINCRBYFLOAT", "h", "x", "abc"]),
            Frame::error("ERR value is not a valid float")
        );
        assert_eq!(
            run(&mut f, &["HINCRBYFLOAT", "h", "x", "inf"]),
            Frame::error("ERR value is NaN or Infinity")
        );
        assert_eq!(run(&mut f, &["HLEN", "h"]), int(4));
        assert_eq!(run(&mut f, &["HGET", "h", "x"]), Frame::bulk("10.6"));
    }

    #[test]
    fn arity_and_syntax_errors_match_redis() {
        let mut f = fragment(1 << 20);
        let arity = |name: &str| {
            Frame::error(format!(
                "ERR wrong number of arguments for '{name}' command"
            ))
        };
        assert_eq!(run(&mut f, &["HSET", "h"]), arity("hset"));
        assert_eq!(run(&mut f, &["HSET", "h", "a"]), arity("hset"));
        assert_eq!(run(&mut f, &["HSET", "h", "a", "1", "b"]), arity("hset"));
        assert_eq!(run(&mut f, &["HMSET", "h", "a"]), arity("hmset"));
        assert_eq!(run(&mut f, &["HGET", "h"]), arity("hget"));
        assert_eq!(run(&mut f, &["HINCRBY", "h", "a"]), arity("hincrby"));
        assert_eq!(run(&mut f, &["HRANDFIELD"]), arity("hrandfield"));
        assert_eq!(
            run(&mut f, &["HSCAN", "h", "x"]),
            Frame::error("ERR invalid cursor")
        );
        assert_eq!(
            run(&mut f, &["HSCAN", "h", "0", "COUNT", "0"]),
            Frame::error(args::SYNTAX)
        );
        assert_eq!(
            run(&mut f, &["HSCAN", "h", "0", "COUNT", "x"]),
            Frame::error(args::NOT_INTEGER)
        );
        assert_eq!(
            run(&mut f, &["HSCAN", "h", "0", "MATCH"]),
            Frame::error(args::SYNTAX)
        );
        assert_eq!(
            run(&mut f, &["HRANDFIELD", "h", "x"]),
            Frame::error(args::NOT_INTEGER)
        );
        assert_eq!(
            run(&mut f, &["HRANDFIELD", "h", "1", "x"]),
            Frame::error(args::SYNTAX)
        );
        assert!(matches!(
            run(&mut f, &["HRANDFIELD", "h", "-99999999999"]),
            Frame::Error(_)
        ));
        assert_eq!(f.key_count(), 0, "errors change nothing");
    }

    #[test]
    fn hscan_returns_every_field_present_throughout() {
        let mut f = fragment(4 << 20);
        for i in 0..500 {
            run(&mut f, &["HSET", "h", &format!("f{i}"), &format!("v{i}")]);
        }
        let mut cursor = "0".to_string();
        let mut seen = std::collections::BTreeSet::new();
        let mut steps = 0;
        loop {
            let reply = run(&mut f, &["HSCAN", "h", &cursor, "COUNT", "7"]);
            let Frame::Array(mut parts) = reply else {
                panic!("{reply:?}")
            };
            let items = texts(parts.pop().unwrap());
            cursor = texts(Frame::Array(parts)).remove(0);
            assert!(items.len() <= 2 * 8);
            for pair in items.chunks(2) {
                if let Some(n) = pair[0].strip_prefix('f') {
                    assert_eq!(pair[1], format!("v{n}"));
                }
                seen.insert(pair[0].clone());
            }
            steps += 1;
            // Churn between steps: new fields and deletes of other fields.
            run(&mut f, &["HSET", "h", &format!("new{steps}"), "x"]);
            run(&mut f, &["HDEL", "h", &format!("new{}", steps - 1)]);
            if cursor == "0" {
                break;
            }
        }
        assert!(steps > 50, "{steps} steps");
        for i in 0..500 {
            assert!(seen.contains(&format!("f{i}")), "f{i} missed");
        }
        // MATCH and NOVALUES.
        let reply = run(
            &mut f,
            &[
                "HSCAN", "h", "0", "MATCH", "f1?", "COUNT", "10000", "NOVALUES",
            ],
        );
        let Frame::Array(parts) = reply else { panic!() };
        let mut names = texts(parts[1].clone());
        names.sort();
        assert_eq!(names, (10..20).map(|i| format!("f{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn hrandfield_counts() {
        let mut f = fragment(1 << 20);
        run(&mut f, &["HSET", "h", "a", "1", "b", "2", "c", "3"]);
        let one = texts(Frame::Array(vec![run(&mut f, &["HRANDFIELD", "h"])]));
        assert!(["a", "b", "c"].contains(&one[0].as_str()));
        let mut all = texts(run(&mut f, &["HRANDFIELD", "h", "10"]));
        all.sort();
        assert_eq!(all, strs(&["a", "b", "c"]), "distinct, at most the hash");
        assert_eq!(texts(run(&mut f, &["HRANDFIELD", "h", "2"])).len(), 2);
        assert_eq!(
            run(&mut f, &["HRANDFIELD", "h", "0"]),
            Frame::Array(Vec::new())
        );
        let repeats = texts(run(&mut f, &["HRANDFIELD", "h", "-20"]));
        assert_eq!(
            repeats.len(),
            20,
            "negative: exactly |count|, repeats allowed"
        );
        let pairs = texts(run(&mut f, &["HRANDFIELD", "h", "-5", "WITHVALUES"]));
        assert_eq!(pairs.len(), 10);
        for p in pairs.chunks(2) {
            assert_eq!(
                run(&mut f, &["HGET", "h", &p[0]]),
                Frame::Bulk(Bytes::from(p[1].clone()))
            );
        }
    }

    #[test]
    fn a_full_fragment_changes_nothing_and_the_retry_counts_right() {
        let mut f = fragment(16 << 10);
        // Fill the log with a string until a multi-field HSET does not fit.
        let big = "x".repeat(1000);
        let mut i = 0;
        loop {
            let op = KeyOp::Hash(HashOp::Set {
                pairs: (0..4)
                    .map(|j| (Bytes::from(format!("f{i}-{j}")), Bytes::from(big.clone())))
                    .collect(),
                reply: SetReply::Added,
            });
            let used = f.used_bytes();
            match apply_key(&mut f, b"h", &op, NOW) {
                Ok(reply) => assert_eq!(reply, int(4)),
                Err(StoreError::Full { .. }) => {
                    assert_eq!(f.used_bytes(), used, "nothing written");
                    let c = f.compact(64 << 10, 8 << 10, NOW, false).unwrap();
                    f = c;
                    assert_eq!(apply_key(&mut f, b"h", &op, NOW).unwrap(), int(4));
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            i += 1;
        }
        assert_eq!(run(&mut f, &["HLEN", "h"]), int(4 * (i + 1)));
    }

    #[test]
    fn too_long_field_is_refused() {
        let mut f = fragment(1 << 20);
        let field = "f".repeat(65_534);
        assert_eq!(
            run(&mut f, &["HSET", "h", &field, "v"]),
            Frame::error(FIELD_TOO_LONG)
        );
        assert_eq!(run(&mut f, &["HGET", "h", &field]), Frame::Null);
        assert_eq!(f.key_count(), 0);
    }

    mod model {
        use super::*;
        use crate::store::region::Region;
        use crate::store::FragmentId;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            HSet(u8, u8, usize),
            HDel(u8, u8),
            Del(u8),
            Set(u8),
            Expire(u8, u64),
            Advance(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                8 => (0u8..6, 0u8..10, 0usize..300).prop_map(|(k, f, n)| Op::HSet(k, f, n)),
                3 => (0u8..6, 0u8..10).prop_map(|(k, f)| Op::HDel(k, f)),
                1 => (0u8..6).prop_map(Op::Del),
                1 => (0u8..6).prop_map(Op::Set),
                1 => (0u8..6, 1u64..50).prop_map(|(k, t)| Op::Expire(k, t)),
                1 => (1u64..30).prop_map(Op::Advance),
            ]
        }

        #[derive(Debug, Clone, PartialEq)]
        enum Value {
            Str,
            Hash(BTreeMap<String, String>),
        }

        /// key -> (value, expire_at)
        type Model = BTreeMap<String, (Value, Option<u64>)>;

        fn live(model: &Model, key: &str, now: u64) -> Option<Value> {
            model
                .get(key)
                .filter(|(_, at)| at.is_none_or(|t| t > now))
                .map(|(v, _)| v.clone())
        }

        /// Run `words` on the fragment holding the key (`words[1]`); when full, do
        /// what a shard does (split if big, else compact) and run it again.
        fn exec(
            parts: &mut Vec<Fragment>,
            next_id: &mut FragmentId,
            now: u64,
            words: &[&str],
        ) -> Frame {
            let args = super::words(words);
            let ctx = ParseContext {
                now_ms: now,
                max_bulk_len: 512 << 20,
            };
            let Ok(Plan::Keys(plan)) = crate::cmd::parse(&args, &ctx) else {
                panic!("{words:?}")
            };
            let req = &plan.reqs[0];
            for _ in 0..4 {
                let i = parts
                    .iter()
                    .position(|p| p.contains(&req.key))
                    .expect("holder");
                match apply_key(&mut parts[i], &req.key, &req.op, now) {
                    Ok(f) => return f,
                    Err(StoreError::Full { need }) => {
                        let frag = parts.remove(i);
                        let target = 16 << 10;
                        let half = Geometry::sized_for(target, 64).log_capacity / 2;
                        let at = if frag.live_bytes() + need > half {
                            frag.split_key(now).unwrap()
                        } else {
                            None
                        };
                        match at.filter(|a| a != frag.lo()) {
                            Some(at) => {
                                *next_id += 1;
                                let (a, b) = frag.split(at, *next_id, target, now, false).unwrap();
                                parts.push(a);
                                parts.push(b);
                            }
                            None => parts.push(frag.compact(target, need, now, false).unwrap()),
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("no room after making room");
        }

        fn check(parts: &mut Vec<Fragment>, model: &Model, now: u64) -> Result<(), TestCaseError> {
            let mut id = 1000;
            let mut keys = 0;
            for k in 0..6u8 {
                let key = format!("k{k}");
                let expected = live(model, &key, now);
                let t = exec(parts, &mut id, now, &["TYPE", &key]);
                let all = exec(parts, &mut id, now, &["HGETALL", &key]);
                match expected {
                    None => {
                        prop_assert_eq!(t, Frame::simple("none"));
                        prop_assert_eq!(all, Frame::Map(Vec::new()));
                    }
                    Some(Value::Str) => {
                        keys += 1;
                        prop_assert_eq!(t, Frame::simple("string"));
                        prop_assert_eq!(all, Frame::error(WRONGTYPE));
                    }
                    Some(Value::Hash(fields)) => {
                        keys += 1;
                        prop_assert_eq!(t, Frame::simple("hash"));
                        let got: BTreeMap<String, String> = sorted_pairs(all).into_iter().collect();
                        prop_assert_eq!(&got, &fields);
                        prop_assert_eq!(
                            exec(parts, &mut id, now, &["HLEN", &key]),
                            int(fields.len() as i64)
                        );
                        prop_assert_eq!(
                            exec(parts, &mut id, now, &["GET", &key]),
                            Frame::error(WRONGTYPE)
                        );
                    }
                }
            }
            let counted: usize = parts.iter().map(|p| p.key_count()).sum();
            // Expired keys count until removed, as in `live_keys`.
            let stored = model.len();
            prop_assert!(
                counted >= keys && counted <= stored,
                "{} keys, {} live, {} stored",
                counted,
                keys,
                stored
            );
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            /// Hash and string commands on fragments that compact, split, expire and
            /// are copied (as a migration does) agree with a map.
            #[test]
            fn hashes_agree_with_a_map(ops in proptest::collection::vec(op(), 1..300)) {
                let mut parts = vec![fragment(16 << 10)];
                let mut model: Model = BTreeMap::new();
                let mut next_id = 1;
                let mut now = NOW;
                for op in ops {
                    match op {
                        Op::HSet(k, f, n) => {
                            let (key, field) = (format!("k{k}"), format!("f{f}"));
                            let value = format!("{n}:{}", "v".repeat(n));
                            let reply = exec(&mut parts, &mut next_id, now, &["HSET", &key, &field, &value]);
                            match live(&model, &key, now) {
                                Some(Value::Str) => prop_assert_eq!(reply, Frame::error(WRONGTYPE)),
                                other => {
                                    let mut fields = match other {
                                        Some(Value::Hash(h)) => h,
                                        _ => BTreeMap::new(),
                                    };
                                    let at = model.get(&key).and_then(|(_, at)| *at).filter(|_| !fields.is_empty());
                                    let added = fields.insert(field, value).is_none();
                                    prop_assert_eq!(reply, int(added as i64));
                                    model.insert(key, (Value::Hash(fields), at));
                                }
                            }
                        }
                        Op::HDel(k, f) => {
                            let (key, field) = (format!("k{k}"), format!("f{f}"));
                            let reply = exec(&mut parts, &mut next_id, now, &["HDEL", &key, &field]);
                            match live(&model, &key, now) {
                                Some(Value::Str) => prop_assert_eq!(reply, Frame::error(WRONGTYPE)),
                                Some(Value::Hash(mut h)) => {
                                    let removed = h.remove(&field).is_some();
                                    prop_assert_eq!(reply, int(removed as i64));
                                    if h.is_empty() {
                                        model.remove(&key);
                                    } else if let Some(e) = model.get_mut(&key) {
                                        e.0 = Value::Hash(h);
                                    }
                                }
                                None => prop_assert_eq!(reply, int(0)),
                            }
                        }
                        Op::Del(k) => {
                            let key = format!("k{k}");
                            let reply = exec(&mut parts, &mut next_id, now, &["DEL", &key]);
                            prop_assert_eq!(reply, int(live(&model, &key, now).is_some() as i64));
                            model.remove(&key);
                        }
                        Op::Set(k) => {
                            let key = format!("k{k}");
                            prop_assert_eq!(exec(&mut parts, &mut next_id, now, &["SET", &key, "s"]), Frame::ok());
                            model.insert(key, (Value::Str, None));
                        }
                        Op::Expire(k, t) => {
                            let key = format!("k{k}");
                            let reply = exec(&mut parts, &mut next_id, now, &["PEXPIRE", &key, &t.to_string()]);
                            let present = live(&model, &key, now).is_some();
                            prop_assert_eq!(reply, int(present as i64));
                            if let (true, Some(e)) = (present, model.get_mut(&key)) {
                                e.1 = Some(now + t);
                            }
                        }
                        Op::Advance(dt) => {
                            now += dt;
                            for p in parts.iter_mut() {
                                p.expire_due(now, usize::MAX).unwrap();
                            }
                            model.retain(|_, (_, at)| at.is_none_or(|t| t > now));
                        }
                    }
                }
                check(&mut parts, &model, now)?;
                // A byte copy of every region (a migration) answers the same.
                let mut copies: Vec<Fragment> = parts
                    .iter()
                    .map(|p| {
                        let mut region = Region::create(p.region_len(), false).unwrap();
                        let tail = p.log_tail();
                        region.bytes_mut()[..tail].copy_from_slice(&p.region().bytes()[..tail]);
                        Fragment::from_copy(region, p.id(), p.lo().clone(), p.hi().cloned()).unwrap()
                    })
                    .collect();
                check(&mut copies, &model, now)?;
                for (p, c) in parts.iter().zip(&copies) {
                    prop_assert_eq!(p.hash_heap_bytes(), c.hash_heap_bytes());
                    prop_assert_eq!(p.key_count(), c.key_count());
                }
            }
        }
    }
}
