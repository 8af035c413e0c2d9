//! A map by machine id whose emptiness can be read without its lock: the per-machine maps of
//! machine control (overrides, boots) and health (refusal cooldowns) are looked up on every
//! pick and are almost always empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A map by machine id behind a mutex, with its length readable without the lock.
#[derive(Debug)]
pub(crate) struct CountedMap<V> {
    map: Mutex<HashMap<String, V>>,
    len: AtomicUsize,
}

impl<V> Default for CountedMap<V> {
    fn default() -> Self {
        CountedMap {
            map: Mutex::default(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<V> CountedMap<V> {
    /// False when the map is certainly empty (as of the latest unlock).
    pub fn maybe_any(&self) -> bool {
        self.len.load(Ordering::Acquire) > 0
    }

    pub fn lock(&self) -> CountedGuard<'_, V> {
        CountedGuard {
            guard: self.map.lock().unwrap_or_else(|e| e.into_inner()),
            len: &self.len,
        }
    }
}

/// Updates the map's length when dropped (before the lock is released).
pub(crate) struct CountedGuard<'a, V> {
    guard: MutexGuard<'a, HashMap<String, V>>,
    len: &'a AtomicUsize,
}

impl<V> std::ops::Deref for CountedGuard<'_, V> {
    type Target = HashMap<String, V>;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl<V> std::ops::DerefMut for CountedGuard<'_, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

impl<V> Drop for CountedGuard<'_, V> {
    fn drop(&mut self) {
        self.len.store(self.guard.len(), Ordering::Release);
    }
}
