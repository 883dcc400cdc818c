use std::time::Duration;

use shardlock::testkit::{ClusterSpec, TestCluster};
use shardlock::{Client, Error, Request, RetryCause};
use tokio::time::Instant;

use crate::support::key_in;

/// A primary that stops answering (SIGSTOP) makes requests for its slots end
/// with DeadlineExceeded naming the timeout, while other shards keep
/// serving; once it resumes, its slots work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_primary_gives_a_named_deadline_error() {
    // A long node timeout keeps the cluster from failing the paused node over.
    let cluster = TestCluster::start_with(ClusterSpec {
        node_timeout: Duration::from_secs(30),
        ..ClusterSpec::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .seeds(cluster.seeds())
        .response_timeout(Duration::from_millis(200))
        .refresh_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let paused_slot = 50;
    let paused = cluster.primary_of_slot(paused_slot).await.unwrap();
    let other_slot = (0..shardlock::SLOT_COUNT)
        .find(|s| {
            client
                .topology()
                .primary_of_slot(*s)
                .unwrap()
                .addr()
                .as_ref()
                != paused
        })
        .unwrap();
    let ping = |slot: u16| Request::cmd(redis::cmd("SET").arg(key_in(slot, "d")).arg(1).clone());
    client
        .execute(paused_slot, &ping(paused_slot))
        .await
        .unwrap();

    cluster.pause(&paused).unwrap();
    let deadline = Instant::now() + Duration::from_millis(800);
    match client
        .execute_until(paused_slot, &ping(paused_slot), deadline)
        .await
    {
        Err(Error::DeadlineExceeded { attempts, last, .. }) => {
            assert!(attempts >= 1);
            assert!(
                matches!(last, RetryCause::TimedOut | RetryCause::NodeBackoff),
                "last cause {last:?}"
            );
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(
        client.execute(other_slot, &ping(other_slot)).await.unwrap(),
        vec![redis::Value::Okay]
    );
    cluster.resume(&paused).unwrap();
    let key = key_in(paused_slot, "d");
    let got: i64 = client
        .query(&key, redis::cmd("GET").arg(&key).clone())
        .await
        .unwrap();
    assert_eq!(got, 1);
    assert!(client.stats().deadlines_exceeded >= 1);
}
