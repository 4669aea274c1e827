//! The subcommands that ask a running node through its admin listener (`healthcheck`,
//! `inspect`, `uploads`): where that listener is, and one plain HTTP/1.1 GET to it. Plain
//! `std` sockets: the image has no curl, and a probe must not need a runtime.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Which node to ask.
#[derive(Debug, Args, Clone)]
pub struct AdminTarget {
    /// The node's admin listener, HOST:PORT. Default: this machine and the configured
    /// server.admin_port (from --config and TUSK_SERVER__ADMIN_PORT, as `serve` reads them).
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_addr: Option<String>,
    /// The configuration file the node was started with, to find its admin port.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub timeout: Duration,
}

/// An answer of the admin listener.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl AdminTarget {
    fn address(&self) -> Result<SocketAddr> {
        if let Some(addr) = &self.admin_addr {
            return addr
                .to_socket_addrs()
                .with_context(|| format!("--admin-addr {addr}"))?
                .next()
                .with_context(|| format!("--admin-addr {addr} resolves to nothing"));
        }
        let server = crate::load_config(self.config.as_deref(), Vec::new())?
            .config
            .server;
        // A listener on every address is reached on loopback.
        let host: IpAddr = match server.admin_host.parse() {
            Ok(IpAddr::V4(v4)) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            Ok(IpAddr::V6(v6)) if v6.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            Ok(ip) => ip,
            Err(_) => {
                return (server.admin_host.as_str(), server.admin_port)
                    .to_socket_addrs()
                    .with_context(|| format!("server.admin_host {}", server.admin_host))?
                    .next()
                    .context("server.admin_host resolves to nothing")
            }
        };
        Ok(SocketAddr::new(host, server.admin_port))
    }

    /// GETs `path` (with its query) from the admin listener.
    pub fn get(&self, path: &str) -> Result<Answer> {
        let addr = self.address()?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)
            .with_context(|| format!("connecting to the admin listener at {addr}"))?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        // Admin answers are small; a bound keeps a wrong port from filling memory.
        let mut raw = Vec::new();
        stream
            .take(16 << 20)
            .read_to_end(&mut raw)
            .with_context(|| format!("reading the answer of {addr}"))?;
        parse(&raw).with_context(|| format!("the answer of {addr}{path}"))
    }
}

fn parse(raw: &[u8]) -> Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP answer");
    };
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("no status line")?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("truncated chunk")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).context("truncated chunk")?);
        rest = after.get(size + 2..).context("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_plain_and_chunked() {
        let plain = parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 6\r\n\r\nnot ok")
            .expect("parsed");
        assert_eq!((plain.status, plain.body.as_str()), (503, "not ok"));
        let chunked = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("parsed");
        assert_eq!((chunked.status, chunked.body.as_str()), (200, "abcde"));
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab").is_err());
    }
}
