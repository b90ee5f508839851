//! Parsing RESP without copying: a complete frame is first measured in the read
//! buffer, then split off and frozen, and every argument is a `Bytes` slice of it.

use bytes::{Bytes, BytesMut};

use super::frame::Frame;

/// Limits on what a client may send, as Redis's `proto-max-bulk-len` and friends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk_len: usize,
    pub max_inline_len: usize,
    pub max_multibulk_len: usize,
    /// The client has not authenticated yet (and a password is set): only small
    /// requests, as Redis 7 (`authRequired` in `processMultibulkBuffer`).
    pub unauthenticated: bool,
}

/// Before AUTH a request may have at most this many arguments (Redis 7).
pub const UNAUTHENTICATED_MAX_ARGS: i64 = 10;
/// Before AUTH a bulk argument may have at most this many bytes (Redis 7).
pub const UNAUTHENTICATED_MAX_BULK: i64 = 16 << 10;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 << 20,
            max_inline_len: 64 << 10,
            // Redis rejects a multibulk count above INT_MAX; the query buffer limit
            // bounds what a large count can make us hold.
            max_multibulk_len: i32::MAX as usize,
            unauthenticated: false,
        }
    }
}

/// A protocol violation: the connection gets `-ERR Protocol error: ...` and is closed,
/// as Redis does, because the byte stream can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub &'static str);

/// Find `\r\n` at or after `from`; the index of `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    let mut i = 0;
    while let Some(p) = hay[i..].iter().position(|&c| c == b'\r') {
        let at = i + p;
        if at + 1 >= hay.len() {
            return None;
        }
        if hay[at + 1] == b'\n' {
            return Some(from + at);
        }
        i = at + 1;
    }
    None
}

/// What `str::parse::<i64>` accepts (optional sign, digits, no overflow), without
/// the UTF-8 check and generic parser that cost ~100 instructions per header.
fn parse_int(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let (negative, rest) = match digits[0] {
        b'-' => (true, &digits[1..]),
        b'+' => (false, &digits[1..]),
        _ => (false, digits),
    };
    if rest.is_empty() {
        return None;
    }
    // Accumulated negatively, so i64::MIN parses too.
    let mut n: i64 = 0;
    for &c in rest {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    if negative {
        Some(n)
    } else {
        n.checked_neg()
    }
}

/// Reads a `<kind><int>\r\n` header at `at`: (value, offset after it), or None if
/// incomplete. `max_digits` stops a client from streaming an endless number.
fn header(buf: &[u8], at: usize, err: &'static str) -> Result<Option<(i64, usize)>, ProtocolError> {
    match find_crlf(buf, at + 1) {
        Some(cr) => parse_int(&buf[at + 1..cr])
            .map(|n| Some((n, cr + 2)))
            .ok_or(ProtocolError(err)),
        None if buf.len() - at > 32 => Err(ProtocolError(err)),
        None => Ok(None),
    }
}

/// Split an inline command into words, honouring "double" and 'single' quotes with
/// the escapes redis-cli and Redis's sdssplitargs understand.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut word = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError("unbalanced quotes in request"));
                    };
                    i += 1;
                    if c == q {
                        break;
                    }
                    if c == b'\\' && q == b'"' {
                        let Some(&e) = line.get(i) else {
                            return Err(ProtocolError("unbalanced quotes in request"));
                        };
                        i += 1;
                        word.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'a' => 7,
                            b'b' => 8,
                            b'x' => {
                                let hex =
                                    line.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                                    Some(v) => {
                                        i += 2;
                                        v
                                    }
                                    None => b'x',
                                }
                            }
                            other => other,
                        });
                    } else if c == b'\\' && line.get(i) == Some(&b'\'') {
                        word.push(b'\'');
                        i += 1;
                    } else {
                        word.push(c);
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError("unbalanced quotes in request"));
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// Where a partial request got to, so the next read resumes there instead of
/// re-parsing from its first byte (which made a request in many reads quadratic).
#[derive(Debug, Default)]
enum Partial {
    /// Nothing of the next request examined yet.
    #[default]
    Fresh,
    /// An inline request: no `\n` in the first `searched` bytes.
    Inline { searched: usize },
    /// A multibulk request: `args` done, `remaining` to go, the next starts at `at`;
    /// `bulk` is the `(start, len)` of one whose header is parsed but bytes are not all here.
    Multibulk {
        remaining: usize,
        at: usize,
        args: Vec<(usize, usize)>,
        bulk: Option<(usize, usize)>,
    },
}

/// Parses requests off the front of a connection's read buffer, keeping its place in
/// a partial request across reads: a bulk's length is known from its header, so its
/// bytes are waited for, not scanned. The caller only appends to the buffer between
/// calls (and must start a new parser if it changes it otherwise).
#[derive(Debug, Default)]
pub struct RequestParser {
    partial: Partial,
    scanned: u64,
}

impl RequestParser {
    pub fn new() -> RequestParser {
        RequestParser::default()
    }

    /// Bytes examined so far (headers, inline lines): the parser's work, for tests.
    pub fn bytes_scanned(&self) -> u64 {
        self.scanned
    }

    /// Whether a request has begun but is not complete.
    pub fn in_request(&self, buf: &[u8]) -> bool {
        !matches!(self.partial, Partial::Fresh) || !buf.is_empty()
    }

    /// Take the next complete request off the front of `buf`, as argument slices.
    /// `Ok(None)` means more bytes are needed; an empty vector is an empty request
    /// (a blank inline line or `*0`), which Redis silently ignores. After an error the
    /// stream cannot be trusted: the connection should be closed.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if matches!(self.partial, Partial::Fresh) {
            match buf.first() {
                None => return Ok(None),
                Some(b'*') => {
                    let Some((count, at)) = self.header(buf, 0, "invalid multibulk length")? else {
                        return Ok(None);
                    };
                    if count > limits.max_multibulk_len as i64 {
                        return Err(ProtocolError("invalid multibulk length"));
                    }
                    if limits.unauthenticated && count > UNAUTHENTICATED_MAX_ARGS {
                        return Err(ProtocolError("unauthenticated multibulk length"));
                    }
                    let remaining = count.max(0) as usize;
                    self.partial = Partial::Multibulk {
                        remaining,
                        at,
                        args: Vec::with_capacity(remaining.min(1024)),
                        bulk: None,
                    };
                }
                Some(_) => self.partial = Partial::Inline { searched: 0 },
            }
        }
        match std::mem::take(&mut self.partial) {
            Partial::Fresh => Ok(None),
            Partial::Inline { searched } => self.inline(buf, searched, limits),
            Partial::Multibulk {
                remaining,
                at,
                args,
                bulk,
            } => self.multibulk(buf, remaining, at, args, bulk, limits),
        }
    }

    fn header(
        &mut self,
        buf: &[u8],
        at: usize,
        err: &'static str,
    ) -> Result<Option<(i64, usize)>, ProtocolError> {
        // A header is at most 32 bytes (else an error), so re-reading an incomplete
        // one on the next read is bounded work.
        let parsed = header(buf, at, err)?;
        let end = parsed.map_or(buf.len(), |(_, next)| next);
        self.scanned += (end - at) as u64;
        Ok(parsed)
    }

    fn inline(
        &mut self,
        buf: &mut BytesMut,
        searched: usize,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let from = searched.min(buf.len());
        self.scanned += (buf.len() - from) as u64;
        let Some(nl) = buf[from..]
            .iter()
            .position(|&c| c == b'\n')
            .map(|p| p + from)
        else {
            if buf.len() > limits.max_inline_len {
                return Err(ProtocolError("too big inline request"));
            }
            self.partial = Partial::Inline {
                searched: buf.len(),
            };
            return Ok(None);
        };
        if nl > limits.max_inline_len {
            return Err(ProtocolError("too big inline request"));
        }
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let words = split_inline(&buf[..line_end])?;
        if limits.unauthenticated && words.len() as i64 > UNAUTHENTICATED_MAX_ARGS {
            return Err(ProtocolError("unauthenticated multibulk length"));
        }
        let _ = buf.split_to(nl + 1);
        Ok(Some(words.into_iter().map(Bytes::from).collect()))
    }

    fn multibulk(
        &mut self,
        buf: &mut BytesMut,
        mut remaining: usize,
        mut at: usize,
        mut args: Vec<(usize, usize)>,
        mut bulk: Option<(usize, usize)>,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        while remaining > 0 {
            let (start, len) = match bulk {
                Some(b) => b,
                None => {
                    match buf.get(at) {
                        None => break,
                        Some(b'$') => {}
                        Some(_) => return Err(ProtocolError("expected '$'")),
                    }
                    let Some((len, start)) = self.header(buf, at, "invalid bulk length")? else {
                        break;
                    };
                    if len < 0 || len as u64 > limits.max_bulk_len as u64 {
                        return Err(ProtocolError("invalid bulk length"));
                    }
                    if limits.unauthenticated && len > UNAUTHENTICATED_MAX_BULK {
                        return Err(ProtocolError("unauthenticated bulk length"));
                    }
                    (start, len as usize)
                }
            };
            let end = start + len;
            if buf.len() < end + 2 {
                bulk = Some((start, len));
                break;
            }
            bulk = None;
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not terminated by CRLF"));
            }
            args.push((start, end));
            at = end + 2;
            remaining -= 1;
        }
        if remaining > 0 {
            self.partial = Partial::Multibulk {
                remaining,
                at,
                args,
                bulk,
            };
            return Ok(None);
        }
        let frozen = buf.split_to(at).freeze();
        Ok(Some(
            args.into_iter().map(|(s, e)| frozen.slice(s..e)).collect(),
        ))
    }
}

/// Take the next complete request off the front of `buf` with a fresh parser (no
/// state kept between calls: for one-off parsing; connections use [`RequestParser`]).
pub fn next_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    RequestParser::new().next(buf, limits)
}

/// Measure any RESP2/RESP3 value at `at` (replies, and the round-trip tests).
fn measure_frame(
    buf: &[u8],
    at: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<usize>, ProtocolError> {
    if depth > 64 {
        return Err(ProtocolError("nesting too deep"));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' => Ok(find_crlf(buf, at + 1).map(|cr| cr + 2)),
        b'$' | b'=' => {
            let Some((len, start)) = header(buf, at, "invalid bulk length")? else {
                return Ok(None);
            };
            if len == -1 && kind == b'$' {
                return Ok(Some(start));
            }
            if len < 0 || len as u64 > limits.max_bulk_len as u64 {
                return Err(ProtocolError("invalid bulk length"));
            }
            let end = start + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not terminated by CRLF"));
            }
            Ok(Some(end + 2))
        }
        b'*' | b'%' | b'~' => {
            let Some((count, mut next)) = header(buf, at, "invalid multibulk length")? else {
                return Ok(None);
            };
            if count == -1 && kind == b'*' {
                return Ok(Some(next));
            }
            if count < 0 || count > limits.max_multibulk_len as i64 {
                return Err(ProtocolError("invalid multibulk length"));
            }
            let items = if kind == b'%' { 2 * count } else { count };
            for _ in 0..items {
                match measure_frame(buf, next, limits, depth + 1)? {
                    Some(n) => next = n,
                    None => return Ok(None),
                }
            }
            Ok(Some(next))
        }
        _ => Err(ProtocolError("unknown frame type")),
    }
}

fn build_frame(b: &Bytes, at: usize) -> Result<(Frame, usize), ProtocolError> {
    let cr = find_crlf(b, at + 1).ok_or(ProtocolError("truncated frame"))?;
    let body = b.slice(at + 1..cr);
    let next = cr + 2;
    let int = || parse_int(&body).ok_or(ProtocolError("invalid integer"));
    Ok(match b[at] {
        b'+' => (Frame::Simple(body), next),
        b'-' => (Frame::Error(body), next),
        b':' => (Frame::Integer(int()?), next),
        b'_' => (Frame::Null, next),
        b'#' => match &body[..] {
            b"t" => (Frame::Boolean(true), next),
            b"f" => (Frame::Boolean(false), next),
            _ => return Err(ProtocolError("invalid boolean")),
        },
        b'$' if int()? == -1 => (Frame::Null, next),
        b'$' => {
            let end = next + int()? as usize;
            (Frame::Bulk(b.slice(next..end)), end + 2)
        }
        b'=' => {
            let end = next + int()? as usize;
            let text = b.slice(next..end);
            let text = if text.len() >= 4 && text[3] == b':' {
                text.slice(4..)
            } else {
                text
            };
            (Frame::Verbatim(text), end + 2)
        }
        b'*' if int()? == -1 => (Frame::NullArray, next),
        b'*' | b'~' => {
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..int()? {
                let (f, n) = build_frame(b, at)?;
                items.push(f);
                at = n;
            }
            (Frame::Array(items), at)
        }
        b'%' => {
            let mut pairs = Vec::new();
            let mut at = next;
            for _ in 0..int()? {
                let (k, n) = build_frame(b, at)?;
                let (v, n) = build_frame(b, n)?;
                pairs.push((k, v));
                at = n;
            }
            (Frame::Map(pairs), at)
        }
        _ => return Err(ProtocolError("unknown frame type")),
    })
}

/// Take the next complete RESP value off the front of `buf`.
pub fn next_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    let Some(len) = measure_frame(buf, 0, limits, 0)? else {
        return Ok(None);
    };
    let frozen = buf.split_to(len).freeze();
    Ok(Some(build_frame(&frozen, 0)?.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        next_request(&mut BytesMut::from(bytes), &Limits::default())
    }

    #[test]
    fn multibulk_inline_and_partial() {
        assert_eq!(
            req(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap().unwrap(),
            vec![Bytes::from("GET"), Bytes::from("k")]
        );
        assert_eq!(req(b"*2\r\n$3\r\nGET\r\n$1\r\n").unwrap(), None);
        assert_eq!(
            req(b"set \"a b\" 'c'\r\n").unwrap().unwrap(),
            vec![Bytes::from("set"), Bytes::from("a b"), Bytes::from("c")]
        );
        assert_eq!(req(b"\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
    }

    #[test]
    fn bad_input_gets_redis_error_texts() {
        assert_eq!(req(b"*x\r\n").unwrap_err().0, "invalid multibulk length");
        assert_eq!(req(b"*1\r\n+a\r\n").unwrap_err().0, "expected '$'");
        assert_eq!(req(b"*1\r\n$-5\r\n").unwrap_err().0, "invalid bulk length");
        assert_eq!(
            req(b"set \"a\r\n").unwrap_err().0,
            "unbalanced quotes in request"
        );
        let small = Limits {
            max_bulk_len: 4,
            ..Limits::default()
        };
        let mut b = BytesMut::from(&b"*1\r\n$5\r\nhello\r\n"[..]);
        assert_eq!(
            next_request(&mut b, &small).unwrap_err().0,
            "invalid bulk length"
        );
        let inline = Limits {
            max_inline_len: 8,
            ..Limits::default()
        };
        let mut b = BytesMut::from(&b"aaaaaaaaaaaaaaaaaaaaaaaa"[..]);
        assert_eq!(
            next_request(&mut b, &inline).unwrap_err().0,
            "too big inline request"
        );
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let mut b = BytesMut::from(&b"PING\r\n*1\r\n$4\r\nPING\r\nECHO x\r\n"[..]);
        let l = Limits::default();
        let mut names = vec![];
        while let Some(r) = next_request(&mut b, &l).unwrap() {
            names.push(r[0].clone());
        }
        assert_eq!(names, vec!["PING", "PING", "ECHO"]);
        assert!(b.is_empty());
    }

    /// Feed `wire` to one parser in `read`-byte pieces, as a connection would; the
    /// requests and the bytes the parser examined.
    fn feed(wire: &[u8], read: usize, limits: &Limits) -> (Vec<Vec<Bytes>>, u64) {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(read) {
            buf.extend_from_slice(piece);
            while let Some(r) = parser.next(&mut buf, limits).unwrap() {
                out.push(r);
            }
        }
        assert!(buf.is_empty());
        (out, parser.bytes_scanned())
    }

    #[test]
    fn big_bulk_in_small_reads_is_not_rescanned() {
        let len = 64 << 20;
        let mut wire = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n").into_bytes();
        wire.resize(wire.len() + len, b'v');
        wire.extend_from_slice(b"\r\n");
        let (reqs, scanned) = feed(&wire, 4096, &Limits::default());
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0][2].len(), len);
        // Only the headers are read, once each (plus a partial one per read at most).
        assert!(scanned < 4096, "{scanned} bytes scanned for a 64 MiB bulk");
    }

    #[test]
    fn many_args_in_small_reads_is_linear() {
        // 1.2M one-byte arguments in 8 MiB: re-parsing from byte 0 on every 4 KiB read
        // examined ~8 GB here.
        let count = 1_200_000;
        let mut wire = format!("*{count}\r\n").into_bytes();
        for _ in 0..count {
            wire.extend_from_slice(b"$1\r\na\r\n");
        }
        let (reqs, scanned) = feed(&wire, 4096, &Limits::default());
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].len(), count);
        assert!(
            scanned <= 2 * wire.len() as u64,
            "{scanned} bytes scanned for {} bytes of input",
            wire.len()
        );
        // Inline requests are searched once too.
        let mut inline = vec![b'x'; 60 << 10];
        inline.extend_from_slice(b"\r\n");
        let (reqs, scanned) = feed(&inline, 16, &Limits::default());
        assert_eq!(reqs.len(), 1);
        assert!(scanned <= 2 * inline.len() as u64, "{scanned}");
    }

    #[test]
    fn before_auth_only_small_requests() {
        let unauth = Limits {
            unauthenticated: true,
            ..Limits::default()
        };
        let mut eleven = b"*11\r\n".to_vec();
        let mut b = BytesMut::from(&eleven[..]);
        assert_eq!(
            next_request(&mut b, &unauth).unwrap_err().0,
            "unauthenticated multibulk length"
        );
        for _ in 0..11 {
            eleven.extend_from_slice(b"$1\r\na\r\n");
        }
        let mut b = BytesMut::from(&eleven[..]);
        assert_eq!(
            next_request(&mut b, &Limits::default())
                .unwrap()
                .unwrap()
                .len(),
            11
        );
        // The bulk header alone is refused: nothing of it is buffered.
        let mut b = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"[..]);
        assert_eq!(
            next_request(&mut b, &unauth).unwrap_err().0,
            "unauthenticated bulk length"
        );
        let mut ok = b"*2\r\n$4\r\nAUTH\r\n$16384\r\n".to_vec();
        ok.resize(ok.len() + 16384, b'p');
        ok.extend_from_slice(b"\r\n");
        let mut b = BytesMut::from(&ok[..]);
        assert_eq!(next_request(&mut b, &unauth).unwrap().unwrap().len(), 2);
        let mut b = BytesMut::from(&b"a b c d e f g h i j k\r\n"[..]);
        assert_eq!(
            next_request(&mut b, &unauth).unwrap_err().0,
            "unauthenticated multibulk length"
        );
    }

    fn frame_strategy() -> impl Strategy<Value = Frame> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from);
        let line = "[a-zA-Z0-9 ]{0,20}".prop_map(Bytes::from);
        let leaf = prop_oneof![
            line.clone().prop_map(Frame::Simple),
            line.prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            bytes.prop_map(Frame::Bulk),
            Just(Frame::Null),
            any::<bool>().prop_map(Frame::Boolean),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let l = Limits::default();
            let mut b = BytesMut::from(&data[..]);
            // Either requests, a need for more bytes, or a clear protocol error.
            while let Ok(Some(_)) = next_request(&mut b, &l) {}
            let mut b = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = next_frame(&mut b, &l) {}
        }

        #[test]
        fn encode_parse_round_trip(frame in frame_strategy()) {
            let wire = frame.to_bytes(true);
            let mut b = BytesMut::from(&wire[..]);
            let parsed = next_frame(&mut b, &Limits::default()).unwrap().unwrap();
            prop_assert_eq!(parsed, frame);
            prop_assert!(b.is_empty());
        }

        #[test]
        fn resumed_parsing_equals_one_shot(
            reqs in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..6),
                1..8,
            ),
            inline_word in "[a-z]{1,8}",
            read in 1usize..64,
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (i, args) in reqs.iter().enumerate() {
                if i % 3 == 2 {
                    // An inline request between the multibulk ones.
                    wire.extend_from_slice(format!("{inline_word} x\r\n").as_bytes());
                    expected.push(vec![Bytes::from(inline_word.clone()), Bytes::from("x")]);
                }
                let frame = Frame::Array(args.iter().map(|a| Frame::Bulk(Bytes::from(a.clone()))).collect());
                wire.extend_from_slice(&frame.to_bytes(false));
                expected.push(args.iter().map(|a| Bytes::from(a.clone())).collect());
            }
            let (got, scanned) = feed(&wire, read, &Limits::default());
            prop_assert_eq!(got, expected);
            prop_assert!(scanned <= 2 * wire.len() as u64);
        }

        #[test]
        fn any_bytes_in_pieces_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            read in 1usize..32,
        ) {
            let mut parser = RequestParser::new();
            let mut buf = BytesMut::new();
            'feed: for piece in data.chunks(read) {
                buf.extend_from_slice(piece);
                loop {
                    match parser.next(&mut buf, &Limits::default()) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }

        #[test]
        fn split_anywhere_is_incomplete_not_wrong(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5),
            cut in 0usize..200,
        ) {
            let frame = Frame::Array(args.iter().map(|a| Frame::Bulk(Bytes::from(a.clone()))).collect());
            let wire = frame.to_bytes(false);
            let cut = cut % wire.len();
            let mut b = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(next_request(&mut b, &Limits::default()).unwrap(), None);
            b.extend_from_slice(&wire[cut..]);
            let got = next_request(&mut b, &Limits::default()).unwrap().unwrap();
            prop_assert_eq!(got, args.into_iter().map(Bytes::from).collect::<Vec<_>>());
        }
    }

    #[test]
    fn parse_int_agrees_with_the_standard_parser() {
        let cases = [
            "0",
            "7",
            "-1",
            "+5",
            "-",
            "+",
            "",
            "12a",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "00012",
            "-0",
            " 1",
            "1 ",
            "99999999999999999999",
            "+-1",
        ];
        for c in cases {
            assert_eq!(parse_int(c.as_bytes()), c.parse::<i64>().ok(), "{c:?}");
        }
    }
}
