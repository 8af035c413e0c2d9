//! Waiting for a condition: poll until it holds, or fail naming what never happened.
//!
//! Tests wait for behaviour, never for a fixed time, and never assert that something was fast:
//! the limit only turns a hang into a failure, so it is generous (CI shares 2 busy cores).
//! Performance is measured by the scripts in `bench/`.

use std::future::Future;
use std::time::{Duration, Instant};

/// The default limit of a wait: nothing waits this long when things work.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// What a polled condition gives: `true`/`Some(v)` when it holds.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// The deadline and the back-off between polls (1 ms doubling up to 50 ms), shared by every
/// shape of wait.
struct Poll<'a> {
    what: &'a str,
    /// More to say on failure (what was seen instead).
    context: Option<&'a dyn Fn() -> String>,
    limit: Duration,
    deadline: Instant,
    delay: Duration,
}

impl Poll<'_> {
    fn new(limit: Duration, what: &str) -> Poll<'_> {
        Poll {
            what,
            context: None,
            limit,
            deadline: Instant::now() + limit,
            delay: Duration::from_millis(1),
        }
    }

    /// How long to sleep before the next poll; panics once the deadline has passed.
    fn next_delay(&mut self) -> Duration {
        if Instant::now() >= self.deadline {
            let context = self
                .context
                .map(|c| format!("\n{}", c()))
                .unwrap_or_default();
            panic!(
                "timed out after {:?} waiting for {}{context}",
                self.limit, self.what
            );
        }
        let d = self.delay;
        self.delay = (self.delay * 2).min(Duration::from_millis(50));
        d
    }
}

/// Polls `f` (blocking the thread between polls) until it holds; its value. Panics naming
/// `what` after `limit`.
pub fn wait_for<R: Ready>(limit: Duration, what: &str, mut f: impl FnMut() -> R) -> R::Value {
    let mut poll = Poll::new(limit, what);
    loop {
        if let Some(v) = f().ready() {
            return v;
        }
        std::thread::sleep(poll.next_delay());
    }
}

/// [`wait_for`] that adds `context()` (what was seen instead) to the failure message.
pub fn wait_for_explained<R: Ready>(
    limit: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> R,
) -> R::Value {
    let mut poll = Poll::new(limit, what);
    poll.context = Some(&context);
    loop {
        if let Some(v) = f().ready() {
            return v;
        }
        std::thread::sleep(poll.next_delay());
    }
}

/// [`wait_for`] for async tests: polls the plain condition `f`, sleeping on the tokio timer.
pub async fn wait_until<R: Ready>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> R,
) -> R::Value {
    let mut poll = Poll::new(limit, what);
    loop {
        if let Some(v) = f().ready() {
            return v;
        }
        tokio::time::sleep(poll.next_delay()).await;
    }
}

/// [`wait_until`] with an async probe (an API call, a connection).
pub async fn wait_for_async<R, F, Fut>(limit: Duration, what: &str, mut probe: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let mut poll = Poll::new(limit, what);
    loop {
        if let Some(v) = probe().await.ready() {
            return v;
        }
        tokio::time::sleep(poll.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = wait_for(PATIENCE, "n to reach 3", || {
            n += 1;
            (n >= 3).then_some(n * 10)
        });
        assert_eq!(v, 30);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn names_what_never_happened() {
        wait_for(Duration::from_millis(20), "the impossible", || false);
    }

    #[test]
    #[should_panic(expected = "waiting for the door\nit stayed shut")]
    fn says_what_was_seen_instead() {
        wait_for_explained(
            Duration::from_millis(20),
            "the door",
            || "it stayed shut".to_string(),
            || false,
        );
    }

    #[tokio::test]
    async fn async_shapes_poll_the_same_way() {
        let mut n = 0;
        wait_until(PATIENCE, "n to reach 2", || {
            n += 1;
            n >= 2
        })
        .await;
        let v = wait_for_async(PATIENCE, "a value", || async { Some(7) }).await;
        assert_eq!(v, 7);
    }
}
