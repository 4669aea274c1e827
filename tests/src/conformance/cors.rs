//! CORS: what a browser on another origin needs from every answer and from a preflight.

use anyhow::{ensure, Result};
use reqwest::Method;

use super::util::*;

const EXPOSED: &[&str] = &[
    "Upload-Offset",
    "Location",
    "Upload-Length",
    "Tus-Version",
    "Tus-Resumable",
    "Tus-Max-Size",
    "Tus-Extension",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Expires",
];

const REQUEST_HEADERS: &[&str] = &[
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-defer-length",
    "upload-concat",
    "upload-checksum",
    "content-type",
    "x-http-method-override",
];

/// A CORS preflight allows the tus methods and request headers; actual responses carry
/// Access-Control-Allow-Origin: * and expose the tus response headers.
pub async fn cors_preflight_and_exposed_headers(t: Ctx) -> Result<()> {
    let origin = "https://app.example";
    let url = t.create(5).await?;
    for (target, method) in [(t.endpoint.clone(), "POST"), (url.clone(), "PATCH")] {
        let resp = t
            .send(
                t.plain(Method::OPTIONS, &target)
                    .header("Origin", origin)
                    .header("Access-Control-Request-Method", method)
                    .header("Access-Control-Request-Headers", REQUEST_HEADERS.join(",")),
                "CORS preflight",
            )
            .await?;
        let status = resp.status().as_u16();
        ensure!(
            status == 200 || status == 204,
            "contract (CORS): a preflight for {method} answers 200/204, got {status}"
        );
        let acao = header(&resp, "Access-Control-Allow-Origin");
        ensure!(
            acao.as_deref() == Some("*"),
            "contract (CORS): preflight Access-Control-Allow-Origin is * by default, got {acao:?}"
        );
        let methods = list(&header(&resp, "Access-Control-Allow-Methods").unwrap_or_default());
        for m in ["post", "head", "patch", "delete"] {
            ensure!(
                methods.iter().any(|x| x == m || x == "*"),
                "contract (CORS): preflight Access-Control-Allow-Methods must allow {m}, got \
                 {methods:?}"
            );
        }
        let allowed = list(&header(&resp, "Access-Control-Allow-Headers").unwrap_or_default());
        for h in REQUEST_HEADERS {
            ensure!(
                allowed.iter().any(|x| x == h || x == "*"),
                "contract (CORS): preflight must allow the tus request header {h}, got {allowed:?}"
            );
        }
    }

    let resp = create_from(&t, origin).await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    let acao = header(&resp, "Access-Control-Allow-Origin");
    ensure!(
        acao.as_deref() == Some("*"),
        "contract (CORS): Access-Control-Allow-Origin (default *) on actual responses, got \
         {acao:?}"
    );
    let exposed = list(&header(&resp, "Access-Control-Expose-Headers").unwrap_or_default());
    for h in EXPOSED {
        ensure!(
            exposed.contains(&h.to_ascii_lowercase()),
            "contract (CORS): Access-Control-Expose-Headers must list {h}, got {exposed:?}"
        );
    }
    let resp = t
        .send(
            t.tus(Method::HEAD, &url).header("Origin", origin),
            "HEAD with Origin",
        )
        .await?;
    let resp = expect(resp, 200, "core: HEAD 200").await?;
    let exposed = list(&header(&resp, "Access-Control-Expose-Headers").unwrap_or_default());
    ensure!(
        exposed.contains(&"upload-offset".to_string()),
        "contract (CORS): HEAD responses expose Upload-Offset, got {exposed:?}"
    );
    Ok(())
}

/// --cors-allow-origin sets Access-Control-Allow-Origin.
pub async fn cors_custom_origin(t: Ctx) -> Result<()> {
    let origin = "https://app.example";
    let preflighted = preflight(&t, origin).await?;
    let status = preflighted.status().as_u16();
    ensure!(
        status == 200 || status == 204,
        "contract (CORS): a preflight answers 200/204, got {status}"
    );
    let created = expect(create_from(&t, origin).await?, 201, "creation: 201").await?;
    for resp in [&preflighted, &created] {
        ensure_header(
            resp,
            "Access-Control-Allow-Origin",
            origin,
            "contract (CORS): Access-Control-Allow-Origin comes from --cors-allow-origin",
        )?;
    }
    Ok(())
}

/// --disable-cors: no CORS headers on responses to a cross-origin request.
pub async fn cors_disabled(t: Ctx) -> Result<()> {
    let resp = create_from(&t, "https://app.example").await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    ensure_absent(
        &resp,
        "Access-Control-Allow-Origin",
        "contract (CORS): --disable-cors sends no Access-Control-Allow-Origin",
    )?;
    ensure_absent(
        &resp,
        "Access-Control-Expose-Headers",
        "contract (CORS): --disable-cors sends no Access-Control-Expose-Headers",
    )?;
    Ok(())
}

/// A creation of 5 bytes from a page of `origin`.
async fn create_from(t: &Ctx, origin: &str) -> Result<reqwest::Response> {
    t.send(
        t.tus(Method::POST, &t.endpoint)
            .header("Origin", origin)
            .header("Upload-Length", "5"),
        "POST with Origin",
    )
    .await
}

/// A preflight from `origin` for a creation.
async fn preflight(t: &Ctx, origin: &str) -> Result<reqwest::Response> {
    t.send(
        t.plain(Method::OPTIONS, &t.endpoint)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "tus-resumable,upload-length",
            ),
        "CORS preflight",
    )
    .await
}

/// A list of origins and subdomain patterns: a listed origin is echoed back, any other gets
/// no grant at all, and every answer says `Vary: Origin` (a cache shared by origins must not
/// hand one origin's grant to another).
pub async fn cors_origin_list(t: Ctx) -> Result<()> {
    for (origin, allowed) in [
        ("https://a.example", true),
        ("https://upload.b.example", true),
        ("https://b.example", false),
        ("https://a.example.evil", false),
        ("http://a.example", false),
        ("https://a.example,https://a.example", false),
    ] {
        let resp = preflight(&t, origin).await?;
        let vary = header(&resp, "Vary").unwrap_or_default();
        ensure!(
            vary.to_ascii_lowercase().contains("origin"),
            "contract (CORS): with a list of origins every answer varies on Origin, got \
             {vary:?} for {origin}"
        );
        let acao = header(&resp, "Access-Control-Allow-Origin");
        if allowed {
            ensure!(
                acao.as_deref() == Some(origin),
                "contract (CORS): the listed origin {origin} is echoed, got {acao:?}"
            );
            ensure!(
                header(&resp, "Access-Control-Allow-Methods").is_some(),
                "contract (CORS): a preflight from a listed origin allows the tus methods"
            );
        } else {
            ensure!(
                acao.is_none() && header(&resp, "Access-Control-Allow-Methods").is_none(),
                "contract (CORS): {origin} is not listed and must get no grant, got \
                 Access-Control-Allow-Origin {acao:?}"
            );
        }
    }
    let resp = create_from(&t, "https://upload.b.example").await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    ensure_header(
        &resp,
        "Access-Control-Allow-Origin",
        "https://upload.b.example",
        "contract (CORS): an actual answer echoes the matching origin",
    )?;
    let resp = create_from(&t, "https://evil.example").await?;
    let resp = expect(resp, 201, "creation: 201 (CORS is the browser's check)").await?;
    ensure_absent(
        &resp,
        "Access-Control-Allow-Origin",
        "contract (CORS): an unlisted origin's answer grants nothing",
    )?;
    Ok(())
}

/// `--cors-allow-credentials`, `--cors-max-age` and an app's own request header.
pub async fn cors_credentials_and_max_age(t: Ctx) -> Result<()> {
    let origin = "https://app.example";
    let resp = preflight(&t, origin).await?;
    ensure_header(
        &resp,
        "Access-Control-Allow-Origin",
        origin,
        "contract (CORS): credentials need the origin itself, never *",
    )?;
    ensure_header(
        &resp,
        "Access-Control-Allow-Credentials",
        "true",
        "contract (CORS): --cors-allow-credentials",
    )?;
    ensure_header(
        &resp,
        "Access-Control-Max-Age",
        "600",
        "contract (CORS): --cors-max-age 10m caches a preflight for 600 s",
    )?;
    let allowed = list(&header(&resp, "Access-Control-Allow-Headers").unwrap_or_default());
    ensure!(
        allowed.contains(&"x-app-token".to_string()),
        "contract (CORS): --cors-allow-headers adds X-App-Token, got {allowed:?}"
    );
    let resp = create_from(&t, origin).await?;
    let resp = expect(resp, 201, "creation: 201").await?;
    ensure_header(
        &resp,
        "Access-Control-Allow-Credentials",
        "true",
        "contract (CORS): actual answers allow credentials too",
    )?;
    Ok(())
}
