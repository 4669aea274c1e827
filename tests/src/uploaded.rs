//! Checking what a real client uploaded: random files with their sha256, and reading an
//! upload back straight from the node (HEAD offset and length, GET body sha256).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::harness::TestServer;

/// A file of `size` random bytes in `dir`, and its sha256.
pub fn random_file(dir: &Path, name: &str, size: u64) -> Result<(PathBuf, String)> {
    let mut data = vec![0u8; usize::try_from(size)?];
    rand::rng().fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, hex::encode(Sha256::digest(&data))))
}

/// The upload URL's path, e.g. `/files/ID` from `http://127.0.0.1:PORT/files/ID`.
pub fn url_path(url: &str) -> Result<&str> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("upload URL {url:?} is not http://"))?;
    let slash = rest
        .find('/')
        .with_context(|| format!("upload URL {url:?} has no path"))?;
    Ok(&rest[slash..])
}

/// Reads the upload straight from the server (not through any proxy) and checks it is
/// complete and equal to the file: HEAD offset == length == size, GET body sha256.
pub async fn check_upload(
    server: &TestServer,
    upload_url: &str,
    size: u64,
    sha: &str,
) -> Result<()> {
    check_upload_as(server, upload_url, size, sha, &[]).await
}

/// [`check_upload`] with `credentials` (header name and value) on both requests, for a node
/// whose pre-access hook guards reads.
pub async fn check_upload_as(
    server: &TestServer,
    upload_url: &str,
    size: u64,
    sha: &str,
    credentials: &[(&str, &str)],
) -> Result<()> {
    let url = format!("http://{}{}", server.addr, url_path(upload_url)?);
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in credentials {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes())?,
            reqwest::header::HeaderValue::from_str(value)?,
        );
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()?;
    let head = http
        .head(&url)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .with_context(|| format!("HEAD {url}"))?;
    ensure!(head.status() == 200, "HEAD {url}: status {}", head.status());
    let header = |name: &str| -> Result<u64> {
        head.headers()
            .get(name)
            .with_context(|| format!("HEAD {url}: no {name}"))?
            .to_str()
            .with_context(|| format!("HEAD {url}: {name} is not text"))?
            .parse::<u64>()
            .with_context(|| format!("HEAD {url}: {name} is not a number"))
    };
    ensure!(
        header("Upload-Offset")? == size && header("Upload-Length")? == size,
        "HEAD {url}: Upload-Offset {:?} / Upload-Length {:?}, expected both {size}",
        head.headers().get("Upload-Offset"),
        head.headers().get("Upload-Length")
    );
    let get = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(get.status() == 200, "GET {url}: status {}", get.status());
    let body = get
        .bytes()
        .await
        .with_context(|| format!("GET {url}: reading body"))?;
    ensure!(
        body.len() as u64 == size,
        "GET {url}: {} bytes, expected {size}",
        body.len()
    );
    let got = hex::encode(Sha256::digest(&body));
    ensure!(got == sha, "GET {url}: sha256 {got}, expected {sha}");
    Ok(())
}
