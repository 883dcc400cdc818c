//! A graceful shutdown: `flush_releases` waits until the background
//! release has decided every lease handed to it, and says so when a node
//! keeps it from finishing in time.

use std::time::Duration;

use shardlock::Error;
use shardlock::testkit::StandaloneServer;

use crate::edges::{exists, impatient, raw};

/// Dropped guards on a stopped server: the flush reports the releases
/// pending (typed error, nothing lost); once the server answers again the
/// flush returns only after every dropped lease's key is gone, so a
/// process that exits right after it leaves none of them behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_dropped_guards_to_be_released() {
    let server = StandaloneServer::start().await.unwrap();
    let mgr = impatient(
        &server,
        Duration::from_millis(100),
        Duration::from_millis(300),
    )
    .await;
    let mut conn = raw(&server).await;
    mgr.flush_releases(Duration::ZERO)
        .await
        .expect("nothing is pending on a fresh manager");

    let keys: Vec<String> = (0..20).map(|i| format!("flush:{i}")).collect();
    let mut guards = Vec::new();
    for key in &keys {
        let ttl = Duration::from_secs(30);
        guards.push(mgr.lock(key).ttl(ttl).acquire().await.unwrap());
    }
    server.pause().unwrap();
    drop(guards);
    let pending = mgr.flush_releases(Duration::from_millis(500)).await;
    assert!(
        matches!(pending, Err(Error::ReleasesPending { .. })),
        "{pending:?}"
    );
    server.resume().unwrap();
    mgr.flush_releases(Duration::from_secs(10))
        .await
        .expect("every release decided once the server answers");
    for key in &keys {
        assert!(
            !exists(&mut conn, key).await,
            "{key} still held after the flush"
        );
    }
    mgr.flush_releases(Duration::ZERO)
        .await
        .expect("nothing left pending");
}
