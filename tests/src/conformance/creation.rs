//! creation, creation-with-upload, creation-defer-length, max size, Location.

use anyhow::{ensure, Context, Result};
use reqwest::Method;

use super::util::*;

/// POST: 201, absolute Location under the endpoint with a well-formed fresh id,
/// Upload-Expires in the future, and no Upload-Offset without a body.
pub async fn creation_basic(t: Ctx) -> Result<()> {
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "42"),
            "POST",
        )
        .await?;
    let resp = expect(resp, 201, "creation: POST with Upload-Length answers 201").await?;
    let loc = location(&resp)?;
    ensure!(
        loc.starts_with(&t.endpoint),
        "contract (creation): Location is http://<Host>/files/<id> under the endpoint {}, got \
         {loc:?}",
        t.endpoint
    );
    let id = &loc[t.endpoint.len()..];
    ensure!(
        id.len() >= 22
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "contract (creation): ids are 22+ characters of [A-Za-z0-9_-], got {id:?}"
    );
    expires_in_future(
        &resp,
        "expiration: POST 201 carries Upload-Expires when expiration is on (the default)",
    )?;
    ensure_absent(
        &resp,
        "Upload-Offset",
        "contract (creation): Upload-Offset only when a body was sent",
    )?;
    t.assert_offset(&loc, 0, "creation: a new upload has offset 0")
        .await?;
    let other = t.create(42).await?;
    ensure!(
        other != loc,
        "creation: two POSTs must create two uploads, both got {loc}"
    );
    Ok(())
}

/// POST with neither, both, or malformed Upload-Length/Upload-Defer-Length: 400.
pub async fn creation_rejects_bad_length(t: Ctx) -> Result<()> {
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("neither Upload-Length nor Upload-Defer-Length", vec![]),
        (
            "both Upload-Length and Upload-Defer-Length",
            vec![("Upload-Length", "5"), ("Upload-Defer-Length", "1")],
        ),
        ("Upload-Length -1", vec![("Upload-Length", "-1")]),
        ("Upload-Length abc", vec![("Upload-Length", "abc")]),
        ("Upload-Length 1.5", vec![("Upload-Length", "1.5")]),
        ("Upload-Length 1e3", vec![("Upload-Length", "1e3")]),
        ("Upload-Length empty", vec![("Upload-Length", "")]),
        (
            "Upload-Length beyond u64",
            vec![("Upload-Length", "18446744073709551616")],
        ),
        ("Upload-Defer-Length 0", vec![("Upload-Defer-Length", "0")]),
        ("Upload-Defer-Length 2", vec![("Upload-Defer-Length", "2")]),
        (
            "Upload-Defer-Length yes",
            vec![("Upload-Defer-Length", "yes")],
        ),
    ];
    for (what, headers) in cases {
        let mut rb = t.tus(Method::POST, &t.endpoint);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let resp = t.send(rb, "POST").await?;
        expect_error(
            resp,
            400,
            &format!("contract (creation): POST with {what} answers 400"),
        )
        .await?;
    }
    Ok(())
}

/// Upload-Metadata with an empty key, a duplicate key, bad base64, or over
/// --max-metadata-size (4096 by default): 400.
pub async fn creation_rejects_bad_metadata(t: Ctx) -> Result<()> {
    let big = format!("big {}", b64(&"x".repeat(5000)));
    let cases = [
        ("an empty key", format!("a {},,b {}", b64("1"), b64("2"))),
        (
            "a duplicate key",
            format!("name {},name {}", b64("1"), b64("2")),
        ),
        ("bad base64", "name !!!notbase64!!!".to_string()),
        ("more than 4096 bytes", big),
    ];
    for (what, meta) in cases {
        let resp = t
            .send(
                t.tus(Method::POST, &t.endpoint)
                    .header("Upload-Length", "5")
                    .header("Upload-Metadata", meta),
                "POST",
            )
            .await?;
        expect_error(
            resp,
            400,
            &format!("contract (creation): Upload-Metadata with {what} answers 400"),
        )
        .await?;
    }
    // Just under the limit is fine, and keys without values are allowed.
    let meta = format!("ok {},flag", b64(&"y".repeat(3000)));
    let url = t
        .create_with(&[("Upload-Length", "5"), ("Upload-Metadata", &meta)])
        .await
        .context("creation: metadata of ~4 kB and a key without value must be accepted")?;
    let resp = t.head_ok(&url).await?;
    let got = header(&resp, "Upload-Metadata").unwrap_or_default();
    ensure!(
        parse_metadata(&got)? == parse_metadata(&meta)?,
        "creation: HEAD returns the metadata as sent"
    );
    Ok(())
}

/// A 100 kB header gets a 4xx (400 or 431), never a 5xx, and the node keeps serving.
pub async fn huge_header_is_4xx(t: Ctx) -> Result<()> {
    let meta = format!("big {}", b64(&"z".repeat(75_000)));
    let resp = t
        .raw(
            "POST",
            &t.base_path,
            &[
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Length", "5"),
                ("Upload-Metadata", &meta),
            ],
            b"",
        )
        .await?;
    ensure!(
        resp.status == 400 || resp.status == 431,
        "contract (bad input): a 100 kB Upload-Metadata header answers 400 or 431, got {}",
        resp.status
    );
    let junk = "j".repeat(100_000);
    let resp = t
        .raw(
            "HEAD",
            &format!("{}{}", t.base_path, random_id()),
            &[("Tus-Resumable", "1.0.0"), ("X-Junk", &junk)],
            b"",
        )
        .await?;
    ensure!(
        (400..500).contains(&resp.status),
        "contract (bad input): a 100 kB header answers 4xx, got {}",
        resp.status
    );
    let resp = t
        .send(t.plain(Method::OPTIONS, &t.endpoint), "OPTIONS")
        .await?;
    expect(resp, 204, "the node keeps serving after a huge header").await?;
    Ok(())
}

/// With --max-size 1000: Tus-Max-Size, exactly 1000 bytes succeed, one byte more fails
/// (creation, deferred length set by PATCH, and streamed body of a deferred upload).
pub async fn max_size_enforced(t: Ctx) -> Result<()> {
    let resp = t
        .send(t.plain(Method::OPTIONS, &t.endpoint), "OPTIONS")
        .await?;
    let resp = expect(resp, 204, "core: OPTIONS answers 204").await?;
    ensure_header(
        &resp,
        "Tus-Max-Size",
        "1000",
        "core: OPTIONS carries Tus-Max-Size when a maximum is configured",
    )?;

    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1001"),
            "POST",
        )
        .await?;
    expect_error(
        resp,
        413,
        "creation: Upload-Length above Tus-Max-Size answers 413",
    )
    .await?;

    let data = random_bytes(1000);
    let url = t
        .create(1000)
        .await
        .context("creation: Upload-Length exactly Tus-Max-Size must be accepted")?;
    t.patch_ok(&url, 0, data.clone()).await?;
    t.assert_content(
        &url,
        &data,
        "core: an upload of exactly max-size downloads intact",
    )
    .await?;

    let url = t.create_deferred().await?;
    let resp = t
        .send(
            t.patch_req(&url, 0, Vec::new())
                .header("Upload-Length", "1001"),
            "PATCH",
        )
        .await?;
    expect_error(
        resp,
        413,
        "contract (PATCH): a deferred Upload-Length above max size answers 413",
    )
    .await?;
    let resp = t.patch(&url, 0, random_bytes(1001)).await?;
    expect_error(
        resp,
        413,
        "core (Tus-Max-Size): 1001 bytes into a deferred upload with max size 1000 answers 413",
    )
    .await?;
    let off = t.offset(&url).await?;
    ensure!(
        off <= 1000,
        "core (Tus-Max-Size): no more than max-size bytes may be stored, HEAD offset {off}"
    );
    let url = t.create_deferred().await?;
    let resp = t
        .send(
            t.patch_req(&url, 0, data.clone())
                .header("Upload-Length", "1000"),
            "PATCH",
        )
        .await?;
    expect(
        resp,
        204,
        "creation-defer-length: PATCH with Upload-Length = max size answers 204",
    )
    .await?;
    t.assert_content(&url, &data, "deferred upload of exactly max size")
        .await?;
    Ok(())
}

/// creation-with-upload: the POST body is the first chunk (201 + Upload-Offset); checksum
/// allowed; another Content-Type with a body answers 415; a body beyond the length 413.
pub async fn creation_with_upload(t: Ctx) -> Result<()> {
    let post = |len: &str, body: &[u8]| {
        t.tus(Method::POST, &t.endpoint)
            .header("Upload-Length", len)
            .header("Content-Type", OFFSET_OCTET_STREAM)
            .body(body.to_vec())
    };
    let resp = t.send(post("11", b"hello"), "POST with body").await?;
    let resp = expect(
        resp,
        201,
        "creation-with-upload: POST with a first chunk answers 201",
    )
    .await?;
    let off = header_u64(
        &resp,
        "Upload-Offset",
        "creation-with-upload: 201 carries Upload-Offset when a body was sent",
    )?;
    ensure!(
        off == 5,
        "creation-with-upload: Upload-Offset must be the body length 5, got {off}"
    );
    let url = location(&resp)?;
    t.assert_offset(&url, 5, "creation-with-upload: HEAD shows the first chunk")
        .await?;
    t.patch_ok(&url, 5, b" world".to_vec()).await?;
    t.assert_content(
        &url,
        b"hello world",
        "creation-with-upload: bytes of POST + PATCH",
    )
    .await?;

    // The whole upload in the POST.
    let resp = t.send(post("3", b"abc"), "POST with whole body").await?;
    let resp = expect(
        resp,
        201,
        "creation-with-upload: POST with the whole upload answers 201",
    )
    .await?;
    let url = location(&resp)?;
    t.assert_content(
        &url,
        b"abc",
        "creation-with-upload: whole upload in the POST",
    )
    .await?;

    // With a checksum.
    let resp = t
        .send(
            post("4", b"data").header("Upload-Checksum", checksum_header("sha1", b"data")),
            "POST with checksum",
        )
        .await?;
    let resp = expect(
        resp,
        201,
        "contract (creation-with-upload): a correct Upload-Checksum on POST answers 201",
    )
    .await?;
    let off = header_u64(
        &resp,
        "Upload-Offset",
        "creation-with-upload: Upload-Offset",
    )?;
    ensure!(
        off == 4,
        "creation-with-upload: Upload-Offset 4 expected, got {off}"
    );

    let resp = t
        .send(
            post("4", b"data").header("Upload-Checksum", checksum_header("sha1", b"DATA")),
            "POST with wrong checksum",
        )
        .await?;
    expect_error(
        resp,
        460,
        "checksum (creation-with-upload): a first chunk with a mismatching checksum answers 460",
    )
    .await?;

    // Deferred length with a body.
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Defer-Length", "1")
                .header("Content-Type", OFFSET_OCTET_STREAM)
                .body(b"abc".to_vec()),
            "deferred POST with body",
        )
        .await?;
    let resp = expect(
        resp,
        201,
        "creation-with-upload + defer-length: POST with a body answers 201",
    )
    .await?;
    let off = header_u64(
        &resp,
        "Upload-Offset",
        "creation-with-upload: Upload-Offset",
    )?;
    ensure!(
        off == 3,
        "creation-with-upload: Upload-Offset 3 expected, got {off}"
    );

    // Wrong Content-Type with a body.
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "5")
                .header("Content-Type", "text/plain")
                .body(b"hello".to_vec()),
            "POST text/plain",
        )
        .await?;
    expect_error(
        resp,
        415,
        "contract (creation-with-upload): a non-empty body with another Content-Type answers 415",
    )
    .await?;

    // Body beyond the length.
    let resp = t.send(post("3", b"abcdef"), "POST beyond length").await?;
    expect_error(
        resp,
        413,
        "contract (creation-with-upload): a first chunk beyond Upload-Length answers 413",
    )
    .await?;
    Ok(())
}

/// creation-defer-length: HEAD shows Upload-Defer-Length: 1 until a PATCH sets the length
/// once; a different length later is 400, a length below the offset 413.
pub async fn defer_length(t: Ctx) -> Result<()> {
    let url = t.create_deferred().await?;
    let resp = t.head_ok(&url).await?;
    ensure_header(
        &resp,
        "Upload-Defer-Length",
        "1",
        "creation-defer-length: HEAD of a deferred upload carries Upload-Defer-Length: 1",
    )?;
    ensure_absent(
        &resp,
        "Upload-Length",
        "creation-defer-length: HEAD has no Upload-Length while it is deferred",
    )?;
    t.patch_ok(&url, 0, b"ab".to_vec()).await?;
    let resp = t.head_ok(&url).await?;
    ensure_header(
        &resp,
        "Upload-Defer-Length",
        "1",
        "creation-defer-length: still deferred after a PATCH without Upload-Length",
    )?;

    let resp = t
        .send(
            t.patch_req(&url, 2, b"cde".to_vec())
                .header("Upload-Length", "10"),
            "PATCH setting the length",
        )
        .await?;
    let resp = expect(
        resp,
        204,
        "creation-defer-length: PATCH with Upload-Length sets the length (204)",
    )
    .await?;
    let off = header_u64(
        &resp,
        "Upload-Offset",
        "core: PATCH 204 carries Upload-Offset",
    )?;
    ensure!(
        off == 5,
        "core: offset 5 expected after the PATCH, got {off}"
    );
    let resp = t.head_ok(&url).await?;
    let len = header_u64(
        &resp,
        "Upload-Length",
        "creation-defer-length: HEAD carries Upload-Length once it is set",
    )?;
    ensure!(
        len == 10,
        "creation-defer-length: Upload-Length 10 expected, got {len}"
    );
    ensure_absent(
        &resp,
        "Upload-Defer-Length",
        "creation-defer-length: no Upload-Defer-Length once the length is set",
    )?;

    // Repeating the same length is harmless; changing it is 400.
    let resp = t
        .send(
            t.patch_req(&url, 5, b"fg".to_vec())
                .header("Upload-Length", "10"),
            "PATCH same length",
        )
        .await?;
    expect(
        resp,
        204,
        "contract (PATCH): repeating the already set Upload-Length is accepted",
    )
    .await?;
    for other in ["12", "9"] {
        let resp = t
            .send(
                t.patch_req(&url, 7, b"h".to_vec())
                    .header("Upload-Length", other),
                "PATCH changing length",
            )
            .await?;
        expect_error(
            resp,
            400,
            &format!(
                "contract (PATCH): Upload-Length {other} changing the set length 10 answers 400"
            ),
        )
        .await?;
    }
    t.assert_offset(&url, 7, "a rejected length change writes nothing")
        .await?;
    t.patch_ok(&url, 7, b"hij".to_vec()).await?;
    t.assert_content(&url, b"abcdefghij", "creation-defer-length: final bytes")
        .await?;

    // A length below the current offset is 413.
    let url = t.create_deferred().await?;
    t.patch_ok(&url, 0, b"12345".to_vec()).await?;
    let resp = t
        .send(
            t.patch_req(&url, 5, Vec::new())
                .header("Upload-Length", "3"),
            "PATCH length below offset",
        )
        .await?;
    expect_error(
        resp,
        413,
        "contract (PATCH): a deferred Upload-Length below the offset answers 413",
    )
    .await?;
    let resp = t.head_ok(&url).await?;
    ensure_header(
        &resp,
        "Upload-Defer-Length",
        "1",
        "a rejected Upload-Length leaves the length deferred",
    )?;
    // Finishing with an empty PATCH that only sets the length.
    let resp = t
        .send(
            t.patch_req(&url, 5, Vec::new())
                .header("Upload-Length", "5"),
            "PATCH length = offset",
        )
        .await?;
    expect(
        resp,
        204,
        "creation-defer-length: an empty PATCH may set Upload-Length equal to the offset",
    )
    .await?;
    let resp = t.head_ok(&url).await?;
    let len = header_u64(&resp, "Upload-Length", "HEAD carries Upload-Length")?;
    ensure!(
        len == 5,
        "creation-defer-length: Upload-Length 5 expected, got {len}"
    );
    Ok(())
}

/// Without --behind-proxy, X-Forwarded-Host/Proto and Forwarded do not change Location.
pub async fn location_ignores_forwarded_without_flag(t: Ctx) -> Result<()> {
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1")
                .header("X-Forwarded-Host", "evil.example")
                .header("X-Forwarded-Proto", "https")
                .header("Forwarded", "host=evil2.example;proto=https"),
            "POST with forwarded headers",
        )
        .await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    let loc = location(&resp)?;
    ensure!(
        loc.starts_with(&t.endpoint),
        "contract (creation): without --behind-proxy the Location host comes from Host \
         ({}), got {loc:?}",
        t.endpoint
    );
    Ok(())
}

/// With --behind-proxy, X-Forwarded-Host/Proto make the Location; Forwarded is ignored (the
/// default `server.proxy_headers`).
pub async fn location_behind_proxy(t: Ctx) -> Result<()> {
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1")
                .header("X-Forwarded-Host", "uploads.example.com")
                .header("X-Forwarded-Proto", "https"),
            "POST with X-Forwarded-*",
        )
        .await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    let loc = location(&resp)?;
    let want = format!("https://uploads.example.com{}", t.base_path);
    ensure!(
        loc.starts_with(&want),
        "contract (creation): with --behind-proxy Location follows X-Forwarded-Host/Proto \
         ({want}<id>), got {loc:?}"
    );

    // The default family is X-Forwarded-*: a Forwarded header (a client's, which such a
    // proxy passes on) is ignored.
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1")
                .header("Forwarded", "proto=https;host=fwd.example.com"),
            "POST with Forwarded",
        )
        .await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    let ignored = location(&resp)?;
    ensure!(
        ignored.starts_with(&t.endpoint),
        "contract (creation): with --behind-proxy (server.proxy_headers x-forwarded) Location \
         ignores Forwarded ({}<id>), got {ignored:?}",
        t.endpoint
    );
    // A scheme other than http/https must not end up in Location.
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1")
                .header("X-Forwarded-Proto", "javascript"),
            "POST with a bogus X-Forwarded-Proto",
        )
        .await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    let bogus = location(&resp)?;
    ensure!(
        bogus.starts_with("http://") || bogus.starts_with("https://"),
        "robustness (behind proxy): X-Forwarded-Proto other than http/https must be ignored, \
         got Location {bogus:?}"
    );
    // The upload is still reachable at the real endpoint under the same id.
    let id = loc.rsplit('/').next().unwrap_or_default();
    t.assert_offset(
        &format!("{}{id}", t.endpoint),
        0,
        "the upload behind a proxy is reachable by its id",
    )
    .await?;
    Ok(())
}
