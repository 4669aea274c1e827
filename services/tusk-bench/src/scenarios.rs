//! The four scenarios. Each returns its JSON line and, if a check failed after the figures
//! were taken (sha256 mismatch, resume offset out of range), the failure to report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use http::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::client::{Conn, Fetched, OCTET, TUS_VERSION};
use crate::payload::{mix64, Payload};
use crate::util::{mib_per_s, percentile, round, Obj, Target};
use crate::BenchArgs;

pub struct Outcome {
    pub json: Obj,
    pub failure: Option<String>,
}

fn payload_for(args: &BenchArgs, scenario: u64, index: u64) -> Payload {
    Payload::new(mix64(args.seed ^ (scenario << 56)).wrapping_add(index))
}

fn say(msg: impl AsRef<str>) {
    eprintln!("tusk bench: {}", msg.as_ref());
}

/// GET + sha256 check (outside any timed part). Adds `sha256_ok`, `get` and `get_seconds`
/// to `obj`; returns the failure message on a mismatch.
async fn verify(
    args: &BenchArgs,
    conn: &mut Conn,
    upload: &Target,
    payload: Payload,
    len: u64,
    obj: &mut Obj,
) -> Result<Option<String>> {
    if args.no_verify {
        obj.insert("sha256_ok", Value::Null);
        obj.insert("get", json!("skipped (--no-verify)"));
        return Ok(None);
    }
    let expected = tokio::task::spawn_blocking(move || payload.sha256(0, len))
        .await
        .context("hashing the payload")?;
    match conn.fetch_sha256(upload, len).await? {
        Fetched::Unsupported(status) => {
            obj.insert("sha256_ok", Value::Null);
            obj.insert("get", json!(format!("unsupported: GET answered {status}")));
            Ok(None)
        }
        Fetched::Body { sha256, seconds } => {
            let ok = sha256 == expected;
            obj.insert("sha256_ok", json!(ok));
            obj.insert("get", json!("ok"));
            obj.insert("get_seconds", json!(round(seconds, 3)));
            obj.insert("get_mib_per_s_incl_sha256", json!(mib_per_s(len, seconds)));
            Ok((!ok).then(|| {
                format!(
                    "GET {}: sha256 {} of the body differs from sha256 {} of the {len} bytes sent",
                    upload.url,
                    hex::encode(sha256),
                    hex::encode(expected)
                )
            }))
        }
    }
}

pub async fn big(args: &BenchArgs, endpoint: &Target) -> Result<Outcome> {
    let size = args.big_size;
    let payload = payload_for(args, 1, 0);
    let mut conn = Conn::new(args.request_timeout());
    say(format!(
        "big: {size} bytes in PATCHes of {} to {}",
        args.big_chunk, endpoint.url
    ));
    let start = Instant::now();
    let upload = conn.create(endpoint, size).await?;
    conn.upload(&upload, &payload, 0, size, args.big_chunk)
        .await?;
    let seconds = start.elapsed().as_secs_f64();
    let mut obj = Obj::new();
    obj.insert("scenario", json!("big"));
    obj.insert("bytes", json!(size));
    obj.insert("patch_bytes", json!(args.big_chunk));
    obj.insert("patches", json!(size.div_ceil(args.big_chunk)));
    obj.insert("seconds", json!(round(seconds, 3)));
    obj.insert("mib_per_s", json!(mib_per_s(size, seconds)));
    let failure = verify(args, &mut conn, &upload, payload, size, &mut obj).await?;
    obj.insert("upload_url", json!(upload.url));
    Ok(Outcome { json: obj, failure })
}

pub async fn small(args: &BenchArgs, endpoint: &Target) -> Result<Outcome> {
    let count = args.small_count;
    let size = args.small_size;
    let workers = args.concurrency.min(count.max(1));
    say(format!(
        "small: {count} uploads of {size} bytes over {workers} connections"
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for _ in 0..workers {
        let next = next.clone();
        let endpoint = endpoint.clone();
        let args = args.clone();
        set.spawn(async move {
            let mut conn = Conn::new(args.request_timeout());
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let payload = payload_for(&args, 2, i as u64);
                let t = Instant::now();
                let upload = conn.create(&endpoint, size).await?;
                if size > 0 {
                    conn.patch(&upload, &payload, 0, size).await?;
                }
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok((latencies, conn.opened))
        });
    }
    let mut latencies = Vec::with_capacity(count);
    let mut connections = 0;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok((l, opened))) => {
                latencies.extend(l);
                connections += opened;
            }
            Ok(Err(e)) => {
                set.abort_all();
                return Err(e.context("small"));
            }
            Err(e) => {
                set.abort_all();
                bail!("small: worker task failed: {e}");
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let ms = |p: f64| percentile(&latencies, p).map(|v| round(v, 2));
    let mut json = Obj::new();
    json.insert("scenario", json!("small"));
    json.insert("uploads", json!(count));
    json.insert("upload_bytes", json!(size));
    json.insert("concurrency", json!(workers));
    json.insert("connections_opened", json!(connections));
    json.insert("seconds", json!(round(seconds, 3)));
    json.insert("uploads_per_s", json!(round(count as f64 / seconds, 1)));
    json.insert("p50_ms", json!(ms(50.0)));
    json.insert("p99_ms", json!(ms(99.0)));
    json.insert("max_ms", json!(latencies.last().map(|v| round(*v, 2))));
    json.insert("mean_ms", json!(round(mean, 2)));
    Ok(Outcome {
        json,
        failure: None,
    })
}

pub async fn parallel(args: &BenchArgs, endpoint: &Target) -> Result<Outcome> {
    let n = args.parallel_uploads;
    let size = args.parallel_size;
    let chunk = args.parallel_chunk;
    say(format!(
        "parallel: {n} uploads of {size} bytes at once, PATCHes of {chunk}"
    ));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let endpoint = endpoint.clone();
        let args = args.clone();
        set.spawn(async move {
            let payload = payload_for(&args, 3, i as u64);
            let mut conn = Conn::new(args.request_timeout());
            let t = Instant::now();
            let upload = conn.create(&endpoint, size).await?;
            conn.upload(&upload, &payload, 0, size, chunk).await?;
            anyhow::Ok((i, upload, t.elapsed().as_secs_f64()))
        });
    }
    let mut done = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(r)) => done.push(r),
            Ok(Err(e)) => {
                set.abort_all();
                return Err(e.context("parallel"));
            }
            Err(e) => {
                set.abort_all();
                bail!("parallel: upload task failed: {e}");
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let total = size * n as u64;
    done.sort_by_key(|(i, _, _)| *i);
    let slowest = done.iter().map(|d| d.2).fold(0.0, f64::max);
    let fastest = done.iter().map(|d| d.2).fold(f64::INFINITY, f64::min);
    let mut obj = Obj::new();
    obj.insert("scenario", json!("parallel"));
    obj.insert("uploads", json!(n));
    obj.insert("upload_bytes", json!(size));
    obj.insert("patch_bytes", json!(chunk));
    obj.insert("bytes", json!(total));
    obj.insert("seconds", json!(round(seconds, 3)));
    obj.insert("mib_per_s", json!(mib_per_s(total, seconds)));
    obj.insert("fastest_upload_seconds", json!(round(fastest, 3)));
    obj.insert("slowest_upload_seconds", json!(round(slowest, 3)));
    // Verify every upload (untimed); report the aggregate.
    let mut conn = Conn::new(args.request_timeout());
    let mut all_ok: Option<bool> = None;
    let mut get = String::from("ok");
    let mut failure = None;
    for (i, upload, _) in &done {
        let mut one = Obj::new();
        let payload = payload_for(args, 3, *i as u64);
        if let Some(f) = verify(args, &mut conn, upload, payload, size, &mut one).await? {
            failure.get_or_insert(f);
        }
        match one.get("sha256_ok") {
            Some(Value::Bool(b)) => all_ok = Some(all_ok.unwrap_or(true) && *b),
            _ => {
                if let Some(Value::String(s)) = one.get("get") {
                    get = s.clone();
                }
                break;
            }
        }
    }
    obj.insert("sha256_ok", json!(all_ok));
    obj.insert("get", json!(get));
    Ok(Outcome { json: obj, failure })
}

/// Writes a PATCH by hand on a raw TCP connection and drops the connection after exactly
/// `cut` body bytes. Returns the seconds spent writing.
async fn cut_patch(
    args: &BenchArgs,
    upload: &Target,
    payload: &Payload,
    size: u64,
    cut: u64,
) -> Result<f64> {
    let what = format!(
        "raw PATCH {} (Upload-Offset 0, Content-Length {size}, cut after {cut})",
        upload.url
    );
    let timeout = args.request_timeout();
    let mut stream = tokio::time::timeout(
        timeout,
        TcpStream::connect((upload.host.as_str(), upload.port)),
    )
    .await
    .map_err(|_| anyhow!("{what}: connect timed out"))?
    .with_context(|| format!("{what}: connect"))?;
    stream.set_nodelay(true)?;
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: {TUS_VERSION}\r\nContent-Type: {OCTET}\r\nUpload-Offset: 0\r\nContent-Length: {size}\r\n\r\n",
        upload.path_and_query, upload.authority
    );
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::time::timeout_at(deadline, stream.write_all(head.as_bytes()))
        .await
        .map_err(|_| anyhow!("{what}: timed out writing headers"))?
        .with_context(|| format!("{what}: writing headers"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut answer = Vec::new();
    let mut rbuf = vec![0u8; 16 * 1024];
    let mut pos = 0u64;
    while pos < cut {
        let n = ((cut - pos) as usize).min(buf.len());
        payload.fill(pos, &mut buf[..n]);
        tokio::time::timeout_at(deadline, stream.write_all(&buf[..n]))
            .await
            .map_err(|_| anyhow!("{what}: timed out after writing {pos} body bytes"))?
            .with_context(|| format!("{what}: writing body after {pos} bytes"))?;
        pos += n as u64;
        // The server must not answer before the body is complete.
        loop {
            match stream.try_read(&mut rbuf) {
                Ok(0) => bail!("{what}: server closed the connection after {pos} body bytes"),
                Ok(k) => answer.extend_from_slice(&rbuf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).with_context(|| format!("{what}: reading")),
            }
        }
        if !answer.is_empty() {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            bail!("{what}: server answered after {pos} of {size} body bytes: {text:?}");
        }
    }
    tokio::time::timeout_at(deadline, stream.flush())
        .await
        .map_err(|_| anyhow!("{what}: flush timed out"))??;
    if args.resume_rst {
        set_linger_zero(&stream)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(stream);
    Ok(seconds)
}

/// SO_LINGER 0: closing the socket sends a TCP reset instead of a FIN.
#[allow(deprecated)] // tokio deprecates set_linger for blocking non-zero lingers; 0 never blocks.
fn set_linger_zero(stream: &TcpStream) -> Result<()> {
    stream
        .set_linger(Some(Duration::ZERO))
        .context("setting SO_LINGER 0")
}

pub async fn resume(args: &BenchArgs, endpoint: &Target) -> Result<Outcome> {
    let size = args.resume_size;
    let cut = args.resume_cut;
    let payload = payload_for(args, 4, 0);
    let mut conn = Conn::new(args.request_timeout());
    say(format!(
        "resume: PATCH of {size} bytes cut after {cut} ({})",
        if args.resume_rst { "RST" } else { "FIN" }
    ));
    let upload = conn.create(endpoint, size).await?;
    let cut_seconds = cut_patch(args, &upload, &payload, size, cut).await?;

    // Wait until the server has settled what it keeps: the offset reaches the cut, or stops
    // moving for --resume-settle seconds (423 Locked means the interrupted PATCH still holds
    // the upload).
    let settle = Duration::from_secs_f64(args.resume_settle);
    let cut_at = Instant::now();
    let give_up = cut_at + args.request_timeout();
    let mut polls = 0u32;
    let mut locked = 0u32;
    let mut last: Option<(u64, Instant)> = None;
    let offset = loop {
        polls += 1;
        match conn.head(&upload).await? {
            Ok(off) => {
                if off > cut {
                    bail!(
                        "HEAD {}: Upload-Offset {off} after the cut, but only {cut} bytes were sent",
                        upload.url
                    );
                }
                let since = match last {
                    Some((prev, t)) if prev == off => t,
                    _ => Instant::now(),
                };
                last = Some((off, since));
                if off == cut || since.elapsed() >= settle {
                    break off;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(retry) => {
                locked += 1;
                tokio::time::sleep(retry.min(Duration::from_millis(500))).await;
            }
        }
        if Instant::now() > give_up {
            bail!(
                "HEAD {}: upload still locked or moving {:?} after the cut",
                upload.url,
                args.request_timeout()
            );
        }
    };
    let settle_ms = cut_at.elapsed().as_secs_f64() * 1000.0;
    let offset_ok = offset > 0 && offset <= cut;
    say(format!(
        "resume: server kept {offset} of {cut} bytes; PATCHing the rest"
    ));

    // PATCH the rest from the kept offset (re-HEAD on 409, wait on 423).
    let mut from = offset;
    let mut retries = 0u32;
    let start = Instant::now();
    loop {
        let (what, reply) = conn
            .patch_reply(&upload, &payload, from, size - from)
            .await?;
        match reply.status {
            StatusCode::NO_CONTENT => {
                let got = reply.offset(&what)?;
                if got != size {
                    bail!("{what}: server answered Upload-Offset {got}, expected {size}");
                }
                break;
            }
            StatusCode::CONFLICT | StatusCode::LOCKED if retries < 5 => {
                retries += 1;
                say(format!("resume: {what}: {}, retrying", reply.status));
                tokio::time::sleep(Duration::from_millis(500)).await;
                loop {
                    match conn.head(&upload).await? {
                        Ok(off) if off <= cut => {
                            from = off;
                            break;
                        }
                        Ok(off) => bail!(
                            "HEAD {}: Upload-Offset {off}, but only {cut} bytes were sent",
                            upload.url
                        ),
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                }
            }
            _ => reply.expect(&what, &[StatusCode::NO_CONTENT])?,
        }
    }
    let resume_seconds = start.elapsed().as_secs_f64();

    let mut obj = Obj::new();
    obj.insert("scenario", json!("resume"));
    obj.insert("bytes", json!(size));
    obj.insert("cut_at", json!(cut));
    obj.insert(
        "cut_mode",
        json!(if args.resume_rst { "rst" } else { "fin" }),
    );
    obj.insert("cut_seconds", json!(round(cut_seconds, 3)));
    obj.insert("resumed_offset", json!(offset));
    obj.insert("kept_all", json!(offset == cut));
    obj.insert("offset_ok", json!(offset_ok));
    obj.insert("settle_ms", json!(round(settle_ms, 1)));
    obj.insert("head_polls", json!(polls));
    obj.insert("head_locked", json!(locked));
    obj.insert("resume_retries", json!(retries));
    obj.insert("resumed_from", json!(from));
    obj.insert("resume_bytes", json!(size - from));
    obj.insert("resume_seconds", json!(round(resume_seconds, 3)));
    obj.insert(
        "resume_mib_per_s",
        json!(mib_per_s(size - from, resume_seconds)),
    );
    let mut failure = verify(args, &mut conn, &upload, payload, size, &mut obj).await?;
    obj.insert("upload_url", json!(upload.url));
    if !offset_ok && failure.is_none() {
        failure = Some(format!(
            "resume: after cutting the PATCH to {} at {cut} bytes, HEAD reported Upload-Offset {offset} (expected > 0 and <= {cut})",
            upload.url
        ));
    }
    Ok(Outcome { json: obj, failure })
}
