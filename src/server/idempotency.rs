//! `Idempotency-Key` on exec: the first request with a key runs the command
//! and its answer is kept; a retry with the same key (on the same task) gets
//! that answer without running anything, waiting for it if the first is
//! still running; the same key with a different body is refused.
//!
//! Answers are kept for [`ServerConfig::idempotency_ttl`] after they were
//! given, within a memory budget
//! ([`ServerConfig::idempotency_max_bytes`]): past it the oldest answers
//! are forgotten first. A key whose command is still running is never
//! forgotten (running entries are bounded by the requests in flight).
//!
//! [`ServerConfig::idempotency_ttl`]: super::ServerConfig::idempotency_ttl
//! [`ServerConfig::idempotency_max_bytes`]: super::ServerConfig::idempotency_max_bytes

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::tool::ToolArgs;

/// Longest `Idempotency-Key` accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// Bytes an entry costs besides its key, task id and answer.
const ENTRY_OVERHEAD: usize = 128;

/// A kept answer: the HTTP status and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

/// What a request with a key does.
#[derive(Debug)]
pub enum Begin {
    /// The key is new: run the command, then [`Running::finish`].
    Run(Running),
    /// The same request is running: wait for its answer.
    Wait(watch::Receiver<Option<Arc<Stored>>>),
    /// The same request was answered: send this again.
    Done(Arc<Stored>),
    /// The key was used with a different body.
    Conflict,
}

type Key = (Arc<str>, Arc<str>);

struct Entry {
    fingerprint: u64,
    state: State,
    /// Bumps each time the key is re-used after being forgotten, so a stale
    /// place in the expiry queue is recognised.
    generation: u64,
}

enum State {
    Running(watch::Receiver<Option<Arc<Stored>>>),
    Done { answer: Arc<Stored>, size: usize },
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Answered entries, oldest answer first: (when answered, key, generation).
    order: VecDeque<(Instant, Key, u64)>,
    bytes: usize,
    next_generation: u64,
}

/// The kept answers of every task.
pub struct IdempotencyStore {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_bytes: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for IdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyStore")
            .field("ttl", &self.ttl)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// The first request of a key, running. Finish it with its answer; dropped
/// without one (a panic), the key answers that the command may have run, so
/// it is never run a second time under the key.
pub struct Running {
    store: Arc<IdempotencyStore>,
    key: Key,
    generation: u64,
    tx: Option<watch::Sender<Option<Arc<Stored>>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

impl Running {
    /// Keeps the answer and hands it to every request waiting for it.
    pub fn finish(mut self, answer: Stored) -> Arc<Stored> {
        self.complete(answer)
    }

    fn complete(&mut self, answer: Stored) -> Arc<Stored> {
        let answer = Arc::new(answer);
        self.store
            .finish(&self.key, self.generation, answer.clone());
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(answer.clone()));
        }
        answer
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let answer = Stored {
                status: 500,
                body: serde_json::json!({
                    "error": "the first request with this Idempotency-Key ended without an \
                              answer; its command may have run, so it is not run again",
                    "error_kind": "indeterminate",
                })
                .to_string(),
            };
            self.complete(answer);
        }
    }
}

impl IdempotencyStore {
    /// A store keeping answers for `ttl` within `max_bytes`.
    pub fn new(ttl: Duration, max_bytes: usize) -> Arc<IdempotencyStore> {
        Arc::new(IdempotencyStore {
            inner: Mutex::new(Inner::default()),
            ttl,
            max_bytes,
            hasher: Default::default(),
        })
    }

    /// A fingerprint of the request's arguments (keyed per process, so
    /// nobody can make two bodies collide on purpose).
    pub fn fingerprint(&self, args: &ToolArgs) -> u64 {
        let mut h = self.hasher.build_hasher();
        args.command.hash(&mut h);
        args.background.hash(&mut h);
        args.timeout.hash(&mut h);
        args.task_id.hash(&mut h);
        h.finish()
    }

    /// Looks the key up for `task_id`, taking it for this request if new.
    pub fn begin(self: &Arc<Self>, task_id: &str, key: &str, fingerprint: u64) -> Begin {
        let now = Instant::now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        let k: Key = (Arc::from(task_id), Arc::from(key));
        if let Some(entry) = inner.map.get(&k) {
            if entry.fingerprint != fingerprint {
                return Begin::Conflict;
            }
            return match &entry.state {
                State::Running(rx) => Begin::Wait(rx.clone()),
                State::Done { answer, .. } => Begin::Done(answer.clone()),
            };
        }
        let (tx, rx) = watch::channel(None);
        inner.next_generation += 1;
        let generation = inner.next_generation;
        inner.map.insert(
            k.clone(),
            Entry {
                fingerprint,
                state: State::Running(rx),
                generation,
            },
        );
        Begin::Run(Running {
            store: self.clone(),
            key: k,
            generation,
            tx: Some(tx),
        })
    }

    /// Keys kept (running or answered).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the kept answers take, as counted against the budget.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, key: &Key, generation: u64, answer: Arc<Stored>) {
        let now = Instant::now();
        let mut inner = self.lock();
        let size = key.0.len() + key.1.len() + answer.body.len() + ENTRY_OVERHEAD;
        match inner.map.get_mut(key) {
            Some(entry) if entry.generation == generation => {
                entry.state = State::Done { answer, size };
            }
            _ => return,
        }
        inner.bytes += size;
        inner.order.push_back((now, key.clone(), generation));
        // Over the budget: forget the oldest answers (perhaps this one).
        while inner.bytes > self.max_bytes {
            let Some((_, k, generation)) = inner.order.pop_front() else {
                break;
            };
            Self::forget(&mut inner, &k, generation);
        }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, _, _)) = inner.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            if let Some((_, k, generation)) = inner.order.pop_front() {
                Self::forget(inner, &k, generation);
            }
        }
    }

    fn forget(inner: &mut Inner, key: &Key, generation: u64) {
        let size = match inner.map.get(key) {
            Some(Entry {
                state: State::Done { size, .. },
                generation: g,
                ..
            }) if *g == generation => *size,
            _ => return,
        };
        inner.map.remove(key);
        inner.bytes = inner.bytes.saturating_sub(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Stored {
        Stored {
            status: 200,
            body: text.to_string(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_runs_once_waits_while_running_and_refuses_another_body() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 1 << 20);
        let Begin::Run(first) = store.begin("t", "k", 1) else {
            panic!("a new key runs")
        };
        let Begin::Wait(mut rx) = store.begin("t", "k", 1) else {
            panic!("a retry while running waits")
        };
        assert!(matches!(store.begin("t", "k", 2), Begin::Conflict));
        // Keys are per task.
        assert!(matches!(store.begin("other", "k", 2), Begin::Run(_)));
        first.finish(answer("one"));
        let got = rx
            .wait_for(Option::is_some)
            .await
            .expect("the first answer")
            .clone()
            .expect("an answer");
        assert_eq!(got.body, "one");
        let Begin::Done(again) = store.begin("t", "k", 1) else {
            panic!("a retry after the answer gets it")
        };
        assert_eq!(again.body, "one");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_after_the_ttl_and_fit_the_budget() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 2_000);
        let Begin::Run(r) = store.begin("t", "a", 1) else {
            panic!()
        };
        r.finish(answer("x"));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(store.begin("t", "a", 1), Begin::Done(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(store.begin("t", "a", 1), Begin::Run(_)));
        // The budget: big answers push out the oldest.
        for i in 0..10 {
            let Begin::Run(r) = store.begin("t", &format!("big{i}"), 1) else {
                panic!()
            };
            r.finish(answer(&"y".repeat(700)));
            assert!(store.bytes() <= 2_000, "{}", store.bytes());
        }
        assert!(matches!(store.begin("t", "big9", 1), Begin::Done(_)));
        assert!(matches!(store.begin("t", "big0", 1), Begin::Run(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_request_dropped_without_an_answer_is_never_rerun() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 1 << 20);
        let Begin::Run(r) = store.begin("t", "k", 1) else {
            panic!()
        };
        drop(r);
        let Begin::Done(a) = store.begin("t", "k", 1) else {
            panic!("the key stays taken")
        };
        assert_eq!(a.status, 500);
        assert!(a.body.contains("indeterminate"));
    }
}
