//! OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT | HELP.
//!
//! augur stores every value as bytes, so the answers are what Redis would say for a
//! freshly written string of that content: "int" for an integer of at most 20
//! characters, "embstr" up to 44 bytes, else "raw". No access times or frequencies
//! are tracked: IDLETIME is 0 and FREQ is refused as Redis does under a non-LFU
//! policy (augur's `maxmemory-policy` is `noeviction`).

use bytes::Bytes;

use super::args::{parse_i64, upper};
use super::keyop::ObjectField;
use super::{KeyOp, Plan};
use crate::resp::Frame;

/// Redis's `OBJ_SHARED_REFCOUNT`: what REFCOUNT says for shared small integers.
const SHARED_REFCOUNT: i64 = i32::MAX as i64;
/// Redis shares the integers 0..OBJ_SHARED_INTEGERS.
const SHARED_INTEGERS: i64 = 10_000;
const EMBSTR_MAX: usize = 44;

const HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access logarithmic access frequency counter of a <key>.",
    "IDLETIME <key>",
    "    Return the idle time of a <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Print this help.",
];

pub fn parse(args: &[Bytes]) -> Result<Plan, Frame> {
    let sub = upper(&args[0]);
    let field = match sub.as_str() {
        "HELP" if args.len() == 1 => {
            return Ok(Plan::Reply(Frame::Array(
                HELP.iter().map(|&l| Frame::simple(l)).collect(),
            )))
        }
        "ENCODING" => ObjectField::Encoding,
        "FREQ" => ObjectField::Freq,
        "IDLETIME" => ObjectField::IdleTime,
        "REFCOUNT" => ObjectField::RefCount,
        "HELP" => return Err(sub_arity("help")),
        _ => {
            return Err(Frame::error(format!(
                "ERR unknown subcommand '{}'. Try OBJECT HELP.",
                String::from_utf8_lossy(&args[0][..args[0].len().min(128)])
            )))
        }
    };
    if args.len() != 2 {
        return Err(sub_arity(&sub.to_ascii_lowercase()));
    }
    Ok(Plan::one(args[1].clone(), KeyOp::Object(field)))
}

fn sub_arity(sub: &str) -> Frame {
    Frame::error(format!(
        "ERR wrong number of arguments for 'object|{sub}' command"
    ))
}

fn as_int(value: &[u8]) -> Option<i64> {
    if value.len() <= 20 {
        parse_i64(value)
    } else {
        None
    }
}

/// The reply to OBJECT `field` for an existing key holding `value`.
pub fn answer(field: ObjectField, value: &[u8]) -> Frame {
    match field {
        ObjectField::Encoding => Frame::bulk(match as_int(value) {
            Some(_) => "int",
            None if value.len() <= EMBSTR_MAX => "embstr",
            None => "raw",
        }),
        ObjectField::RefCount => Frame::Integer(match as_int(value) {
            Some(n) if (0..SHARED_INTEGERS).contains(&n) => SHARED_REFCOUNT,
            _ => 1,
        }),
        ObjectField::IdleTime => Frame::Integer(0),
        ObjectField::Freq => Frame::error(
            "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_redis_thresholds() {
        let enc = |v: &[u8]| answer(ObjectField::Encoding, v);
        assert_eq!(enc(b"12345"), Frame::bulk("int"));
        assert_eq!(enc(b"-9223372036854775808"), Frame::bulk("int"));
        assert_eq!(enc(b"012"), Frame::bulk("embstr"));
        assert_eq!(enc(&[b'a'; 44]), Frame::bulk("embstr"));
        assert_eq!(enc(&[b'a'; 45]), Frame::bulk("raw"));
        assert_eq!(enc(b""), Frame::bulk("embstr"));
        assert_eq!(
            answer(ObjectField::RefCount, b"42"),
            Frame::Integer(SHARED_REFCOUNT)
        );
        assert_eq!(answer(ObjectField::RefCount, b"10000"), Frame::Integer(1));
        assert!(answer(ObjectField::Freq, b"x").is_error());
    }

    #[test]
    fn subcommand_errors() {
        let words = |w: &[&str]| -> Vec<Bytes> {
            w.iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect()
        };
        let err = |w: &[&str]| match parse(&words(w)) {
            Err(Frame::Error(e)) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(&["foo", "k"]),
            "ERR unknown subcommand 'foo'. Try OBJECT HELP."
        );
        assert_eq!(
            err(&["encoding"]),
            "ERR wrong number of arguments for 'object|encoding' command"
        );
        assert_eq!(
            err(&["help", "x"]),
            "ERR wrong number of arguments for 'object|help' command"
        );
        assert!(
            matches!(parse(&words(&["help"])), Ok(Plan::Reply(Frame::Array(l))) if l.len() == HELP.len())
        );
    }
}
