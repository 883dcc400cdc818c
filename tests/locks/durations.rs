//! Every public setter or call that takes a `Duration`, at zero, at
//! `Duration::MAX` and one past its documented bound: a typed
//! `InvalidArgument` naming the setting, or a value that works. Never a
//! panic (the old code overflowed `Instant` arithmetic on several of them).

use std::time::Duration;

use shardlock::testkit::StandaloneServer;
use shardlock::{Client, ClientBuilder, Error, LockManager, LockManagerBuilder};

const NS: Duration = Duration::from_nanos(1);
const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);
/// The longest `max_ttl`: 2³² − 1 ms.
const MAX_TTL_LIMIT: Duration = Duration::from_millis(u32::MAX as u64);

/// `None`: the value works; `Some(needles)`: InvalidArgument naming them.
type Expect = Option<&'static [&'static str]>;

fn check<T: std::fmt::Debug>(
    what: &str,
    result: shardlock::Result<T>,
    expect: Option<&[&str]>,
) -> Option<T> {
    match (result, expect) {
        (Ok(value), None) => Some(value),
        (Err(Error::InvalidArgument(m)), Some(needles)) => {
            for needle in needles {
                assert!(m.contains(needle), "{what}: {m:?} lacks {needle:?}");
            }
            None
        }
        (other, expect) => panic!("{what}: expected {expect:?}, got {other:?}"),
    }
}

/// ClientBuilder's durations: the timeouts and the refresh interval must be
/// above zero and at most a day, `refresh_min_gap` at most a day (zero is
/// fine); values within the bounds give a client that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_builder_durations() {
    let server = StandaloneServer::start().await.unwrap();
    type Set = fn(ClientBuilder, Duration) -> ClientBuilder;
    let bounded: [(&str, Set); 4] = [
        ("connect_timeout", |b, d| b.connect_timeout(d)),
        ("response_timeout", |b, d| b.response_timeout(d)),
        ("request_timeout", |b, d| b.request_timeout(d)),
        ("refresh_interval", |b, d| b.refresh_interval(d)),
    ];
    let mut table: Vec<(&str, Set, Duration, Expect)> = Vec::new();
    for (name, set) in bounded {
        table.push((name, set, Duration::ZERO, Some(&["above zero"])));
        table.push((name, set, Duration::MAX, Some(&["one day"])));
        table.push((name, set, DAY + NS, Some(&["one day"])));
        table.push((name, set, DAY, None));
    }
    let gap: Set = |b, d| b.refresh_min_gap(d);
    table.push(("refresh_min_gap", gap, Duration::ZERO, None));
    table.push(("refresh_min_gap", gap, Duration::MAX, Some(&["one day"])));
    table.push(("refresh_min_gap", gap, DAY + NS, Some(&["one day"])));
    table.push(("refresh_min_gap", gap, DAY, None));
    for (name, set, value, expect) in table {
        let what = format!("{name}({value:?})");
        let built = set(Client::builder().seeds([server.url()]), value)
            .build()
            .await;
        let needles = expect.map(|n| [n, &[name][..]].concat());
        let Some(client) = check(&what, built, needles.as_deref()) else {
            continue;
        };
        client.refresh().await.unwrap();
        client.hint_refresh().unwrap();
        let _: () = client
            .query("k", redis::cmd("SET").arg("k").arg("v").clone())
            .await
            .unwrap();
    }
}

/// LockManagerBuilder's durations: `max_ttl` in 1 ms..=2³²−1 ms,
/// `default_ttl` in 1 ms..=max_ttl, `renew_interval` in (0, default_ttl / 3]
/// (a default TTL shorter than three intervals would refuse every request
/// that sets no TTL, since requests renew by default);
/// managers within the bounds take and release a lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_manager_builder_durations() {
    let server = StandaloneServer::start().await.unwrap();
    type Set = fn(LockManagerBuilder, Duration) -> LockManagerBuilder;
    let default_ttl: Set = |b, d| b.default_ttl(d);
    let max_ttl: Set = |b, d| b.max_ttl(d).default_ttl(d.min(Duration::from_secs(10)));
    let renew: Set = |b, d| b.renew_interval(d).default_ttl(HOUR);
    let renew_10s: Set = |b, d| b.renew_interval(d).default_ttl(Duration::from_secs(10));
    let table: Vec<(&str, Set, Duration, Expect)> = vec![
        (
            "default_ttl",
            default_ttl,
            Duration::ZERO,
            Some(&["default_ttl"]),
        ),
        (
            "default_ttl",
            default_ttl,
            Duration::MAX,
            Some(&["default_ttl", "max_ttl"]),
        ),
        (
            "default_ttl",
            default_ttl,
            HOUR + NS,
            Some(&["default_ttl", "max_ttl"]),
        ),
        ("default_ttl", default_ttl, HOUR, None),
        (
            "max_ttl",
            max_ttl,
            Duration::ZERO,
            Some(&["max_ttl", "below 1ms"]),
        ),
        (
            "max_ttl",
            max_ttl,
            Duration::MAX,
            Some(&["max_ttl", "49 days"]),
        ),
        (
            "max_ttl",
            max_ttl,
            MAX_TTL_LIMIT + NS,
            Some(&["max_ttl", "49 days"]),
        ),
        ("max_ttl", max_ttl, MAX_TTL_LIMIT, None),
        (
            "renew_interval",
            renew,
            Duration::ZERO,
            Some(&["renew_interval"]),
        ),
        (
            "renew_interval",
            renew,
            Duration::MAX,
            Some(&["renew_interval", "default_ttl / 3"]),
        ),
        (
            "renew_interval",
            renew,
            HOUR / 3 + NS,
            Some(&["renew_interval", "default_ttl / 3"]),
        ),
        ("renew_interval", renew, HOUR / 3, None),
        (
            "renew_interval",
            renew_10s,
            Duration::from_secs(10) / 3 + NS,
            Some(&["renew_interval", "default_ttl / 3"]),
        ),
    ];
    for (name, set, value, expect) in table {
        let what = format!("{name}({value:?})");
        let builder = set(LockManager::builder().seeds([server.url()]), value);
        let Some(mgr) = check(&what, builder.build().await, expect) else {
            continue;
        };
        let guard = mgr.lock(&what).ttl(HOUR).acquire().await.unwrap();
        guard.release().await.unwrap();
    }
}

/// Lock requests and extends: a TTL of zero, `Duration::MAX` or just above
/// max_ttl is refused by name; any wait works (zero: one attempt; MAX: keeps
/// waiting while the lock is held, takes it at once when free).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_request_durations() {
    let server = StandaloneServer::start().await.unwrap();
    let max = Duration::from_secs(60);
    let mgr = LockManager::builder()
        .seeds([server.url()])
        .max_ttl(max)
        .build()
        .await
        .unwrap();
    let bad_ttls: [(Duration, &[&str]); 3] = [
        (Duration::ZERO, &["ttl 0ns"]),
        (Duration::MAX, &["max_ttl (60s)"]),
        (max + NS, &["max_ttl (60s)"]),
    ];
    let held = mgr.lock("held").ttl(max).acquire().await.unwrap();
    for (ttl, needles) in bad_ttls {
        let what = format!("ttl({ttl:?})");
        check(
            &what,
            mgr.lock("k").ttl(ttl).try_acquire().await,
            Some(needles),
        );
        check(
            &what,
            mgr.lock("k").ttl(ttl).wait(Duration::MAX).acquire().await,
            Some(needles),
        );
        check(
            &what,
            mgr.lock_many(["a", "b"]).ttl(ttl).acquire().await,
            Some(needles),
        );
        check(
            &format!("extend({ttl:?})"),
            held.extend(ttl).await,
            Some(needles),
        );
    }
    held.extend(max).await.unwrap();
    for wait in [Duration::ZERO, Duration::MAX] {
        let what = format!("wait({wait:?})");
        let one = mgr.lock("free").wait(wait).acquire().await;
        check(&what, one, None).unwrap().release().await.unwrap();
        let many = mgr
            .lock_many(["free-a", "free-b"])
            .wait(wait)
            .acquire()
            .await;
        check(&what, many, None).unwrap().release().await.unwrap();
    }
    let bound = Duration::from_millis(300);
    let waiting = tokio::time::timeout(bound, mgr.lock("held").wait(Duration::MAX).acquire()).await;
    assert!(
        waiting.is_err(),
        "wait(MAX) on a held lock ended: {waiting:?}"
    );
    let waiting = tokio::time::timeout(
        bound,
        mgr.lock_many(["held", "x"]).wait(Duration::MAX).acquire(),
    )
    .await;
    assert!(
        waiting.is_err(),
        "lock_many wait(MAX) on a held lock ended: {waiting:?}"
    );
    assert!(matches!(
        mgr.lock("held").wait(Duration::ZERO).acquire().await,
        Err(Error::Timeout { .. })
    ));
    held.release().await.unwrap();
}
