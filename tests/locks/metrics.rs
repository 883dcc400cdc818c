use std::time::Duration;

use shardlock::LockManager;
use shardlock::metrics::*;
use shardlock::testkit::StandaloneServer;

use crate::support::wait_until;

use crate::support::recorded::{counter_with, gauge_with, histogram_samples_with, recorded};

/// The key classes of the test: the text before the first `:`, `user` and
/// `order` declared; `cart` is not, so it is recorded as `other`.
fn prefix(key: &[u8]) -> &'static str {
    match key.split(|b| *b == b':').next() {
        Some(b"user") => "user",
        Some(b"order") => "order",
        _ => "cart",
    }
}

/// Every lock event is recorded under its documented name and labels, per
/// declared key class: acquire outcomes (acquired, contended, timeout,
/// error) with their tries, contended tries and wait times; releases by
/// outcome (released, not held, and the background release of a dropped
/// guard); renewals, renewal batch sizes and a lost lease; hold times; the
/// leases-held gauge, back to zero once every lease ended; and per-shard
/// command latency. A key outside the declared classes is `other`.
#[test]
fn lock_events_are_recorded_per_key_class() {
    let mut shard = String::new();
    let snapshot = recorded(|| async {
        let server = StandaloneServer::start().await.unwrap();
        shard = server.addr();
        let mgr = LockManager::builder()
            .seeds([server.url()])
            .key_classes(&["user", "order"], prefix)
            .build()
            .await
            .unwrap();

        // user: acquired, then contended, then timed out.
        let ttl = Duration::from_millis(300);
        let guard = mgr.lock("user:1").ttl(ttl).acquire().await.unwrap();
        assert!(mgr.lock("user:1").try_acquire().await.unwrap().is_none());
        let timed_out = mgr
            .lock("user:1")
            .wait(Duration::from_millis(20))
            .acquire()
            .await;
        assert!(matches!(timed_out, Err(shardlock::Error::Timeout { .. })));

        // order: an error (the lock key holds a hash), then a dropped guard.
        let _: () = mgr
            .client()
            .query(
                "shardlock:lock:order:bad",
                redis::cmd("HSET")
                    .arg("shardlock:lock:order:bad")
                    .arg("f")
                    .arg(1)
                    .clone(),
            )
            .await
            .unwrap();
        let bad = mgr.lock("order:bad").try_acquire().await;
        assert!(
            matches!(bad, Err(shardlock::Error::Server { .. })),
            "{bad:?}"
        );
        drop(mgr.lock("order:2").acquire().await.unwrap());
        wait_until(
            Duration::from_secs(10),
            "the dropped guard's release",
            || async {
                let held: bool = mgr
                    .client()
                    .query(
                        "shardlock:lock:order:2",
                        redis::cmd("EXISTS").arg("shardlock:lock:order:2").clone(),
                    )
                    .await
                    .unwrap();
                !held
            },
        )
        .await;

        // cart (not declared): acquired and released.
        mgr.lock("cart:1")
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();

        // user: renewed twice, then lost once renewal stops; its release
        // then finds the key gone.
        for round in ["a renewal", "a second renewal"] {
            let sent = mgr.client().stats().attempts;
            wait_until(Duration::from_secs(10), round, || async {
                mgr.client().stats().attempts > sent
            })
            .await;
        }
        assert!(!guard.is_lost());
        mgr.pause_renewal(true);
        tokio::time::timeout(Duration::from_secs(10), guard.lost())
            .await
            .expect("the unrenewed lease is reported lost");
        // Lost at its `valid_until`; the key expires on the server a little
        // later (its TTL counts from when the server got the request). A lost
        // lease is still released by token, and finds nothing once it has.
        wait_until(
            Duration::from_secs(10),
            "the lost lease's key to expire",
            || async {
                let full = "shardlock:lock:user:1";
                let held: bool = mgr
                    .client()
                    .query(full, redis::cmd("EXISTS").arg(full).clone())
                    .await
                    .unwrap();
                !held
            },
        )
        .await;
        assert!(matches!(
            guard.release().await,
            Err(shardlock::Error::NotHeld)
        ));
    });
    let counter = |name: &str, labels: &[(&str, &str)]| counter_with(&snapshot, name, labels);
    let samples =
        |name: &str, labels: &[(&str, &str)]| histogram_samples_with(&snapshot, name, labels);
    let class = |c| ("key_class", c);
    let outcome = |o| ("outcome", o);

    assert_eq!(
        counter(ACQUIRES_TOTAL, &[outcome("acquired"), class("user")]),
        1
    );
    assert_eq!(
        counter(ACQUIRES_TOTAL, &[outcome("contended"), class("user")]),
        1
    );
    assert_eq!(
        counter(ACQUIRES_TOTAL, &[outcome("timeout"), class("user")]),
        1
    );
    assert_eq!(
        counter(ACQUIRES_TOTAL, &[outcome("error"), class("order")]),
        1
    );
    assert_eq!(
        counter(ACQUIRES_TOTAL, &[outcome("acquired"), class("order")]),
        1
    );
    assert_eq!(
        counter(ACQUIRES_TOTAL, &[outcome("acquired"), class("other")]),
        1
    );
    assert_eq!(
        counter(ACQUIRES_TOTAL, &[class("cart")]),
        0,
        "undeclared class"
    );
    // user: 1 + 1 + at least 2 tries while waiting 20 ms; all but the first found it held.
    let tries = counter(ACQUIRE_ATTEMPTS_TOTAL, &[class("user")]);
    assert!(tries >= 4, "{tries}");
    assert_eq!(
        counter(ACQUIRE_CONTENDED_TOTAL, &[class("user")]),
        tries - 1
    );
    assert_eq!(counter(ACQUIRE_ATTEMPTS_TOTAL, &[class("order")]), 2);
    assert_eq!(counter(ACQUIRE_CONTENDED_TOTAL, &[class("order")]), 0);
    assert_eq!(samples(ACQUIRE_WAIT_SECONDS, &[class("user")]), 3);
    assert_eq!(samples(ACQUIRE_WAIT_SECONDS, &[outcome("error")]), 1);

    assert_eq!(
        counter(RELEASES_TOTAL, &[outcome("released"), class("order")]),
        1
    );
    assert_eq!(
        counter(RELEASES_TOTAL, &[outcome("released"), class("other")]),
        1
    );
    assert_eq!(
        counter(RELEASES_TOTAL, &[outcome("not_held"), class("user")]),
        1
    );
    assert_eq!(counter(RELEASES_TOTAL, &[outcome("error")]), 0);

    assert!(counter(RENEWALS_TOTAL, &[]) >= 1);
    assert!(samples(RENEW_BATCH_LEASES, &[]) >= 1);
    assert_eq!(counter(LEASES_LOST_TOTAL, &[class("user")]), 1);
    assert_eq!(counter(LEASES_LOST_TOTAL, &[]), 1);

    // One hold per lease: user (lost), order (dropped), other (released).
    for c in ["user", "order", "other"] {
        assert_eq!(samples(HOLD_SECONDS, &[class(c)]), 1, "{c}");
        assert_eq!(
            gauge_with(&snapshot, LEASES_HELD, &[class(c)]),
            Some(0.0),
            "{c}"
        );
    }
    assert!(samples(COMMAND_SECONDS, &[("shard", &shard)]) >= 10);
}
