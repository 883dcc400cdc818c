use std::time::Duration;

use shardlock::LockManager;
use shardlock::testkit::StandaloneServer;

use crate::support::wait_until;

#[path = "../common/recorded.rs"]
mod recorded;
use recorded::{counter, histogram_samples, recorded};

/// Acquire outcomes, hold and acquire times, renewals and lost leases are
/// recorded through the `metrics` facade under their documented names.
#[test]
fn lock_events_are_recorded() {
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        let mgr = LockManager::builder()
            .seeds([server.url()])
            .build()
            .await
            .unwrap();
        let ttl = Duration::from_millis(300);
        let guard = mgr.lock("m").ttl(ttl).acquire().await.unwrap();
        assert!(mgr.lock("m").try_acquire().await.unwrap().is_none());
        let timed_out = mgr
            .lock("m")
            .wait(Duration::from_millis(20))
            .acquire()
            .await;
        assert!(matches!(timed_out, Err(shardlock::Error::Timeout { .. })));
        // Wait for the renewal task to send a renewal (an attempt that
        // no call of ours made).
        let sent = mgr.client().stats().attempts;
        wait_until(Duration::from_secs(10), "a renewal to be sent", || async {
            mgr.client().stats().attempts > sent
        })
        .await;
        // Let its reply land: the lease is then renewed, not lost.
        let renewed = mgr.client().stats().attempts;
        wait_until(Duration::from_secs(10), "a second renewal", || async {
            mgr.client().stats().attempts > renewed
        })
        .await;
        assert!(!guard.is_lost());
        mgr.pause_renewal(true);
        tokio::time::timeout(Duration::from_secs(10), guard.lost())
            .await
            .expect("the unrenewed lease is reported lost");
        let other = mgr.lock("n").acquire().await.unwrap();
        other.release().await.unwrap();
    });
    let counter = |name: &str, label: Option<(&str, &str)>| counter(&snapshot, name, label);
    let histogram_samples = |name: &str| histogram_samples(&snapshot, name);
    use shardlock::metrics::*;
    assert_eq!(counter(ACQUIRES_TOTAL, Some(("outcome", "acquired"))), 2);
    assert_eq!(counter(ACQUIRES_TOTAL, Some(("outcome", "contended"))), 1);
    assert_eq!(counter(ACQUIRES_TOTAL, Some(("outcome", "timeout"))), 1);
    assert!(counter(RENEWALS_TOTAL, None) >= 1);
    assert_eq!(counter(LEASES_LOST_TOTAL, None), 1);
    assert_eq!(histogram_samples(ACQUIRE_SECONDS), 2);
    assert!(histogram_samples(HOLD_SECONDS) >= 1);
    assert!(histogram_samples(RENEW_BATCH_LEASES) >= 1);
}
