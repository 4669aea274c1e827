//! Slow and stalled clients cannot hold a node's resources forever, and a stalled body still
//! commits what it sent.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tusk_tests::conformance::util::Ctx;
use tusk_tests::harness::{FsEmbedded, TestServer};

/// A client that trickles its request headers one byte at a time (slow loris) is cut off
/// after the header read timeout, well before it finishes.
#[tokio::test]
async fn slow_loris_headers_are_cut_off() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tusk.toml");
    std::fs::write(&config, "[server]\nheader_read_timeout = \"1s\"\n")?;
    let config = config.display().to_string();
    let server = TestServer::start(&FsEmbedded, &["--config", &config]).await?;
    let mut stream = TcpStream::connect(&server.addr).await?;
    let request = b"HEAD /files/AAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut cut = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    if !cut {
        // The server may close without the write failing yet: a read then sees EOF or a 408.
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        cut = matches!(read, Ok(Ok(0)) | Ok(Err(_)))
            || matches!(read, Ok(Ok(n)) if String::from_utf8_lossy(&buf[..n]).contains(" 408 "));
    }
    ensure!(
        cut,
        "a slow-loris connection was still open after {:?}",
        started.elapsed()
    );
    ensure!(
        started.elapsed() < Duration::from_secs(6),
        "the header read timeout of 1s took {:?} to cut the connection",
        started.elapsed()
    );
    Ok(())
}

/// A PATCH whose body stalls is cut after the network timeout; the bytes it sent are
/// committed and the response says so.
#[tokio::test]
async fn a_stalled_body_is_cut_and_its_bytes_committed() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &["--network-timeout", "1s"]).await?;
    let t = Ctx::new(&server)?;
    let url = t.create(1000).await?;
    let path = t.path_of(&url)?;
    let mut stream = TcpStream::connect(&server.addr).await?;
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&[7u8; 300]).await?;
    let started = Instant::now();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    // The server answers although the body never completes.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .context("no answer to a stalled PATCH within 10s")??;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    ensure!(
        text.starts_with("http/1.1 204"),
        "stalled PATCH answered {text:?}"
    );
    ensure!(
        text.contains("upload-offset: 300"),
        "stalled PATCH answered {text:?}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "cut took {:?}",
        started.elapsed()
    );
    t.assert_offset(&url, 300, "bytes of a stalled body are committed")
        .await?;
    Ok(())
}
