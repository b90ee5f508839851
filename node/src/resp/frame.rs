//! RESP values and their encoding, RESP2 or RESP3.

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Frame {
    Simple(Bytes),
    Error(Bytes),
    Integer(i64),
    Bulk(Bytes),
    /// `$-1` in RESP2, `_` in RESP3.
    Null,
    /// `*-1` in RESP2, `_` in RESP3.
    NullArray,
    Array(Vec<Frame>),
    /// RESP3 map; flattened to an array in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 boolean; `:1`/`:0` in RESP2.
    Boolean(bool),
    /// RESP3 verbatim string (`=`), for INFO; a bulk string in RESP2.
    Verbatim(Bytes),
}

impl Frame {
    pub fn ok() -> Frame {
        Frame::Simple(Bytes::from_static(b"OK"))
    }

    pub fn simple(s: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(s.as_bytes()))
    }

    /// An error reply; `msg` starts with its code (`ERR`, `WRONGPASS`, ...).
    pub fn error(msg: impl Into<String>) -> Frame {
        Frame::Error(Bytes::from(msg.into()))
    }

    pub fn bulk(b: impl Into<Bytes>) -> Frame {
        Frame::Bulk(b.into())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// Append the wire form of `self` to `out`.
    pub fn encode(&self, out: &mut BytesMut, resp3: bool) {
        match self {
            Frame::Simple(s) => line(out, b'+', s),
            Frame::Error(s) => line(out, b'-', s),
            Frame::Integer(n) => number(out, b':', *n),
            Frame::Bulk(b) => {
                number(out, b'$', b.len() as i64);
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Frame::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Frame::Array(items) => {
                number(out, b'*', items.len() as i64);
                for item in items {
                    item.encode(out, resp3);
                }
            }
            Frame::Map(pairs) => {
                if resp3 {
                    number(out, b'%', pairs.len() as i64);
                } else {
                    number(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode(out, resp3);
                    v.encode(out, resp3);
                }
            }
            Frame::Boolean(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" })
            }
            Frame::Boolean(b) => number(out, b':', *b as i64),
            Frame::Verbatim(b) if resp3 => {
                number(out, b'=', b.len() as i64 + 4);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Verbatim(b) => Frame::Bulk(b.clone()).encode(out, resp3),
        }
    }

    pub fn to_bytes(&self, resp3: bool) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out, resp3);
        out.freeze()
    }
}

fn line(out: &mut BytesMut, kind: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(kind);
    // A simple string or error cannot hold CR or LF; replace them rather than
    // emit a frame that desynchronises the client.
    if s.iter().any(|&c| c == b'\r' || c == b'\n') {
        out.extend(
            s.iter()
                .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
        );
    } else {
        out.extend_from_slice(s);
    }
    out.extend_from_slice(b"\r\n");
}

fn number(out: &mut BytesMut, kind: u8, n: i64) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    out.reserve(digits.len() + 3);
    out.put_u8(kind);
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}
