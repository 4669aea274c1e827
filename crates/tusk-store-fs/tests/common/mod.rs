//! What the fs storage's crash tests share: an engine's requests, the part files on disk,
//! and the damage a power cut does to them.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use tusk_core::{CreateUpload, Engine, IncomingBody, PatchRequest};

pub async fn create(engine: &Engine, length: usize) -> String {
    let request = CreateUpload {
        length: Some(length as u64),
        ..CreateUpload::default()
    };
    engine.create(request).await.expect("create").id
}

pub async fn patch(engine: &Engine, id: &str, offset: usize, bytes: &[u8]) {
    let request = PatchRequest {
        offset: offset as u64,
        declare_length: None,
        ends_upload: false,
        checksum: None,
        content_length: None,
        request: Default::default(),
    };
    let body: IncomingBody = Box::pin(futures_util::stream::iter([Ok(Bytes::copy_from_slice(
        bytes,
    ))]));
    let record = engine.patch(id, request, body).await.expect("patch");
    assert_eq!(record.offset, (offset + bytes.len()) as u64, "committed");
}

/// The upload's bytes, or the error the read ended with.
pub async fn read(engine: &Engine, id: &str, len: usize) -> Result<Vec<u8>, String> {
    let mut stream = engine
        .read(id, 0..len as u64)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// What a read returned, compared with what it should have: short enough to print.
pub fn check(read: Result<Vec<u8>, String>, want: &[u8]) -> Result<(), String> {
    let got = read?;
    if got == want {
        return Ok(());
    }
    let zeros = got.iter().filter(|&&b| b == 0).count();
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    Err(format!(
        "{} bytes ({zeros} zeros), expected {}; first difference at {first:?}",
        got.len(),
        want.len()
    ))
}

/// Bytes that differ at every position, none of them zero-only.
pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// The part files of `upload`.
pub fn part_files(root: &Path, upload: &str) -> Vec<PathBuf> {
    let prefix = format!("{upload}.");
    walk(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".part"))
        })
        .collect()
}

/// Blocks lost in a power cut: the same length, zeros.
pub fn zero(path: &Path) {
    let len = std::fs::metadata(path).expect("part file").len();
    std::fs::write(path, vec![0u8; len as usize]).expect("zeroing");
}
