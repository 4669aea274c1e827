use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};
use tusk_core::{HookEvent, Observer};

use crate::sender::Sender;

/// Notifications delivered concurrently at most.
const MAX_IN_FLIGHT: usize = 8;

/// One queued notification, its body built when it was queued.
pub(crate) struct Job {
    pub(crate) event: HookEvent,
    pub(crate) key: String,
    pub(crate) body: Bytes,
}

impl Job {
    /// Memory the job holds while queued (its body carries the request's headers).
    fn size(&self) -> usize {
        self.body.len() + self.key.len()
    }
}

/// The bounded notification queue: full (by count or by bytes), it drops its oldest
/// entries (reported to the observer as "dropped") so that queueing never waits.
pub(crate) struct Queue {
    jobs: Mutex<Jobs>,
    capacity: usize,
    max_bytes: usize,
    wake: Notify,
    closed: AtomicBool,
    observer: Arc<dyn Observer>,
}

/// The queued jobs and the bytes they hold.
#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    bytes: usize,
}

impl Jobs {
    fn pop_front(&mut self) -> Option<Job> {
        let job = self.queue.pop_front()?;
        self.bytes -= job.size();
        Some(job)
    }
}

impl Queue {
    /// A queue of at most `capacity` jobs (at least one) holding at most `max_bytes`.
    pub(crate) fn new(capacity: usize, max_bytes: usize, observer: Arc<dyn Observer>) -> Self {
        Self {
            jobs: Mutex::new(Jobs::default()),
            capacity: capacity.max(1),
            max_bytes,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            observer,
        }
    }

    pub(crate) fn push(&self, job: Job) {
        let size = job.size();
        let mut dropped = Vec::new();
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            if size > self.max_bytes {
                // Larger than the whole budget: it would push out everything and still not fit.
                dropped.push(job);
            } else {
                while jobs.queue.len() >= self.capacity || jobs.bytes + size > self.max_bytes {
                    match jobs.pop_front() {
                        Some(old) => dropped.push(old),
                        None => break,
                    }
                }
                jobs.bytes += size;
                jobs.queue.push_back(job);
            }
        }
        for old in dropped {
            tracing::warn!(key = %old.key, "hook queue full, dropping the oldest notification");
            self.observer.hook_call(old.event.name(), "dropped");
        }
        self.wake.notify_one();
    }

    /// Ends [`dispatch`] once what is queued has been sent.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<Job> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        (jobs.queue.len(), jobs.bytes)
    }
}

/// Delivers queued notifications, up to [`MAX_IN_FLIGHT`] at once, until the queue is
/// closed and empty.
pub(crate) async fn dispatch(queue: Arc<Queue>, sender: Arc<Sender>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let job = loop {
            if let Some(job) = queue.pop() {
                break job;
            }
            if queue.closed.load(Ordering::Acquire) {
                return;
            }
            queue.wake.notified().await;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            sender.deliver(job).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tusk_core::NoObserver;

    use super::*;

    /// Counts the notifications reported dropped.
    #[derive(Default)]
    struct Drops(AtomicUsize);

    impl Observer for Drops {
        fn hook_call(&self, _event: &'static str, outcome: &'static str) {
            if outcome == "dropped" {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn job(n: usize, len: usize) -> Job {
        Job {
            event: HookEvent::PostCreate,
            key: format!("{n:04}"),
            body: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn the_queue_holds_at_most_its_bytes_dropping_the_oldest() {
        let drops = Arc::new(Drops::default());
        let queue = Queue::new(1000, 10_000, drops.clone());
        for n in 0..100 {
            queue.push(job(n, 996)); // 1000 bytes with its key
        }
        assert_eq!(queue.held(), (10, 10_000));
        assert_eq!(drops.0.load(Ordering::SeqCst), 90);
        // The newest stay.
        assert_eq!(queue.pop().map(|j| j.key), Some("0090".to_string()));
        assert_eq!(queue.held(), (9, 9_000));
        // One job larger than the whole budget is dropped itself.
        queue.push(job(100, 20_000));
        assert_eq!(queue.held(), (9, 9_000));
        assert_eq!(drops.0.load(Ordering::SeqCst), 91);
    }

    #[test]
    fn the_count_bound_still_holds() {
        let queue = Queue::new(3, usize::MAX, Arc::new(NoObserver));
        for n in 0..5 {
            queue.push(job(n, 1));
        }
        assert_eq!(queue.held(), (3, 15));
    }
}
