//! What an operator sees: exact metric values after a known sequence of requests, and the
//! health endpoints.

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use tusk_tests::conformance::util::Ctx;
use tusk_tests::harness::{FsEmbedded, TestServer};

/// The value of one sample line `name{labels} value` (exact label text) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn expect(scrape: &str, series: &str, want: f64) -> Result<()> {
    let got = sample(scrape, series);
    ensure!(
        got == Some(want),
        "{series}: expected {want}, scraped {got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let admin = server
        .admin
        .clone()
        .context("the node printed no admin address")?;
    let t = Ctx::new(&server)?;

    t.send(t.plain(Method::OPTIONS, &t.endpoint), "OPTIONS")
        .await?;
    let finished = t.create(10).await?;
    let terminated = t.create(10).await?;
    t.patch_ok(&finished, 0, vec![7u8; 10]).await?;
    let conflict = t.patch(&terminated, 3, vec![1u8; 2]).await?;
    ensure!(
        conflict.status() == 409,
        "wrong offset answered {}",
        conflict.status()
    );
    let deleted = t.send(t.tus(Method::DELETE, &terminated), "DELETE").await?;
    ensure!(
        deleted.status() == 204,
        "DELETE answered {}",
        deleted.status()
    );
    let missing = t.head(&t.unknown_url()).await?;
    ensure!(
        missing.status() == 404,
        "HEAD of an unknown upload answered {}",
        missing.status()
    );

    let scrape = reqwest::get(format!("{admin}metrics"))
        .await?
        .text()
        .await?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="OPTIONS",status="204"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="POST",status="201"}"#,
        2.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="PATCH",status="204"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="PATCH",status="409"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="DELETE",status="204"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="HEAD",status="404"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_request_errors_total{kind="offset_mismatch"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_request_errors_total{kind="not_found"}"#,
        1.0,
    )?;
    expect(&scrape, "tusk_uploads_created_total", 2.0)?;
    expect(&scrape, "tusk_uploads_finished_total", 1.0)?;
    expect(&scrape, "tusk_uploads_terminated_total", 1.0)?;
    expect(&scrape, "tusk_bytes_received_total", 10.0)?;
    expect(&scrape, "tusk_leases_held", 0.0)?;
    expect(&scrape, "tusk_lease_losses_total", 0.0)?;
    // Both PATCHes reached the engine (the 409 one was refused under the lease).
    expect(&scrape, "tusk_patch_duration_seconds_count", 2.0)?;
    expect(
        &scrape,
        r#"tusk_coordinator_call_duration_seconds_count{backend="embedded",op="commit_and_release"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_storage_call_duration_seconds_count{backend="fs",op="write"}"#,
        1.0,
    )?;
    ensure!(
        sample(&scrape, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
        "no process metrics"
    );
    ensure!(
        !scrape.contains(&finished[finished.len() - 24..]),
        "an upload ID leaked into a label"
    );

    for path in ["healthz", "readyz"] {
        let status = reqwest::get(format!("{admin}{path}")).await?.status();
        ensure!(status == 200, "/{path} answered {status}");
    }
    Ok(())
}
