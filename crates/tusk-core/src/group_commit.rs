//! Group commit: one thread appends to one file whatever its callers have waiting, with one
//! `write` and one `fdatasync` for all of them, and only then answers them.
//!
//! Concurrent callers each waiting for a sync of their own would pay one disk flush each;
//! here a caller that arrives while a flush is under way waits for the next one, which then
//! covers every caller that arrived meanwhile (up to [`GroupAppend::MAX_BATCH`]). The embedded
//! coordinator's log and the fs storage's small-write journal both run on it: what they
//! frame and what they do once a batch is durable is theirs ([`GroupAppend`]); waiting,
//! batching, writing and syncing are here.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The owner of a file that [`GroupCommit`] appends to.
pub trait GroupAppend: Send + 'static {
    type Request: Send + 'static;
    /// What [`GroupAppend::frame`] decided for the requests of one batch.
    type Verdict;
    /// Most requests one batch takes (what one batch's frames may hold in memory).
    const MAX_BATCH: usize;

    /// Appends the frames of `batch` to `frames`, and says what it decided for each request
    /// (a request that is refused, or cannot be framed, adds no frame).
    fn frame(&mut self, batch: &[Self::Request], frames: &mut Vec<u8>) -> Self::Verdict;

    /// The file the frames go to.
    fn file(&mut self) -> &mut File;

    /// Answers the batch once its frames are durable (`durable` is `Ok`), or could not be
    /// made so; nothing of it may be visible before.
    fn settle(
        &mut self,
        batch: Vec<Self::Request>,
        verdict: Self::Verdict,
        durable: io::Result<()>,
    );

    /// How long the writer may wait for requests before [`GroupAppend::tend`] is due;
    /// `None`: only after batches.
    fn tend_within(&self) -> Option<Duration> {
        None
    }

    /// Upkeep after every batch and when [`GroupAppend::tend_within`] has passed: rotating
    /// or compacting the file.
    fn tend(&mut self) {}
}

/// The sending side of a group-commit writer thread. Dropping it stops the thread once the
/// requests already sent are answered, and waits for that: whoever opens the file next finds
/// the writer's last batch and upkeep finished, not under way.
pub struct GroupCommit<R> {
    requests: Option<mpsc::Sender<R>>,
    thread: Option<JoinHandle<()>>,
}

impl<R> Drop for GroupCommit<R> {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            // The appender is dropped on its own thread, and may drop this handle there.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The writer thread is gone (it stops only when every sender is dropped, or on a panic).
#[derive(Debug, thiserror::Error)]
#[error("the {0} writer stopped")]
pub struct WriterStopped(pub &'static str);

impl<R: Send + 'static> GroupCommit<R> {
    /// Starts the writer thread, named `name`, over `appender`.
    pub fn start<A: GroupAppend<Request = R>>(
        name: &'static str,
        mut appender: A,
    ) -> io::Result<Self> {
        let (requests, rx) = mpsc::channel::<R>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&mut appender, &rx))?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Queues a request for the next batch; the appender answers it.
    pub fn send(&self, request: R, writer: &'static str) -> Result<(), WriterStopped> {
        match &self.requests {
            Some(requests) => requests.send(request).map_err(|_| WriterStopped(writer)),
            None => Err(WriterStopped(writer)),
        }
    }
}

fn run<A: GroupAppend>(appender: &mut A, rx: &mpsc::Receiver<A::Request>) {
    loop {
        let first = match appender.tend_within() {
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(request) => request,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    appender.tend();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(A::MAX_BATCH - 1));
        let mut frames = Vec::new();
        let verdict = appender.frame(&batch, &mut frames);
        let durable = if frames.is_empty() {
            Ok(())
        } else {
            let file = appender.file();
            file.write_all(&frames).and_then(|()| file.sync_data())
        };
        appender.settle(batch, verdict, durable);
        appender.tend();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Appends each request's bytes; records the batches it was given.
    struct Recorder {
        file: File,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl GroupAppend for Recorder {
        type Request = (Vec<u8>, mpsc::Sender<io::Result<()>>);
        type Verdict = ();
        const MAX_BATCH: usize = 1000;

        fn frame(&mut self, batch: &[Self::Request], frames: &mut Vec<u8>) {
            for (bytes, _) in batch {
                frames.extend_from_slice(bytes);
            }
        }

        fn file(&mut self) -> &mut File {
            &mut self.file
        }

        fn settle(&mut self, batch: Vec<Self::Request>, (): (), durable: io::Result<()>) {
            self.batches.lock().unwrap().push(batch.len());
            for (_, reply) in batch {
                let _ = reply.send(
                    durable
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| io::Error::new(e.kind(), e.to_string())),
                );
            }
        }
    }

    #[test]
    fn requests_waiting_together_share_one_write_and_are_answered_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (replies, answered) = mpsc::channel();
        // Queued before the writer starts, so they all wait for the first batch.
        let (requests, rx) = mpsc::channel();
        for n in 0..100u8 {
            requests.send((vec![n; 3], replies.clone())).unwrap();
        }
        drop(requests);
        let mut recorder = Recorder {
            file: File::create(&path).unwrap(),
            batches: batches.clone(),
        };
        run(&mut recorder, &rx);
        for _ in 0..100 {
            answered.recv().unwrap().unwrap();
        }
        assert_eq!(*batches.lock().unwrap(), vec![100]);
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.len(), 300);
        assert_eq!(&written[297..], &[99, 99, 99]);
    }
}
