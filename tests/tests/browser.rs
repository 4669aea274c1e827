//! Uploads from a real browser: Debian's Chromium, driven by playwright-core, runs
//! tus-js-client 4.3.1 and the Uppy 6 Dashboard in pages served from another origin than the
//! node (tests/clients/browser). Every request is a CORS request, so these tests are also the
//! CORS tests a browser enforces: a list of origins, credentials, an origin not listed.
//! Every finished upload is read back from the node and compared by sha256 with the file.
//!
//! Chromium (`apt-get install chromium`) and the driver (`npm ci --prefix
//! tests/clients/browser`) must be installed; tests/run.sh installs both, a missing one fails
//! the test with that command.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tusk_tests::browser::{self, artifacts_dir, endpoint_for_browser, page_origin, Drive};
use tusk_tests::harness::{FsEmbedded, TestServer};
use tusk_tests::process::free_port;
use tusk_tests::uploaded::{check_upload, check_upload_as, random_file};

const MIB: u64 = 1024 * 1024;
/// Upper bound for one browser upload over loopback (a start of Chromium included).
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

/// A node on fs storage allowing the browser page's origin (and another one: a list, which
/// Chromium refused when it was sent back whole).
async fn node_for_page(page_port: u16, extra: &[&str]) -> Result<TestServer> {
    let origins = format!("https://app.example,{}", page_origin(page_port));
    let mut args = vec!["--cors-allow-origin", origins.as_str()];
    args.extend_from_slice(extra);
    TestServer::start(&FsEmbedded, &args).await
}

fn settings(page: &str, page_port: u16, node: &TestServer, file: &Path, options: Value) -> Value {
    json!({
        "page": page,
        "pagePort": page_port,
        "endpoint": endpoint_for_browser(&node.endpoint),
        "file": file,
        "options": options,
    })
}

fn upload_url(result: &Value) -> Result<&str> {
    ensure!(result["ok"] == true, "the browser upload failed: {result}");
    result["url"]
        .as_str()
        .context("no upload URL in the result")
}

#[tokio::test]
async fn tus_js_client_in_chromium_default_chunked_and_parallel() -> Result<()> {
    browser::require()?;
    let page_port = free_port()?;
    let node = node_for_page(page_port, &[]).await?;
    let dir = tempfile::tempdir()?;
    let size = 12 * MIB + 12345;
    let (file, sha) = random_file(dir.path(), "photo 📷 été.bin", size)?;
    for options in [
        json!({}),
        json!({ "chunkSize": 5 * MIB }),
        json!({ "parallelUploads": 4 }),
    ] {
        let result = browser::run(
            &settings("tus", page_port, &node, &file, options.clone()),
            BROWSER_DEADLINE,
        )
        .await?;
        let url = upload_url(&result).with_context(|| format!("options {options}"))?;
        check_upload(&node, url, size, &sha)
            .await
            .with_context(|| format!("options {options}"))?;
        // The file's non-ASCII name went through Upload-Metadata and back.
        let got = reqwest::get(url.replacen("://localhost:", "://127.0.0.1:", 1)).await?;
        let disposition = got
            .headers()
            .get("Content-Disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        ensure!(
            disposition.contains("filename*=UTF-8''photo%20%F0%9F%93%B7%20%C3%A9t%C3%A9.bin"),
            "options {options}: the name came back as {disposition:?}"
        );
    }
    Ok(())
}

/// The page aborts mid-upload, then resumes from the URL tus-js-client stored, as after a
/// reload: the same upload continues from the node's offset, not from zero.
#[tokio::test]
async fn an_aborted_browser_upload_resumes_where_the_node_stands() -> Result<()> {
    browser::require()?;
    let page_port = free_port()?;
    let node = node_for_page(page_port, &[]).await?;
    let dir = tempfile::tempdir()?;
    let size = 9 * MIB;
    let (file, sha) = random_file(dir.path(), "resume.bin", size)?;
    let events = Drive::start(&settings(
        "tus",
        page_port,
        &node,
        &file,
        json!({ "chunkSize": MIB, "abortAt": 0.4 }),
    ))?
    .finish(BROWSER_DEADLINE)
    .await?;
    let result = events.last().context("no result")?;
    let url = upload_url(result)?;
    let aborted = events
        .iter()
        .find(|e| e["event"] == "aborted")
        .context("the page never aborted")?;
    ensure!(
        aborted["url"] == url,
        "the resumed upload is not the aborted one: {aborted} then {url}"
    );
    let resumed_at = events
        .iter()
        .find(|e| e["event"] == "head")
        .and_then(|e| e["offset"].as_u64())
        .context("the page resumed without asking the node's offset (HEAD)")?;
    ensure!(
        resumed_at >= 3 * MIB,
        "resumed at {resumed_at}: the 40% sent before the abort (whole 1 MiB chunks) were lost"
    );
    check_upload(&node, url, size, &sha).await
}

/// Uploads a file of `size` bytes through a Dashboard `page` ("uppy" or "compose"), checks
/// the node's copy, and keeps a screenshot named `shot` when given.
async fn upload_through_dashboard(page: &str, size: u64, shot: Option<&str>) -> Result<()> {
    browser::require()?;
    let page_port = free_port()?;
    let node = node_for_page(page_port, &[]).await?;
    let dir = tempfile::tempdir()?;
    let (file, sha) = random_file(dir.path(), "dashboard.bin", size)?;
    let mut drive = settings(page, page_port, &node, &file, json!({}));
    let screenshot = match shot {
        Some(name) => Some(artifacts_dir()?.join(name)),
        None => None,
    };
    if let Some(path) = &screenshot {
        let _ = std::fs::remove_file(path);
        drive["screenshot"] = json!(path);
    }
    let result = browser::run(&drive, BROWSER_DEADLINE).await?;
    let uploaded = result["successful"]
        .as_array()
        .filter(|files| files.len() == 1)
        .with_context(|| format!("the {page} Dashboard did not upload one file: {result}"))?;
    let url = uploaded[0]["url"].as_str().context("no uploadURL")?;
    check_upload(&node, url, size, &sha).await?;
    if let Some(path) = screenshot {
        let shot = std::fs::metadata(&path)
            .with_context(|| format!("no screenshot at {}", path.display()))?;
        ensure!(shot.len() > 1000, "the screenshot is empty");
        eprintln!("the Dashboard after the upload: {}", path.display());
    }
    Ok(())
}

#[tokio::test]
async fn the_uppy_dashboard_completes_an_upload() -> Result<()> {
    upload_through_dashboard("uppy", 5 * MIB + 7, Some("uppy-dashboard.png")).await
}

/// docker compose's upload page (deploy/docker/upload-page, served here as its image serves
/// it, with the same Uppy build) uploads through its Dashboard.
#[tokio::test]
async fn the_compose_upload_page_uploads() -> Result<()> {
    upload_through_dashboard("compose", 9 * MIB + 1, Some("compose-upload-page.png")).await
}

/// kill -9 of the node while the browser's one PATCH is in flight (the browser is throttled
/// to 4 MB/s so the test can act mid-body), then a restart on the same port: tus-js-client
/// retries, asks the offset and finishes. Every byte the node had committed before the kill
/// (its progress commits, read with HEAD while the PATCH ran) is still there.
#[tokio::test]
async fn a_browser_upload_survives_kill_9_of_the_node() -> Result<()> {
    browser::require()?;
    let page_port = free_port()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tusk.toml");
    std::fs::write(&config, "[uploads]\ncommit_interval_bytes = 1048576\n")?;
    let config = config.display().to_string();
    let mut node = node_for_page(page_port, &["--config", config.as_str()]).await?;
    let size = 24 * MIB;
    let (file, sha) = random_file(dir.path(), "crash.bin", size)?;
    let mut drive_settings = settings(
        "tus",
        page_port,
        &node,
        &file,
        json!({ "retryDelays": [250, 500, 1000, 1000, 2000, 2000, 4000, 4000, 8000] }),
    );
    drive_settings["throttle"] = json!(4_000_000);
    let mut drive = Drive::start(&drive_settings)?;
    let url_event = drive.until("url", BROWSER_DEADLINE).await?;
    let url = url_event["url"].as_str().context("no url")?.to_owned();
    let node_url = url.replacen("://localhost:", "://127.0.0.1:", 1);
    let http = reqwest::Client::new();
    let mut committed = 0;
    let deadline = tokio::time::Instant::now() + BROWSER_DEADLINE;
    while committed < 6 * MIB {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no 6 MiB committed in time"
        );
        let head = http
            .head(&node_url)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await?;
        committed = head
            .headers()
            .get("Upload-Offset")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.kill9().await?;
    let mut sent_before_kill = 0;
    // What the browser had handed to the network when the node died.
    while let Ok(event) = drive.next(Duration::from_millis(300)).await {
        if event["event"] == "progress" {
            sent_before_kill = event["sent"].as_u64().unwrap_or(0);
        }
        if event["event"] == "head" || event["event"] == "result" {
            break;
        }
    }
    node.restart().await?;
    let events = drive.finish(BROWSER_DEADLINE).await?;
    let result = events.last().context("no result")?;
    ensure!(
        upload_url(result)? == url,
        "the browser started a new upload: {result}"
    );
    let resumed_at = events
        .iter()
        .find(|e| e["event"] == "head" && e["status"] == 200)
        .and_then(|e| e["offset"].as_u64())
        .context("the browser never asked the restarted node's offset")?;
    ensure!(
        resumed_at >= committed,
        "the node acknowledged {committed} bytes (HEAD) before kill -9 but resumed at \
         {resumed_at}"
    );
    eprintln!(
        "kill -9: {committed} bytes committed when read last, the browser had sent \
         {sent_before_kill}, it resumed at {resumed_at} (re-sent {} bytes)",
        sent_before_kill.saturating_sub(resumed_at)
    );
    check_upload(&node, &url, size, &sha).await
}

/// A hook receiver that lets a request through pre-create and pre-access only with the
/// session cookie `session=good`.
async fn cookie_gate() -> Result<String> {
    async fn decide(_headers: HeaderMap, body: axum::body::Bytes) -> String {
        let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let cookie = call["request"]["headers"]["cookie"]
            .as_str()
            .unwrap_or_default();
        if cookie.split(';').any(|c| c.trim() == "session=good") {
            String::new()
        } else {
            r#"{"reject":true,"status":401,"body":"log in first"}"#.into()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let app = Router::new().route("/hooks", post(decide));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/hooks"))
}

/// Cookie authentication, as a web app does it: `withCredentials` in the page, the node
/// allows credentials for the page's origin, and the pre-create and pre-access hooks read the
/// session cookie. A good cookie uploads; a bad one, or none (no `withCredentials`), is
/// refused with the hook's 401, which the page can read because the refusal carries CORS
/// headers too.
#[tokio::test]
async fn cookie_authenticated_uploads_through_the_hooks() -> Result<()> {
    browser::require()?;
    let page_port = free_port()?;
    let hooks = cookie_gate().await?;
    let scratch = tempfile::tempdir()?;
    let config = scratch.path().join("tusk.toml");
    std::fs::write(&config, "[hooks]\ncredential_headers = [\"cookie\"]\n")?;
    let config = config.display().to_string();
    let node = node_for_page(
        page_port,
        &[
            "--cors-allow-credentials",
            "--hooks-http",
            hooks.as_str(),
            "--hooks-enabled-events",
            "pre-create,pre-access",
            "--config",
            config.as_str(),
        ],
    )
    .await?;
    let size = 3 * MIB;
    let (file, sha) = random_file(scratch.path(), "private.bin", size)?;
    let with_cookie = |value: &str, credentials: bool| {
        let mut s = settings(
            "tus",
            page_port,
            &node,
            &file,
            json!({ "withCredentials": credentials, "chunkSize": MIB, "retryDelays": [] }),
        );
        s["cookie"] = json!({ "name": "session", "value": value });
        s
    };
    let result = browser::run(&with_cookie("good", true), BROWSER_DEADLINE).await?;
    let url = upload_url(&result)?;
    check_upload_as(&node, url, size, &sha, &[("cookie", "session=good")]).await?;
    ensure!(
        check_upload(&node, url, size, &sha).await.is_err(),
        "the upload can be read without the session cookie"
    );
    for (cookie, credentials) in [("bad", true), ("good", false)] {
        let result = browser::run(&with_cookie(cookie, credentials), BROWSER_DEADLINE).await?;
        ensure!(
            result["ok"] == false && result["status"] == 401,
            "cookie {cookie}, withCredentials {credentials}: expected the hook's 401 to reach \
             the page, got {result}"
        );
    }
    Ok(())
}

/// A page whose origin is not in the list cannot upload: Chromium stops at the preflight.
#[tokio::test]
async fn a_page_from_an_unlisted_origin_cannot_upload() -> Result<()> {
    browser::require()?;
    let page_port = free_port()?;
    let other = page_origin(free_port()?);
    let node = TestServer::start(&FsEmbedded, &["--cors-allow-origin", other.as_str()]).await?;
    let dir = tempfile::tempdir()?;
    let (file, _) = random_file(dir.path(), "refused.bin", MIB)?;
    let result = browser::run(
        &settings("tus", page_port, &node, &file, json!({ "retryDelays": [] })),
        BROWSER_DEADLINE,
    )
    .await?;
    ensure!(
        result["ok"] == false,
        "a page from {} uploaded to a node that lists only {other}: {result}",
        page_origin(page_port)
    );
    Ok(())
}
