//! Hostile connections have a bounded cost: a connection that sends nothing, a head that
//! stalls, an idle HTTP/1 or HTTP/2 connection are closed after their timeout, and past the
//! connection limit the node keeps serving (idle connections make room; when every
//! connection is busy a new one is refused), while uploads whose bodies pause survive.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tusk_tests::conformance::util::Ctx;
use tusk_tests::harness::{FsEmbedded, TestServer};

/// Starts a node with `[server]` settings from a TOML snippet (most have no flag).
async fn start(
    server_settings: &str,
    extra_args: &[&str],
) -> Result<(TestServer, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tusk.toml");
    std::fs::write(&config, format!("[server]\n{server_settings}\n"))?;
    let config = config.display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend_from_slice(extra_args);
    let server = TestServer::start(&FsEmbedded, &args).await?;
    Ok((server, dir))
}

/// Waits up to `within` for the server to close `stream` (EOF or reset); whatever it sends
/// first (a 408, a GOAWAY) is read and ignored. Returns how long it took, or `None`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The value of one sample of the node's /metrics, e.g.
/// `tusk_connections_cut_total{reason="evicted"}`; 0 when the series is absent.
async fn metric(server: &TestServer, sample: &str) -> Result<f64> {
    let admin = server
        .admin
        .as_deref()
        .context("node has no admin listener")?;
    let scrape = reqwest::get(format!("{admin}metrics"))
        .await?
        .text()
        .await?;
    for line in scrape.lines() {
        if let Some(value) = line.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')) {
            return value.trim().parse().context("metric value");
        }
    }
    Ok(0.0)
}

/// A connection that never sends a byte is closed after the header read timeout.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() -> Result<()> {
    let (server, _dir) = start("header_read_timeout = \"1s\"", &[]).await?;
    let mut stream = TcpStream::connect(&server.addr).await?;
    let took = closed_within(&mut stream, Duration::from_secs(6))
        .await
        .context("a connection that sent nothing was still open after 6s (timeout 1s)")?;
    ensure!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    ensure!(
        metric(
            &server,
            "tusk_connections_cut_total{reason=\"header_timeout\"}"
        )
        .await?
            >= 1.0,
        "the cut is not counted"
    );
    Ok(())
}

/// The admin listener (metrics, health) has the same timeouts and a connection limit of its
/// own: silent connections are closed, and a hundred idle ones do not keep a scrape out.
#[tokio::test]
async fn the_admin_listener_closes_silent_connections_and_keeps_answering() -> Result<()> {
    let (server, _dir) = start("header_read_timeout = \"1s\"", &[]).await?;
    let admin = server
        .admin
        .as_deref()
        .context("node has no admin listener")?
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut silent = TcpStream::connect(&admin).await?;
    closed_within(&mut silent, Duration::from_secs(6))
        .await
        .context("a silent admin connection was still open after 6s (timeout 1s)")?;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(&admin).await?);
    }
    let scrape = tokio::time::timeout(
        Duration::from_secs(5),
        metric(&server, "tusk_open_connections"),
    )
    .await
    .context("/metrics did not answer within 5s with 100 idle admin connections")??;
    ensure!(
        scrape == 0.0,
        "admin connections are counted as client connections: {scrape}"
    );
    Ok(())
}

/// A request head that stalls part way is closed after the header read timeout, whatever
/// its first bytes: one byte that could begin the HTTP/2 preface or a PATCH, a partial
/// HTTP/2 preface, a partial HTTP/1 head.
#[tokio::test]
async fn a_stalled_partial_head_is_closed() -> Result<()> {
    let (server, _dir) = start("header_read_timeout = \"1s\"", &[]).await?;
    let heads: [&[u8]; 3] = [
        b"P",
        b"PRI * HTTP/2.0\r\n",
        b"PATCH /files/AAAA HTTP/1.1\r\nHost: x\r\n",
    ];
    let mut streams = Vec::new();
    for head in heads {
        let mut stream = TcpStream::connect(&server.addr).await?;
        stream.write_all(head).await?;
        streams.push((head, stream));
    }
    for (head, mut stream) in streams {
        closed_within(&mut stream, Duration::from_secs(6))
            .await
            .with_context(|| {
                format!(
                    "a connection that sent {:?} and stalled was still open after 6s",
                    String::from_utf8_lossy(head)
                )
            })?;
    }
    Ok(())
}

/// An HTTP/1 connection kept alive after a request, with nothing more sent, is closed after
/// the idle timeout (here shorter than the header read timeout).
#[tokio::test]
async fn an_idle_http1_connection_is_closed() -> Result<()> {
    let (server, _dir) = start("header_read_timeout = \"30s\"\nidle_timeout = \"1s\"", &[]).await?;
    let mut stream = TcpStream::connect(&server.addr).await?;
    let request = format!(
        "OPTIONS /files/ HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    ensure!(
        answer.starts_with("HTTP/1.1 2"),
        "OPTIONS answered {answer:?}"
    );
    closed_within(&mut stream, Duration::from_secs(6))
        .await
        .context("an idle keep-alive connection was still open after 6s (idle timeout 1s)")?;
    ensure!(
        metric(
            &server,
            "tusk_connections_cut_total{reason=\"idle_timeout\"}"
        )
        .await?
            >= 1.0,
        "the cut is not counted"
    );
    Ok(())
}

/// An HTTP/2 (cleartext, prior knowledge) connection is closed when it stays idle after a
/// request, and when it never makes one.
#[tokio::test]
async fn an_idle_http2_connection_is_closed() -> Result<()> {
    let (server, _dir) = start("header_read_timeout = \"2s\"\nidle_timeout = \"1s\"", &[]).await?;
    for make_a_request in [true, false] {
        let stream = TcpStream::connect(&server.addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .context("HTTP/2 handshake (h2c prior knowledge)")?;
        let started = Instant::now();
        let connection = tokio::spawn(connection);
        if make_a_request {
            let request = hyper::Request::builder()
                .method("OPTIONS")
                .uri(format!("http://{}/files/", server.addr))
                .header("tus-resumable", "1.0.0")
                .body(Empty::<Bytes>::new())?;
            let response = sender.send_request(request).await?;
            ensure!(
                response.status().is_success(),
                "OPTIONS over HTTP/2 answered {}",
                response.status()
            );
        }
        match tokio::time::timeout(Duration::from_secs(8), connection).await {
            Ok(_) => {}
            Err(_) => bail!(
                "an idle HTTP/2 connection (request made: {make_a_request}) was still open \
                 after {:?}",
                started.elapsed()
            ),
        }
    }
    Ok(())
}

/// A PATCH whose body pauses for longer than the idle and header read timeouts (but less
/// than the network timeout) is in flight, not idle: it completes.
#[tokio::test]
async fn a_patch_that_pauses_outlives_the_idle_timeout() -> Result<()> {
    let (server, _dir) = start(
        "header_read_timeout = \"1s\"\nidle_timeout = \"1s\"",
        &["--network-timeout", "5s"],
    )
    .await?;
    let t = Ctx::new(&server)?;
    let url = t.create(300).await?;
    let path = t.path_of(&url)?;
    let mut stream = TcpStream::connect(&server.addr).await?;
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: 300\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await?;
    for _ in 0..3 {
        stream.write_all(&[7u8; 100]).await?;
        tokio::time::sleep(Duration::from_millis(2000)).await;
    }
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
    let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    ensure!(
        answer.starts_with("http/1.1 204"),
        "paused PATCH answered {answer:?}"
    );
    ensure!(
        answer.contains("upload-offset: 300"),
        "paused PATCH answered {answer:?}"
    );
    Ok(())
}

/// With 50 idle connections held against a limit of 20, each new connection closes the
/// one idle longest: the oldest 30 are closed at once, and a tus upload still succeeds
/// without waiting for any timeout.
#[tokio::test]
async fn past_the_connection_limit_the_longest_idle_makes_room() -> Result<()> {
    let (server, _dir) = start(
        "max_connections = 20\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"",
        &[],
    )
    .await?;
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(&server.addr).await?);
        // Accepted in order, so "idle longest" is "opened first".
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, stream) in held.iter_mut().take(30).enumerate() {
        closed_within(stream, Duration::from_secs(3))
            .await
            .with_context(|| format!("idle connection {i} of 50 (limit 20) is still open"))?;
    }
    let started = Instant::now();
    let t = Ctx::new(&server)?;
    let data = vec![5u8; 10_000];
    let url = tokio::time::timeout(Duration::from_secs(10), t.upload(&data))
        .await
        .context("an upload past the connection limit did not finish in 10s")??;
    t.assert_content(&url, &data, "an upload past the connection limit")
        .await?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "the upload waited {:?}",
        started.elapsed()
    );
    let evicted = metric(&server, "tusk_connections_cut_total{reason=\"evicted\"}").await?;
    ensure!(
        evicted >= 30.0,
        "{evicted} evictions counted, want at least 30"
    );
    let open = metric(&server, "tusk_open_connections").await?;
    ensure!(open <= 20.0, "{open} connections open past a limit of 20");
    Ok(())
}

/// When every connection has a request in flight, a new connection is closed at once
/// without an answer, and the busy ones still complete.
#[tokio::test]
async fn past_the_connection_limit_with_every_connection_busy_new_ones_are_refused() -> Result<()> {
    let (server, _dir) = start(
        "max_connections = 4\n[uploads]\ncommit_interval = \"100ms\"",
        &["--network-timeout", "30s"],
    )
    .await?;
    let t = Ctx::new(&server)?;
    let mut urls = Vec::new();
    for _ in 0..4 {
        urls.push(t.create(200).await?);
    }
    // reqwest's pooled connections are idle now: the busy PATCHes below push them out.
    let mut busy = Vec::new();
    for url in &urls {
        let path = t.path_of(url)?;
        let mut stream = TcpStream::connect(&server.addr).await?;
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: 200\r\n\r\n",
            server.addr
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&[1u8; 100]).await?;
        busy.push(stream);
    }
    // Every PATCH must be in flight before the next connection comes (a PATCH whose head
    // is not read yet is idle, and may be the one evicted): a fixed pause was too short on
    // a loaded machine. Each PATCH's first 100 bytes are committed by a progress commit
    // only while its handler runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server, "tusk_bytes_received_total").await? < 400.0 {
        ensure!(
            Instant::now() < deadline,
            "the 4 busy PATCHes did not all commit their first 100 bytes within 20s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = TcpStream::connect(&server.addr).await?;
    let request = format!(
        "OPTIONS /files/ HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\n\r\n",
        server.addr
    );
    // The server may have closed already: a failed write is a refusal too.
    let _ = refused.write_all(request.as_bytes()).await;
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(3), refused.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => bail!(
            "a connection past the limit was answered: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => bail!("a connection past the limit was neither answered nor closed in 3s"),
    }
    ensure!(
        metric(&server, "tusk_connections_refused_total").await? >= 1.0,
        "the refusal is not counted"
    );
    for (i, stream) in busy.iter_mut().enumerate() {
        stream.write_all(&[1u8; 100]).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .with_context(|| format!("busy PATCH {i} got no answer"))??;
        let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        ensure!(
            answer.starts_with("http/1.1 204") && answer.contains("upload-offset: 200"),
            "busy PATCH {i} answered {answer:?}"
        );
    }
    Ok(())
}
