//! Robustness: hostile ids, concurrent writers, clients that disconnect mid-body.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::StreamExt as _;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::util::*;

/// Upload ids that try path traversal, NUL, encoded slashes, 10 kB, unicode: every method
/// answers a 4xx (never a 5xx), as do finals naming such ids, and the node keeps serving.
pub async fn hostile_ids_are_4xx(t: Ctx) -> Result<()> {
    let survivor = t.upload(b"still here").await?;
    let long = "a".repeat(10_000);
    let ids: Vec<String> = vec![
        "..".into(),
        ".".into(),
        "../../../../etc/passwd".into(),
        "..%2F..%2F..%2Fetc%2Fpasswd".into(),
        "%2e%2e".into(),
        "%2e%2e%2f%2e%2e%2fCargo.toml".into(),
        "..%5C..%5Cwindows".into(),
        "%2F".into(),
        "abc%2Fdef".into(),
        "%00".into(),
        "abc%00def".into(),
        "x/../../y".into(),
        long,
        "%C3%BC%C3%B1%C3%AF%C3%A7%C3%B8d%C3%A9".into(),
        "üñïçødé".into(),
        "%FF%FE%FD".into(),
        "a%20b".into(),
        "%25%32%65%25%32%65".into(),
    ];
    for id in &ids {
        let target = format!("{}{id}", t.base_path);
        let shown: String = id.chars().take(40).collect();
        for method in ["HEAD", "GET", "PATCH", "DELETE"] {
            let (headers, body): (Vec<(&str, &str)>, &[u8]) = match method {
                "PATCH" => (
                    vec![
                        ("Tus-Resumable", "1.0.0"),
                        ("Content-Type", OFFSET_OCTET_STREAM),
                        ("Upload-Offset", "0"),
                    ],
                    b"abc",
                ),
                _ => (vec![("Tus-Resumable", "1.0.0")], b""),
            };
            let resp = t
                .raw(method, &target, &headers, body)
                .await
                .with_context(|| format!("{method} on hostile id {shown:?}"))?;
            ensure!(
                (400..500).contains(&resp.status),
                "contract (bad input): {method} on the hostile id {shown:?} must answer 4xx \
                 (404 for an unknown or malformed id), got {}",
                resp.status
            );
        }
        // A final naming the hostile id.
        let resp = t
            .raw(
                "POST",
                &t.base_path,
                &[
                    ("Tus-Resumable", "1.0.0"),
                    ("Upload-Concat", &format!("final;{target}")),
                ],
                b"",
            )
            .await?;
        ensure!(
            resp.status == 400,
            "contract (concatenation): a final naming the hostile id {shown:?} answers 400, got {}",
            resp.status
        );
    }
    let resp = t
        .send(t.plain(Method::OPTIONS, &t.endpoint), "OPTIONS")
        .await?;
    expect(resp, 204, "the node keeps serving after hostile ids").await?;
    t.assert_content(
        &survivor,
        b"still here",
        "hostile ids must not touch other uploads",
    )
    .await?;
    Ok(())
}

fn slow_body(data: Vec<u8>, chunk: usize, pause: Duration) -> reqwest::Body {
    let chunks: Vec<Vec<u8>> = data.chunks(chunk).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(chunks).then(move |c| async move {
        tokio::time::sleep(pause).await;
        Ok::<_, std::io::Error>(c)
    });
    reqwest::Body::wrap_stream(stream)
}

/// Two PATCHes at offset 0 of the same upload at once, with different bytes: each answers
/// 204, 409 or 423; the committed bytes are a prefix of exactly one writer's data, matching
/// every 204's offset; the upload then completes with exact bytes. (Where unfinished uploads
/// cannot be read, an unfinished result is completed with the bytes of a writer that got 204
/// first, and the same checks run on the finished bytes.)
pub async fn concurrent_patches_are_consistent(t: Ctx) -> Result<()> {
    let len = 512 * 1024;
    let data_a = random_bytes(len);
    let data_b = random_bytes(len);
    let url = t.create(len as u64).await?;
    let send = |data: Vec<u8>| {
        t.tus(Method::PATCH, &url)
            .header("Content-Type", OFFSET_OCTET_STREAM)
            .header("Upload-Offset", "0")
            .header("Content-Length", len.to_string())
            .body(slow_body(data, 16 * 1024, Duration::from_millis(15)))
            .send()
    };
    let a = send(data_a.clone());
    let b = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        send(data_b.clone()).await
    };
    let (ra, rb) = tokio::join!(a, b);
    let mut committed_by = Vec::new();
    let outcome: Vec<String> = [&ra, &rb]
        .iter()
        .map(|r| match r {
            Ok(resp) => format!(
                "{} offset {:?}",
                resp.status().as_u16(),
                header(resp, "Upload-Offset")
            ),
            Err(e) => format!("error {e}"),
        })
        .collect();
    eprintln!(
        "concurrent PATCHes: A -> {}, B -> {}",
        outcome[0], outcome[1]
    );
    for (name, r, data) in [("A", ra, &data_a), ("B", rb, &data_b)] {
        let resp = r.with_context(|| {
            format!(
                "contract (PATCH, concurrent writer): request {name} got no HTTP response \
                 (expected 204, 409 or 423)"
            )
        })?;
        let status = resp.status().as_u16();
        ensure!(
            matches!(status, 204 | 409 | 423),
            "contract (PATCH, concurrent writer): request {name} must get 204, 409 or 423, got \
             {status}"
        );
        if status == 423 {
            ensure!(
                header(&resp, "Retry-After").is_some(),
                "contract (PATCH): 423 Locked carries Retry-After"
            );
        }
        if status == 204 {
            let off = header_u64(
                &resp,
                "Upload-Offset",
                "core: PATCH 204 carries Upload-Offset",
            )?;
            ensure!(
                off as usize <= len,
                "PATCH 204 offset {off} beyond length {len}"
            );
            committed_by.push((name, off, data));
        }
    }
    ensure!(
        !committed_by.is_empty(),
        "contract (PATCH, concurrent writer): at least one of two concurrent writers succeeds \
         (204)"
    );
    let offset = t.offset(&url).await? as usize;
    // The committed bytes, and the whole upload if it had to be finished to read them.
    let (got, finished) = if t.reads_unfinished || offset == len {
        let got = t.download(&url).await?;
        ensure!(
            got.len() == offset,
            "GET returns the {offset} committed bytes, got {}",
            got.len()
        );
        (got, None)
    } else {
        t.assert_unfinished_content(&url, &[], "GET of the unfinished upload")
            .await?;
        let (_, _, writer) = committed_by[0];
        t.patch_ok(&url, offset as u64, writer[offset..].to_vec())
            .await?;
        let all = t.download(&url).await?;
        ensure!(
            all.len() == len,
            "GET of the finished upload returns {} bytes, not its length {len}",
            all.len()
        );
        (all[..offset].to_vec(), Some((all, writer)))
    };
    for (name, off, data) in &committed_by {
        ensure!(
            *off as usize <= offset && got[..*off as usize] == data[..*off as usize],
            "DESIGN (at most one writer commits): writer {name} got 204 with offset {off}, but \
             the committed bytes (offset {offset}) do not start with its data"
        );
    }
    let source = if got[..] == data_a[..offset] {
        &data_a
    } else if got[..] == data_b[..offset] {
        &data_b
    } else {
        bail!(
            "DESIGN (no interleaving): the {offset} committed bytes are neither a prefix of A's \
             nor of B's data"
        );
    };
    if let Some((all, writer)) = finished {
        ensure!(
            all == *writer,
            "after concurrent writers, completing from HEAD's offset {offset} with the bytes \
             of the writer that got 204 does not give exactly its bytes"
        );
        return Ok(());
    }
    if offset < len {
        t.patch_ok(&url, offset as u64, source[offset..].to_vec())
            .await?;
    }
    t.assert_content(
        &url,
        source,
        "after concurrent writers, resuming from HEAD's offset completes with exact bytes",
    )
    .await?;
    Ok(())
}

/// A client that sends part of a PATCH body and disconnects: the received bytes are committed
/// and HEAD shows them (GET too, where unfinished uploads can be read); the upload resumes
/// from there.
pub async fn disconnect_commits_received_bytes(t: Ctx) -> Result<()> {
    let len = 1024 * 1024;
    let sent = 64 * 1024;
    let data = random_bytes(len);
    let url = t.create(len as u64).await?;
    let path = t.path_of(&url)?;
    {
        let mut stream = tokio::net::TcpStream::connect(&t.addr).await?;
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: \
             {OFFSET_OCTET_STREAM}\r\nUpload-Offset: 0\r\nContent-Length: {len}\r\n\r\n",
            t.addr
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&data[..sent]).await?;
        stream.flush().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.shutdown().await.ok();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = t.offset(&url).await?;
    while last != sent as u64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = t.offset(&url).await?;
    }
    ensure!(
        last == sent as u64,
        "contract (PATCH): a client disconnecting mid-body commits the {sent} bytes received; \
         HEAD Upload-Offset was still {last} after 10s"
    );
    t.assert_unfinished_content(
        &url,
        &data[..sent],
        "the bytes received before the disconnect",
    )
    .await?;
    t.patch_ok(&url, sent as u64, data[sent..].to_vec()).await?;
    t.assert_content(&url, &data, "resumed after a disconnect")
        .await?;
    Ok(())
}

/// GET never waits for a writer's lease: while a slow PATCH is in flight, a GET answers at
/// once with committed bytes (a prefix of the data), or at once with 409 where unfinished
/// uploads cannot be read.
pub async fn get_does_not_wait_for_writer(t: Ctx) -> Result<()> {
    let len = 256 * 1024;
    let data = random_bytes(len);
    let url = t.create(len as u64).await?;
    t.patch_ok(&url, 0, data[..1024].to_vec()).await?;
    let rest = data[1024..].to_vec();
    // About 3 s of body.
    let writer = t
        .tus(Method::PATCH, &url)
        .header("Content-Type", OFFSET_OCTET_STREAM)
        .header("Upload-Offset", "1024")
        .header("Content-Length", rest.len().to_string())
        .body(slow_body(rest, 8 * 1024, Duration::from_millis(100)))
        .send();
    let reader = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = tokio::time::Instant::now();
        let got = if t.reads_unfinished {
            Some(t.download(&url).await?)
        } else {
            t.assert_unfinished_content(&url, &[], "GET during a PATCH")
                .await?;
            None
        };
        Ok::<_, anyhow::Error>((got, started.elapsed()))
    };
    let (w, r) = tokio::join!(writer, reader);
    let (got, took) = r?;
    ensure!(
        took < Duration::from_millis(1500),
        "contract (GET): GET never waits for a writer's lease, but it took {took:?} while a \
         PATCH was in flight"
    );
    if let Some(got) = got {
        ensure!(
            got.len() >= 1024 && got.len() <= len && got[..] == data[..got.len()],
            "contract (GET): GET during a PATCH streams committed bytes (a prefix of at least \
             1024), got {} bytes{}",
            got.len(),
            if got[..] == data[..got.len().min(len)] {
                ""
            } else {
                " that differ from the data"
            }
        );
    }
    let w = w.context("the slow PATCH got no HTTP response")?;
    expect(w, 204, "core: the slow PATCH completes with 204").await?;
    t.assert_content(&url, &data, "bytes after a GET during a PATCH")
        .await?;
    Ok(())
}
