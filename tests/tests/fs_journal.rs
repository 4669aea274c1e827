//! Small writes against real `tusk` processes: small PATCH bodies (at most 64 KiB) are
//! acknowledged while their part files are unsynced, durable only in a log: on a single
//! node, the embedded coordinator's log, which carries them; on a shared directory, the fs
//! small-write journal. The node is killed with kill -9 before the part files are synced,
//! and a power cut is simulated by editing the part files it left, the way a filesystem that
//! had not written them back leaves them (XFS, ext4 data=writeback, network filesystems):
//! the same length, zeros; or short, or missing. What must hold: every acknowledged byte is
//! served exactly (sha256), by the restarted node, or on a shared directory by a node that
//! lives on, without a restart.
//!
//! The two-node cases need redis-server (tests/run.sh installs it); a missing one fails the
//! test with the `apt-get install` command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::time::Instant;
use tusk_tests::conformance::util::{random_bytes, sha256_hex as sha};
use tusk_tests::deploy::{FsShared, Pair, Shared};
use tusk_tests::harness::{FsEmbedded, NodeOptions, TestServer};
use tusk_tests::redis::Redis;

/// Bodies of at most 64 KiB go through the journal; an upload may take several.
const SMALL: usize = 64 << 10;

/// An upload a test sent: its ID and bytes.
struct Sent {
    id: String,
    data: Vec<u8>,
}

/// How an upload's bytes are sent.
#[derive(Clone, Copy, PartialEq)]
enum Bodies {
    /// In two PATCHes (or one, for a single byte), so an upload has several files.
    Two,
    /// In one PATCH.
    One,
}

/// POSTs and PATCHes to `endpoint` (a node's own): uploads of these lengths, each in bodies
/// of at most [`SMALL`] bytes, every PATCH answered 204.
async fn send_small_uploads(
    http: &reqwest::Client,
    endpoint: &str,
    lengths: &[usize],
    bodies: Bodies,
) -> Result<Vec<Sent>> {
    let mut sent = Vec::new();
    for &len in lengths {
        let data = random_bytes(len);
        let resp = http
            .post(endpoint)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", len.to_string())
            .send()
            .await
            .with_context(|| format!("POST {endpoint}"))?;
        ensure!(resp.status() == 201, "POST {endpoint}: {}", resp.status());
        let location = resp
            .headers()
            .get("Location")
            .context("201 without Location")?
            .to_str()
            .context("Location is not text")?
            .to_string();
        let id = location
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
            .with_context(|| format!("no upload ID in {location}"))?
            .to_string();
        // Two bodies where the upload is longer than one, so an upload has several files.
        let cut = match bodies {
            _ if len > SMALL => SMALL,
            Bodies::Two => len / 2,
            Bodies::One => len,
        };
        let mut offset = 0;
        for end in [cut, len] {
            if end == offset {
                continue;
            }
            let resp = http
                .patch(format!("{endpoint}{id}"))
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", offset.to_string())
                .header("Content-Type", "application/offset+octet-stream")
                .body(data[offset..end].to_vec())
                .send()
                .await
                .with_context(|| format!("PATCH {id} at {offset}"))?;
            ensure!(
                resp.status() == 204,
                "PATCH {id} at {offset}: {}, expected 204",
                resp.status()
            );
            offset = end;
        }
        sent.push(Sent { id, data });
    }
    Ok(sent)
}

/// Checks that GET `endpoint/<id>` returns exactly the bytes sent.
async fn check_exact(http: &reqwest::Client, endpoint: &str, upload: &Sent) -> Result<()> {
    let url = format!("{endpoint}{}", upload.id);
    let resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(resp.status() == 200, "GET {url}: status {}", resp.status());
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("GET {url}: the body broke off"))?;
    let zeros = body.iter().filter(|&&b| b == 0).count();
    ensure!(
        sha(&body) == sha(&upload.data),
        "GET {url}: {} bytes ({zeros} zeros) with sha256 {}, but {} bytes with sha256 {} \
         were acknowledged",
        body.len(),
        sha(&body),
        upload.data.len(),
        sha(&upload.data)
    );
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The part files of `upload` under the upload directory `root`.
fn part_files(root: &Path, upload: &str) -> Vec<PathBuf> {
    let prefix = format!("{upload}.");
    let shard = root.join(upload.get(..2).unwrap_or(upload));
    walk(&shard)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".part"))
        })
        .collect()
}

/// Journals holding frames under the upload directory `root`: without them the kill came
/// after the checkpoint, and there is nothing to test.
fn journaled(root: &Path) -> Vec<PathBuf> {
    walk(&root.join(".journal"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect()
}

/// How a power cut left a part file.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// Its length, its blocks never written: zeros.
    Zeros,
    /// Cut short.
    Short,
    /// Its directory entry never written.
    Missing,
}

/// Does to every part file of `uploads` what a power cut would have done.
fn power_cut(root: &Path, uploads: &[Sent], loss: Loss) -> Result<usize> {
    let mut damaged = 0;
    for upload in uploads {
        let parts = part_files(root, &upload.id);
        ensure!(
            !parts.is_empty(),
            "no part file of {} under {}",
            upload.id,
            root.display()
        );
        for part in parts {
            match loss {
                Loss::Zeros => {
                    let len = std::fs::metadata(&part)?.len();
                    std::fs::write(&part, vec![0u8; len as usize])?;
                }
                Loss::Short => {
                    let len = std::fs::metadata(&part)?.len();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&part)?
                        .set_len(len / 3)?;
                }
                Loss::Missing => std::fs::remove_file(&part)?,
            }
            damaged += 1;
        }
    }
    Ok(damaged)
}

/// Lengths of the uploads each case sends: one byte, odd sizes, exactly the journal's
/// limit, and one in two bodies of which the first is exactly the limit.
const LENGTHS: [usize; 5] = [1, 1000, 33_333, SMALL, SMALL + 4321];

/// Coordinator log frames that carry small writes, in the embedded coordinator's directory
/// `records`.
fn carried_frames(records: &Path) -> usize {
    walk(records)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wal-") && n.ends_with(".log"))
        })
        .filter_map(|p| std::fs::read(p).ok())
        .map(|log| log.windows(10).filter(|w| w == b"{\"Carried\"").count())
        .sum()
}

/// On a single node the part files of small writes stay unsynced until the coordinator's log
/// compacts (64 MiB): whatever a power cut does to them, the log's frames restore them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_files_of_acknowledged_small_writes_are_restored_from_the_log_at_restart() -> Result<()>
{
    let http = reqwest::Client::new();
    for loss in [Loss::Zeros, Loss::Short, Loss::Missing] {
        let mut node = TestServer::start(&FsEmbedded, &[]).await?;
        let root = node.dir.join("data");
        let uploads = send_small_uploads(&http, &node.endpoint, &LENGTHS, Bodies::Two).await?;
        node.kill9().await?;
        let records = node.dir.join("records");
        ensure!(
            carried_frames(&records) >= LENGTHS.len(),
            "the coordinator log carries {} small writes, expected one per body at least",
            carried_frames(&records)
        );
        ensure!(
            journaled(&root).is_empty(),
            "a single node journaled its small writes instead of having its log carry them"
        );
        let damaged = power_cut(&root, &uploads, loss)?;
        node.restart().await?;
        for upload in &uploads {
            check_exact(&http, &node.endpoint, upload)
                .await
                .with_context(|| {
                    format!("after kill -9, {damaged} part files {loss:?}, restart")
                })?;
        }
    }
    Ok(())
}

/// Two nodes on one shared upload directory (records in Redis): `live`, then `dying`, both
/// sweeping every `sweep`.
struct TwoNodes {
    live: TestServer,
    dying: TestServer,
    /// The shared upload directory.
    root: PathBuf,
    _shared: Shared,
    _dir: tempfile::TempDir,
}

impl TwoNodes {
    async fn start(sweep: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tusk-fs-journal-")
            .tempdir()?;
        let pair = Pair {
            storage: FsShared,
            coordinator: Redis,
        };
        let shared = pair.start_shared(dir.path()).await?;
        let mut args = shared.node_args.clone();
        args.extend(["--sweep-interval".to_string(), sweep.to_string()]);
        let start = |label: &str| {
            TestServer::start_with(NodeOptions {
                args: args.clone(),
                env: shared.env.clone(),
                label: label.to_string(),
            })
        };
        let live = start("live").await?;
        let dying = start("dying").await?;
        Ok(TwoNodes {
            live,
            dying,
            root: dir.path().join("uploads"),
            _shared: shared,
            _dir: dir,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_serves_a_dead_peers_small_writes_within_one_sweep() -> Result<()> {
    let http = reqwest::Client::new();
    let sweep = Duration::from_secs(2);
    for attempt in 1..=3 {
        let mut nodes = TwoNodes::start("2s").await?;
        let uploads =
            send_small_uploads(&http, &nodes.dying.endpoint, &LENGTHS, Bodies::Two).await?;
        nodes.dying.kill9().await?;
        if journaled(&nodes.root).is_empty() {
            eprintln!("attempt {attempt}: the node checkpointed before kill -9; again");
            continue;
        }
        let damaged = power_cut(&nodes.root, &uploads, Loss::Zeros)?;
        let died = Instant::now();
        // One sweep interval, and time for a debug build on a busy machine to do the work.
        let deadline = died + sweep + Duration::from_secs(5);
        for upload in &uploads {
            loop {
                match check_exact(&http, &nodes.live.endpoint, upload).await {
                    Ok(()) => break,
                    Err(error) if Instant::now() > deadline => {
                        return Err(error.context(format!(
                            "{:?} after its peer was killed and {damaged} part files were \
                             zeroed, the live node (sweeping every {sweep:?}) still serves this",
                            died.elapsed()
                        )))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        eprintln!(
            "the live node served every acknowledged byte {:?} after its peer was killed",
            died.elapsed()
        );
        return Ok(());
    }
    bail!("the node checkpointed its journal before kill -9 in every attempt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_finds_a_dead_peers_part_file_short_or_missing_recovers_it_at_once(
) -> Result<()> {
    let http = reqwest::Client::new();
    for attempt in 1..=3 {
        // A sweep an hour away: only the read itself can make the live node look.
        let mut nodes = TwoNodes::start("1h").await?;
        let short = send_small_uploads(&http, &nodes.dying.endpoint, &LENGTHS, Bodies::Two).await?;
        let missing =
            send_small_uploads(&http, &nodes.dying.endpoint, &LENGTHS, Bodies::Two).await?;
        nodes.dying.kill9().await?;
        if journaled(&nodes.root).is_empty() {
            eprintln!("attempt {attempt}: the node checkpointed before kill -9; again");
            continue;
        }
        power_cut(&nodes.root, &short, Loss::Short)?;
        power_cut(&nodes.root, &missing, Loss::Missing)?;
        for upload in short.iter().chain(&missing) {
            check_exact(&http, &nodes.live.endpoint, upload)
                .await
                .context("the first GET on the live node after its peer was killed")?;
        }
        return Ok(());
    }
    bail!("the node checkpointed its journal before kill -9 in every attempt")
}

/// The flushes `strace` saw in its output file: calls of fsync, fdatasync, sync_file_range
/// and syncfs (a call cut by another thread's line is counted at its start).
fn flushes_in(trace: &str) -> usize {
    trace
        .lines()
        .filter(|l| {
            ["fsync(", "fdatasync(", "sync_file_range(", "syncfs("]
                .iter()
                .any(|call| l.contains(call))
        })
        .count()
}

/// On a single node a small upload, created then sent in one PATCH, costs one flush per
/// request: the creation's record, then the body and its commit together (the coordinator's
/// log carries the body). Counted by `strace` on the real process, one upload at a time, so
/// no group commit shares a flush between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_upload_on_a_single_node_costs_one_flush_per_request() -> Result<()> {
    const UPLOADS: usize = 30;
    let http = reqwest::Client::new();
    let node = TestServer::start(&FsEmbedded, &[]).await?;
    // The shard directories are created (and the root synced) in the background at start.
    let root = node.dir.join("data");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !root.join("__").exists() {
        ensure!(
            Instant::now() < deadline,
            "the shard directories were not created"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = node.pid().context("the node is not running")?;
    let trace = node.dir.join("flushes.strace");
    let mut tracer = strace_flushes_into(&trace)?
        .args(["-p", &pid.to_string()])
        .kill_on_drop(true)
        .spawn()
        .context("starting strace")?;
    // strace writes its file once attached; give it the threads too.
    while !trace.exists() {
        ensure!(Instant::now() < deadline, "strace did not attach");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = flushes_in(&std::fs::read_to_string(&trace)?);
    let lengths = [4096; UPLOADS];
    let uploads = send_small_uploads(&http, &node.endpoint, &lengths, Bodies::One).await?;
    let during = flushes_in(&std::fs::read_to_string(&trace)?) - before;
    tracer.start_kill().ok();
    tracer.wait().await.ok();
    for upload in &uploads[..3] {
        check_exact(&http, &node.endpoint, upload).await?;
    }
    // A few for the fencing-token ceiling, the sweeper or the shards, whatever the timing.
    let most = 2 * UPLOADS + 3;
    ensure!(
        during <= most,
        "{UPLOADS} small uploads (POST, then one PATCH of 4 KiB) cost {during} flushes; at \
         most {most} expected: one for each request"
    );
    ensure!(
        during >= 2 * UPLOADS,
        "{UPLOADS} small uploads cost only {during} flushes: is strace seeing the node?"
    );
    Ok(())
}

/// strace, to trace the flushes of what it is given into the file `trace`.
fn strace_flushes_into(trace: &Path) -> Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(which_strace()?);
    command
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,sync_file_range,syncfs",
            "-o",
        ])
        .arg(trace);
    Ok(command)
}

/// The strace binary, or an error saying how to install it.
fn which_strace() -> Result<PathBuf> {
    let path = PathBuf::from("/usr/bin/strace");
    ensure!(
        path.exists(),
        "strace counts the node's flushes; install it: apt-get install strace (tests/run.sh does)"
    );
    Ok(path)
}

/// A restart after small writes checks their files against the log but does not flush them
/// one by one: the log still holds their bytes, and its next compaction flushes them. (A
/// restart that flushed each one took 9 s for 10,000 small uploads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_flush_each_small_write_again() -> Result<()> {
    const UPLOADS: usize = 200;
    let http = reqwest::Client::new();
    let mut node = TestServer::start(&FsEmbedded, &[]).await?;
    let lengths = [1000; UPLOADS];
    let uploads = send_small_uploads(&http, &node.endpoint, &lengths, Bodies::One).await?;
    node.kill9().await?;
    let trace = node.dir.join("restart.strace");
    let mut restarted = strace_flushes_into(&trace)?
        .arg(tusk_tests::harness::tusk_binary()?)
        .args(["--host", "127.0.0.1", "--port", "0", "--admin-port", "0"])
        .arg("--upload-dir")
        .arg(node.dir.join("data"))
        .args(["--coordinator", "embedded"])
        .env("TUSK_COORDINATOR__EMBEDDED__DIR", node.dir.join("records"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting tusk under strace")?;
    let stdout = restarted.stdout.take().context("stdout")?;
    let (endpoint, _) = tusk_tests::harness::await_listening(stdout).await?;
    let at_start = flushes_in(&std::fs::read_to_string(&trace)?);
    for upload in &uploads[..5] {
        check_exact(&http, &endpoint, upload).await?;
    }
    // Killing strace leaves the node it traced running: it goes by the directory it names.
    restarted.start_kill().ok();
    restarted.wait().await.ok();
    kill_processes_naming(&node.dir)?;
    ensure!(
        at_start < UPLOADS / 4,
        "restarting after {UPLOADS} small uploads cost {at_start} flushes"
    );
    Ok(())
}

/// Kills every process whose command line names `path`.
fn kill_processes_naming(path: &Path) -> Result<()> {
    let needle = path.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .context("kill")?;
        }
    }
    Ok(())
}
