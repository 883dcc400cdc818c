use std::time::Duration;

use shardlock::Error;
use shardlock::testkit::{StandaloneServer, TestCluster};

use crate::support::manager;

/// Acquire, contend, release, re-acquire: the basic cycle on a real cluster,
/// with a fencing token that grows between acquisitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_contend_release() {
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let b = manager(&cluster).await;
    let guard = a
        .lock("order:42")
        .ttl(Duration::from_secs(5))
        .fenced()
        .acquire()
        .await
        .unwrap();
    let first = guard.fencing_token().unwrap();
    assert!(matches!(
        b.lock("order:42").acquire().await,
        Err(Error::Contended)
    ));
    assert!(b.lock("order:42").try_acquire().await.unwrap().is_none());
    let waited = b
        .lock("order:42")
        .wait(Duration::from_millis(200))
        .acquire()
        .await;
    assert!(matches!(waited, Err(Error::Timeout { .. })), "{waited:?}");
    guard.release().await.unwrap();
    let again = b.lock("order:42").fenced().acquire().await.unwrap();
    assert!(again.fencing_token().unwrap() > first);
    again.extend(Duration::from_secs(3)).await.unwrap();
    again.release().await.unwrap();
}

/// The same API works against a standalone (non-cluster) server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_locks() {
    let server = StandaloneServer::start().await.unwrap();
    let mgr = standalone_manager(&server).await;
    let guard = mgr.lock("k").fenced().acquire().await.unwrap();
    assert!(guard.fencing_token().is_some());
    assert!(mgr.lock("k").try_acquire().await.unwrap().is_none());
    drop(guard);
    // The dropped guard is released in the background.
    let again = mgr
        .lock("k")
        .wait(Duration::from_secs(5))
        .acquire()
        .await
        .unwrap();
    again.release().await.unwrap();
}

/// A lease without auto-renewal may be extended by less than three renewal
/// intervals (the floor applies only to auto-renewed leases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_unrenewed_lease_extends() {
    let server = StandaloneServer::start().await.unwrap();
    let mgr = standalone_manager(&server).await;
    let guard = mgr
        .lock("short")
        .auto_renew(false)
        .ttl(Duration::from_millis(100))
        .acquire()
        .await
        .unwrap();
    guard.extend(Duration::from_millis(150)).await.unwrap();
    let renewed = mgr
        .lock("renewed")
        .ttl(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap();
    assert!(matches!(
        renewed.extend(Duration::from_millis(150)).await,
        Err(Error::InvalidArgument(_))
    ));
    guard.release().await.unwrap();
    renewed.release().await.unwrap();
}

/// `valid_until()` is the send time of the last confirmed acquire, renewal
/// or extend plus its TTL: it lies between the call's start and end plus
/// the TTL, moves with `extend`, and moves with auto-renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_until_follows_confirmations() {
    use tokio::time::Instant;
    let server = StandaloneServer::start().await.unwrap();
    let mgr = standalone_manager(&server).await;
    let ttl = Duration::from_secs(2);
    let before = Instant::now();
    let guard = mgr
        .lock("v")
        .ttl(ttl)
        .auto_renew(false)
        .acquire()
        .await
        .unwrap();
    let after = Instant::now();
    assert!(guard.valid_until() >= before + ttl && guard.valid_until() <= after + ttl);

    let before = Instant::now();
    guard.extend(Duration::from_secs(30)).await.unwrap();
    assert!(guard.valid_until() >= before + Duration::from_secs(30));
    guard.release().await.unwrap();

    let renewed = mgr
        .lock("w")
        .ttl(Duration::from_millis(600))
        .acquire()
        .await
        .unwrap();
    let first = renewed.valid_until();
    crate::support::wait_until(Duration::from_secs(10), "a renewal", || async {
        renewed.valid_until() > first
    })
    .await;
    renewed.release().await.unwrap();
}

/// `extend` to a shorter TTL takes effect at once: `valid_until` comes
/// down to it, and auto-renewal follows the new TTL (the lease outlives it
/// several times over) instead of waiting for the old schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_to_a_shorter_ttl_reschedules_renewal() {
    use tokio::time::Instant;
    let server = StandaloneServer::start().await.unwrap();
    let mgr = standalone_manager(&server).await;
    let guard = mgr
        .lock("s")
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    let short = Duration::from_millis(600);
    let before = Instant::now();
    guard.extend(short).await.unwrap();
    assert!(guard.valid_until() <= Instant::now() + short);
    // The old schedule would renew only 10 s after the acquire; the key
    // would be gone 0.6 s after the extend.
    crate::support::wait_until(
        Duration::from_secs(10),
        "renewals on the short TTL",
        || async { guard.valid_until() > before + short * 4 },
    )
    .await;
    assert!(!guard.is_lost());
    guard.release().await.unwrap();
}

/// A `release()` whose future is dropped before its request leaves the
/// process still releases the lease (in the background), rather than
/// leaving it to its TTL.
///
/// Deterministic on a current-thread runtime: the one poll queues the
/// request for the connection's task, which cannot run before the future is
/// dropped, and then skips requests nobody waits for (redis-rs drops a
/// queued request whose receiver is gone). Only the background release can
/// free the key.
#[tokio::test(flavor = "current_thread")]
async fn cancelled_release_still_releases() {
    use futures::FutureExt;
    let server = StandaloneServer::start().await.unwrap();
    let mgr = standalone_manager(&server).await;
    let guard = mgr
        .lock("c")
        .ttl(Duration::from_secs(60))
        .acquire()
        .await
        .unwrap();
    assert!(
        guard.release().now_or_never().is_none(),
        "the release was answered within its first poll"
    );
    crate::support::wait_until(
        Duration::from_secs(10),
        "the lock to be free again",
        || async {
            match mgr.lock("c").try_acquire().await.unwrap() {
                Some(again) => {
                    again.release().await.unwrap();
                    true
                }
                None => false,
            }
        },
    )
    .await;
}

/// A manager for one standalone server, default settings.
async fn standalone_manager(server: &StandaloneServer) -> shardlock::LockManager {
    shardlock::LockManager::builder()
        .seeds([server.url()])
        .build()
        .await
        .unwrap()
}
