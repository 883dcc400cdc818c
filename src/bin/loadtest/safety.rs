//! The mutual-exclusion check. Per key, the interval in which a worker
//! believed it held the lease runs from the moment acquire returned to just
//! before the release is sent (or until the worker learned the lease was
//! lost). All intervals are recorded under one lock per key stripe, which
//! totally orders their starts and ends; a start while another worker's
//! interval on that key is open is an overlap, counted as one violation.
//! In fenced mode a token not above the last one issued for that key is a
//! violation too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const STRIPES: usize = 256;

#[derive(Default)]
struct KeyState {
    /// The workers whose interval on this key is open (more than one only
    /// after a violation).
    holders: Vec<usize>,
    /// The highest fencing token seen on this key.
    last_token: u64,
}

pub(crate) struct Safety {
    stripes: Vec<Mutex<HashMap<u64, KeyState>>>,
    overlaps: AtomicU64,
    token_regressions: AtomicU64,
}

impl Safety {
    pub(crate) fn new() -> Safety {
        Safety {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            overlaps: AtomicU64::new(0),
            token_regressions: AtomicU64::new(0),
        }
    }

    fn stripe(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, KeyState>> {
        self.stripes[key as usize % STRIPES]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `worker` starts believing it holds `key` (with its fencing token).
    pub(crate) fn enter(&self, key: u64, worker: usize, token: Option<u64>) {
        let mut keys = self.stripe(key);
        let state = keys.entry(key).or_default();
        if state.holders.iter().any(|&other| other != worker) {
            self.overlaps.fetch_add(1, Relaxed);
        }
        state.holders.push(worker);
        if let Some(token) = token {
            if token <= state.last_token {
                self.token_regressions.fetch_add(1, Relaxed);
            }
            state.last_token = state.last_token.max(token);
        }
    }

    /// `worker` stops believing it holds `key`.
    pub(crate) fn leave(&self, key: u64, worker: usize) {
        let mut keys = self.stripe(key);
        if let Some(state) = keys.get_mut(&key)
            && let Some(at) = state.holders.iter().position(|&w| w == worker)
        {
            state.holders.swap_remove(at);
        }
    }

    /// Overlapping holds of one key by two workers.
    pub(crate) fn overlaps(&self) -> u64 {
        self.overlaps.load(Relaxed)
    }

    /// Fencing tokens that did not increase for their key.
    pub(crate) fn token_regressions(&self) -> u64 {
        self.token_regressions.load(Relaxed)
    }

    pub(crate) fn violations(&self) -> u64 {
        self.overlaps() + self.token_regressions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_holds_and_falling_tokens_are_violations() {
        let safety = Safety::new();
        safety.enter(1, 0, Some(10));
        safety.leave(1, 0);
        safety.enter(1, 1, Some(11));
        assert_eq!(safety.violations(), 0);
        safety.enter(1, 2, Some(12)); // worker 1 still holds key 1
        assert_eq!(safety.overlaps(), 1);
        safety.leave(1, 2);
        safety.leave(1, 1);
        safety.enter(1, 0, Some(5)); // token went backwards
        assert_eq!(safety.token_regressions(), 1);
        safety.enter(2, 3, None); // other keys are independent
        assert_eq!(safety.violations(), 2);
    }
}
