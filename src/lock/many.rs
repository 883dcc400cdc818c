//! `lock_many`: several locks taken all or none.

use std::time::Duration;

use super::guard::LockGuard;
use super::manager::LockManager;
use crate::error::{Error, Result};

/// A request for several locks at once, built by [`LockManager::lock_many`].
#[derive(Debug)]
#[must_use = "a lock request does nothing until .acquire() is awaited"]
pub struct ManyLockRequest {
    manager: LockManager,
    keys: Vec<Vec<u8>>,
    ttl: Option<Duration>,
    wait: Option<Duration>,
}

/// The guards of a `lock_many`, in the order the keys were given.
#[derive(Debug)]
pub struct LockGuards {
    guards: Vec<LockGuard>,
}

impl LockGuards {
    /// The guards, in the order the keys were given.
    pub fn guards(&self) -> &[LockGuard] {
        &self.guards
    }

    /// Releases every lease; the first error is returned after trying all.
    pub async fn release(self) -> Result<()> {
        let mut first = None;
        for guard in self.guards {
            if let Err(e) = guard.release().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl ManyLockRequest {
    pub(crate) fn new(manager: LockManager, keys: Vec<Vec<u8>>) -> ManyLockRequest {
        ManyLockRequest {
            manager,
            keys,
            ttl: None,
            wait: None,
        }
    }

    /// Lease length of every lock.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long to wait while any of the locks is held by someone else.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Takes all the locks or none.
    pub async fn acquire(self) -> Result<LockGuards> {
        let _ = (&self.manager, &self.keys, self.ttl, self.wait);
        Err(Error::Other("lock_many is not implemented yet".into()))
    }
}
