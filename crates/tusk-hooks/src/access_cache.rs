use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tusk_core::Access;

use crate::pruned::Pruned;

/// When each cached "ok" of one upload was given, by operation and credentials.
type OksOfUpload = HashMap<(Access, String), Instant>;

/// Pre-access "ok"s, reused for the same upload, the same operation and the same
/// credentials (see `HeaderPolicy::credentials`) while younger than the TTL. A yes to
/// reading is no yes to terminating, and a request without credentials is never served:
/// the hook may decide on the operation and on the credentials, nothing else can tell two
/// requests apart. Rejections are never cached; a zero TTL caches nothing.
pub(crate) struct AccessCache {
    ttl: Duration,
    /// Upload ID to ((operation, credentials) to when the "ok" was cached).
    entries: Mutex<Pruned<String, OksOfUpload>>,
}

impl AccessCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(Pruned::default()),
        }
    }

    /// Whether an "ok" for `credentials` doing `access` to upload `id` is cached and still
    /// fresh.
    pub(crate) fn allows(&self, id: &str, access: Access, credentials: Option<&str>) -> bool {
        let Some(credentials) = credentials.filter(|_| !self.ttl.is_zero()) else {
            return false;
        };
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(id)
            .and_then(|m| m.get(&(access, credentials.to_string())))
            .is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Caches an "ok" the hook just gave for `credentials` doing `access` to upload `id`.
    pub(crate) fn remember(&self, id: &str, access: Access, credentials: Option<String>) {
        let Some(credentials) = credentials.filter(|_| !self.ttl.is_zero()) else {
            return;
        };
        let ttl = self.ttl;
        let now = Instant::now();
        let key = (access, credentials);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(by_key) = entries.get_mut(id) {
            by_key.retain(|_, t| now.duration_since(*t) < ttl);
            by_key.insert(key, now);
        } else {
            let by_key = HashMap::from([(key, now)]);
            entries.insert(id.to_string(), by_key, |m| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ok_serves_the_same_upload_operation_and_credentials_only() {
        let cache = AccessCache::new(Duration::from_secs(60));
        cache.remember("u", Access::Read, Some("alice".into()));
        assert!(cache.allows("u", Access::Read, Some("alice")));
        assert!(!cache.allows("u", Access::Terminate, Some("alice")));
        assert!(!cache.allows("u", Access::Write, Some("alice")));
        assert!(!cache.allows("u", Access::Read, Some("bob")));
        assert!(!cache.allows("v", Access::Read, Some("alice")));
        assert!(!cache.allows("u", Access::Read, None));
    }

    #[test]
    fn without_credentials_nothing_is_kept() {
        let cache = AccessCache::new(Duration::from_secs(60));
        cache.remember("u", Access::Read, None);
        assert!(!cache.allows("u", Access::Read, None));
        assert!(!cache.allows("u", Access::Read, Some("")));
    }
}
