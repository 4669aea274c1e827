//! GET downloads (Range, Content-Type/Disposition, nosniff).

use anyhow::{ensure, Result};
use reqwest::Method;

use super::util::*;

/// Range: bytes=a-b answers 206 with Content-Range and exactly those bytes; an
/// unsatisfiable range 416.
pub async fn get_range(t: Ctx) -> Result<()> {
    let data: Vec<u8> = (0u8..100).collect();
    let url = t.upload(&data).await?;
    for (a, b) in [(0u64, 0u64), (2, 5), (10, 99), (99, 99)] {
        let resp = t
            .send(
                t.plain(Method::GET, &url)
                    .header("Range", format!("bytes={a}-{b}")),
                "GET with Range",
            )
            .await?;
        let resp = expect_status(
            resp,
            206,
            &format!("contract (GET): Range bytes={a}-{b} answers 206 Partial Content"),
        )
        .await?;
        ensure_header(
            &resp,
            "Content-Range",
            &format!("bytes {a}-{b}/100"),
            &format!("contract (GET): 206 for bytes={a}-{b} carries Content-Range"),
        )?;
        let body = resp.bytes().await?;
        ensure!(
            body[..] == data[a as usize..=b as usize],
            "contract (GET): 206 body for bytes={a}-{b} must be exactly those {} bytes, got {} \
             bytes",
            b - a + 1,
            body.len()
        );
    }
    for range in ["bytes=100-120", "bytes=500-600"] {
        let resp = t
            .send(
                t.plain(Method::GET, &url).header("Range", range),
                "GET with Range",
            )
            .await?;
        let status = resp.status().as_u16();
        ensure!(
            status == 416,
            "contract (GET): unsatisfiable Range {range} on 100 bytes answers 416, got {status}"
        );
    }
    let resp = t.get(&url).await?;
    let resp = expect(
        resp,
        200,
        "contract (GET): without Range 200, and like every response it carries Tus-Resumable",
    )
    .await?;
    ensure_header(
        &resp,
        "Content-Length",
        "100",
        "contract (GET): 200 carries Content-Length",
    )?;
    Ok(())
}

async fn download_headers(t: &Ctx, meta: Option<&str>) -> Result<reqwest::Response> {
    let mut headers = vec![("Upload-Length", "4")];
    if let Some(m) = meta {
        headers.push(("Upload-Metadata", m));
    }
    let url = t.create_with(&headers).await?;
    t.patch_ok(&url, 0, b"data".to_vec()).await?;
    let resp = t.get(&url).await?;
    expect_status(resp, 200, "contract (GET): download answers 200").await
}

/// Content-Type from an allowlisted `filetype` (types that cannot script the upload origin)
/// with inline disposition; anything else, PDF included, application/octet-stream with
/// attachment; the `filename` in Content-Disposition; always nosniff and a sandbox CSP.
pub async fn get_content_type_rules(t: Ctx) -> Result<()> {
    let nosniff = |resp: &reqwest::Response, what: &str| {
        ensure_header(
            resp,
            "X-Content-Type-Options",
            "nosniff",
            &format!("contract (GET): always X-Content-Type-Options: nosniff ({what})"),
        )?;
        ensure_header(
            resp,
            "Content-Security-Policy",
            "sandbox",
            &format!("contract (GET): always Content-Security-Policy: sandbox ({what})"),
        )
    };
    let disposition =
        |resp: &reqwest::Response| header(resp, "Content-Disposition").unwrap_or_default();

    for (filetype, filename) in [
        ("image/png", "cat.png"),
        ("text/plain", "notes.txt"),
        ("video/mp4", "clip.mp4"),
    ] {
        let meta = format!("filetype {},filename {}", b64(filetype), b64(filename));
        let resp = download_headers(&t, Some(&meta)).await?;
        ensure_content_type(&resp, filetype, &format!("allowlisted filetype {filetype}"))?;
        let cd = disposition(&resp);
        ensure!(
            cd.to_ascii_lowercase().starts_with("inline") && cd.contains(filename),
            "contract (GET): allowlisted {filetype} gets Content-Disposition: inline with \
             filename {filename:?}, got {cd:?}"
        );
        nosniff(&resp, filetype)?;
    }

    for (filetype, filename) in [
        ("text/html", "page.html"),
        ("image/svg+xml", "logo.svg"),
        ("application/javascript", "x.js"),
        ("application/pdf", "paper.pdf"),
    ] {
        let meta = format!("filetype {},filename {}", b64(filetype), b64(filename));
        let resp = download_headers(&t, Some(&meta)).await?;
        ensure_content_type(
            &resp,
            "application/octet-stream",
            &format!("filetype {filetype} is not allowlisted"),
        )?;
        let cd = disposition(&resp);
        ensure!(
            cd.to_ascii_lowercase().starts_with("attachment") && cd.contains(filename),
            "contract (GET): non-allowlisted {filetype} gets Content-Disposition: attachment \
             with filename {filename:?}, got {cd:?}"
        );
        nosniff(&resp, filetype)?;
    }

    let resp = download_headers(&t, None).await?;
    ensure_content_type(&resp, "application/octet-stream", "no metadata")?;
    let cd = disposition(&resp);
    ensure!(
        cd.to_ascii_lowercase().starts_with("attachment"),
        "contract (GET): without filetype Content-Disposition is attachment, got {cd:?}"
    );
    nosniff(&resp, "no metadata")?;
    Ok(())
}

fn ensure_content_type(resp: &reqwest::Response, want: &str, what: &str) -> Result<()> {
    let ct = header(resp, "Content-Type").unwrap_or_default();
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    ensure!(
        essence == want,
        "contract (GET): Content-Type must be {want} for {what}, got {ct:?}"
    );
    Ok(())
}
