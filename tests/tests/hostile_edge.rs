//! What a hostile client controls at the edge of a node: the URLs handed out behind a proxy,
//! how its uploaded bytes are presented on download, and the metrics its requests create.

use anyhow::{ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::Rng as _;
use reqwest::Method;
use tusk_tests::conformance::util::{expect, header, location, Ctx};
use tusk_tests::harness::{FsEmbedded, TestServer};

/// Behind a proxy that sets X-Forwarded-* (nginx, ingress-nginx, HAProxy: the chart's
/// default), a client's own `Forwarded` header and a value it put before the proxy's in
/// X-Forwarded-Host do not choose the host of the Location URL.
#[tokio::test]
async fn a_client_cannot_choose_the_location_host_behind_a_proxy() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &["--behind-proxy"]).await?;
    let t = Ctx::new(&server)?;
    let want = format!("https://uploads.example.com{}", t.base_path);

    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1")
                .header("Forwarded", "host=evil.example;proto=http")
                .header("X-Forwarded-Host", "uploads.example.com")
                .header("X-Forwarded-Proto", "https"),
            "POST with the client's Forwarded and the proxy's X-Forwarded-*",
        )
        .await?;
    let loc = location(&expect(resp, 201, "creation: 201").await?)?;
    ensure!(
        loc.starts_with(&want),
        "a client's Forwarded header chose the Location {loc:?} (want {want}<id>)"
    );

    // A proxy that appends (rather than sets) puts its value last; the client's comes first.
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1")
                .header("X-Forwarded-Host", "evil.example, uploads.example.com")
                .header("X-Forwarded-Proto", "http, https"),
            "POST with a client value before the proxy's",
        )
        .await?;
    let loc = location(&expect(resp, 201, "creation: 201").await?)?;
    ensure!(
        loc.starts_with(&want),
        "the client's leftmost X-Forwarded-Host chose the Location {loc:?} (want {want}<id>)"
    );

    // A value that is no plausible host is ignored: Host decides.
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1")
                .header("X-Forwarded-Host", "evil.example/phish?"),
            "POST with an implausible X-Forwarded-Host",
        )
        .await?;
    let loc = location(&expect(resp, 201, "creation: 201").await?)?;
    ensure!(
        loc.starts_with(&t.endpoint),
        "an implausible X-Forwarded-Host made the Location {loc:?} (want {}<id>)",
        t.endpoint
    );
    Ok(())
}

/// With `server.proxy_headers = "forwarded"`, the proxy's (last) Forwarded element decides
/// and X-Forwarded-* is ignored.
#[tokio::test]
async fn the_forwarded_family_trusts_only_the_last_element() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tusk.toml");
    std::fs::write(&config, "[server]\nproxy_headers = \"forwarded\"\n")?;
    let config = config.display().to_string();
    let server = TestServer::start(&FsEmbedded, &["--behind-proxy", "--config", &config]).await?;
    let t = Ctx::new(&server)?;
    let resp = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "1")
                .header(
                    "Forwarded",
                    "host=evil.example;proto=http, for=10.0.0.1;host=\"uploads.example.com\";proto=https",
                )
                .header("X-Forwarded-Host", "evil2.example"),
            "POST with two Forwarded elements and X-Forwarded-Host",
        )
        .await?;
    let loc = location(&expect(resp, 201, "creation: 201").await?)?;
    let want = format!("https://uploads.example.com{}", t.base_path);
    ensure!(loc.starts_with(&want), "Location {loc:?}, want {want}<id>");
    Ok(())
}

/// A PDF (or HTML, SVG, XML) a client uploaded is never rendered from the upload origin:
/// it downloads as an attachment under its file name; every download says nosniff and is
/// sandboxed, and an image is still shown inline.
#[tokio::test]
async fn active_content_downloads_as_an_attachment() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let t = Ctx::new(&server)?;
    let body = b"%PDF-1.7\n<script>alert(1)</script>".to_vec();
    for (filetype, inline) in [
        ("application/pdf", false),
        ("text/html", false),
        ("image/svg+xml", false),
        ("text/xml", false),
        ("image/png", true),
    ] {
        let metadata = format!(
            "filetype {},filename {}",
            B64.encode(filetype),
            B64.encode("report.bin")
        );
        let url = t
            .create_with(&[
                ("Upload-Length", &body.len().to_string()),
                ("Upload-Metadata", &metadata),
            ])
            .await?;
        t.patch_ok(&url, 0, body.clone()).await?;
        let resp = expect(t.get(&url).await?, 200, "GET of a finished upload").await?;
        let disposition = header(&resp, "content-disposition").unwrap_or_default();
        let kind = if inline { "inline;" } else { "attachment;" };
        ensure!(
            disposition.starts_with(kind) && disposition.contains("filename=\"report.bin\""),
            "{filetype}: Content-Disposition {disposition:?}, want {kind} with the file name"
        );
        ensure!(
            header(&resp, "x-content-type-options").as_deref() == Some("nosniff"),
            "{filetype}: no X-Content-Type-Options: nosniff"
        );
        let csp = header(&resp, "content-security-policy").unwrap_or_default();
        ensure!(
            csp.split(';').any(|d| d.trim() == "sandbox"),
            "{filetype}: Content-Security-Policy {csp:?} has no sandbox"
        );
    }
    Ok(())
}

/// Requests with made-up method names cost the metrics one series, not one each.
#[tokio::test]
async fn random_methods_do_not_grow_the_metrics() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let admin = server
        .admin
        .clone()
        .context("the node printed no admin address")?;
    let t = Ctx::new(&server)?;
    let scrape = || async {
        reqwest::get(format!("{admin}metrics"))
            .await?
            .text()
            .await
            .context("GET /metrics")
    };
    // One request of a made-up method first, so that its series exists before the baseline.
    t.send(t.tus(Method::from_bytes(b"WARMUP")?, &t.endpoint), "WARMUP")
        .await?;
    let mut rng = rand::rng();
    let mut sent = Vec::new();
    let mut send_made_up = async |count: usize| -> Result<()> {
        for _ in 0..count {
            let name: String = (0..24)
                .map(|_| char::from(b'A' + rng.random_range(0..26u8)))
                .collect();
            let method = Method::from_bytes(name.as_bytes())?;
            t.send(
                t.tus(method, &t.endpoint),
                "a request with a made-up method",
            )
            .await?;
            sent.push(name);
        }
        Ok(())
    };
    // The first 250 may add fixed series (a status, a connection outcome); the next 250 may
    // only change counter values, a few digits each.
    send_made_up(250).await?;
    let before = scrape().await?;
    send_made_up(250).await?;
    let scrape = scrape().await?;
    let leaked = sent.iter().filter(|m| scrape.contains(m.as_str())).count();
    ensure!(
        leaked == 0,
        "{leaked} of 500 made-up methods became metric labels"
    );
    ensure!(
        scrape.len() < before.len() + 256,
        "/metrics grew from {} to {} bytes with 250 more made-up methods",
        before.len(),
        scrape.len()
    );
    ensure!(
        scrape
            .lines()
            .any(|l| l.starts_with(r#"tusk_requests_total{method="other""#)),
        "the made-up methods are not counted as method=\"other\""
    );
    Ok(())
}
