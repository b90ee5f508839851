//! A minimal blocking RESP client for the tools and benchmarks: one request, one
//! reply, bounded by timeouts; replies parsed by the node's own RESP parser.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use augur_node::resp::{next_frame, Frame, Limits};
use bytes::{Bytes, BytesMut};

const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A request as a RESP array of bulk strings.
pub fn request(args: &[&[u8]]) -> Frame {
    Frame::Array(
        args.iter()
            .map(|a| Frame::Bulk(Bytes::copy_from_slice(a)))
            .collect(),
    )
}

/// The text of a string reply, if it is one.
pub fn text(f: &Frame) -> Option<String> {
    match f {
        Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}

/// A minimal blocking client over a plain TcpStream, using the node's own RESP
/// parser, so a reply split across reads is handled correctly.
pub struct Resp {
    stream: TcpStream,
    input: BytesMut,
    chunk: Vec<u8>,
}

impl Resp {
    pub fn connect(port: u16) -> anyhow::Result<Resp> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            stream,
            input: BytesMut::new(),
            chunk: vec![0u8; 64 << 10],
        })
    }

    /// Send many requests at once (a pipeline); read their replies with `read_reply`.
    pub fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).context("writing requests")
    }

    pub fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Frame> {
        let mut out = BytesMut::new();
        request(args).encode(&mut out, false);
        self.stream.write_all(&out).context("writing a command")?;
        self.read_reply()
    }

    pub fn read_reply(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(f) = next_frame(&mut self.input, &Limits::default())
                .map_err(|e| anyhow!("bad reply from the server: {e}"))?
            {
                return Ok(f);
            }
            let n = self
                .stream
                .read(&mut self.chunk)
                .context("reading a reply")?;
            ensure!(n > 0, "connection closed by the server");
            self.input.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// One raw PING; Ok only for a `+PONG` reply.
pub fn ping(addr: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    ensure!(&buf == b"+PONG\r\n", "unexpected PING reply");
    Ok(())
}
