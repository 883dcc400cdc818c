//! Helpers shared by the lock tests.

use std::time::Duration;

use shardlock::LockManager;
use shardlock::testkit::TestCluster;

/// A lock manager for `cluster` with test-friendly settings.
pub async fn manager(cluster: &TestCluster) -> LockManager {
    LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .request_timeout(Duration::from_secs(20))
        .build()
        .await
        .expect("lock manager builds against the test cluster")
}

#[path = "../common/wait.rs"]
mod wait;

/// Running a test body under a local metrics recorder.
#[path = "../common/recorded.rs"]
pub mod recorded;
pub use wait::wait_until;

/// A user key whose lock key (under the test namespace `lock:`) lives in
/// `slot`: the hash tag decides the slot, the namespace has no braces.
pub fn key_in(slot: u16, name: &str) -> String {
    format!("{{{}}}:{name}", shardlock::slot_tag(slot))
}

/// The lock key of user key `key` under the test namespace `lock:`.
pub fn lock_key(key: &str) -> String {
    format!("lock:{key}")
}
