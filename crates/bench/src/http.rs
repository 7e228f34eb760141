//! A minimal keep-alive HTTP/1.1 client for `POST /api/publish`: one request in flight
//! per connection, buffers reused, only the status line and `content-length` parsed.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One keep-alive connection to the HTTP API.
#[derive(Debug)]
pub(crate) struct HttpConn {
    stream: TcpStream,
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
        let total = head_end + len;
        let result = if status == 200 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("HTTP {status}: {}", String::from_utf8_lossy(&self.buf[head_end..total])))
        };
        self.buf.copy_within(total..self.end, 0);
        self.end -= total;
        result
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
