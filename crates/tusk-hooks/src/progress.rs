use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::pruned::Pruned;

/// At most one post-receive per upload per interval; a zero interval lets all through.
pub(crate) struct ProgressLimiter {
    interval: Duration,
    /// Upload ID to when its last post-receive was let through.
    last: Mutex<Pruned<String, Instant>>,
}

impl ProgressLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(Pruned::default()),
        }
    }

    /// Whether a post-receive for `id` may go now (and if so, its clock restarts).
    pub(crate) fn allow(&self, id: &str) -> bool {
        let interval = self.interval;
        if interval.is_zero() {
            return true;
        }
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last
            .get(id)
            .is_some_and(|t| now.duration_since(*t) < interval)
        {
            return false;
        }
        last.insert(id.to_string(), now, |t| now.duration_since(*t) < interval);
        true
    }

    /// Forgets upload `id`, once it is finished or gone.
    pub(crate) fn forget(&self, id: &str) {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}
