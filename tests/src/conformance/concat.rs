//! concatenation and concatenation-unfinished.

use std::time::Duration;

use anyhow::{ensure, Result};
use reqwest::Method;

use super::util::*;

async fn create_partial(t: &Ctx, length: Option<u64>) -> Result<String> {
    let len = length.map(|l| l.to_string());
    let mut headers = vec![("Upload-Concat", "partial")];
    match &len {
        Some(l) => headers.push(("Upload-Length", l)),
        None => headers.push(("Upload-Defer-Length", "1")),
    }
    t.create_with(&headers).await
}

async fn post_final(t: &Ctx, concat: &str, extra: &[(&str, &str)]) -> Result<reqwest::Response> {
    let mut rb = t
        .tus(Method::POST, &t.endpoint)
        .header("Upload-Concat", concat);
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    t.send(rb, "POST final").await
}

/// Partials + final: HEAD on partial and final, GET of the final is the concatenation,
/// final by absolute URLs and by paths; PATCH on the final is 403.
pub async fn concatenation_final(t: Ctx) -> Result<()> {
    let a_data = random_bytes(40_000);
    let b_data = random_bytes(25_001);
    let a = create_partial(&t, Some(a_data.len() as u64)).await?;
    let b = create_partial(&t, Some(b_data.len() as u64)).await?;
    t.patch_ok(&a, 0, a_data.clone()).await?;
    t.patch_ok(&b, 0, b_data.clone()).await?;
    let resp = t.head_ok(&a).await?;
    ensure_header(
        &resp,
        "Upload-Concat",
        "partial",
        "concatenation: HEAD of a partial upload carries Upload-Concat: partial",
    )?;
    let mut want = a_data.clone();
    want.extend_from_slice(&b_data);

    let resp = post_final(&t, &format!("final;{a} {b}"), &[]).await?;
    let resp = expect(
        resp,
        201,
        "concatenation: POST Upload-Concat: final;<a> <b> answers 201",
    )
    .await?;
    let fin = location(&resp)?;
    let resp = t.head_ok(&fin).await?;
    let concat = header(&resp, "Upload-Concat").unwrap_or_default();
    let a_id = a.rsplit('/').next().unwrap_or_default();
    let b_id = b.rsplit('/').next().unwrap_or_default();
    ensure!(
        concat.starts_with("final;")
            && concat.find(a_id).is_some()
            && concat.find(a_id) < concat.find(b_id),
        "concatenation: HEAD of the final carries Upload-Concat: final;<a> <b> in order, got \
         {concat:?}"
    );
    let off = header_u64(
        &resp,
        "Upload-Offset",
        "concatenation: HEAD of a finished final has Upload-Offset",
    )?;
    let len = header_u64(
        &resp,
        "Upload-Length",
        "concatenation: HEAD of the final has Upload-Length",
    )?;
    ensure!(
        off == want.len() as u64 && len == want.len() as u64,
        "concatenation: the final's length is the sum of the partials ({}) and it is complete, \
         got offset {off} length {len}",
        want.len()
    );
    t.assert_content(
        &fin,
        &want,
        "concatenation: GET of the final is the concatenation of the partials",
    )
    .await?;

    let resp = t.patch(&fin, off, b"x".to_vec()).await?;
    expect_error(
        resp,
        403,
        "concatenation: PATCH on a final upload answers 403 Forbidden",
    )
    .await?;
    let resp = t.patch(&fin, 0, b"x".to_vec()).await?;
    expect_error(
        resp,
        403,
        "concatenation: PATCH on a final upload answers 403 Forbidden",
    )
    .await?;

    // The same partials by path, in the other order.
    let resp = post_final(
        &t,
        &format!("final;{} {}", t.path_of(&b)?, t.path_of(&a)?),
        &[],
    )
    .await?;
    let resp = expect(
        resp,
        201,
        "contract (creation): Upload-Concat: final may name partials by path under the base path",
    )
    .await?;
    let fin2 = location(&resp)?;
    let mut want2 = b_data.clone();
    want2.extend_from_slice(&a_data);
    t.assert_content(
        &fin2,
        &want2,
        "concatenation: final by paths, in the order named",
    )
    .await?;
    // Partials remain usable as partials.
    t.assert_content(&a, &a_data, "concatenation: a partial keeps its own bytes")
        .await?;
    Ok(())
}

/// Final with Upload-Length: 400; naming an unknown upload: 400; naming a non-partial: 400.
pub async fn concatenation_errors(t: Ctx) -> Result<()> {
    let a = create_partial(&t, Some(3)).await?;
    t.patch_ok(&a, 0, b"abc".to_vec()).await?;
    let b = create_partial(&t, Some(2)).await?;
    t.patch_ok(&b, 0, b"de".to_vec()).await?;
    let regular = t.upload(b"xyz").await?;

    let resp = post_final(&t, &format!("final;{a} {b}"), &[("Upload-Length", "5")]).await?;
    expect_error(
        resp,
        400,
        "contract (concatenation): a final upload carrying Upload-Length answers 400",
    )
    .await?;
    for bad in ["bogus", "final;", "final", "partial;x", "final ;"] {
        let resp = post_final(&t, bad, &[("Upload-Length", "5")]).await?;
        let status = resp.status().as_u16();
        let resp2 = post_final(&t, bad, &[]).await?;
        let status2 = resp2.status().as_u16();
        ensure!(
            status == 400 && status2 == 400,
            "concatenation: a malformed Upload-Concat {bad:?} answers 400, got {status} (with \
             Upload-Length) and {status2} (without)"
        );
    }
    let unknown = t.unknown_url();
    let resp = post_final(&t, &format!("final;{a} {unknown}"), &[]).await?;
    expect_error(
        resp,
        400,
        "contract (concatenation): a final naming an unknown upload answers 400",
    )
    .await?;
    let resp = post_final(&t, &format!("final;{a} {regular}"), &[]).await?;
    expect_error(
        resp,
        400,
        "contract (concatenation): a final naming an upload that is not partial answers 400",
    )
    .await?;
    // A final is not partial either: it cannot be concatenated again.
    let resp = post_final(&t, &format!("final;{a} {b}"), &[]).await?;
    let resp = expect(resp, 201, "concatenation: valid final answers 201").await?;
    let fin = location(&resp)?;
    let resp = post_final(&t, &format!("final;{fin} {a}"), &[]).await?;
    expect_error(
        resp,
        400,
        "contract (concatenation): a final naming a final (not partial) upload answers 400",
    )
    .await?;
    // Terminated partials are gone.
    let c = create_partial(&t, Some(1)).await?;
    t.patch_ok(&c, 0, b"c".to_vec()).await?;
    let resp = t.send(t.tus(Method::DELETE, &c), "DELETE").await?;
    expect(resp, 204, "termination: 204").await?;
    let resp = post_final(&t, &format!("final;{a} {c}"), &[]).await?;
    expect_error(
        resp,
        400,
        "contract (concatenation): a final naming a terminated upload answers 400",
    )
    .await?;
    // PATCH on a partial upload is normal.
    t.assert_content(&a, b"abc", "partials are unaffected by rejected finals")
        .await?;
    Ok(())
}

/// Final created before its partials finish: HEAD omits Upload-Offset until they finish,
/// then it is complete with the right bytes.
pub async fn concatenation_unfinished(t: Ctx) -> Result<()> {
    let a_data = random_bytes(10_000);
    let b_data = random_bytes(7_777);
    let a = create_partial(&t, Some(a_data.len() as u64)).await?;
    let b = create_partial(&t, Some(b_data.len() as u64)).await?;
    t.patch_ok(&a, 0, a_data[..4000].to_vec()).await?;

    let resp = post_final(&t, &format!("final;{a} {b}"), &[]).await?;
    let resp = expect(
        resp,
        201,
        "concatenation-unfinished: a final may name unfinished partials (201)",
    )
    .await?;
    let fin = location(&resp)?;
    let total = (a_data.len() + b_data.len()) as u64;
    let resp = t.head_ok(&fin).await?;
    ensure_absent(
        &resp,
        "Upload-Offset",
        "concatenation-unfinished: HEAD of a final omits Upload-Offset while partials are unfinished",
    )?;
    let len = header_u64(
        &resp,
        "Upload-Length",
        "contract (HEAD): a final whose partials' lengths are known carries Upload-Length",
    )?;
    ensure!(
        len == total,
        "concatenation: final Upload-Length {total} expected, got {len}"
    );
    let resp = t.patch(&fin, 0, b"x".to_vec()).await?;
    expect_error(
        resp,
        403,
        "concatenation: PATCH on an unfinished final answers 403",
    )
    .await?;

    t.patch_ok(&a, 4000, a_data[4000..].to_vec()).await?;
    let resp = t.head_ok(&fin).await?;
    ensure_absent(
        &resp,
        "Upload-Offset",
        "concatenation-unfinished: still no Upload-Offset while one partial is unfinished",
    )?;
    t.patch_ok(&b, 0, b_data.clone()).await?;

    let off = poll(Duration::from_secs(10), || async {
        let resp = t.head_ok(&fin).await?;
        Ok(header(&resp, "Upload-Offset"))
    })
    .await?;
    ensure!(
        off.as_deref() == Some(total.to_string().as_str()),
        "concatenation-unfinished: once all partials finish, the final's HEAD carries \
         Upload-Offset = {total}; got {off:?} (None = still absent after 10s)"
    );
    let mut want = a_data;
    want.extend_from_slice(&b_data);
    t.assert_content(
        &fin,
        &want,
        "concatenation-unfinished: GET of the finished final",
    )
    .await?;
    Ok(())
}

/// A final naming a deferred-length partial omits Upload-Length and Upload-Offset until the
/// partial's length is set and it finishes.
pub async fn concatenation_unfinished_deferred(t: Ctx) -> Result<()> {
    let a = create_partial(&t, Some(3)).await?;
    t.patch_ok(&a, 0, b"abc".to_vec()).await?;
    let b = create_partial(&t, None).await?;
    let resp = post_final(&t, &format!("final;{a} {b}"), &[]).await?;
    let resp = expect(
        resp,
        201,
        "concatenation-unfinished: a final may name a deferred-length partial (201)",
    )
    .await?;
    let fin = location(&resp)?;
    let resp = t.head_ok(&fin).await?;
    ensure_absent(
        &resp,
        "Upload-Length",
        "contract (HEAD): a final omits Upload-Length while a partial's length is unknown",
    )?;
    ensure_absent(
        &resp,
        "Upload-Offset",
        "concatenation-unfinished: a final omits Upload-Offset while partials are unfinished",
    )?;
    t.patch_ok(&b, 0, b"de".to_vec()).await?;
    let resp = t
        .send(
            t.patch_req(&b, 2, b"fg".to_vec())
                .header("Upload-Length", "4"),
            "PATCH setting length",
        )
        .await?;
    expect(
        resp,
        204,
        "creation-defer-length: PATCH with Upload-Length 204",
    )
    .await?;

    let ready = poll(Duration::from_secs(10), || async {
        let resp = t.head_ok(&fin).await?;
        Ok(header(&resp, "Upload-Offset").map(|o| (o, header(&resp, "Upload-Length"))))
    })
    .await?;
    ensure!(
        ready == Some(("7".to_string(), Some("7".to_string()))),
        "concatenation-unfinished: once the partials finish the final has Upload-Offset 7 and \
         Upload-Length 7, got {ready:?}"
    );
    t.assert_content(
        &fin,
        b"abcdefg",
        "concatenation-unfinished: GET of the final",
    )
    .await?;
    Ok(())
}
