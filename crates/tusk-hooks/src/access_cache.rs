use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tusk_core::RequestInfo;

use crate::pruned::Pruned;

/// Pre-access "ok"s, reused for the same upload and the same credentials while younger
/// than the TTL. Rejections are never cached; a zero TTL caches nothing.
pub(crate) struct AccessCache {
    ttl: Duration,
    /// Upload ID to (credentials to when the "ok" was cached).
    entries: Mutex<Pruned<String, HashMap<String, Instant>>>,
}

impl AccessCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(Pruned::default()),
        }
    }

    /// The cache key of a request's credentials: its Authorization and Cookie values.
    pub(crate) fn credentials(request: &RequestInfo) -> String {
        let values = |name: &str| {
            request
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!("{}\0{}", values("authorization"), values("cookie"))
    }

    /// Whether an "ok" for `credentials` on upload `id` is cached and still fresh.
    pub(crate) fn allows(&self, id: &str, credentials: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(id)
            .and_then(|m| m.get(credentials))
            .is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Caches an "ok" the hook just gave for `credentials` on upload `id`.
    pub(crate) fn remember(&self, id: &str, credentials: String) {
        if self.ttl.is_zero() {
            return;
        }
        let ttl = self.ttl;
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(by_credentials) = entries.get_mut(id) {
            by_credentials.retain(|_, t| now.duration_since(*t) < ttl);
            by_credentials.insert(credentials, now);
        } else {
            let by_credentials = HashMap::from([(credentials, now)]);
            entries.insert(id.to_string(), by_credentials, |m| {
                m.values().any(|t| now.duration_since(*t) < ttl)
            });
        }
    }

    /// Forgets upload `id`, once it is finished or gone.
    pub(crate) fn forget(&self, id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}
