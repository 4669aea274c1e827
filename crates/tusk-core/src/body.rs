use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::storage::Chunks;
use crate::Hasher;
use crate::ReleaseRequest;

/// Why reading a request body failed: the client went away or sent a broken stream.
#[derive(Debug, thiserror::Error)]
#[error("request body: {0}")]
pub struct BodyError(pub String);

/// A request body as the HTTP layer hands it over.
pub type IncomingBody = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// How reading a PATCH body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// The whole body arrived.
    Complete,
    /// The client disconnected or the stream broke; what arrived before still counts.
    Interrupted,
    /// No bytes arrived for the network timeout (a slow or stalled client).
    IdleTimeout,
    /// Another request asked for this upload's lease; we stop and commit what we have.
    ReleaseRequested,
    /// The server is shutting down; we stop and commit what we have.
    ShuttingDown,
    /// The body would go past the upload's length or the size limit; nothing is committed.
    TooLarge,
}

/// Reads a request body for a PATCH while enforcing the limits of the commit protocol:
/// at most `limit` bytes, an idle timeout per read, and a stop on a release request.
pub(crate) struct BodyReader {
    body: IncomingBody,
    limit: u64,
    idle_timeout: Duration,
    release: ReleaseRequest,
    shutdown: tokio::sync::watch::Receiver<bool>,
    hasher: Option<Hasher>,
    pub received: u64,
    pub end: Option<BodyEnd>,
}

impl BodyReader {
    pub fn new(
        body: IncomingBody,
        limit: u64,
        idle_timeout: Duration,
        release: ReleaseRequest,
        shutdown: tokio::sync::watch::Receiver<bool>,
        hasher: Option<Hasher>,
    ) -> Self {
        Self {
            body,
            limit,
            idle_timeout,
            release,
            shutdown,
            hasher,
            received: 0,
            end: None,
        }
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.end.is_some() {
            return None;
        }
        loop {
            let next = tokio::select! {
                biased;
                () = self.release.requested() => {
                    self.end = Some(BodyEnd::ReleaseRequested);
                    return None;
                }
                Ok(_) = self.shutdown.wait_for(|down| *down) => {
                    self.end = Some(BodyEnd::ShuttingDown);
                    return None;
                }
                next = tokio::time::timeout(self.idle_timeout, self.body.next()) => next,
            };
            let (end, bytes) = match next {
                Err(_elapsed) => (BodyEnd::IdleTimeout, None),
                Ok(None) => (BodyEnd::Complete, None),
                Ok(Some(Err(error))) => {
                    tracing::debug!(%error, "request body interrupted");
                    (BodyEnd::Interrupted, None)
                }
                Ok(Some(Ok(bytes))) if bytes.is_empty() => continue,
                Ok(Some(Ok(bytes))) => {
                    let len = bytes.len() as u64;
                    if self.received.saturating_add(len) > self.limit {
                        (BodyEnd::TooLarge, None)
                    } else {
                        self.received += len;
                        if let Some(h) = self.hasher.as_mut() {
                            h.update(&bytes);
                        }
                        return Some(bytes);
                    }
                }
            };
            self.end = Some(end);
            return bytes;
        }
    }

    /// The body as the stream of chunks a [`crate::Storage`] writes.
    pub fn chunks(&mut self) -> Chunks<'_> {
        Box::pin(futures_util::stream::unfold(self, |reader| async move {
            let chunk = reader.next_chunk().await?;
            Some((chunk, reader))
        }))
    }

    /// The digest of everything received (if a checksum was asked for).
    pub fn take_digest(&mut self) -> Option<Vec<u8>> {
        self.hasher.take().map(Hasher::finish)
    }
}
