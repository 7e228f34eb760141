//! A minimal WebSocket client for the hot paths of the load generator.
//!
//! Why not tokio-tungstenite here: at a million deliveries per second on a machine the
//! server shares, every allocation and copy in the load generator is CPU taken from the
//! server. This client reads into one reusable buffer per connection and hands out
//! borrowed frame payloads, so a push costs a slice and a scan — no allocation, no
//! UTF-8 validation, no message object. It speaks only what the benchmark needs: the
//! client handshake, unmasked server frames (text, close, ping, fragmented text) and
//! masked client text frames. The `idle` scenario uses tokio-tungstenite instead, as a
//! real client would.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// WebSocket opcodes we handle.
pub(crate) mod op {
    /// Continuation of a fragmented message.
    pub(crate) const CONT: u8 = 0x0;
    /// Text message.
    pub(crate) const TEXT: u8 = 0x1;
    /// Close.
    pub(crate) const CLOSE: u8 = 0x8;
    /// Ping.
    pub(crate) const PING: u8 = 0x9;
    /// Pong.
    pub(crate) const PONG: u8 = 0xA;
}

/// Opens a TCP connection, optionally from a given local address.
pub(crate) async fn tcp_connect(
    target: SocketAddr,
    bind: Option<IpAddr>,
) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(target).await.with_context(|| format!("connect {target}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The read side: one growable buffer, frames parsed in place.
#[derive(Debug)]
pub(crate) struct WsReader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Reassembly of a fragmented message (the server does not fragment today).
    frag: Vec<u8>,
    frag_op: Option<u8>,
    /// Where the last fragmented message was reassembled (points into `frag`).
    frag_ready: bool,
}

/// One parsed frame: its opcode and where its payload is.
#[derive(Debug, Clone)]
pub(crate) struct FrameRef {
    /// Opcode (continuations are reassembled and reported with the first opcode).
    pub(crate) opcode: u8,
    range: Range<usize>,
    in_frag: bool,
}

/// The write side: masks client frames into a reusable buffer.
#[derive(Debug)]
pub(crate) struct WsWriter {
    wr: OwnedWriteHalf,
    out: Vec<u8>,
    mask: [u8; 4],
}

/// Connects and performs the client handshake. `read_buf` is the initial read buffer size.
pub(crate) async fn connect(
    target: SocketAddr,
    host: &str,
    path: &str,
    bind: Option<IpAddr>,
    read_buf: usize,
    mask_seed: u64,
) -> anyhow::Result<(WsReader, WsWriter)> {
    let stream = tcp_connect(target, bind).await?;
    let (rd, mut wr) = stream.into_split();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    wr.write_all(req.as_bytes()).await?;
    let mut reader = WsReader {
        rd,
        buf: vec![0; read_buf.max(1024)],
        start: 0,
        end: 0,
        frag: Vec::new(),
        frag_op: None,
        frag_ready: false,
    };
    let header_end = loop {
        if let Some(i) = memchr::memmem::find(&reader.buf[..reader.end], b"\r\n\r\n") {
            break i + 4;
        }
        if reader.fill().await? == 0 {
            bail!("connection closed during the WebSocket handshake");
        }
    };
    let head = &reader.buf[..header_end];
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        bail!("handshake refused: {}", String::from_utf8_lossy(line));
    }
    reader.start = header_end;
    // A cheap per-connection mask; the protocol needs one, not a secret one.
    let m = mask_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5_5A5A;
    let mask = (m as u32 | 1).to_le_bytes();
    Ok((reader, WsWriter { wr, out: Vec::with_capacity(256), mask }))
}

impl WsReader {
    /// Reads once from the socket into free buffer space. Returns 0 at end of stream.
    pub(crate) async fn fill(&mut self) -> anyhow::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < 2048 && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let n = self.rd.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Parses the next complete frame in the buffer, if any. Control frames and complete
    /// messages are returned; fragments are collected until the final one.
    pub(crate) fn next_frame(&mut self) -> anyhow::Result<Option<FrameRef>> {
        if self.frag_ready {
            self.frag_ready = false;
            self.frag.clear();
        }
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() < 2 {
                return Ok(None);
            }
            let fin = avail[0] & 0x80 != 0;
            let opcode = avail[0] & 0x0F;
            let masked = avail[1] & 0x80 != 0;
            let (len, mut hdr) = match avail[1] & 0x7F {
                126 => {
                    if avail.len() < 4 {
                        return Ok(None);
                    }
                    (u64::from(u16::from_be_bytes([avail[2], avail[3]])), 4usize)
                }
                127 => {
                    if avail.len() < 10 {
                        return Ok(None);
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&avail[2..10]);
                    (u64::from_be_bytes(b), 10usize)
                }
                n => (u64::from(n), 2usize),
            };
            let mask_at = hdr;
            if masked {
                hdr += 4;
            }
            let len = usize::try_from(len).context("frame too large")?;
            let total = hdr + len;
            if avail.len() < total {
                // Make sure the whole frame fits once read.
                if total > self.buf.len() - self.start {
                    let need = total + 4096;
                    if self.start > 0 {
                        self.buf.copy_within(self.start..self.end, 0);
                        self.end -= self.start;
                        self.start = 0;
                    }
                    if self.buf.len() < need {
                        self.buf.resize(need, 0);
                    }
                }
                return Ok(None);
            }
            let payload = self.start + hdr..self.start + total;
            if masked {
                let key = [
                    self.buf[self.start + mask_at],
                    self.buf[self.start + mask_at + 1],
                    self.buf[self.start + mask_at + 2],
                    self.buf[self.start + mask_at + 3],
                ];
                for (i, b) in self.buf[payload.clone()].iter_mut().enumerate() {
                    *b ^= key[i & 3];
                }
            }
            self.start += total;
            if opcode >= op::CLOSE {
                return Ok(Some(FrameRef { opcode, range: payload, in_frag: false }));
            }
            match (opcode, fin, self.frag_op) {
                (op::CONT, _, None) => bail!("continuation frame without a message"),
                (op::CONT, fin, Some(first)) => {
                    self.frag.extend_from_slice(&self.buf[payload]);
                    if fin {
                        self.frag_op = None;
                        self.frag_ready = true;
                        let range = 0..self.frag.len();
                        return Ok(Some(FrameRef { opcode: first, range, in_frag: true }));
                    }
                }
                (_, true, None) => return Ok(Some(FrameRef { opcode, range: payload, in_frag: false })),
                (_, false, None) => {
                    self.frag_op = Some(opcode);
                    self.frag.clear();
                    self.frag.extend_from_slice(&self.buf[payload]);
                }
                (_, _, Some(_)) => bail!("new message inside a fragmented one"),
            }
        }
    }

    /// The payload of a frame returned by [`Self::next_frame`].
    pub(crate) fn payload(&self, f: &FrameRef) -> &[u8] {
        if f.in_frag { &self.frag[f.range.clone()] } else { &self.buf[f.range.clone()] }
    }

    /// Reads until one complete text frame arrives and returns a copy of it (for replies
    /// during setup; answers heartbeats on the way).
    pub(crate) async fn read_text(&mut self, w: &mut WsWriter) -> anyhow::Result<Vec<u8>> {
        loop {
            while let Some(f) = self.next_frame()? {
                match f.opcode {
                    op::TEXT => {
                        let p = self.payload(&f);
                        if is_ping(p) {
                            w.send_text(PONG).await?;
                            continue;
                        }
                        return Ok(p.to_vec());
                    }
                    op::PING => {
                        let p = self.payload(&f).to_vec();
                        w.send(op::PONG, &p).await?;
                    }
                    op::CLOSE => bail!("closed: {}", close_reason(self.payload(&f))),
                    _ => {}
                }
            }
            if self.fill().await? == 0 {
                bail!("connection closed");
            }
        }
    }
}

/// The native heartbeat answer.
pub(crate) const PONG: &[u8] = br#"{"op":"pong"}"#;

/// True if `p` is the native heartbeat push.
pub(crate) fn is_ping(p: &[u8]) -> bool {
    p.starts_with(br#"{"push":"ping""#)
}

/// Renders a close frame's payload as `code reason`.
pub(crate) fn close_reason(p: &[u8]) -> String {
    if p.len() >= 2 {
        let code = u16::from_be_bytes([p[0], p[1]]);
        format!("{code} {}", String::from_utf8_lossy(&p[2..]))
    } else {
        "no code".to_owned()
    }
}

impl WsWriter {
    /// Appends one masked frame to the pending output (sent by [`Self::flush`]).
    pub(crate) fn push_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.out.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            self.out.push(0x80 | len as u8);
        } else if let Ok(l) = u16::try_from(len) {
            self.out.push(0x80 | 126);
            self.out.extend_from_slice(&l.to_be_bytes());
        } else {
            self.out.push(0x80 | 127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.out.extend_from_slice(&self.mask);
        let at = self.out.len();
        self.out.extend_from_slice(payload);
        let mask = self.mask;
        for (i, b) in self.out[at..].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
    }

    /// Appends a text frame whose payload is built by `f` directly in the output buffer
    /// (no intermediate copy), then masks it.
    pub(crate) fn push_text_with(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        // Reserve the longest header; fix it up once the length is known.
        let hdr_at = self.out.len();
        self.out.extend_from_slice(&[0u8; 14]);
        let body_at = self.out.len();
        f(&mut self.out);
        let len = self.out.len() - body_at;
        let mut hdr = [0u8; 14];
        hdr[0] = 0x80 | op::TEXT;
        let n = if len < 126 {
            hdr[1] = 0x80 | len as u8;
            2
        } else if let Ok(l) = u16::try_from(len) {
            hdr[1] = 0x80 | 126;
            hdr[2..4].copy_from_slice(&l.to_be_bytes());
            4
        } else {
            hdr[1] = 0x80 | 127;
            hdr[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        hdr[n..n + 4].copy_from_slice(&self.mask);
        let h = n + 4;
        // Move the body left so it follows the real header.
        self.out.copy_within(body_at..body_at + len, hdr_at + h);
        self.out.truncate(hdr_at + h + len);
        self.out[hdr_at..hdr_at + h].copy_from_slice(&hdr[..h]);
        let mask = self.mask;
        for (i, b) in self.out[hdr_at + h..].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
    }

    /// Writes everything pending in one go.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
            if self.out.capacity() > 1 << 20 {
                self.out = Vec::with_capacity(4096);
            }
        }
        Ok(())
    }

    /// Sends one frame now.
    pub(crate) async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        self.push_frame(opcode, payload);
        self.flush().await
    }

    /// Sends one text frame now.
    pub(crate) async fn send_text(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        self.send(op::TEXT, payload).await
    }

    /// Sends a close frame (best effort).
    pub(crate) async fn close(&mut self) {
        let _ = self.send(op::CLOSE, &1000u16.to_be_bytes()).await;
        let _ = self.wr.shutdown().await;
    }
}

/// Parses the unsigned integer at the start of `b`; returns it and the digits consumed.
pub(crate) fn parse_u64(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers() {
        assert_eq!(parse_u64(b"123,"), Some((123, 3)));
        assert_eq!(parse_u64(b"x"), None);
    }
}
