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

/// The bounded notification queue: full, it drops its oldest entry (reported to the
/// observer as "dropped") so that queueing never waits.
pub(crate) struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    capacity: usize,
    wake: Notify,
    closed: AtomicBool,
    observer: Arc<dyn Observer>,
}

impl Queue {
    /// A queue of at most `capacity` jobs (at least one).
    pub(crate) fn new(capacity: usize, observer: Arc<dyn Observer>) -> Self {
        Self {
            jobs: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            observer,
        }
    }

    pub(crate) fn push(&self, job: Job) {
        let dropped = {
            let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let dropped = if jobs.len() >= self.capacity {
                jobs.pop_front()
            } else {
                None
            };
            jobs.push_back(job);
            dropped
        };
        if let Some(old) = dropped {
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
