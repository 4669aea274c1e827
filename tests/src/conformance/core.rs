//! tus core: Tus-Resumable, OPTIONS, HEAD, PATCH, GET of the bytes, method override.

use anyhow::{ensure, Result};
use reqwest::Method;

use super::util::*;

/// The extensions Tusk advertises (contract: OPTIONS).
pub const EXTENSIONS: &[&str] = &[
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "checksum",
    "concatenation",
    "concatenation-unfinished",
];

/// The checksum algorithms Tusk advertises (contract: OPTIONS).
pub const CHECKSUM_ALGORITHMS: &[&str] = &["sha1", "sha256", "md5", "crc32", "sha512"];

/// 412 + Tus-Version for a missing or different Tus-Resumable on POST/HEAD/PATCH/DELETE, and
/// such a request changes nothing; OPTIONS and GET do not need the header (a GET without it
/// of a fresh upload downloads 0 bytes, or answers 409 where unfinished uploads cannot be
/// read, and of a finished upload returns its bytes).
pub async fn tus_resumable_required(t: Ctx) -> Result<()> {
    let url = t.create(10).await?;
    for version in [None, Some("0.2.2"), Some("1.0"), Some("")] {
        let what = match version {
            None => "missing".to_string(),
            Some(v) => format!("{v:?}"),
        };
        let rule = format!("core: Tus-Resumable {what} must be answered 412 Precondition Failed");
        let with = |rb: reqwest::RequestBuilder| match version {
            Some(v) => rb.header("Tus-Resumable", v),
            None => rb,
        };
        let requests = [
            (
                "POST",
                with(t.plain(Method::POST, &t.endpoint)).header("Upload-Length", "5"),
            ),
            ("HEAD", with(t.plain(Method::HEAD, &url))),
            (
                "PATCH",
                with(t.plain(Method::PATCH, &url))
                    .header("Content-Type", OFFSET_OCTET_STREAM)
                    .header("Upload-Offset", "0")
                    .body(b"abc".to_vec()),
            ),
            ("DELETE", with(t.plain(Method::DELETE, &url))),
        ];
        for (method, rb) in requests {
            let resp = t.send(rb, method).await?;
            let rule = format!("{rule} ({method})");
            let resp = expect(resp, 412, &rule).await?;
            let tv = header(&resp, "Tus-Version").unwrap_or_default();
            ensure!(
                list(&tv).contains(&"1.0.0".to_string()),
                "core: a 412 must carry Tus-Version listing 1.0.0 ({method}, Tus-Resumable \
                 {what}), got {tv:?}"
            );
        }
    }
    t.assert_offset(
        &url,
        0,
        "core: a PATCH rejected with 412 must not write anything",
    )
    .await?;

    let resp = t
        .send(t.plain(Method::OPTIONS, &t.endpoint), "OPTIONS")
        .await?;
    expect(
        resp,
        204,
        "core: OPTIONS must be answered without Tus-Resumable in the request",
    )
    .await?;
    // Ctx::get sends no Tus-Resumable.
    t.assert_unfinished_content(
        &url,
        b"",
        "contract: GET does not need Tus-Resumable (a fresh upload downloads as 0 bytes)",
    )
    .await?;
    let done = t.upload(b"done").await?;
    t.assert_content(
        &done,
        b"done",
        "contract: GET does not need Tus-Resumable (a finished upload downloads its bytes)",
    )
    .await?;
    Ok(())
}

/// OPTIONS on the endpoint and on an upload URL: 204 with Tus-Version, the exact
/// Tus-Extension set, the checksum algorithms, and no Tus-Max-Size without --max-size.
pub async fn options_advertises_capabilities(t: Ctx) -> Result<()> {
    let upload = t.create(3).await?;
    for url in [t.endpoint.clone(), upload] {
        let resp = t.send(t.plain(Method::OPTIONS, &url), "OPTIONS").await?;
        let resp = expect(resp, 204, "core/contract: OPTIONS answers 204").await?;
        let tv = header(&resp, "Tus-Version").unwrap_or_default();
        ensure!(
            list(&tv).contains(&"1.0.0".to_string()),
            "core: OPTIONS must carry Tus-Version including 1.0.0 ({url}), got {tv:?}"
        );
        let ext = header(&resp, "Tus-Extension").unwrap_or_default();
        let mut got = list(&ext);
        got.sort();
        let mut want: Vec<String> = EXTENSIONS.iter().map(|s| s.to_string()).collect();
        want.sort();
        ensure!(
            got == want,
            "contract (OPTIONS): Tus-Extension must be exactly {want:?} ({url}), got {ext:?}"
        );
        let algos = header(&resp, "Tus-Checksum-Algorithm").unwrap_or_default();
        let mut got = list(&algos);
        got.sort();
        let mut want: Vec<String> = CHECKSUM_ALGORITHMS.iter().map(|s| s.to_string()).collect();
        want.sort();
        ensure!(
            got == want,
            "checksum extension: OPTIONS Tus-Checksum-Algorithm must be exactly {want:?} \
             ({url}), got {algos:?}"
        );
        ensure_absent(
            &resp,
            "Tus-Max-Size",
            "contract (OPTIONS): Tus-Max-Size only when --max-size is set",
        )?;
    }
    Ok(())
}

/// HEAD: 200 with Upload-Offset, Upload-Length, the metadata as sent, Cache-Control:
/// no-store, Upload-Expires while unfinished.
pub async fn head_reports_upload_state(t: Ctx) -> Result<()> {
    let meta = format!(
        "filename {},filetype {},is_confidential",
        b64("world.txt"),
        b64("text/plain")
    );
    let url = t
        .create_with(&[("Upload-Length", "11"), ("Upload-Metadata", &meta)])
        .await?;
    t.patch_ok(&url, 0, b"hello".to_vec()).await?;
    let resp = t.head_ok(&url).await?;
    let off = header_u64(&resp, "Upload-Offset", "core: HEAD carries Upload-Offset")?;
    ensure!(
        off == 5,
        "core: HEAD Upload-Offset must be the committed offset 5, got {off}"
    );
    let len = header_u64(&resp, "Upload-Length", "core: HEAD carries Upload-Length")?;
    ensure!(
        len == 11,
        "core: HEAD Upload-Length must be the created length 11, got {len}"
    );
    let cc = header(&resp, "Cache-Control").unwrap_or_default();
    ensure!(
        list(&cc).contains(&"no-store".to_string()),
        "core: HEAD must carry Cache-Control: no-store, got {cc:?}"
    );
    let got = header(&resp, "Upload-Metadata")
        .ok_or_else(|| anyhow::anyhow!("creation: HEAD must return Upload-Metadata as sent"))?;
    ensure!(
        parse_metadata(&got)? == parse_metadata(&meta)?,
        "creation: HEAD Upload-Metadata must equal what was sent ({meta:?}), got {got:?}"
    );
    expires_in_future(
        &resp,
        "contract (HEAD): Upload-Expires on an unfinished upload when expiration is on",
    )?;
    ensure_absent(
        &resp,
        "Upload-Defer-Length",
        "creation-defer-length: HEAD has no Upload-Defer-Length once the length is known",
    )?;
    let body = resp.bytes().await?;
    ensure!(
        body.is_empty(),
        "core: HEAD response has no body, got {} bytes",
        body.len()
    );

    // An upload created without metadata has no Upload-Metadata.
    let bare = t.create(1).await?;
    let resp = t.head_ok(&bare).await?;
    ensure_absent(
        &resp,
        "Upload-Metadata",
        "creation: no Upload-Metadata on HEAD when none was sent",
    )?;
    Ok(())
}

/// HEAD, PATCH, DELETE and GET on an unknown or malformed id: 404.
pub async fn head_unknown_is_404(t: Ctx) -> Result<()> {
    for url in [t.unknown_url(), format!("{}not-an-id", t.endpoint)] {
        let resp = t.head(&url).await?;
        expect(resp, 404, "core: HEAD on an unknown upload answers 404").await?;
        let resp = t.patch(&url, 0, b"x".to_vec()).await?;
        expect_error(resp, 404, "core: PATCH on an unknown upload answers 404").await?;
        let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
        expect_error(
            resp,
            404,
            "termination: DELETE of an unknown upload answers 404",
        )
        .await?;
        let resp = t.get(&url).await?;
        ensure!(
            resp.status().as_u16() == 404,
            "contract: GET of an unknown upload answers 404, got {}",
            resp.status()
        );
    }
    Ok(())
}

/// PATCH: 415 on a wrong/missing Content-Type, 400 without Upload-Offset, 409 on an offset
/// mismatch; none of them writes anything.
pub async fn patch_rejects_bad_requests(t: Ctx) -> Result<()> {
    let url = t.create(10).await?;
    t.patch_ok(&url, 0, b"abc".to_vec()).await?;
    for ct in [
        Some("application/octet-stream"),
        Some("text/plain"),
        Some("application/offset+octet-stream-x"),
        None,
    ] {
        let mut rb = t
            .tus(Method::PATCH, &url)
            .header("Upload-Offset", "3")
            .body(b"def".to_vec());
        if let Some(ct) = ct {
            rb = rb.header("Content-Type", ct);
        }
        let resp = t.send(rb, "PATCH").await?;
        expect_error(
            resp,
            415,
            &format!(
                "core: PATCH with Content-Type {ct:?} (not application/offset+octet-stream) \
                 answers 415"
            ),
        )
        .await?;
    }
    let resp = t
        .send(
            t.tus(Method::PATCH, &url)
                .header("Content-Type", OFFSET_OCTET_STREAM)
                .body(b"def".to_vec()),
            "PATCH",
        )
        .await?;
    expect_error(
        resp,
        400,
        "contract (PATCH): missing Upload-Offset answers 400",
    )
    .await?;
    for wrong in [0u64, 2, 4, 10] {
        let resp = t.patch(&url, wrong, b"d".to_vec()).await?;
        expect_error(
            resp,
            409,
            &format!("core: PATCH Upload-Offset {wrong} != current offset 3 answers 409 Conflict"),
        )
        .await?;
    }
    t.assert_offset(
        &url,
        3,
        "core: rejected PATCHes (415/400/409) must not write anything",
    )
    .await?;
    t.patch_ok(&url, 3, b"defghij".to_vec()).await?;
    t.assert_content(&url, b"abcdefghij", "core: bytes after rejected PATCHes")
        .await?;
    Ok(())
}

/// PATCH with Upload-Offset negative, non-numeric, fractional or beyond u64: 400.
pub async fn patch_rejects_malformed_offsets(t: Ctx) -> Result<()> {
    let url = t.create(10).await?;
    for bad in [
        "-1",
        "abc",
        "1.5",
        "0x0",
        "1e3",
        "",
        "18446744073709551616",
        "99999999999999999999999999999999",
    ] {
        let resp = t
            .send(
                t.tus(Method::PATCH, &url)
                    .header("Content-Type", OFFSET_OCTET_STREAM)
                    .header("Upload-Offset", bad)
                    .body(b"x".to_vec()),
                "PATCH",
            )
            .await?;
        expect_error(
            resp,
            400,
            &format!("contract (PATCH): malformed Upload-Offset {bad:?} answers 400"),
        )
        .await?;
    }
    t.assert_offset(
        &url,
        0,
        "core: a PATCH with a malformed offset writes nothing",
    )
    .await?;
    Ok(())
}

/// PATCH beyond Upload-Length: 413 by Content-Length up front, 413 while streaming, 413 on a
/// complete upload; nothing beyond the length is stored.
pub async fn patch_beyond_length_is_413(t: Ctx) -> Result<()> {
    let url = t.create(10).await?;
    let data = b"0123456789ABCDEF".to_vec();
    let resp = t.patch(&url, 0, data.clone()).await?;
    expect_error(
        resp,
        413,
        "contract (PATCH): a body beyond Upload-Length (by Content-Length) answers 413",
    )
    .await?;
    let off = t.offset(&url).await?;
    ensure!(
        off <= 10,
        "contract (PATCH): nothing beyond the length is stored, HEAD offset {off} > 10"
    );

    // Streamed without Content-Length (chunked): the server only learns the size on the way.
    let url = t.create(10).await?;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(b"01234567".to_vec()), Ok(b"89ABCDEF".to_vec())];
    let rb = t
        .tus(Method::PATCH, &url)
        .header("Content-Type", OFFSET_OCTET_STREAM)
        .header("Upload-Offset", "0")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )));
    let resp = t.send(rb, "chunked PATCH").await?;
    expect(
        resp,
        413,
        "contract (PATCH): a streamed body beyond Upload-Length answers 413",
    )
    .await?;
    let off = t.offset(&url).await?;
    ensure!(
        off <= 10,
        "contract (PATCH): nothing beyond the length is stored, HEAD offset {off} > 10"
    );
    t.assert_committed(
        &url,
        &data[..off as usize],
        10,
        &format!("core: GET after a 413 must return exactly the {off} committed bytes"),
    )
    .await?;

    // A complete upload takes no more bytes.
    let url = t.upload(b"abc").await?;
    let resp = t.patch(&url, 3, b"d".to_vec()).await?;
    expect_error(
        resp,
        413,
        "contract (PATCH): a PATCH past the length of a complete upload answers 413",
    )
    .await?;
    t.assert_content(&url, b"abc", "core: a complete upload keeps its bytes")
        .await?;
    Ok(())
}

/// Several PATCH chunks: each 204 with the new offset (and Upload-Expires while unfinished);
/// GET of the unfinished upload gives the committed prefix (or 409 where unfinished uploads
/// cannot be read), GET at the end the exact bytes.
pub async fn patch_chunks_roundtrip(t: Ctx) -> Result<()> {
    let data = random_bytes(300 * 1024 + 17);
    let url = t.create(data.len() as u64).await?;
    let mut offset = 0usize;
    for size in [100 * 1024, 1, 64 * 1024 - 1, 70_000] {
        let chunk = data[offset..offset + size].to_vec();
        let resp = t.patch(&url, offset as u64, chunk).await?;
        let resp = expect(resp, 204, "core: PATCH answers 204").await?;
        let new = header_u64(
            &resp,
            "Upload-Offset",
            "core: PATCH 204 carries Upload-Offset",
        )?;
        ensure!(
            new == (offset + size) as u64,
            "core: PATCH Upload-Offset must be {} after {size} bytes at {offset}, got {new}",
            offset + size
        );
        expires_in_future(
            &resp,
            "contract (PATCH): Upload-Expires on every PATCH of an unfinished upload",
        )?;
        offset += size;
        t.assert_offset(&url, offset as u64, "core: HEAD shows the PATCHed offset")
            .await?;
    }
    t.assert_unfinished_content(
        &url,
        &data[..offset],
        "contract (GET): an unfinished upload streams its committed bytes",
    )
    .await?;
    let rest = data[offset..].to_vec();
    t.patch_ok(&url, offset as u64, rest).await?;
    let resp = t.head_ok(&url).await?;
    let len = header_u64(&resp, "Upload-Length", "core: HEAD carries Upload-Length")?;
    let off = header_u64(&resp, "Upload-Offset", "core: HEAD carries Upload-Offset")?;
    ensure!(
        off == len && len == data.len() as u64,
        "core: a finished upload has Upload-Offset == Upload-Length == {}, got {off}/{len}",
        data.len()
    );
    t.assert_content(
        &url,
        &data,
        "core: GET of a finished upload returns exactly the bytes sent",
    )
    .await?;
    Ok(())
}

/// A zero-length upload is complete at creation and downloads as 0 bytes.
pub async fn zero_length_upload(t: Ctx) -> Result<()> {
    let url = t.create(0).await?;
    let resp = t.head_ok(&url).await?;
    let off = header_u64(&resp, "Upload-Offset", "core: HEAD carries Upload-Offset")?;
    let len = header_u64(&resp, "Upload-Length", "core: HEAD carries Upload-Length")?;
    ensure!(
        off == 0 && len == 0,
        "creation: a zero-length upload has offset 0 and length 0, got {off}/{len}"
    );
    let got = t.download(&url).await?;
    ensure!(
        got.is_empty(),
        "GET of a zero-length upload must be empty, got {} bytes",
        got.len()
    );
    let resp = t.patch(&url, 0, b"x".to_vec()).await?;
    expect_error(
        resp,
        413,
        "contract (PATCH): a byte beyond the length 0 answers 413",
    )
    .await?;
    Ok(())
}

/// X-HTTP-Method-Override on POST turns it into PATCH, HEAD, GET and DELETE (GET of the
/// unfinished upload: its bytes, or 409 where unfinished uploads cannot be read, and then
/// the bytes of a finished one).
pub async fn method_override(t: Ctx) -> Result<()> {
    let url = t.create(6).await?;
    let post = |name: &str| {
        t.tus(Method::POST, &url)
            .header("X-HTTP-Method-Override", name)
    };
    let resp = t
        .send(
            post("PATCH")
                .header("Content-Type", OFFSET_OCTET_STREAM)
                .header("Upload-Offset", "0")
                .body(b"abc".to_vec()),
            "POST override PATCH",
        )
        .await?;
    let resp = expect(
        resp,
        204,
        "contract: POST with X-HTTP-Method-Override: PATCH acts as PATCH (204)",
    )
    .await?;
    let off = header_u64(
        &resp,
        "Upload-Offset",
        "override PATCH carries Upload-Offset",
    )?;
    ensure!(
        off == 3,
        "contract: override PATCH must advance the offset to 3, got {off}"
    );

    let resp = t.send(post("HEAD"), "POST override HEAD").await?;
    let resp = expect(
        resp,
        200,
        "contract: POST with X-HTTP-Method-Override: HEAD acts as HEAD (200)",
    )
    .await?;
    let off = header_u64(
        &resp,
        "Upload-Offset",
        "override HEAD carries Upload-Offset",
    )?;
    ensure!(
        off == 3,
        "contract: override HEAD Upload-Offset must be 3, got {off}"
    );

    let resp = t.send(post("GET"), "POST override GET").await?;
    if t.reads_unfinished {
        expect_override_get(resp, b"abc").await?;
    } else {
        expect_error(
            resp,
            409,
            "contract: POST with X-HTTP-Method-Override: GET acts as GET, which answers 409 \
             for an unfinished upload on storage that cannot read it",
        )
        .await?;
        let done = t.upload(b"xyz").await?;
        let resp = t
            .send(
                t.tus(Method::POST, &done)
                    .header("X-HTTP-Method-Override", "GET"),
                "POST override GET",
            )
            .await?;
        expect_override_get(resp, b"xyz").await?;
    }

    // Only POST is overridden: a GET or PATCH claiming DELETE stays what it is.
    let resp = t
        .send(
            t.tus(Method::GET, &url)
                .header("X-HTTP-Method-Override", "DELETE"),
            "GET override DELETE",
        )
        .await?;
    drop(resp);
    t.assert_offset(
        &url,
        3,
        "contract: X-HTTP-Method-Override applies to POST only; a GET claiming DELETE must not \
         terminate",
    )
    .await?;

    let resp = t.send(post("DELETE"), "POST override DELETE").await?;
    expect(
        resp,
        204,
        "contract: POST with X-HTTP-Method-Override: DELETE terminates (204)",
    )
    .await?;
    let resp = t.head(&url).await?;
    expect(
        resp,
        410,
        "termination: HEAD after an override DELETE answers 410",
    )
    .await?;
    Ok(())
}

/// A POST overridden to GET answered as a GET: 200 with exactly `bytes`.
async fn expect_override_get(resp: reqwest::Response, bytes: &[u8]) -> Result<()> {
    let resp = expect(
        resp,
        200,
        "contract: POST with X-HTTP-Method-Override: GET acts as GET (200)",
    )
    .await?;
    let body = resp.bytes().await?;
    ensure!(
        &body[..] == bytes,
        "contract: override GET returns the committed bytes {:?}, got {:?}",
        String::from_utf8_lossy(bytes),
        String::from_utf8_lossy(&body)
    );
    Ok(())
}
