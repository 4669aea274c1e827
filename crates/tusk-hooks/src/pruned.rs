use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Maps are pruned of stale entries when they grow past this.
const PRUNE_FLOOR: usize = 1024;

/// A map that drops stale entries when it has grown, so per-upload state cannot pile up
/// for uploads that never finish.
pub(crate) struct Pruned<K, V> {
    map: HashMap<K, V>,
    next_prune: usize,
}

impl<K, V> Default for Pruned<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            next_prune: PRUNE_FLOOR,
        }
    }
}

impl<K: Hash + Eq, V> Pruned<K, V> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key)
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key)
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key);
    }

    /// Inserts, and if the map has doubled since the last pruning, keeps only the entries
    /// `live` says are.
    pub(crate) fn insert(&mut self, key: K, value: V, live: impl Fn(&V) -> bool) {
        self.map.insert(key, value);
        if self.map.len() > self.next_prune {
            self.map.retain(|_, v| live(v));
            self.next_prune = (self.map.len() * 2).max(PRUNE_FLOOR);
        }
    }
}
