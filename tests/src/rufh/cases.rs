//! The draft's cases over plain HTTP, each run for every interop version against one
//! deployment. Every assertion names the version and the rule it checks.

use anyhow::{ensure, Context, Result};
use reqwest::Method;

use super::draft::{
    Draft, COMPLETED_UPLOAD, INCONSISTENT_LENGTH, MISMATCHING_OFFSET, PARTIAL_UPLOAD, VERSIONS,
};
use crate::conformance::util::{header, header_u64, random_bytes};
use crate::conformance::Ctx;

/// Creation without content, then one append that completes it; the upload reads back
/// through the draft (HEAD) and through tus (HEAD, GET).
pub async fn draft_creation_without_content(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let data = random_bytes(4096 + usize::from(version));
        let url = draft.create(b"", false).await?;
        draft.head_ok(&url, 0, false).await?;
        draft.append_ok(&url, 0, &data, true).await?;
        let head = draft.head_ok(&url, data.len() as u64, true).await?;
        let length = header_u64(
            &head,
            "Upload-Length",
            "HEAD of a complete upload: Upload-Length",
        )?;
        ensure!(
            length == data.len() as u64,
            "v{version}: Upload-Length {length}"
        );
        ctx.assert_content(
            &url,
            &data,
            "an upload made through the draft reads back through tus",
        )
        .await?;
        let tus_head = ctx.head_ok(&url).await?;
        ensure!(
            header(&tus_head, "Upload-Offset") == header(&tus_head, "Upload-Length")
                && header(&tus_head, "Upload-Length") == Some(data.len().to_string()),
            "v{version}: tus HEAD of a complete draft upload shows offset = length = {}",
            data.len()
        );
    }
    Ok(())
}

/// Creation carrying the whole upload; creation carrying a part, then an empty append that
/// completes it.
pub async fn draft_creation_with_content(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let data = random_bytes(10_000);
        let url = draft.create(&data, true).await?;
        draft.head_ok(&url, data.len() as u64, true).await?;
        ctx.assert_content(&url, &data, "a complete creation holds its body")
            .await?;

        let url = draft.create(&data, false).await?;
        draft.head_ok(&url, data.len() as u64, false).await?;
        draft.append_ok(&url, data.len() as u64, b"", true).await?;
        let head = draft.head_ok(&url, data.len() as u64, true).await?;
        ensure!(
            header(&head, "Upload-Length") == Some(data.len().to_string()),
            "v{version}: an empty completing append sets the length to the offset"
        );
        ctx.assert_content(&url, &data, "completion by an empty append")
            .await?;
    }
    Ok(())
}

/// An upload in three appends of different sizes.
pub async fn draft_append_in_pieces(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let data = random_bytes(300_000);
        let (a, rest) = data.split_at(1000);
        let (b, c) = rest.split_at(200_000);
        let url = draft.create(a, false).await?;
        draft.append_ok(&url, 1000, b, false).await?;
        draft.head_ok(&url, 201_000, false).await?;
        draft.append_ok(&url, 201_000, c, true).await?;
        ctx.assert_content(&url, &data, "appends in order").await?;
    }
    Ok(())
}

/// An append at the wrong offset: 409 with the upload's offset (and from version 6 the
/// `mismatching-upload-offset` problem with both offsets); nothing is appended.
pub async fn draft_offset_mismatch(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let url = draft.create(b"0123456789", false).await?;
        for wrong in [0u64, 5, 11, 1 << 40] {
            let resp = ctx
                .send(
                    draft.append(&url, wrong, b"abc", false),
                    "append at a wrong offset",
                )
                .await?;
            let offset = header_u64(&resp, "Upload-Offset", "409 names the upload's offset")?;
            ensure!(
                offset == 10,
                "v{version}: 409 Upload-Offset {offset}, expected 10"
            );
            if version >= 9 {
                ensure!(
                    header(&resp, "Upload-Complete").as_deref() == Some("?0"),
                    "v9: a refused append says the upload is incomplete"
                );
            }
            let problem = draft
                .expect_problem(resp, 409, MISMATCHING_OFFSET, 6, "append at a wrong offset")
                .await?;
            if version >= 6 {
                ensure!(
                    problem["expected-offset"] == 10 && problem["provided-offset"] == wrong,
                    "v{version}: the problem names both offsets: {problem}"
                );
            }
        }
        draft.head_ok(&url, 10, false).await?;
    }
    Ok(())
}

/// Appending to a completed upload is refused (400; `completed-upload` in versions 6 to 8,
/// `inconsistent-upload-length` in 9) and changes nothing; an empty completing append to
/// it succeeds (a client repeating its last request).
pub async fn draft_completed_upload(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let url = draft.create(b"whole", true).await?;
        let resp = ctx
            .send(
                draft.append(&url, 5, b"more", true),
                "append to a completed upload",
            )
            .await?;
        let (problem, since) = if version == 9 {
            (INCONSISTENT_LENGTH, 9)
        } else {
            (COMPLETED_UPLOAD, 6)
        };
        draft
            .expect_problem(resp, 400, problem, since, "append to a completed upload")
            .await?;
        draft.append_ok(&url, 5, b"", true).await?;
        ctx.assert_content(&url, b"whole", "a completed upload is not changed")
            .await?;
    }
    Ok(())
}

/// Lengths that disagree: a complete creation whose `Upload-Length` is not its body's
/// length (400, nothing created), and a completing append that ends short of the length
/// (400, its bytes kept).
pub async fn draft_inconsistent_length(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let resp = ctx
            .send(
                draft.creation(b"12345", true).header("Upload-Length", "6"),
                "creation with lengths that disagree",
            )
            .await?;
        ensure!(
            header(&resp, "Location").is_none(),
            "v{version}: a refused creation names no upload"
        );
        draft
            .expect_problem(
                resp,
                400,
                INCONSISTENT_LENGTH,
                7,
                "creation with lengths that disagree",
            )
            .await?;

        let resp = ctx
            .send(
                draft
                    .creation(b"12345", false)
                    .header("Upload-Length", "10"),
                "creation with a length",
            )
            .await?;
        let resp = draft
            .expect(resp, 201, "creation with Upload-Length")
            .await?;
        let url = header(&resp, "Location").context("no Location")?;
        draft.head_ok(&url, 5, false).await?;
        let resp = ctx
            .send(
                draft.append(&url, 5, b"678", true),
                "completing append ending short",
            )
            .await?;
        draft
            .expect_problem(
                resp,
                400,
                INCONSISTENT_LENGTH,
                7,
                "completing append short of the length",
            )
            .await?;
        draft.head_ok(&url, 5, false).await?;
        draft.append_ok(&url, 5, b"67890", true).await?;
        ctx.assert_content(&url, b"1234567890", "the upload completes at its length")
            .await?;
    }
    Ok(())
}

/// `Upload-Limit` from version 6 (`expires` in 6, `max-age` later) on OPTIONS, HEAD and the
/// creation's answer; an upload past the maximum size is refused with 413.
/// Server: `--max-size 1000 --expire-after 1h`.
pub async fn draft_limits(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let resp = ctx
            .send(draft.request(Method::OPTIONS, &ctx.endpoint), "OPTIONS")
            .await?;
        let limits = header(&resp, "Upload-Limit");
        let resp = draft
            .expect(resp, 204, "OPTIONS answers like tus's")
            .await?;
        if version < 6 {
            ensure!(
                limits.is_none(),
                "v{version}: no Upload-Limit before version 6"
            );
        } else {
            let limits =
                limits.with_context(|| format!("v{version}: OPTIONS carries Upload-Limit"))?;
            let age = if version == 6 {
                "expires=3600"
            } else {
                "max-age=3600"
            };
            ensure!(
                limits.contains("max-size=1000") && limits.contains(age),
                "v{version}: Upload-Limit {limits:?} names max-size=1000 and {age}"
            );
            ensure!(
                header(&resp, "Tus-Max-Size").as_deref() == Some("1000"),
                "OPTIONS keeps tus's headers"
            );
            let url = draft.create(b"abc", false).await?;
            let head = draft.head_ok(&url, 3, false).await?;
            let limits = header(&head, "Upload-Limit").context("HEAD carries Upload-Limit")?;
            ensure!(
                limits.contains("max-size=1000"),
                "v{version}: HEAD Upload-Limit {limits:?}"
            );
        }
        let resp = ctx
            .send(
                draft.creation(&random_bytes(2000), true),
                "creation past the maximum",
            )
            .await?;
        draft
            .expect(resp, 413, "an upload past the maximum size is refused")
            .await?;
    }
    Ok(())
}

/// DELETE cancels the upload (204); it is then gone: 404 in versions 3 to 6, 410 later.
/// Versions 3 to 6 refuse HEAD and DELETE carrying an append's headers (400).
pub async fn draft_cancellation(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let url = draft.create(b"abc", false).await?;
        if version <= 6 {
            for method in [Method::HEAD, Method::DELETE] {
                let resp = ctx
                    .send(
                        draft
                            .request(method.clone(), &url)
                            .header("Upload-Offset", "3"),
                        "request with an append's header",
                    )
                    .await?;
                draft
                    .expect(
                        resp,
                        400,
                        &format!("{method} with Upload-Offset is refused"),
                    )
                    .await?;
            }
        }
        let resp = ctx
            .send(draft.request(Method::DELETE, &url), "DELETE")
            .await?;
        draft.expect(resp, 204, "cancellation answers 204").await?;
        let resp = ctx
            .send(draft.request(Method::HEAD, &url), "HEAD after DELETE")
            .await?;
        let gone = if version <= 6 { 404 } else { 410 };
        draft
            .expect(resp, gone, "a cancelled upload is gone")
            .await?;
        let resp = ctx
            .send(draft.append(&url, 3, b"d", true), "append after DELETE")
            .await?;
        draft
            .expect(resp, gone, "a cancelled upload takes no bytes")
            .await?;
    }
    Ok(())
}

/// What every version refuses with a clear status: versions it does not serve (400, not
/// tus's 412), a missing or malformed completeness header, a missing offset, an append
/// without `application/partial-upload` (6 on: 415), unknown uploads, wrong methods.
pub async fn draft_bad_requests(ctx: Ctx) -> Result<()> {
    for raw in ["2", "10", "six", "", "6, 7"] {
        let resp = ctx
            .send(
                ctx.plain(Method::POST, &ctx.endpoint)
                    .header("Upload-Draft-Interop-Version", raw)
                    .header("Upload-Complete", "?1"),
                "unserved interop version",
            )
            .await?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        ensure!(
            status == 400 && body.contains("Upload-Draft-Interop-Version"),
            "interop version {raw:?}: expected 400 naming the header, got {status}: {body}"
        );
    }
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let resp = ctx
            .send(
                draft.request(Method::POST, &ctx.endpoint).body("x"),
                "creation without completeness",
            )
            .await?;
        draft
            .expect(resp, 400, "a creation needs the completeness header")
            .await?;
        let resp = ctx
            .send(
                draft
                    .request(Method::POST, &ctx.endpoint)
                    .header(draft.completeness_header(), "true"),
                "malformed completeness",
            )
            .await?;
        draft
            .expect(resp, 400, "a completeness header that is no sf-boolean")
            .await?;

        let url = draft.create(b"abc", false).await?;
        let resp = ctx
            .send(
                draft
                    .request(Method::PATCH, &url)
                    .header(draft.completeness_header(), draft.completeness(true))
                    .header("Content-Type", PARTIAL_UPLOAD)
                    .body("d"),
                "append without Upload-Offset",
            )
            .await?;
        draft
            .expect(resp, 400, "an append needs Upload-Offset")
            .await?;
        let resp = ctx
            .send(
                draft
                    .request(Method::PATCH, &url)
                    .header("Upload-Offset", "3")
                    .header(draft.completeness_header(), draft.completeness(true))
                    .header("Content-Type", "application/offset+octet-stream")
                    .body("d"),
                "append with tus's media type",
            )
            .await?;
        let want = if version >= 6 { 415 } else { 204 };
        draft
            .expect(
                resp,
                want,
                "appends are application/partial-upload from version 6",
            )
            .await?;

        let resp = ctx
            .send(
                draft.request(Method::HEAD, &ctx.unknown_url()),
                "HEAD of an unknown upload",
            )
            .await?;
        draft.expect(resp, 404, "an unknown upload is 404").await?;
        let resp = ctx
            .send(
                draft.append(&ctx.endpoint, 0, b"x", true),
                "PATCH on the collection",
            )
            .await?;
        draft.expect(resp, 405, "PATCH on the collection").await?;
    }
    Ok(())
}

/// One store, two protocols: an upload created by tus is appended to through the draft, and
/// one created through the draft is appended to by tus.
pub async fn draft_and_tus_share_uploads(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let url = ctx.create(10).await?;
        ctx.patch_ok(&url, 0, b"01234".to_vec()).await?;
        draft.head_ok(&url, 5, false).await?;
        draft.append_ok(&url, 5, b"56789", true).await?;
        ctx.assert_content(&url, b"0123456789", "tus upload finished through the draft")
            .await?;

        let url = draft.create(b"abcde", false).await?;
        let resp = ctx
            .send(
                ctx.patch_req(&url, 5, b"fgh".to_vec())
                    .header("Upload-Length", "8"),
                "tus PATCH declaring the length",
            )
            .await?;
        ensure!(
            resp.status() == 204,
            "tus PATCH on a draft upload: {}",
            resp.status()
        );
        draft.head_ok(&url, 8, true).await?;
        ctx.assert_content(&url, b"abcdefgh", "draft upload finished through tus")
            .await?;
    }
    Ok(())
}

/// Digests (RFC 9530, versions 6 on): an append whose `Content-Digest` does not match
/// appends nothing (400); `Repr-Digest` given at creation is checked when the upload
/// completes (400 on a mismatch); `Want-Repr-Digest` gets the upload's `Repr-Digest`.
pub async fn draft_digests(ctx: Ctx) -> Result<()> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    for version in [6u8, 7, 8, 9] {
        let draft = Draft::new(&ctx, version);
        let url = draft.create(b"head", false).await?;
        let wrong = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(b"other")));
        let resp = ctx
            .send(
                draft
                    .append(&url, 4, b"tail", false)
                    .header("Content-Digest", wrong),
                "append with a wrong Content-Digest",
            )
            .await?;
        draft
            .expect(resp, 400, "a Content-Digest mismatch is refused")
            .await?;
        draft.head_ok(&url, 4, false).await?;
        let right = format!("sha-512=:{}:", b64(&sha2::Sha512::digest(b"tail")));
        let resp = ctx
            .send(
                draft
                    .append(&url, 4, b"tail", true)
                    .header("Content-Digest", right)
                    .header("Want-Repr-Digest", "sha-256=5"),
                "append with its Content-Digest",
            )
            .await?;
        let resp = draft
            .expect(resp, 204, "a matching Content-Digest appends")
            .await?;
        let want = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(b"headtail")));
        ensure!(
            header(&resp, "Repr-Digest").as_deref() == Some(want.as_str()),
            "v{version}: Want-Repr-Digest answered with the upload's digest, got {:?}",
            header(&resp, "Repr-Digest")
        );

        let repr = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(b"abcdef")));
        let resp = ctx
            .send(
                draft
                    .creation(b"abc", false)
                    .header("Repr-Digest", repr.clone()),
                "creation with Repr-Digest",
            )
            .await?;
        let resp = draft.expect(resp, 201, "creation with Repr-Digest").await?;
        let url = header(&resp, "Location").context("no Location")?;
        draft.append_ok(&url, 3, b"def", true).await?;
        let resp = ctx
            .send(
                draft.creation(b"abc", false).header("Repr-Digest", repr),
                "creation with Repr-Digest",
            )
            .await?;
        let resp = draft.expect(resp, 201, "creation with Repr-Digest").await?;
        let url = header(&resp, "Location").context("no Location")?;
        let resp = ctx
            .send(
                draft.append(&url, 3, b"xyz", true),
                "completion with other bytes",
            )
            .await?;
        draft
            .expect(
                resp,
                400,
                "an upload whose bytes miss its Repr-Digest is refused at completion",
            )
            .await?;
    }
    Ok(())
}
