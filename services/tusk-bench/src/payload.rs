//! Deterministic, seekable pseudo-random payload.
//!
//! Byte `i` of a payload is a pure function of `(seed, i)`: 64-bit word `i / 8` is the
//! splitmix64 output for counter `i / 8`. Any range can be regenerated independently (the
//! resume scenario continues from whatever offset the server kept) and the expected sha256 is
//! recomputed after the timed part instead of during it. Generation runs at several GB/s per
//! core, a few percent of the time it takes to push the same bytes through a socket.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64 finaliser.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seekable pseudo-random byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    seed: u64,
}

impl Payload {
    pub fn new(seed: u64) -> Self {
        Payload { seed: mix64(seed) }
    }

    #[inline]
    fn word(&self, index: u64) -> [u8; 8] {
        mix64(
            self.seed
                .wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN)),
        )
        .to_le_bytes()
    }

    /// Fills `out` with the payload bytes starting at `offset`.
    pub fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut out = out;
        let mut offset = offset;
        let misaligned = (offset % 8) as usize;
        if misaligned != 0 && !out.is_empty() {
            let w = self.word(offset / 8);
            let n = (8 - misaligned).min(out.len());
            out[..n].copy_from_slice(&w[misaligned..misaligned + n]);
            offset += n as u64;
            out = &mut out[n..];
        }
        let mut index = offset / 8;
        let mut chunks = out.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.word(index));
            index += 1;
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let w = self.word(index);
            let n = rest.len();
            rest.copy_from_slice(&w[..n]);
        }
    }

    /// sha256 of `len` payload bytes from `offset` (bounded memory: 1 MiB buffer).
    pub fn sha256(&self, offset: u64, len: u64) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            self.fill(pos, &mut buf[..n]);
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        hasher.finalize().into()
    }

    /// A streaming request body of `len` payload bytes from `offset`.
    pub fn body(&self, offset: u64, len: u64) -> PayloadBody {
        PayloadBody {
            payload: *self,
            pos: offset,
            end: offset + len,
            buf: BytesMut::new(),
        }
    }
}

/// Frame size of streamed request bodies.
pub const FRAME: usize = 256 * 1024;

/// Request body that generates payload bytes frame by frame into a reused buffer
/// (`BytesMut` reclaims its allocation once hyper has written and dropped the frame).
pub struct PayloadBody {
    payload: Payload,
    pos: u64,
    end: u64,
    buf: BytesMut,
}

impl PayloadBody {
    pub fn empty() -> Self {
        Payload::new(0).body(0, 0)
    }
}

impl Body for PayloadBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let n = ((this.end - this.pos) as usize).min(FRAME);
        this.buf.clear();
        this.buf.reserve(n);
        this.buf.resize(n, 0);
        this.payload.fill(this.pos, &mut this.buf[..]);
        this.pos += n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.pos)
    }
}
