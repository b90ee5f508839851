//! LCS: the longest common subsequence of two strings (Redis 7's options: LEN, IDX,
//! MINMATCHLEN, WITHMATCHLEN). The two values are read as two GETs, routed like any
//! key requests (other cores, other nodes), and combined here.
//!
//! The algorithm is Redis's dynamic programme, O(|a|·|b|) in time and memory, on the
//! connection's core; so its size is bounded (`MAX_CELLS`): a client must not be able
//! to stall a core or take gigabytes with two long strings.

use bytes::Bytes;

use super::args::{self, upper};
use super::{Combine, KeyOp, KeyPlan, KeyRequest, Plan};
use crate::resp::Frame;

/// Most cells of the table, (|a| + 1)·(|b| + 1): 64 MiB of u32 and tens of ms of work.
pub const MAX_CELLS: u64 = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LcsOpts {
    pub len: bool,
    pub idx: bool,
    pub min_match_len: u64,
    pub with_match_len: bool,
}

pub fn parse(args: &[Bytes]) -> Result<Plan, Frame> {
    let mut opts = LcsOpts::default();
    let mut i = 2;
    while i < args.len() {
        match upper(&args[i]).as_str() {
            "LEN" => opts.len = true,
            "IDX" => opts.idx = true,
            "WITHMATCHLEN" => opts.with_match_len = true,
            "MINMATCHLEN" if i + 1 < args.len() => {
                i += 1;
                // Negative means no minimum, as in Redis.
                opts.min_match_len = u64::try_from(args::int_arg(&args[i])?).unwrap_or(0);
            }
            _ => return Err(Frame::error(args::SYNTAX)),
        }
        i += 1;
    }
    if opts.len && opts.idx {
        return Err(Frame::error(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    let get = |key: &Bytes| KeyRequest {
        key: key.clone(),
        op: KeyOp::Get,
    };
    Ok(Plan::Keys(KeyPlan {
        reqs: vec![get(&args[0]), get(&args[1])],
        combine: Combine::Lcs(opts),
    }))
}

/// The reply, from the two GET replies (a missing key is an empty string).
pub fn reply(opts: LcsOpts, replies: Vec<Frame>) -> Frame {
    let mut values = Vec::with_capacity(2);
    for r in replies {
        match r {
            Frame::Bulk(b) => values.push(b),
            Frame::Null => values.push(Bytes::new()),
            // Redis's text for a key of another type (its own check, not WRONGTYPE).
            Frame::Error(e) if e.starts_with(b"WRONGTYPE") => {
                return Frame::error("ERR The specified keys must contain string values")
            }
            Frame::Error(e) => return Frame::Error(e),
            _ => return Frame::error("ERR internal: LCS read something that is not a string"),
        }
    }
    let [a, b] = <[Bytes; 2]>::try_from(values).unwrap_or_default();
    let cells = (a.len() as u64 + 1).saturating_mul(b.len() as u64 + 1);
    if cells > MAX_CELLS {
        return Frame::error(format!(
            "ERR LCS refused: the strings' lengths ({} and {}) need more than {MAX_CELLS} table cells",
            a.len(),
            b.len()
        ));
    }
    compute(&a, &b, opts)
}

fn compute(a: &[u8], b: &[u8], opts: LcsOpts) -> Frame {
    let (alen, blen) = (a.len(), b.len());
    let width = blen + 1;
    let mut dp = vec![0u32; (alen + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 1..=alen {
        for j in 1..=blen {
            dp[at(i, j)] = if a[i - 1] == b[j - 1] {
                dp[at(i - 1, j - 1)] + 1
            } else {
                dp[at(i - 1, j)].max(dp[at(i, j - 1)])
            };
        }
    }
    let total = dp[at(alen, blen)] as usize;
    if opts.len {
        return Frame::Integer(total as i64);
    }
    // Walk back from the end, as Redis does: the string, and the matching ranges
    // (last ones first), each emitted when it can grow no further.
    let mut result = vec![0u8; total];
    let mut matches = Vec::new();
    let (mut i, mut j, mut idx) = (alen, blen, total);
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (alen, 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[idx - 1] = a[i - 1];
            if a_start == alen {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if dp[at(i - 1, j)] > dp[at(i, j - 1)] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != alen {
                emit = true;
            }
        }
        if emit {
            let len = (a_end - a_start + 1) as u64;
            if opts.idx && (opts.min_match_len == 0 || len >= opts.min_match_len) {
                let range = |s: usize, e: usize| {
                    Frame::Array(vec![Frame::Integer(s as i64), Frame::Integer(e as i64)])
                };
                let mut m = vec![range(a_start, a_end), range(b_start, b_end)];
                if opts.with_match_len {
                    m.push(Frame::Integer(len as i64));
                }
                matches.push(Frame::Array(m));
            }
            a_start = alen;
        }
    }
    if opts.idx {
        return Frame::Map(vec![
            (
                Frame::Bulk(Bytes::from_static(b"matches")),
                Frame::Array(matches),
            ),
            (
                Frame::Bulk(Bytes::from_static(b"len")),
                Frame::Integer(total as i64),
            ),
        ]);
    }
    Frame::Bulk(Bytes::from(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn opts(words: &[&str]) -> LcsOpts {
        let mut args = vec![b("k1"), b("k2")];
        args.extend(words.iter().map(|w| b(w)));
        match parse(&args) {
            Ok(Plan::Keys(KeyPlan {
                combine: Combine::Lcs(o),
                reqs,
            })) => {
                assert_eq!(reqs.len(), 2);
                o
            }
            other => panic!("{other:?}"),
        }
    }

    fn lcs(a: &str, b_: &str, o: LcsOpts) -> Frame {
        reply(o, vec![Frame::Bulk(b(a)), Frame::Bulk(b(b_))])
    }

    fn range(s: i64, e: i64) -> Frame {
        Frame::Array(vec![Frame::Integer(s), Frame::Integer(e)])
    }

    /// The example of Redis's documentation: ohmytext / mynewtext.
    #[test]
    fn redis_documentation_example() {
        let (a, c) = ("ohmytext", "mynewtext");
        assert_eq!(lcs(a, c, opts(&[])), Frame::Bulk(b("mytext")));
        assert_eq!(lcs(a, c, opts(&["LEN"])), Frame::Integer(6));
        let idx = lcs(a, c, opts(&["IDX"]));
        let expected = |with_len: bool, min: bool| {
            let m = |r1: Frame, r2: Frame, len: i64| {
                let mut v = vec![r1, r2];
                if with_len {
                    v.push(Frame::Integer(len));
                }
                Frame::Array(v)
            };
            let mut matches = vec![m(range(4, 7), range(5, 8), 4)];
            if !min {
                matches.push(m(range(2, 3), range(0, 1), 2));
            }
            Frame::Map(vec![
                (Frame::Bulk(b("matches")), Frame::Array(matches)),
                (Frame::Bulk(b("len")), Frame::Integer(6)),
            ])
        };
        assert_eq!(idx, expected(false, false));
        assert_eq!(
            lcs(a, c, opts(&["IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"])),
            expected(true, true)
        );
    }

    #[test]
    fn missing_keys_are_empty_and_errors_pass_through() {
        assert_eq!(
            reply(opts(&[]), vec![Frame::Null, Frame::Bulk(b("abc"))]),
            Frame::Bulk(Bytes::new())
        );
        assert_eq!(
            reply(opts(&["LEN"]), vec![Frame::Null, Frame::Null]),
            Frame::Integer(0)
        );
        let wrongtype =
            Frame::error("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert_eq!(
            reply(opts(&[]), vec![Frame::Bulk(b("a")), wrongtype]),
            Frame::error("ERR The specified keys must contain string values")
        );
        let down = Frame::error("CLUSTERDOWN fragment 3: owner node 2 unreachable");
        assert_eq!(reply(opts(&[]), vec![down.clone(), Frame::Null]), down);
    }

    #[test]
    fn options_are_checked() {
        let args = |w: &[&str]| {
            let mut v = vec![b("k1"), b("k2")];
            v.extend(w.iter().map(|x| b(x)));
            parse(&v).err()
        };
        assert_eq!(
            args(&["LEN", "IDX"]),
            Some(Frame::error(
                "ERR If you want both the length and indexes, please just use IDX."
            ))
        );
        assert_eq!(args(&["BOGUS"]), Some(Frame::error(args::SYNTAX)));
        assert_eq!(args(&["MINMATCHLEN"]), Some(Frame::error(args::SYNTAX)));
        assert_eq!(
            args(&["MINMATCHLEN", "x"]),
            Some(Frame::error(args::NOT_INTEGER))
        );
        assert_eq!(opts(&["MINMATCHLEN", "-5"]).min_match_len, 0);
    }

    /// At the bound it answers; one past it is refused, without building the table.
    #[test]
    fn the_table_is_bounded() {
        let side = 4095; // (4095 + 1)^2 = 2^24 cells: allowed
        let long = "a".repeat(side);
        assert_eq!(
            lcs(&long, &long, opts(&["LEN"])),
            Frame::Integer(side as i64)
        );
        let longer = "a".repeat(side + 1);
        match lcs(&long, &longer, opts(&["LEN"])) {
            Frame::Error(e) => assert!(e.starts_with(b"ERR LCS refused"), "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
}
