use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::engine::in_flight::{PatchInFlight, PatchPhase};
use crate::storage::Chunks;
use crate::ReleaseRequest;
use crate::{Hasher, WriteUnits};

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
    /// The rest of a chunk a stretch was cut in, first in the next stretch.
    carry: Option<Bytes>,
    /// The body's length as the request announced it (Content-Length), if it did.
    pub announced: Option<u64>,
    /// This PATCH's entry among the node's PATCHes in flight, told where reading stands.
    pub in_flight: Option<Arc<PatchInFlight>>,
    pub received: u64,
    pub end: Option<BodyEnd>,
}

fn set_phase(in_flight: &Option<Arc<PatchInFlight>>, phase: PatchPhase) {
    if let Some(in_flight) = in_flight {
        in_flight.set(phase);
    }
}

/// How long a client must pause before a due stretch ends short of a unit boundary.
const STALL: Duration = Duration::from_secs(1);

/// The least a stretch must carry to end short of a unit boundary when its client pauses.
/// The storage stores such bytes a second time later (S3: a tail object, then inside the
/// part that folds it); below this, holding them costs less. It also bounds how many such
/// pieces one unit can be cut into.
const MID_UNIT_STRETCH_MIN: u64 = 1 << 20;

/// When a stretch of the body ends so that what it carried can be committed while the rest
/// streams on (a progress commit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StretchEnd {
    /// A stretch ends once it carried this many bytes ...
    pub bytes: u64,
    /// ... or once this long passed since its first byte, whichever comes first,
    pub time: Duration,
    /// ... at the next point the storage can stop at without a partial unit; or, once due,
    /// where the client pauses for [`STALL`] with [`MID_UNIT_STRETCH_MIN`] bytes or more
    /// carried, so that a stalled client's bytes are stored, committed and let go of instead
    /// of held (S3: in its spool file) until the network timeout.
    pub units: Option<WriteUnits>,
}

impl StretchEnd {
    /// Where the stretch ends, in its own bytes, once it is due after `sent` bytes.
    fn cut_at(&self, sent: u64) -> u64 {
        match self.units {
            None => sent,
            Some(units) if sent <= units.first => units.first,
            Some(units) => {
                let every = units.every.max(1);
                units.first + (sent - units.first).div_ceil(every) * every
            }
        }
    }
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
            carry: None,
            announced: None,
            in_flight: None,
            received: 0,
            end: None,
        }
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(carried) = self.carry.take() {
            return Some(carried);
        }
        if self.end.is_some() {
            return None;
        }
        loop {
            let (body, in_flight) = (&mut self.body, &self.in_flight);
            let from_client = async {
                let mut next = body.next();
                if let Poll::Ready(ready) = futures_util::poll!(&mut next) {
                    return Ok(ready);
                }
                // Everything that arrived is read: from here on, the client is the one
                // who has to act.
                set_phase(in_flight, PatchPhase::AwaitingClient);
                let next = tokio::time::timeout(self.idle_timeout, next).await;
                set_phase(in_flight, PatchPhase::Reading);
                next
            };
            let next = tokio::select! {
                biased;
                () = self.release.requested() => Err(BodyEnd::ReleaseRequested),
                Ok(_) = self.shutdown.wait_for(|down| *down) => Err(BodyEnd::ShuttingDown),
                next = from_client => Ok(next),
            };
            let next = match next {
                Ok(next) => next,
                Err(stopped) => {
                    self.ended(stopped);
                    return None;
                }
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
            self.ended(end);
            return bytes;
        }
    }

    fn ended(&mut self, end: BodyEnd) {
        self.end = Some(end);
        set_phase(&self.in_flight, PatchPhase::Ended);
    }

    /// The body as the stream of chunks a [`crate::Storage`] writes.
    pub fn chunks(&mut self) -> Chunks<'_> {
        Box::pin(futures_util::stream::unfold(self, |reader| async move {
            let chunk = reader.next_chunk().await?;
            Some((chunk, reader))
        }))
    }

    /// The next stretch of the body: all of it with `end` unset; otherwise chunks until the
    /// stretch is due (bytes or time) and reaches a point the storage can stop at. A stretch
    /// that reached the body's end leaves [`Self::end`] set; one that was cut leaves it unset,
    /// and the next stretch continues where it stopped. A stretch never ends exactly at the
    /// body's limit or announced length: the body ends there, and its last stretch commits
    /// it with the lease let go in the same step (and finishes the upload, if it does).
    pub fn stretch(&mut self, end: Option<StretchEnd>) -> Chunks<'_> {
        let Some(end) = end else {
            return self.chunks();
        };
        struct State<'a> {
            reader: &'a mut BodyReader,
            end: StretchEnd,
            sent: u64,
            deadline: Option<Instant>,
            /// Where the stretch is cut, once it is due.
            cut: Option<u64>,
        }
        let state = State {
            reader: self,
            end,
            sent: 0,
            deadline: None,
            cut: None,
        };
        Box::pin(futures_util::stream::unfold(state, |mut s| async move {
            if s.cut.is_some_and(|cut| s.sent >= cut) {
                return None;
            }
            let next = match (s.deadline, s.end.units, s.cut) {
                // Any byte will do: a client that pauses past the deadline gets its bytes
                // committed without waiting for the next chunk.
                (Some(deadline), None, None) => {
                    tokio::select! {
                        chunk = s.reader.next_chunk() => chunk,
                        () = tokio::time::sleep_until(deadline) => return None,
                    }
                }
                (Some(deadline), Some(_), _) if s.sent >= MID_UNIT_STRETCH_MIN => {
                    let until = deadline.max(Instant::now() + STALL);
                    tokio::select! {
                        chunk = s.reader.next_chunk() => chunk,
                        () = tokio::time::sleep_until(until) => return None,
                    }
                }
                _ => s.reader.next_chunk().await,
            };
            let mut chunk = next?;
            let deadline = *s
                .deadline
                .get_or_insert_with(|| Instant::now() + s.end.time);
            let after = s.sent + chunk.len() as u64;
            if s.cut.is_none() && (after >= s.end.bytes || Instant::now() >= deadline) {
                s.cut = Some(s.end.cut_at(after.min(s.end.bytes.max(s.sent + 1))));
            }
            if let Some(cut) = s.cut {
                if after > cut {
                    let keep = usize::try_from(cut - s.sent).unwrap_or(usize::MAX);
                    s.reader.carry = Some(chunk.split_off(keep));
                }
                let received = s.reader.received;
                let at_end = received >= s.reader.limit || s.reader.announced == Some(received);
                if at_end && s.reader.carry.is_none() {
                    s.cut = None;
                }
            }
            s.sent += chunk.len() as u64;
            Some((chunk, s))
        }))
    }

    /// The digest of everything received (if a checksum was asked for).
    pub fn take_digest(&mut self) -> Option<Vec<u8>> {
        self.hasher.take().map(Hasher::finish)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;

    use super::*;

    /// A reader over `chunks` (sizes), each chunk arriving after `gap`.
    fn reader(chunks: &[usize], gap: Duration, limit: u64) -> BodyReader {
        let items: Vec<Result<Bytes, BodyError>> = chunks
            .iter()
            .map(|&n| Ok(Bytes::from(vec![7u8; n])))
            .collect();
        let body = stream::iter(items).then(move |item| async move {
            tokio::time::sleep(gap).await;
            item
        });
        let (_tx, release) = ReleaseRequest::channel();
        let (_down_tx, down) = tokio::sync::watch::channel(false);
        BodyReader::new(
            Box::pin(body),
            limit,
            Duration::from_secs(60),
            release,
            down,
            None,
        )
    }

    /// The lengths of successive stretches until the body ends.
    async fn stretches(reader: &mut BodyReader, end: StretchEnd) -> Vec<u64> {
        let mut lengths = Vec::new();
        loop {
            let mut total = 0u64;
            let mut chunks = reader.stretch(Some(end));
            while let Some(chunk) = chunks.next().await {
                total += chunk.len() as u64;
            }
            drop(chunks);
            lengths.push(total);
            if reader.end.is_some() {
                return lengths;
            }
        }
    }

    fn by_bytes(bytes: u64, units: Option<WriteUnits>) -> StretchEnd {
        StretchEnd {
            bytes,
            time: Duration::from_secs(3600),
            units,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stretches_end_at_the_byte_interval() {
        let mut r = reader(&[40, 40, 40, 40, 40], Duration::ZERO, u64::MAX);
        assert_eq!(stretches(&mut r, by_bytes(100, None)).await, [100, 100, 0]);
        assert_eq!(r.end, Some(BodyEnd::Complete));
        assert_eq!(r.received, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn stretches_end_on_unit_boundaries() {
        // A part of 30 was left open with 10 bytes: the first boundary is 20 bytes in.
        let units = Some(WriteUnits {
            first: 20,
            every: 30,
        });
        let mut r = reader(&[45, 45, 45], Duration::ZERO, u64::MAX);
        // Due at 50 bytes: the boundaries are 20, 50, 80, ...; after a cut the next
        // stretch starts on a boundary (the caller asks the storage again: here alike).
        assert_eq!(stretches(&mut r, by_bytes(50, units)).await, [50, 50, 35]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_past_the_interval_ends_a_stretch_without_waiting_for_more() {
        let end = StretchEnd {
            bytes: u64::MAX,
            time: Duration::from_secs(2),
            units: None,
        };
        let mut r = reader(&[10, 10, 10], Duration::from_secs(3), u64::MAX);
        assert_eq!(stretches(&mut r, end).await, [10, 10, 10]);
    }

    /// A client that pauses mid-part gets what it sent committed (and, on S3, out of the
    /// node's memory) once the stretch is due, not at the network timeout; a few bytes are
    /// not worth storing twice and wait for more.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_stretch_ends_short_of_its_unit_once_it_carried_enough() {
        const MIB: usize = 1 << 20;
        let end = StretchEnd {
            bytes: u64::MAX,
            time: Duration::from_secs(2),
            units: Some(WriteUnits {
                first: 16 << 20,
                every: 16 << 20,
            }),
        };
        let mut r = reader(&[2 * MIB, 2 * MIB], Duration::from_secs(3), u64::MAX);
        let started = Instant::now();
        let mut chunks = r.stretch(Some(end));
        let mut first = 0;
        while let Some(chunk) = chunks.next().await {
            first += chunk.len();
        }
        drop(chunks);
        // The first chunk came at 3 s, the stretch was due at 5 s and the client was still
        // silent then.
        assert_eq!(
            (first, started.elapsed()),
            (2 * MIB, Duration::from_secs(5))
        );
        assert_eq!(r.end, None);
        assert_eq!(stretches(&mut r, end).await, [2 * MIB as u64]);

        let small = MID_UNIT_STRETCH_MIN as usize / 4;
        let mut r = reader(&[small, small], Duration::from_secs(3), u64::MAX);
        assert_eq!(stretches(&mut r, end).await, [2 * small as u64]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stretch_never_ends_where_the_body_must() {
        let mut r = reader(&[50, 50], Duration::ZERO, 100);
        // Due exactly at the limit: the body must end there, so the stretch runs on to
        // the end instead of leaving an empty last stretch to finish the upload.
        assert_eq!(stretches(&mut r, by_bytes(100, None)).await, [100]);
        assert_eq!(r.end, Some(BodyEnd::Complete));

        let mut r = reader(&[50, 50], Duration::ZERO, u64::MAX);
        r.announced = Some(100);
        assert_eq!(stretches(&mut r, by_bytes(100, None)).await, [100]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_end_the_stretch_is_the_whole_body() {
        let mut r = reader(&[50, 50, 50], Duration::ZERO, u64::MAX);
        let mut chunks = r.stretch(None);
        let mut total = 0;
        while let Some(chunk) = chunks.next().await {
            total += chunk.len();
        }
        drop(chunks);
        assert_eq!((total, r.end), (150, Some(BodyEnd::Complete)));
    }
}
