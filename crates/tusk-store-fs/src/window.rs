//! The windows a PATCH body is written to disk in, and how big they are.

use std::io::{self, IoSlice, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};

/// How big the windows of the bodies streaming to disk are: the memory they hold together,
/// shared out among them. A body alone writes in the largest windows (fewer system calls
/// and hand-offs to its writer thread per byte); many at once write in smaller ones, so that
/// together they hold about the budget however many there are.
pub(crate) struct WindowBudget {
    budget: usize,
    largest: usize,
    streaming: AtomicUsize,
}

/// The windows of one body in memory at once: the one filling, the one queued to its writer
/// thread and the one being written.
const WINDOWS_PER_BODY: usize = 3;

/// The least window when many bodies share the budget: below it, the system calls and
/// thread hand-offs per byte cost more than the memory saved (unless `largest` is smaller).
const LEAST_WINDOW: usize = 64 << 10;

impl WindowBudget {
    pub fn new(budget: usize, largest: usize) -> Self {
        Self {
            budget,
            largest,
            streaming: AtomicUsize::new(0),
        }
    }

    /// Counts a body among those streaming until the returned guard drops.
    pub fn enter(&self) -> Streaming<'_> {
        self.streaming.fetch_add(1, Ordering::Relaxed);
        Streaming(&self.streaming)
    }

    /// The bytes a streaming body gathers before its next write, given how many stream now.
    pub fn window(&self) -> usize {
        let bodies = self.streaming.load(Ordering::Relaxed).max(1);
        let share = self.budget / (WINDOWS_PER_BODY * bodies);
        share.max(LEAST_WINDOW).min(self.largest)
    }
}

/// A body counted as streaming; see [`WindowBudget::enter`].
pub(crate) struct Streaming<'a>(&'a AtomicUsize);

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Chunks at least this long are kept as they came; shorter ones are copied together, so a
/// body that arrives a few bytes per read cannot make a window of thousands of chunks.
const KEPT_CHUNK: usize = 4 << 10;

/// Body chunks gathered for one write: as they came off the network, but short ones, which
/// are copied together into `joined` (whose bytes follow every chunk kept so far).
#[derive(Default)]
pub(crate) struct Window {
    chunks: Vec<Bytes>,
    joined: BytesMut,
    pub len: usize,
}

impl Window {
    pub fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        if chunk.len() < KEPT_CHUNK {
            self.joined.extend_from_slice(&chunk);
            if self.joined.len() >= KEPT_CHUNK {
                self.keep_joined();
            }
        } else {
            self.keep_joined();
            self.chunks.push(chunk);
        }
    }

    fn keep_joined(&mut self) {
        if !self.joined.is_empty() {
            self.chunks.push(self.joined.split().freeze());
        }
    }

    /// The bytes as one buffer (a copy only if there are several pieces).
    pub fn into_contiguous(mut self) -> Bytes {
        self.keep_joined();
        if self.chunks.len() == 1 {
            return self.chunks.pop().unwrap_or_default();
        }
        let mut whole = BytesMut::with_capacity(self.len);
        for chunk in &self.chunks {
            whole.extend_from_slice(chunk);
        }
        whole.freeze()
    }

    /// Writes every piece with as few `writev` calls as the kernel takes.
    pub fn write_to(&self, file: &mut std::fs::File) -> io::Result<()> {
        let pieces = self.chunks.iter().map(|c| &c[..]).chain([&self.joined[..]]);
        let mut slices: Vec<IoSlice<'_>> = pieces
            .filter(|piece| !piece.is_empty())
            .map(IoSlice::new)
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes arriving one per read make a handful of pieces, not one per byte, and every
    /// byte keeps its place among the long chunks kept as they came.
    #[test]
    fn a_window_keeps_long_chunks_joins_short_ones_and_keeps_the_order() {
        let mut expected = Vec::new();
        let mut window = Window::default();
        for round in 0..3u8 {
            for n in 0..10_000u32 {
                let byte = Bytes::from(vec![(n % 251) as u8]);
                expected.extend_from_slice(&byte);
                window.push(byte);
            }
            let long = Bytes::from(vec![round; 64 << 10]);
            expected.extend_from_slice(&long);
            window.push(long);
        }
        window.push(Bytes::from_static(b"tail"));
        expected.extend_from_slice(b"tail");
        assert!(
            window.chunks.len() <= 3 * (10_000 / KEPT_CHUNK + 2),
            "{} pieces",
            window.chunks.len()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("part");
        window
            .write_to(&mut std::fs::File::create(&path).expect("create"))
            .expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), expected);
        assert_eq!(window.len, expected.len());
        assert_eq!(window.into_contiguous(), expected);
    }

    /// One body alone gets the largest window; as more stream, the windows shrink so that
    /// all of them together stay within the budget, down to the least window; the share
    /// grows back as bodies finish.
    #[test]
    fn bodies_streaming_at_once_share_the_budget() {
        let budget = WindowBudget::new(16 << 20, 1 << 20);
        assert_eq!(budget.window(), 1 << 20, "nothing streaming yet");
        let first = budget.enter();
        assert_eq!(budget.window(), 1 << 20);
        let mut others: Vec<_> = (0..15).map(|_| budget.enter()).collect();
        let sixteen = budget.window();
        assert_eq!(sixteen, (16 << 20) / (WINDOWS_PER_BODY * 16));
        assert!(16 * WINDOWS_PER_BODY * sixteen <= 16 << 20);
        let many: Vec<_> = (0..1000).map(|_| budget.enter()).collect();
        assert_eq!(budget.window(), LEAST_WINDOW);
        drop(many);
        assert_eq!(budget.window(), sixteen);
        others.clear();
        drop(first);
        assert_eq!(budget.window(), 1 << 20);
        let tiny = WindowBudget::new(16 << 20, 4096);
        let _many: Vec<_> = (0..1000).map(|_| tiny.enter()).collect();
        assert_eq!(tiny.window(), 4096, "never above the largest window");
    }
}
