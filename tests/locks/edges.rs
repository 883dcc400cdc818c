//! The lock's own edges against a real standalone server, stopped
//! (SIGSTOP) at the worst moments: a failed acquire leaves no lease behind,
//! `lost()` resolves without auto-renewal, concurrent extends never
//! overstate `valid_until`, a release whose reply was lost still counts as
//! released, and a lease reported lost is still deleted by token.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use shardlock::metrics::{ORPHAN_RELEASES_TOTAL, RELEASES_TOTAL};
use shardlock::testkit::StandaloneServer;
use shardlock::{Error, LockManager};
use tokio::time::Instant;

use crate::support::{lock_key, wait_until};

use crate::support::recorded::{counter_with, recorded};

/// Lease length of keys that must be gone long before it runs out.
const LONG_TTL: Duration = Duration::from_secs(30);
/// How soon a cleanup must have happened; far below `LONG_TTL`.
const PROMPTLY: Duration = Duration::from_secs(3);

/// A manager for `server` whose attempts time out after `response` and
/// whose requests give up after `request`.
pub(crate) async fn impatient(
    server: &StandaloneServer,
    response: Duration,
    request: Duration,
) -> LockManager {
    LockManager::builder()
        .seeds([server.url()])
        .namespace("lock:")
        .response_timeout(response)
        .request_timeout(request)
        .build()
        .await
        .expect("manager builds against the standalone server")
}

/// A plain connection to `server`, for looking at keys behind the manager.
pub(crate) async fn raw(server: &StandaloneServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

pub(crate) async fn exists(conn: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(lock_key(key))
        .query_async(conn)
        .await
        .unwrap()
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(lock_key(key))
        .query_async(conn)
        .await
        .unwrap()
}

/// Opens the manager's connection and loads every script on the server
/// before a test stops it (a script the server does not know would be
/// refused with NOSCRIPT, not run, when the server resumes).
async fn warm(mgr: &LockManager) {
    let guard = mgr
        .lock("warm")
        .fenced()
        .try_acquire()
        .await
        .unwrap()
        .unwrap();
    guard.extend(Duration::from_secs(10)).await.unwrap();
    guard.release().await.unwrap();
}

/// Drives `op` (the server stopped) until the manager's router has seen
/// one of its attempts time out, so that the request it carried is queued
/// on the stopped server; panics if `op` ends first.
async fn until_an_attempt_timed_out<F>(mgr: &LockManager, what: &str, op: &mut F)
where
    F: std::future::Future + Unpin,
    F::Output: std::fmt::Debug,
{
    let before = mgr.client().stats().retryable_errors;
    tokio::select! {
        got = op => panic!("{what} ended while the server was stopped: {got:?}"),
        () = wait_attempt_timed_out(mgr, before) => {}
    }
}

/// Waits until the manager's router has seen an attempt time out (the
/// request that attempt carried is queued on the stopped server).
async fn wait_attempt_timed_out(mgr: &LockManager, before: u64) {
    wait_until(
        Duration::from_secs(10),
        "an attempt to time out",
        || async { mgr.client().stats().retryable_errors > before },
    )
    .await;
}

/// An acquire whose `SET` reached the server while the server was stopped
/// (its replies never came back, the acquire failed) leaves no lease: the
/// key is released by token in the background within seconds of the
/// failure, not after its 30 s TTL, and the cleanup is counted as an
/// orphan release that found the key set.
#[test]
fn failed_acquire_leaves_no_orphan_lease() {
    for fenced in [false, true] {
        let snapshot = recorded(|| async {
            let server = StandaloneServer::start().await.unwrap();
            let mgr = impatient(
                &server,
                Duration::from_millis(200),
                Duration::from_millis(600),
            )
            .await;
            let conn = raw(&server).await;
            warm(&mgr).await;

            server.pause().unwrap();
            let request = mgr.lock("orphan").ttl(LONG_TTL);
            let request = if fenced { request.fenced() } else { request };
            let failed = request.acquire().await;
            let failed_at = Instant::now();
            server.resume().unwrap();
            assert!(
                matches!(failed, Err(Error::DeadlineExceeded { .. })),
                "fenced {fenced}: {failed:?}"
            );
            wait_until(
                PROMPTLY,
                "the failed acquire's key to be released",
                || async { !exists(&mut conn.clone(), "orphan").await },
            )
            .await;
            // The figure the README quotes (printed, not asserted).
            eprintln!(
                "fenced {fenced}: the orphan was gone {:?} after the failed acquire returned",
                failed_at.elapsed()
            );
            // Free for others at once, not after the TTL.
            let other = mgr.lock("orphan").try_acquire().await.unwrap();
            other
                .expect("free after the cleanup")
                .release()
                .await
                .unwrap();
        });
        let orphans =
            |outcome| counter_with(&snapshot, ORPHAN_RELEASES_TOTAL, &[("outcome", outcome)]);
        assert_eq!(
            orphans("released"),
            1,
            "fenced {fenced}: the SET had landed"
        );
        assert_eq!(orphans("error"), 0, "fenced {fenced}");
    }
}

/// Dropping an acquire future after its request was sent (the server is
/// stopped, so no reply comes) hands what the request may set to the
/// background release: once the server runs again the key is gone within
/// seconds, not after its TTL, and the cleanup counts as an orphan release
/// that found the key set (the `SET` had landed).
#[test]
fn dropped_acquire_leaves_no_orphan_lease() {
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        let mgr = impatient(&server, Duration::from_millis(200), Duration::from_secs(5)).await;
        let conn = raw(&server).await;
        warm(&mgr).await;

        server.pause().unwrap();
        let mut acquire = Box::pin(mgr.lock("cancelled").ttl(LONG_TTL).acquire());
        // Dropped once an attempt is known to be queued on the stopped server.
        until_an_attempt_timed_out(&mgr, "the acquire", &mut acquire).await;
        drop(acquire);
        server.resume().unwrap();
        wait_until(
            PROMPTLY,
            "the cancelled acquire's key to be released",
            || async { !exists(&mut conn.clone(), "cancelled").await },
        )
        .await;
    });
    let orphans = |outcome| counter_with(&snapshot, ORPHAN_RELEASES_TOTAL, &[("outcome", outcome)]);
    assert_eq!(orphans("released"), 1, "the SET had landed");
    assert_eq!(orphans("error"), 0);
}

/// Dropping a `lock_many` future after its pipeline of `SET`s was sent to
/// the stopped server releases every key it may have set in the
/// background: once the server runs again all of them are gone within
/// seconds, not after their TTL, and each counts as an orphan release that
/// found its key set.
#[test]
fn dropped_lock_many_leaves_no_orphan_leases() {
    let keys = ["many:a", "many:b", "many:c"];
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        let mgr = impatient(&server, Duration::from_millis(200), Duration::from_secs(5)).await;
        let conn = raw(&server).await;
        warm(&mgr).await;

        server.pause().unwrap();
        let mut acquire = Box::pin(mgr.lock_many(keys).ttl(LONG_TTL).acquire());
        until_an_attempt_timed_out(&mgr, "lock_many", &mut acquire).await;
        drop(acquire);
        server.resume().unwrap();
        wait_until(
            PROMPTLY,
            "every key of the dropped lock_many to be released",
            || {
                let mut conn = conn.clone();
                async move {
                    let mut any = false;
                    for key in keys {
                        any |= exists(&mut conn, key).await;
                    }
                    !any
                }
            },
        )
        .await;
    });
    let orphans = |outcome| counter_with(&snapshot, ORPHAN_RELEASES_TOTAL, &[("outcome", outcome)]);
    assert_eq!(orphans("released"), 3, "every SET had landed");
    assert_eq!(orphans("error"), 0);
}

/// Without auto-renewal, `lost()` resolves once `valid_until()` passes
/// (the README's `select!` then ends), `is_lost()` agrees, and the lease's
/// plain expiry is not counted as lost in the metrics.
#[test]
fn lost_resolves_at_expiry_without_auto_renewal() {
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        let mgr = impatient(&server, Duration::from_secs(1), Duration::from_secs(5)).await;
        let guard = mgr
            .lock("short")
            .ttl(Duration::from_millis(300))
            .auto_renew(false)
            .acquire()
            .await
            .unwrap();
        assert!(!guard.is_lost());
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                () = guard.lost() => "lost",
                () = std::future::pending::<()>() => "critical section",
            }
        })
        .await;
        assert_eq!(ended, Ok("lost"), "lost() did not resolve after the TTL");
        assert!(guard.is_lost());
        assert!(Instant::now() >= guard.valid_until());
        // Once it has expired on the server too (its expiry counts from a
        // little after the send), there is nothing to release.
        let conn = raw(&server).await;
        wait_until(
            Duration::from_secs(5),
            "the key to expire on the server",
            || {
                let mut conn = conn.clone();
                async move { !exists(&mut conn, "short").await }
            },
        )
        .await;
        assert!(matches!(guard.release().await, Err(Error::NotHeld)));

        // An extend that finds the key gone resolves lost() at once.
        let guard = mgr
            .lock("deleted")
            .ttl(LONG_TTL)
            .auto_renew(false)
            .acquire()
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(lock_key("deleted"))
            .query_async(&mut raw(&server).await)
            .await
            .unwrap();
        assert!(matches!(guard.extend(LONG_TTL).await, Err(Error::NotHeld)));
        assert!(guard.is_lost());
        tokio::time::timeout(Duration::from_secs(1), guard.lost())
            .await
            .expect("lost() after an extend found the key gone");
    });
    let lost = |class| {
        counter_with(
            &snapshot,
            shardlock::metrics::LEASES_LOST_TOTAL,
            &[("key_class", class)],
        )
    };
    assert_eq!(lost("default"), 1, "only the deleted lease counts as lost");
}

/// `join!(extend(30 s), extend(1 s))` and the other order leave
/// `valid_until()` no later than the key's expiry on the server (PTTL read
/// with a plain connection), with and without auto-renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_extends_never_overstate_valid_until() {
    let server = StandaloneServer::start().await.unwrap();
    let mgr = impatient(&server, Duration::from_secs(1), Duration::from_secs(5)).await;
    let mut conn = raw(&server).await;
    let (long, short) = (LONG_TTL, Duration::from_secs(1));
    for auto_renew in [false, true] {
        for (first, second) in [(long, short), (short, long)] {
            let key = format!("extended:{auto_renew}:{}", first.as_secs());
            let guard = mgr
                .lock(&key)
                .ttl(Duration::from_secs(10))
                .auto_renew(auto_renew)
                .acquire()
                .await
                .unwrap();
            let (a, b) = tokio::join!(guard.extend(first), guard.extend(second));
            a.unwrap();
            b.unwrap();
            let ms = pttl(&mut conn, &key).await;
            let read = Instant::now();
            assert!(ms > 0, "{key}: PTTL {ms}");
            // PTTL is rounded to the millisecond.
            let expires = read + Duration::from_millis(ms as u64 + 1);
            assert!(
                guard.valid_until() <= expires,
                "{key}: valid_until is {:?} after the key expires on the server (PTTL {ms} ms)",
                guard.valid_until() - expires
            );
            if !auto_renew && second == long {
                // Not overly careful either: the 30 s extend counts.
                assert!(
                    guard.valid_until() > read + Duration::from_secs(20),
                    "{key}"
                );
            }
            guard.release().await.unwrap();
        }
    }
}

/// A release whose first attempt deleted the key while the server was
/// stopped (its reply never came back) and whose resend then found the key
/// absent returns Ok and is counted as released, not as not_held.
#[test]
fn release_with_a_lost_reply_counts_as_released() {
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        let mgr = impatient(&server, Duration::from_millis(200), Duration::from_secs(5)).await;
        let mut conn = raw(&server).await;
        warm(&mgr).await;
        let guard = mgr.lock("released").ttl(LONG_TTL).acquire().await.unwrap();

        server.pause().unwrap();
        let release = guard.release();
        tokio::pin!(release);
        until_an_attempt_timed_out(&mgr, "the release", &mut release).await;
        server.resume().unwrap();
        let released = release.await;
        assert!(released.is_ok(), "{released:?}");
        assert!(!exists(&mut conn, "released").await);
    });
    let releases = |outcome| counter_with(&snapshot, RELEASES_TOTAL, &[("outcome", outcome)]);
    // The warm-up's release and this one.
    assert_eq!(releases("released"), 2);
    assert_eq!(releases("not_held"), 0);
}

/// A release sent just before the lease ran out, whose first attempt went
/// unanswered (server stopped) and whose resend came back only after the
/// lease's `valid_until` and found the key absent (it expired on the
/// server meanwhile), is `NotHeld`, counted as not_held: the critical
/// section outlived the lease, and an absent key then proves nothing.
#[test]
fn release_answered_after_expiry_is_not_held() {
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        let mgr = impatient(&server, Duration::from_millis(200), Duration::from_secs(10)).await;
        let mut conn = raw(&server).await;
        warm(&mgr).await;
        let guard = mgr
            .lock("expired")
            .ttl(Duration::from_millis(1500))
            .auto_renew(false)
            .acquire()
            .await
            .unwrap();
        let valid_until = guard.valid_until();

        server.pause().unwrap();
        let release = guard.release();
        tokio::pin!(release);
        until_an_attempt_timed_out(&mgr, "the release", &mut release).await;
        // The stop lasts until the lease has run out (the fault's length,
        // not a wait for a result).
        tokio::select! {
            got = &mut release => panic!("the release ended while the server was stopped: {got:?}"),
            () = tokio::time::sleep_until(valid_until + Duration::from_millis(300)) => {}
        }
        server.resume().unwrap();
        let released = release.await;
        assert!(matches!(released, Err(Error::NotHeld)), "{released:?}");
        assert!(!exists(&mut conn, "expired").await);
    });
    let releases = |outcome| counter_with(&snapshot, RELEASES_TOTAL, &[("outcome", outcome)]);
    // The warm-up's release only.
    assert_eq!(releases("released"), 1);
    assert_eq!(releases("not_held"), 1);
}

/// A lease reported lost only because renewal could not confirm it, while
/// an extend whose reply was lost (the server was stopped) kept our token
/// there with a 30 s TTL, is still deleted by token: `release()` returns Ok
/// and frees the key, and a dropped guard frees it in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_leases_are_still_released_by_token() {
    let server = StandaloneServer::start().await.unwrap();
    let mgr = impatient(
        &server,
        Duration::from_millis(100),
        Duration::from_millis(300),
    )
    .await;
    let mut conn = raw(&server).await;
    let ttl = Duration::from_millis(1500);
    warm(&mgr).await;
    for drop_it in [false, true] {
        let key = format!("lost:{drop_it}");
        let guard = mgr.lock(&key).ttl(ttl).acquire().await.unwrap();
        // Renewal stops, as if the holder were cut off.
        mgr.pause_renewal(true);
        server.pause().unwrap();
        let extended = guard.extend(LONG_TTL).await;
        server.resume().unwrap();
        assert!(
            matches!(extended, Err(Error::DeadlineExceeded { .. })),
            "{extended:?}"
        );
        wait_until(
            Duration::from_secs(10),
            "the lease to be reported lost",
            || async { guard.is_lost() },
        )
        .await;
        assert!(
            pttl(&mut conn, &key).await > 10_000,
            "{key}: the extend landed after all, our token stays for 30 s"
        );
        mgr.pause_renewal(false);
        if drop_it {
            drop(guard);
        } else {
            let released = guard.release().await;
            assert!(released.is_ok(), "{key}: {released:?}");
        }
        wait_until(PROMPTLY, "the lost lease's key to be deleted", || async {
            !exists(&mut conn.clone(), &key).await
        })
        .await;
    }
}

/// With renewals of a 300 ms auto-renewed lease landing all along (every
/// 100 ms), 15 rounds of `join!(extend(30 s), extend(300 ms))` and single
/// extends, each started as soon as a renewal landed on the server, leave `valid_until()` no later than the key's
/// expiry on the server (read after it; renewals only move that expiry
/// later), and the lease is never reported lost.
#[test]
fn extends_racing_renewals_never_overstate_valid_until() {
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        let mgr = impatient(&server, Duration::from_secs(1), Duration::from_secs(5)).await;
        let mut conn = raw(&server).await;
        let short = Duration::from_millis(300);
        let guard = mgr.lock("raced").ttl(short).acquire().await.unwrap();
        for round in 0..15 {
            // Each round starts as soon as a renewal has landed on the
            // server, while its reply may still be on its way to the
            // renewal task: its confirmation races the extends.
            let probe = conn.clone();
            wait_until(Duration::from_secs(5), "the key's TTL to run down", || {
                let mut probe = probe.clone();
                async move { pttl(&mut probe, "raced").await <= 250 }
            })
            .await;
            wait_until(Duration::from_secs(5), "a renewal to land", || {
                let mut probe = probe.clone();
                async move { pttl(&mut probe, "raced").await > 250 }
            })
            .await;
            let (a, b) = tokio::join!(guard.extend(LONG_TTL), guard.extend(short));
            a.unwrap();
            b.unwrap();
            if round % 2 == 1 {
                guard.extend(short).await.unwrap();
            }
            let valid_until = guard.valid_until();
            let ms = pttl(&mut conn, "raced").await;
            let read = Instant::now();
            assert!(ms > 0, "round {round}: PTTL {ms}");
            let expires = read + Duration::from_millis(ms as u64 + 1);
            assert!(
                valid_until <= expires,
                "round {round}: valid_until is {:?} after the key expires on the server (PTTL {ms} ms)",
                valid_until - expires
            );
            assert!(!guard.is_lost(), "round {round}");
        }
        guard.release().await.unwrap();
    });
    let renewals = counter_with(&snapshot, shardlock::metrics::RENEWALS_TOTAL, &[]);
    assert!(
        renewals >= 5,
        "only {renewals} renewals landed during the extends"
    );
}

/// An extend to a shorter TTL lowers `valid_until` at once, and `lost()`
/// follows it: without auto-renewal, with the server stopped so that the
/// extend stays pending, `lost()` resolves once the lowered bound passes,
/// while the extend is still in flight (not at the old 30 s bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_follows_an_extend_in_flight() {
    let server = StandaloneServer::start().await.unwrap();
    let mgr = impatient(&server, Duration::from_millis(1500), Duration::from_secs(3)).await;
    warm(&mgr).await;
    let guard = mgr
        .lock("lowered")
        .ttl(LONG_TTL)
        .auto_renew(false)
        .acquire()
        .await
        .unwrap();
    server.pause().unwrap();
    let first = {
        let extend = guard.extend(Duration::from_millis(200));
        tokio::pin!(extend);
        tokio::select! {
            // lost() first: it is waiting on the old bound when the
            // extend lowers it.
            biased;
            () = guard.lost() => None,
            got = &mut extend => Some(got),
        }
    };
    server.resume().unwrap();
    assert!(
        first.is_none(),
        "the extend ended ({first:?}) before lost() resolved (lost() waited for the old bound)"
    );
    assert!(guard.is_lost());
}

/// An extend whose reply arrives after the lease was reported lost (its
/// lowered `valid_until` passed while the server was stopped) returns
/// `NotHeld`, not `Ok`: the loss stands, `valid_until` is not raised, and
/// the key (ours, extended on the server) is deleted on release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_answered_after_a_loss_is_not_held() {
    let server = StandaloneServer::start().await.unwrap();
    let mgr = impatient(&server, Duration::from_millis(1500), Duration::from_secs(3)).await;
    let mut conn = raw(&server).await;
    warm(&mgr).await;
    let guard = mgr.lock("late").ttl(LONG_TTL).acquire().await.unwrap();
    server.pause().unwrap();
    let extend = Box::pin(guard.extend(Duration::from_secs(1)));
    let mut extend = extend;
    // Polled once: the extend is sent and its bound lowered.
    tokio::select! {
        biased;
        got = &mut extend => panic!("the extend ended while the server was stopped: {got:?}"),
        () = std::future::ready(()) => {}
    }
    wait_until(
        Duration::from_secs(5),
        "the lowered bound to pass",
        || async { guard.is_lost() },
    )
    .await;
    let reported = guard.valid_until();
    server.resume().unwrap();
    let extended = (&mut extend).await;
    drop(extend);
    assert!(
        matches!(extended, Err(Error::NotHeld)),
        "an extend answered after the loss returned {extended:?}"
    );
    assert!(guard.is_lost());
    assert!(guard.valid_until() <= reported, "valid_until was raised");
    assert!(pttl(&mut conn, "late").await > 0, "the extend landed");
    assert!(guard.release().await.is_ok());
    assert!(!exists(&mut conn, "late").await);
}

/// A `release()` that fails (the server answers `BUSY` past the request
/// timeout: a script spins on it) hands the lease to the background
/// release, as a dropped guard does: once the script is killed, the key is
/// gone within seconds, not after its 30 s TTL, and the release is counted
/// once as an error (the call) and once as released (the background).
#[test]
fn failed_release_is_finished_in_the_background() {
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        let mgr = impatient(
            &server,
            Duration::from_millis(200),
            Duration::from_millis(600),
        )
        .await;
        let mut conn = raw(&server).await;
        warm(&mgr).await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("busy-reply-threshold")
            .arg("50")
            .query_async(&mut conn)
            .await
            .unwrap();
        let guard = mgr.lock("busy").ttl(LONG_TTL).acquire().await.unwrap();
        let mut busy = raw(&server).await;
        let spin = tokio::spawn(async move {
            let spun: redis::RedisResult<()> = redis::cmd("EVAL")
                .arg("while true do end")
                .arg(0)
                .query_async(&mut busy)
                .await;
            spun
        });
        let probe = raw(&server).await;
        wait_until(Duration::from_secs(5), "the server to answer BUSY", || {
            let mut probe = probe.clone();
            async move {
                let pinged: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut probe).await;
                matches!(&pinged, Err(e) if e.code() == Some("BUSY"))
            }
        })
        .await;
        let released = guard.release().await;
        assert!(
            matches!(released, Err(Error::DeadlineExceeded { .. })),
            "{released:?}"
        );
        let _: () = redis::cmd("SCRIPT")
            .arg("KILL")
            .query_async(&mut raw(&server).await)
            .await
            .unwrap();
        let _ = spin.await;
        wait_until(PROMPTLY, "the failed release's key to be deleted", || {
            let mut conn = conn.clone();
            async move { !exists(&mut conn, "busy").await }
        })
        .await;
    });
    let releases = |outcome| counter_with(&snapshot, RELEASES_TOTAL, &[("outcome", outcome)]);
    assert_eq!(releases("error"), 1, "the failed call");
    // The warm-up's release and the background one.
    assert_eq!(releases("released"), 2);
    assert_eq!(releases("not_held"), 0);
}

/// A release whose first attempt went unanswered (the key's primary
/// stopped) and whose resend, after a failover to a replica that never got
/// the key, finds it absent returns `NotHeld` and counts as `not_held`:
/// the lease was lost with the old primary's writes, not deleted by that
/// first attempt (the slot map changed between the two).
#[test]
fn release_resent_after_a_failover_is_not_held() {
    let snapshot = recorded(|| async {
        let cluster = shardlock::testkit::TestCluster::start().await.unwrap();
        let mgr = LockManager::builder()
            .seeds(cluster.seeds())
            .namespace("lock:")
            .response_timeout(Duration::from_millis(300))
            .request_timeout(Duration::from_secs(10))
            .build()
            .await
            .unwrap();
        let key = crate::support::key_in(100, "failover");
        let primary = cluster.primary_of_slot(100).await.unwrap();
        let replica = cluster.replica_of(&primary).await.unwrap();
        mgr.lock("warm")
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        // The replica is cut off before the key is set: it never gets it.
        cluster.pause(&replica).unwrap();
        cluster
            .command(
                &primary,
                redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica"),
            )
            .await
            .unwrap();
        let guard = mgr.lock(&key).ttl(LONG_TTL).acquire().await.unwrap();
        cluster.pause(&primary).unwrap();
        cluster.resume(&replica).unwrap();

        let before = mgr.client().stats().retryable_errors;
        let release = tokio::spawn(guard.release());
        wait_attempt_timed_out(&mgr, before).await;
        cluster
            .command(
                &replica,
                redis::cmd("CLUSTER").arg("FAILOVER").arg("TAKEOVER"),
            )
            .await
            .unwrap();
        let released = release.await.unwrap();
        cluster.resume(&primary).unwrap();
        assert!(
            matches!(released, Err(Error::NotHeld)),
            "a release that found the key absent on the new primary returned {released:?}"
        );
    });
    let releases = |outcome| counter_with(&snapshot, RELEASES_TOTAL, &[("outcome", outcome)]);
    assert_eq!(releases("released"), 1, "only the warm-up's");
    assert_eq!(releases("not_held"), 1);
}
