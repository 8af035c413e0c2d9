//! Per-source bounds, so that one client cannot take everyone's share: a token bucket of
//! queries per second, and a count of what a source holds at once (forwards in flight, TCP
//! connections).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Sources tracked before idle ones are forgotten (bounds the memory a spoofing flood costs).
const MAX_TRACKED: usize = 4096;

/// Queries per second per source address, with a burst of one second's worth.
#[derive(Debug)]
pub(crate) struct RateLimit {
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32) -> Self {
        RateLimit {
            per_second: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one query's token from `source`'s bucket; false when it is empty.
    pub(crate) fn allow(&self, source: IpAddr) -> bool {
        let now = Instant::now();
        let burst = self.per_second;
        let refill = |bucket: &mut Bucket| {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(burst);
            bucket.at = now;
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&source) {
            buckets.retain(|_, bucket| {
                refill(bucket);
                bucket.tokens < burst
            });
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        refill(bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How many of something (forwards in flight, connections) each source holds, at most `max`.
#[derive(Debug)]
pub(crate) struct PerSource {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One unit held by a source; given back on drop.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    owner: Arc<PerSource>,
    source: IpAddr,
}

impl PerSource {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(PerSource {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `source`, or `None` if it already holds `max`.
    pub(crate) fn take(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(source).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            owner: Arc::clone(self),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_is_refused_while_others_pass() {
        let limit = RateLimit::new(10);
        let flooder: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let allowed = (0..100).filter(|_| limit.allow(flooder)).count();
        // The burst, plus what refilled while the loop ran (a fraction of a token).
        assert!((10..=11).contains(&allowed), "{allowed}");
        assert!(limit.allow(other));
    }

    #[test]
    fn slots_are_bounded_per_source_and_given_back_on_drop() {
        let counts = PerSource::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = counts.take(a).unwrap();
        let _second = counts.take(a).unwrap();
        assert!(counts.take(a).is_none());
        assert!(counts.take(b).is_some());
        drop(first);
        assert!(counts.take(a).is_some());
    }
}
