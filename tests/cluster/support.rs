//! Helpers shared by the cluster tests.

use std::time::Duration;

use shardlock::testkit::TestCluster;
use shardlock::{Client, slot_tag};

/// A client for `cluster` with test-friendly settings: periodic refresh
/// effectively off (tests trigger refreshes themselves), generous deadline.
pub async fn client(cluster: &TestCluster) -> Client {
    Client::builder()
        .seeds(cluster.seeds())
        .refresh_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(20))
        .build()
        .await
        .expect("client builds against the test cluster")
}

/// A key that lives in `slot`.
pub fn key_in(slot: u16, name: &str) -> String {
    format!("{{{}}}:{name}", slot_tag(slot))
}

#[path = "../common/wait.rs"]
mod wait;
pub use wait::wait_until;

/// The primary serving `slot` now, and another primary (a migration target).
pub async fn source_and_other(cluster: &TestCluster, slot: u16) -> (String, String) {
    let source = cluster.primary_of_slot(slot).await.unwrap();
    let other = cluster
        .primaries()
        .await
        .unwrap()
        .into_iter()
        .find(|p| *p != source)
        .expect("the cluster has a second primary");
    (source, other)
}
