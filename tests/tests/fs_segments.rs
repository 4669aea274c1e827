//! The part files of one fs upload stay few however many PATCHes wrote it: past 16 small
//! ones at the end, a PATCH copies them into the file it writes (the rule S3 uses for its
//! tails),
//! and a download of the unfinished upload that finds a file folded away under it reloads
//! the record and goes on, byte-exact.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tusk_tests::conformance::util::{random_bytes, Ctx};
use tusk_tests::harness::{FsEmbedded, TestServer};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The part files under `dir` (the node's data, shards included) of the upload at `url`.
fn part_files(dir: &Path, url: &str) -> Result<usize> {
    let id = url.rsplit('/').next().context("URL without an ID")?;
    let prefix = format!("{id}.");
    let mut count = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            } else if name.starts_with(&prefix) && name.ends_with(".part") {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// PATCHes piece `i` (of `piece` bytes) of `data` at its offset; the new offset.
async fn patch_piece(t: &Ctx, url: &str, data: &[u8], piece: usize, i: usize) -> Result<u64> {
    let at = i * piece;
    t.patch_ok(url, at as u64, data[at..at + piece].to_vec())
        .await
}

/// Waits until the upload at `url` has at most `most` part files on disk (the files a fold
/// replaced are removed after its commit, by a task of their own).
async fn settles_at_most(dir: &Path, url: &str, most: usize) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let files = part_files(dir, url)?;
        if files <= most {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the upload keeps {files} part files on disk (at most {most} expected)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 60 PATCHes of 100 KiB used to leave 60 part files, each read by every download and
/// holding an inode and a directory entry: now at most 16 are kept, and the bytes are exact.
#[tokio::test]
async fn an_fs_upload_keeps_at_most_16_part_files() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let t = Ctx::new(&server)?;
    let piece = 100 * KIB;
    let data = random_bytes(60 * piece);
    // One byte more than is sent: the upload stays unfinished, as a resumed one does.
    let url = t.create(data.len() as u64 + 1).await?;
    for (i, body) in data.chunks(piece).enumerate() {
        t.patch_ok(&url, (i * piece) as u64, body.to_vec()).await?;
    }
    settles_at_most(&server.dir, &url, 16).await?;
    let body = t.download(&url).await?;
    ensure!(body == data, "the unfinished upload's bytes differ");
    Ok(())
}

/// A download of an unfinished upload streams files it opens as it gets to them; a PATCH
/// that folds the ones it has not opened yet removes them. It must go on from the file the
/// fold made. 15 files of 1023 KiB (small: under 1 MiB), a client that reads slowly, two more PATCHes: the 17th
/// folds every file into its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_survives_the_files_it_reads_being_folded() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let t = Ctx::new(&server)?;
    let piece = MIB - KIB;
    let data = random_bytes(17 * piece);
    let url = t.create(data.len() as u64 + 1).await?;
    for i in 0..15 {
        patch_piece(&t, &url, &data, piece, i).await?;
    }

    // A small receive buffer: the node gets a few MiB ahead at most, its send buffer.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(16 * KIB as u32)?;
    let mut download = socket.connect(server.addr.parse()?).await?;
    let path = url
        .strip_prefix(&format!("http://{}", server.addr))
        .context("URL of another host")?;
    download
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.addr
            )
            .as_bytes(),
        )
        .await?;
    let mut received = vec![0u8; 64 * KIB];
    download.read_exact(&mut received).await?;

    for i in 15..17 {
        patch_piece(&t, &url, &data, piece, i).await?;
    }
    settles_at_most(&server.dir, &url, 2).await?;

    tokio::time::timeout(Duration::from_secs(30), download.read_to_end(&mut received))
        .await
        .context("the download did not end")??;
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?
        + 4;
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    ensure!(
        head.starts_with("http/1.1 200"),
        "the download answered {head:?}"
    );
    let body = &received[head_end..];
    ensure!(
        body.len() == 15 * piece && body == &data[..15 * piece],
        "the download got {} bytes, {} the {} committed when it started",
        body.len(),
        if body == &data[..body.len().min(15 * piece)] {
            "a prefix of"
        } else {
            "different from"
        },
        15 * piece
    );
    Ok(())
}

/// kill -9 right after the 204 of PATCHes around folds (the 17th write copies the 16 files
/// before it into its own, and the engine removes them after the commit): after each
/// restart the acknowledged offset and every byte before it are there, and once finished
/// the upload is exact and still keeps at most 16 files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_bytes_survive_kill9_around_folds() -> Result<()> {
    let mut server = TestServer::start(&FsEmbedded, &[]).await?;
    let t = Ctx::new(&server)?;
    let piece = 50 * KIB;
    let writes = 34;
    let data = random_bytes(writes * piece + 1);
    let url = t.create(data.len() as u64).await?;
    for i in 0..writes {
        let acknowledged = patch_piece(&t, &url, &data, piece, i).await?;
        // Before, at and after the first fold (write 17), and around the next ones.
        if ![15, 16, 17, 30, 31, 33].contains(&i) {
            continue;
        }
        server.kill9().await?;
        server.restart().await?;
        let offset = t.offset(&url).await?;
        ensure!(
            offset == acknowledged,
            "write {}: acknowledged offset {acknowledged}, {offset} after kill -9 and restart",
            i + 1
        );
        let body = t.download(&url).await?;
        ensure!(
            body == data[..offset as usize],
            "write {}: the bytes differ after kill -9 and restart",
            i + 1
        );
    }
    let last = writes * piece;
    t.patch_ok(&url, last as u64, data[last..].to_vec()).await?;
    ensure!(
        t.download(&url).await? == data,
        "the finished upload differs"
    );
    settles_at_most(&server.dir, &url, 16).await
}

/// Bytes the process has written through write(2) and the like, from /proc.
fn written_bytes(pid: u32) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .context("no wchar")?
        .trim()
        .parse()
        .context("wchar")
}

/// A PATCH with an empty body folds nothing: it has nothing to write after the copies, so
/// copying would be all its cost, and a client could repeat it at will. Before, each empty
/// PATCH on an upload ending in 16 files of 100 KiB copied all 1.6 MiB again (and threw the
/// copy away).
#[tokio::test]
async fn empty_patches_copy_nothing() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let pid = server.pid().context("no pid")?;
    let t = Ctx::new(&server)?;
    let piece = 100 * KIB;
    let data = random_bytes(16 * piece + 1);
    let url = t.create(data.len() as u64).await?;
    for i in 0..16 {
        patch_piece(&t, &url, &data, piece, i).await?;
    }
    let before = written_bytes(pid)?;
    for _ in 0..10 {
        t.patch_ok(&url, (16 * piece) as u64, Vec::new()).await?;
    }
    let written = written_bytes(pid)? - before;
    ensure!(
        written < MIB as u64,
        "10 empty PATCHes made the node write {written} bytes"
    );
    t.patch_ok(&url, (16 * piece) as u64, data[16 * piece..].to_vec())
        .await?;
    ensure!(t.download(&url).await? == data, "the upload's bytes differ");
    Ok(())
}
