//! A minimal keep-alive HTTP/1.1 client for `POST /api/publish` (and, for the `login`
//! scenario, any JSON `POST`): one request in flight per connection, buffers reused, only
//! the status line and `content-length` parsed.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One keep-alive connection to the HTTP API.
#[derive(Debug)]
pub(crate) struct HttpConn {
    stream: TcpStream,
    host: String,
    prefix: Vec<u8>,
    req: Vec<u8>,
    body: Vec<u8>,
    buf: Vec<u8>,
    end: usize,
}

impl HttpConn {
    /// Connects.
    pub(crate) async fn connect(addr: SocketAddr, host: &str, key: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let prefix = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: "
        )
        .into_bytes();
        Ok(Self {
            stream,
            host: host.to_owned(),
            prefix,
            req: Vec::with_capacity(512),
            body: Vec::new(),
            buf: vec![0; 4096],
            end: 0,
        })
    }

    /// Publishes `{"channel":channel,"data":<data>}` where `data` writes the data JSON.
    /// Returns an error for any status but 200.
    pub(crate) async fn publish(
        &mut self,
        channel: &str,
        data: impl FnOnce(&mut Vec<u8>),
    ) -> anyhow::Result<()> {
        self.body.clear();
        self.body.extend_from_slice(br#"{"channel":""#);
        self.body.extend_from_slice(channel.as_bytes());
        self.body.extend_from_slice(br#"","data":"#);
        data(&mut self.body);
        self.body.push(b'}');
        self.req.clear();
        self.req.extend_from_slice(&self.prefix);
        self.req.extend_from_slice(self.body.len().to_string().as_bytes());
        self.req.extend_from_slice(b"\r\n\r\n");
        self.req.extend_from_slice(&self.body);
        self.stream.write_all(&self.req).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> anyhow::Result<()> {
        let (status, head_end, total) = self.read_reply().await?;
        let result = if status == 200 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("HTTP {status}: {}", String::from_utf8_lossy(&self.buf[head_end..total])))
        };
        self.consume(total);
        result
    }

    /// `POST path` with a JSON body and no credentials; returns the status and the body.
    pub(crate) async fn post_json(&mut self, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.req.clear();
        self.req.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                self.host,
                body.len()
            )
            .as_bytes(),
        );
        self.req.extend_from_slice(body);
        self.stream.write_all(&self.req).await?;
        let (status, head_end, total) = self.read_reply().await?;
        let body = self.buf[head_end..total].to_vec();
        self.consume(total);
        Ok((status, body))
    }

    /// Reads one response; returns its status, where its body starts and where it ends
    /// in `buf` (the caller then calls [`Self::consume`]).
    async fn read_reply(&mut self) -> anyhow::Result<(u16, usize, usize)> {
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&self.buf[..self.end], b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more().await?;
        };
        let head = &self.buf[..head_end];
        let status = head
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .context("malformed status line")?;
        let mut len = 0usize;
        for line in head.split(|&b| b == b'\n') {
            if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
                len = std::str::from_utf8(&line[15..])
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .context("bad content-length")?;
            } else if line.len() > 18 && line[..18].eq_ignore_ascii_case(b"transfer-encoding:") {
                bail!("chunked responses are not supported by the bench client");
            }
        }
        while self.end < head_end + len {
            self.read_more().await?;
        }
        Ok((status, head_end, head_end + len))
    }

    /// Drops the first `total` bytes of the read buffer (one handled response).
    fn consume(&mut self, total: usize) {
        self.buf.copy_within(total..self.end, 0);
        self.end -= total;
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        self.end += n;
        Ok(())
    }
}
