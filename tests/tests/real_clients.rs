//! Real tus clients against a real `tusk`: tus-js-client (Node) and tuspy (Python) upload
//! files through `tests/clients/{js,py}`, also through a [`FaultProxy`] that cuts the
//! connection mid-body so the client has to resume by itself (HEAD, then PATCH from the
//! server's offset). Every upload is read back with GET straight from the server and compared
//! by sha256 with the file.
//!
//! The clients must be installed; a missing one fails the test with the command to run:
//! `npm ci --prefix tests/clients/js` and `pip install -r tests/clients/py/requirements.txt`
//! (from the repository root). `TUSK_TEST_PYTHON` picks the Python (default `python3`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tusk_tests::faultproxy::FaultProxy;
use tusk_tests::harness::{FsEmbedded, TestServer};
use tusk_tests::uploaded::{check_upload, random_file};

const MIB: u64 = 1024 * 1024;
const JS_INSTALL: &str = "npm ci --prefix tests/clients/js";
const PY_INSTALL: &str = "pip install -r tests/clients/py/requirements.txt";
/// Upper bound for one client run; a 20 MiB upload over loopback takes a few seconds.
const CLIENT_DEADLINE: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug)]
enum Client {
    /// tus-js-client under Node, `tests/clients/js/upload.mjs`.
    Js,
    /// tuspy, `tests/clients/py/upload.py`.
    Py,
}

/// Options passed to the client scripts.
#[derive(Default)]
struct Opts {
    chunk_size: Option<u64>,
    retry: bool,
    metadata: Vec<(&'static str, String)>,
    /// tus-js-client's `protocol` option (`ietf-draft-03`, `ietf-draft-05`); tus 1.0 when
    /// `None`.
    protocol: Option<&'static str>,
    /// The first chunk goes with the creation request (`uploadDataDuringCreation`).
    data_during_creation: bool,
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

fn python() -> String {
    std::env::var("TUSK_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fails (never skips) when the client cannot run, saying how to install it.
async fn require(client: Client) -> Result<()> {
    match client {
        Client::Js => {
            let node = tokio::process::Command::new("node")
                .arg("--version")
                .output()
                .await;
            match node {
                Ok(out) if out.status.success() => {}
                _ => bail!(
                    "`node` is not on PATH: install Node.js 20, then run `{JS_INSTALL}` \
                     from the repository root"
                ),
            }
            let module = clients_dir().join("js/node_modules/tus-js-client/package.json");
            ensure!(
                module.exists(),
                "tus-js-client is not installed ({} is missing): run `{JS_INSTALL}` from the \
                 repository root",
                module.display()
            );
        }
        Client::Py => {
            let out = tokio::process::Command::new(python())
                .args(["-c", "import tusclient"])
                .output()
                .await;
            match out {
                Ok(out) if out.status.success() => {}
                Ok(out) => bail!(
                    "tuspy is not importable by `{}` ({}): run `{PY_INSTALL}` from the \
                     repository root",
                    python(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => bail!(
                    "cannot run `{}` ({e}): install Python 3 (or set TUSK_TEST_PYTHON), then \
                     run `{PY_INSTALL}` from the repository root",
                    python()
                ),
            }
        }
    }
    Ok(())
}

/// Uploads `file` to `endpoint` with the real client and returns the upload URL it reports.
async fn upload(client: Client, endpoint: &str, file: &Path, opts: &Opts) -> Result<String> {
    require(client).await?;
    let mut cmd = match client {
        Client::Js => {
            let mut cmd = tokio::process::Command::new("node");
            cmd.arg(clients_dir().join("js/upload.mjs"));
            cmd
        }
        Client::Py => {
            let mut cmd = tokio::process::Command::new(python());
            cmd.arg(clients_dir().join("py/upload.py"));
            cmd
        }
    };
    cmd.arg("--endpoint").arg(endpoint).arg("--file").arg(file);
    if let Some(n) = opts.chunk_size {
        cmd.args(["--chunk-size", &n.to_string()]);
    }
    if opts.retry {
        cmd.arg("--retry");
    }
    for (k, v) in &opts.metadata {
        cmd.args(["--metadata", &format!("{k}={v}")]);
    }
    if let Some(protocol) = opts.protocol {
        cmd.args(["--protocol", protocol]);
    }
    if opts.data_during_creation {
        cmd.arg("--data-during-creation");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning the {client:?} client"))?;
    let out = tokio::time::timeout(CLIENT_DEADLINE, child.wait_with_output())
        .await
        .with_context(|| format!("{client:?} client did not finish within {CLIENT_DEADLINE:?}"))?
        .with_context(|| format!("waiting for the {client:?} client"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture, or when the test fails: which retries the client made.
    eprintln!("{client:?} client stderr:\n{stderr}");
    ensure!(
        out.status.success(),
        "{client:?} client failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("UPLOAD_URL "))
        .map(|u| u.trim().to_string())
        .with_context(|| {
            format!("{client:?} client printed no UPLOAD_URL line:\n{stdout}\nstderr:\n{stderr}")
        })
}

/// A small file with metadata, then 20 MiB in 5 MiB chunks, then 20 MiB in one PATCH.
async fn uploads_whole_files(client: Client) -> Result<()> {
    require(client).await?;
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let dir = tempfile::tempdir()?;
    let (small, small_sha) = random_file(dir.path(), "small.bin", 1234)?;
    let url = upload(
        client,
        &server.endpoint,
        &small,
        &Opts {
            metadata: vec![
                ("filename", "small.bin".into()),
                ("filetype", "application/octet-stream".into()),
            ],
            ..Opts::default()
        },
    )
    .await?;
    check_upload(&server, &url, 1234, &small_sha)
        .await
        .context("small file")?;

    let size = 20 * MIB;
    let (big, big_sha) = random_file(dir.path(), "big.bin", size)?;
    let chunked = Opts {
        chunk_size: Some(5 * MIB),
        metadata: vec![("filename", "big.bin".into())],
        ..Opts::default()
    };
    let url = upload(client, &server.endpoint, &big, &chunked).await?;
    check_upload(&server, &url, size, &big_sha)
        .await
        .context("20 MiB in 5 MiB chunks")?;

    let whole = Opts {
        metadata: vec![("filename", "big.bin".into())],
        ..Opts::default()
    };
    let url = upload(client, &server.endpoint, &big, &whole).await?;
    check_upload(&server, &url, size, &big_sha)
        .await
        .context("20 MiB in one PATCH")?;
    Ok(())
}

/// 20 MiB in 4 MiB chunks through a proxy that cuts the connection twice mid-chunk; the
/// client retries by itself and the server ends up with exactly the file.
async fn resumes_after_cuts(client: Client) -> Result<()> {
    resumes_after_cuts_speaking(client, None).await
}

/// [`resumes_after_cuts`] with tus-js-client's `protocol` option.
async fn resumes_after_cuts_speaking(client: Client, protocol: Option<&'static str>) -> Result<()> {
    require(client).await?;
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let proxy = FaultProxy::start(&server.addr).await?;
    let dir = tempfile::tempdir()?;
    let size = 20 * MIB;
    let (file, sha) = random_file(dir.path(), "cut.bin", size)?;
    // Chunks start near multiples of 4 MiB of traffic: 6 MiB + 12345 is in the second chunk's
    // body, and the next cut 7 MiB + 4321 later falls inside a later chunk's body.
    proxy.cut_schedule(&[6 * MIB + 12_345, 7 * MIB + 4_321]);
    let opts = Opts {
        chunk_size: Some(4 * MIB),
        retry: true,
        metadata: vec![("filename", "cut.bin".into())],
        protocol,
        ..Opts::default()
    };
    let url = upload(client, &proxy.url("/files/"), &file, &opts).await?;
    ensure!(
        proxy.cuts() == 2,
        "the proxy cut {} connections, expected 2 ({} bytes relayed upstream over {} \
         connections): the test did not interrupt the upload as planned",
        proxy.cuts(),
        proxy.up_bytes(),
        proxy.connections()
    );
    check_upload(&server, &url, size, &sha).await
}

/// tus-js-client speaking the IETF draft (interop version 5, then 6) through connection
/// cuts: it creates with `Upload-Complete: ?0`, appends `application/partial-upload`
/// chunks, resumes by HEAD, and the upload reads back through tus (HEAD, GET) sha256-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_ietf_draft_resumes_after_connection_cuts() -> Result<()> {
    for protocol in ["ietf-draft-03", "ietf-draft-05"] {
        resumes_after_cuts_speaking(Client::Js, Some(protocol))
            .await
            .with_context(|| format!("tus-js-client with protocol {protocol}"))?;
    }
    Ok(())
}

/// Whole files with the draft: a creation then one append, and with
/// `uploadDataDuringCreation` one creation carrying the whole file (`Upload-Complete: ?1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_ietf_draft_uploads_whole_files() -> Result<()> {
    require(Client::Js).await?;
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let dir = tempfile::tempdir()?;
    let size = 3 * MIB + 17;
    let (file, sha) = random_file(dir.path(), "whole.bin", size)?;
    for protocol in ["ietf-draft-03", "ietf-draft-05"] {
        for data_during_creation in [false, true] {
            let opts = Opts {
                protocol: Some(protocol),
                data_during_creation,
                ..Opts::default()
            };
            let url = upload(Client::Js, &server.endpoint, &file, &opts).await?;
            check_upload(&server, &url, size, &sha)
                .await
                .with_context(|| {
                    format!("tus-js-client with protocol {protocol}, data during creation: {data_during_creation}")
                })?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_uploads_files() -> Result<()> {
    uploads_whole_files(Client::Js).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_resumes_after_connection_cuts() -> Result<()> {
    resumes_after_cuts(Client::Js).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_files() -> Result<()> {
    uploads_whole_files(Client::Py).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_resumes_after_connection_cuts() -> Result<()> {
    resumes_after_cuts(Client::Py).await
}

/// tuspy sends an empty `Upload-Metadata:` header when the application gives no metadata
/// (its default); tusd accepts that, and so must Tusk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_without_metadata() -> Result<()> {
    require(Client::Py).await?;
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let dir = tempfile::tempdir()?;
    let (file, sha) = random_file(dir.path(), "plain.bin", 100_000)?;
    let url = upload(Client::Py, &server.endpoint, &file, &Opts::default()).await?;
    check_upload(&server, &url, 100_000, &sha).await
}

/// An empty file: the client only creates the upload, which is complete at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_clients_upload_an_empty_file() -> Result<()> {
    require(Client::Js).await?;
    require(Client::Py).await?;
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let dir = tempfile::tempdir()?;
    let (file, sha) = random_file(dir.path(), "empty.bin", 0)?;
    let opts = Opts {
        metadata: vec![("filename", "empty.bin".into())],
        ..Opts::default()
    };
    for client in [Client::Js, Client::Py] {
        let url = upload(client, &server.endpoint, &file, &opts).await?;
        check_upload(&server, &url, 0, &sha)
            .await
            .with_context(|| format!("{client:?}"))?;
    }
    Ok(())
}
