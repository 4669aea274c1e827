//! termination, expiration, checksum.

use std::time::{Duration, SystemTime};

use anyhow::{ensure, Result};
use reqwest::Method;

use super::util::*;

/// DELETE answers 204; afterwards HEAD/PATCH/GET answer 410; DELETE of an unknown id 404.
pub async fn termination(t: Ctx) -> Result<()> {
    let url = t.create(10).await?;
    t.patch_ok(&url, 0, b"abc".to_vec()).await?;
    let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    expect(resp, 204, "termination: DELETE of an upload answers 204").await?;
    let resp = t.head(&url).await?;
    expect(
        resp,
        410,
        "contract (termination): HEAD after DELETE answers 410 Gone",
    )
    .await?;
    let resp = t.patch(&url, 3, b"def".to_vec()).await?;
    expect_error(
        resp,
        410,
        "contract (termination): PATCH after DELETE answers 410 Gone",
    )
    .await?;
    let resp = t.get(&url).await?;
    let status = resp.status().as_u16();
    ensure!(
        status == 410,
        "contract (termination): GET after DELETE answers 410 Gone, got {status}"
    );
    let resp = t
        .send(t.tus(Method::DELETE, &t.unknown_url()), "DELETE")
        .await?;
    expect_error(
        resp,
        404,
        "contract (termination): DELETE of an unknown upload answers 404",
    )
    .await?;

    // A finished upload can be terminated too.
    let url = t.upload(b"done").await?;
    let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    expect(
        resp,
        204,
        "termination: DELETE of a finished upload answers 204",
    )
    .await?;
    let resp = t.head(&url).await?;
    expect(
        resp,
        410,
        "contract (termination): HEAD after DELETE answers 410 Gone",
    )
    .await?;
    Ok(())
}

/// With --tombstone-ttl 1s a terminated upload answers 410 at first, then 404 once the
/// tombstone is swept.
pub async fn termination_tombstone_expires(t: Ctx) -> Result<()> {
    let url = t.upload(b"bye").await?;
    let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    expect(resp, 204, "termination: DELETE answers 204").await?;
    let resp = t.head(&url).await?;
    expect(
        resp,
        410,
        "contract (HEAD): a terminated upload answers 410 while its tombstone is kept",
    )
    .await?;
    let status = poll(Duration::from_secs(8), || async {
        let s = t.head(&url).await?.status().as_u16();
        Ok((s != 410).then_some(s))
    })
    .await?;
    ensure!(
        status == Some(404),
        "contract (HEAD): once --tombstone-ttl (1s) has passed the upload is unknown (404); got \
         {status:?} after 8s (None = still 410)"
    );
    Ok(())
}

/// With expiration on (the default): Upload-Expires is an HTTP date in the future on POST,
/// PATCH and HEAD of unfinished uploads; a finished upload's HEAD has none.
pub async fn expiration_headers(t: Ctx) -> Result<()> {
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "6"),
            "POST",
        )
        .await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    let created = expires_in_future(&resp, "expiration: POST carries Upload-Expires")?;
    ensure!(
        created > SystemTime::now() + Duration::from_secs(3600),
        "expiration: the default expiry (7d) must be well in the future, got {:?}",
        header(&resp, "Upload-Expires")
    );
    let url = location(&resp)?;
    let resp = t.patch(&url, 0, b"abc".to_vec()).await?;
    let resp = expect(resp, 204, "core: PATCH 204").await?;
    expires_in_future(
        &resp,
        "expiration: PATCH of an unfinished upload carries Upload-Expires",
    )?;
    let resp = t.head_ok(&url).await?;
    expires_in_future(
        &resp,
        "contract (HEAD): an unfinished upload carries Upload-Expires",
    )?;
    t.patch_ok(&url, 3, b"def".to_vec()).await?;
    let resp = t.head_ok(&url).await?;
    ensure_absent(
        &resp,
        "Upload-Expires",
        "contract (HEAD): Upload-Expires only for unfinished uploads",
    )?;
    Ok(())
}

/// With --expire-after 2s --sweep-interval 1s an unfinished upload becomes 410 (tombstone)
/// after its expiry; a finished upload stays.
pub async fn expiration_sweeps_unfinished(t: Ctx) -> Result<()> {
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "10"),
            "POST",
        )
        .await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    let at = expires_in_future(&resp, "expiration: POST carries Upload-Expires")?;
    ensure!(
        at <= SystemTime::now() + Duration::from_secs(4),
        "expiration: with --expire-after 2s Upload-Expires must be ~2s ahead, got {:?}",
        header(&resp, "Upload-Expires")
    );
    let url = location(&resp)?;
    let resp = t.patch(&url, 0, b"abc".to_vec()).await?;
    let resp = expect(resp, 204, "core: PATCH 204").await?;
    let at = expires_in_future(&resp, "expiration: PATCH carries Upload-Expires")?;
    let done = t.upload(b"complete").await?;

    let wait_until = at + Duration::from_secs(1);
    if let Ok(d) = wait_until.duration_since(SystemTime::now()) {
        tokio::time::sleep(d).await;
    }
    let status = poll(Duration::from_secs(6), || async {
        let s = t.head(&url).await?.status().as_u16();
        Ok((s != 200).then_some(s))
    })
    .await?;
    ensure!(
        status == Some(410),
        "contract (HEAD): an expired upload answers 410 (tombstone kept --tombstone-ttl, 1d \
         by default) within 2 sweep intervals after Upload-Expires; got {status:?} (None = \
         still 200)"
    );
    let resp = t.patch(&url, 3, b"def".to_vec()).await?;
    expect_error(resp, 410, "contract (PATCH): an expired upload answers 410").await?;
    let resp = t.head(&done).await?;
    expect(
        resp,
        200,
        "expiration: only unfinished uploads expire; a finished one stays",
    )
    .await?;
    t.assert_content(
        &done,
        b"complete",
        "a finished upload keeps its bytes after a sweep",
    )
    .await?;
    Ok(())
}

/// With --expire-after 3s, PATCHes less than 3s apart keep an upload alive beyond 3s.
pub async fn expiration_refreshed_by_patch(t: Ctx) -> Result<()> {
    let url = t.create(10).await?;
    let mut offset = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        offset = t.patch_ok(&url, offset, b"ab".to_vec()).await?;
    }
    // 4.5 s after creation, the upload is still alive because each PATCH renewed it.
    t.assert_offset(
        &url,
        offset,
        "expiration: an upload PATCHed within the expiry period must not expire",
    )
    .await?;
    Ok(())
}

/// With --expire-after 0 there is no Upload-Expires anywhere.
pub async fn expiration_disabled(t: Ctx) -> Result<()> {
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "6"),
            "POST",
        )
        .await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    ensure_absent(
        &resp,
        "Upload-Expires",
        "contract (CLI): --expire-after 0 turns expiry off, so no Upload-Expires on POST",
    )?;
    let url = location(&resp)?;
    let resp = t.patch(&url, 0, b"abc".to_vec()).await?;
    let resp = expect(resp, 204, "core: PATCH 204").await?;
    ensure_absent(
        &resp,
        "Upload-Expires",
        "contract (CLI): --expire-after 0, so no Upload-Expires on PATCH",
    )?;
    let resp = t.head_ok(&url).await?;
    ensure_absent(
        &resp,
        "Upload-Expires",
        "contract (CLI): --expire-after 0, so no Upload-Expires on HEAD",
    )?;
    Ok(())
}

async fn checksum_roundtrip(t: &Ctx, algo: &str) -> Result<()> {
    let data = random_bytes(70_000);
    let (a, b) = data.split_at(30_000);
    let url = t.create(data.len() as u64).await?;
    let resp = t
        .send(
            t.patch_req(&url, 0, a.to_vec())
                .header("Upload-Checksum", checksum_header(algo, a)),
            "PATCH with checksum",
        )
        .await?;
    let resp = expect(
        resp,
        204,
        &format!("checksum: a PATCH with a correct {algo} Upload-Checksum answers 204"),
    )
    .await?;
    let off = header_u64(
        &resp,
        "Upload-Offset",
        "core: PATCH 204 carries Upload-Offset",
    )?;
    ensure!(
        off == a.len() as u64,
        "core: offset {} expected, got {off}",
        a.len()
    );

    // The checksum of different bytes: mismatch.
    let mut wrong = b.to_vec();
    wrong[0] ^= 0xff;
    let resp = t
        .send(
            t.patch_req(&url, off, b.to_vec())
                .header("Upload-Checksum", checksum_header(algo, &wrong)),
            "PATCH with wrong checksum",
        )
        .await?;
    expect_error(
        resp,
        460,
        &format!("checksum: a {algo} mismatch answers 460 Checksum Mismatch"),
    )
    .await?;
    t.assert_offset(
        &url,
        off,
        &format!("checksum: after a {algo} mismatch nothing of the chunk is committed"),
    )
    .await?;

    let resp = t
        .send(
            t.patch_req(&url, off, b.to_vec())
                .header("Upload-Checksum", checksum_header(algo, b)),
            "PATCH with checksum",
        )
        .await?;
    expect(
        resp,
        204,
        &format!("checksum: the retried chunk with a correct {algo} answers 204"),
    )
    .await?;
    t.assert_content(&url, &data, &format!("checksum ({algo}): final bytes"))
        .await?;
    Ok(())
}

/// sha1: correct 204, mismatch 460 with the offset unchanged.
pub async fn checksum_sha1(t: Ctx) -> Result<()> {
    checksum_roundtrip(&t, "sha1").await
}

/// sha256: correct 204, mismatch 460 with the offset unchanged.
pub async fn checksum_sha256(t: Ctx) -> Result<()> {
    checksum_roundtrip(&t, "sha256").await
}

/// md5: correct 204, mismatch 460 with the offset unchanged.
pub async fn checksum_md5(t: Ctx) -> Result<()> {
    checksum_roundtrip(&t, "md5").await
}

/// sha512: correct 204, mismatch 460.
pub async fn checksum_sha512(t: Ctx) -> Result<()> {
    checksum_roundtrip(&t, "sha512").await
}

/// crc32 (base64 of the big-endian 4-byte CRC-32): correct 204, mismatch 460.
pub async fn checksum_crc32(t: Ctx) -> Result<()> {
    checksum_roundtrip(&t, "crc32").await
}

/// An unknown algorithm or a malformed Upload-Checksum: 400, nothing committed.
pub async fn checksum_rejects_unknown_and_malformed(t: Ctx) -> Result<()> {
    let url = t.create(10).await?;
    let body = b"abc".to_vec();
    let sha1 = checksum_header("sha1", &body);
    let sha1_value = sha1.split_once(' ').map(|(_, v)| v).unwrap_or_default();
    let cases = [
        ("an unknown algorithm", format!("whirlpool {sha1_value}")),
        (
            "an unknown algorithm (sha512)",
            format!("sha512 {sha1_value}"),
        ),
        ("no digest", "sha1".to_string()),
        ("a digest that is not base64", "sha1 !!!!".to_string()),
        ("an empty value", String::new()),
    ];
    for (what, value) in cases {
        let resp = t
            .send(
                t.patch_req(&url, 0, body.clone())
                    .header("Upload-Checksum", value.as_str()),
                "PATCH with bad checksum",
            )
            .await?;
        expect_error(
            resp,
            400,
            &format!("checksum: Upload-Checksum with {what} ({value:?}) answers 400"),
        )
        .await?;
    }
    t.assert_offset(&url, 0, "checksum: a rejected checksum commits nothing")
        .await?;
    Ok(())
}
