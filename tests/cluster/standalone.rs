use redis::Value;
use shardlock::testkit::StandaloneServer;
use std::time::Duration;

use shardlock::{Client, Error, Request, SLOT_COUNT};

use crate::support::key_in;

/// A plain (non-cluster) redis-server works through the same API: the slot
/// map is one shard owning every slot, and commands for any slot succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_serves_every_slot() {
    let server = StandaloneServer::start().await.unwrap();
    let client = Client::builder()
        .seeds([server.url()])
        .build()
        .await
        .unwrap();
    let topology = client.topology();
    assert!(topology.is_standalone());
    assert_eq!(topology.shards().len(), 1);
    assert_eq!(topology.unassigned_slots(), 0);
    for slot in (0..SLOT_COUNT).step_by(511) {
        let key = key_in(slot, "plain");
        let replies = client
            .execute(
                slot,
                &Request::pipeline([
                    redis::cmd("SET").arg(&key).arg(slot).clone(),
                    redis::cmd("GET").arg(&key).clone(),
                ]),
            )
            .await
            .unwrap();
        assert_eq!(
            replies,
            vec![
                Value::Okay,
                Value::BulkString(slot.to_string().into_bytes())
            ]
        );
    }
    client.refresh().await.unwrap();
    assert!(client.topology().is_standalone());
    assert_eq!(client.stats().refresh_failures, 0);
}

/// Scripts run by SHA1 and fall back to their source when the server does
/// not know them, also after `SCRIPT FLUSH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_survive_script_flush() {
    let server = StandaloneServer::start().await.unwrap();
    let client = Client::builder()
        .seeds([server.url()])
        .build()
        .await
        .unwrap();
    let script = shardlock::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let key = "counter";
    let slot = shardlock::key_slot(key.as_bytes());
    let request = Request::script(&script, &[key], &[5]);
    let run = || client.execute(slot, &request);
    assert_eq!(run().await.unwrap(), vec![Value::Int(5)]);
    assert_eq!(client.stats().noscript, 1, "first use loads the script");
    assert_eq!(run().await.unwrap(), vec![Value::Int(10)]);
    assert_eq!(client.stats().noscript, 1, "later uses go by SHA1");
    let _: () = client
        .query(key, redis::cmd("SCRIPT").arg("FLUSH").clone())
        .await
        .unwrap();
    assert_eq!(run().await.unwrap(), vec![Value::Int(15)]);
    assert_eq!(client.stats().noscript, 2, "a flushed script is sent again");
}

async fn build(seeds: &[String]) -> shardlock::Result<Client> {
    Client::builder()
        .seeds(seeds)
        .refresh_interval(Duration::from_secs(3600))
        .build()
        .await
}

/// Asserts `result` is `InvalidArgument` naming both seeds.
fn assert_refused(result: shardlock::Result<Client>, a: &str, b: &str, why: &str) {
    match result {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains(a) && m.contains(b), "{m:?} names {a} and {b}");
            assert!(m.contains(why), "{m:?} lacks {why:?}");
        }
        other => panic!("seeds {a}, {b}: expected InvalidArgument, got {other:?}"),
    }
}

/// Two different standalone servers as seeds are refused in either order:
/// otherwise two clients with the same seeds in another order would lock
/// on different servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_standalone_servers_are_refused_in_either_order() {
    let (a, b) = (
        StandaloneServer::start().await.unwrap(),
        StandaloneServer::start().await.unwrap(),
    );
    for (first, second) in [(&a, &b), (&b, &a)] {
        let result = build(&[first.url(), second.url()]).await;
        assert_refused(result, &first.addr(), &second.addr(), "two different");
    }
}

/// One server under two names (`127.0.0.1:p` and `localhost:p`) is one
/// server: the client builds, in either order, and stays standalone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_under_two_names_is_accepted() {
    let server = StandaloneServer::start().await.unwrap();
    let port = server.addr().rsplit_once(':').unwrap().1.to_owned();
    let alias = format!("localhost:{port}");
    for seeds in [
        [server.addr(), alias.clone()],
        [alias.clone(), server.addr()],
    ] {
        let client = build(&seeds).await.unwrap();
        assert!(client.topology().is_standalone());
        client.refresh().await.unwrap();
        let _: () = client
            .query("k", redis::cmd("SET").arg("k").arg("v").clone())
            .await
            .unwrap();
    }
}

/// A standalone primary and its replica as seeds are refused in either
/// order (the client would drift to the replica after one failed refresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_and_replica_are_refused() {
    let (primary, replica) = (
        StandaloneServer::start().await.unwrap(),
        StandaloneServer::start().await.unwrap(),
    );
    let mut conn = redis::Client::open(replica.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (host, port) = primary
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg(host)
        .arg(port)
        .query_async(&mut conn)
        .await
        .unwrap();
    for (first, second) in [(&primary, &replica), (&replica, &primary)] {
        let result = build(&[first.url(), second.url()]).await;
        assert_refused(result, &first.addr(), &second.addr(), "two different");
    }
}

/// A client built on a cluster never switches to a standalone server among
/// its seeds: with the cluster unreachable, a refresh fails and the cluster
/// map stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_client_never_moves_to_a_standalone_seed() {
    let cluster = shardlock::testkit::TestCluster::start_with(shardlock::testkit::ClusterSpec {
        primaries: 1,
        replicas_per_primary: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let server = StandaloneServer::start().await.unwrap();
    // Stopped at build, the standalone seed is skipped (a standalone seed
    // that answers at build is refused: see `deployments`).
    server.pause().unwrap();
    let built = Client::builder()
        .seeds([cluster.seeds()[0].clone(), server.url()])
        .refresh_interval(Duration::from_secs(3600))
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(300))
        .build()
        .await;
    server.resume().unwrap();
    let client = built.unwrap();
    assert!(!client.topology().is_standalone());
    let node = cluster.addrs()[0].clone();
    cluster.pause(&node).unwrap();
    let refreshed = client.refresh().await;
    cluster.resume(&node).unwrap();
    assert!(
        !client.topology().is_standalone(),
        "the client moved to the standalone seed"
    );
    match refreshed {
        Err(Error::NoNodeReachable(failures)) => assert!(
            failures.iter().any(|f| f.addr == server.addr()
                && f.to_string()
                    .contains("a standalone server answered for a cluster")),
            "{failures:?}"
        ),
        other => panic!("expected NoNodeReachable, got {other:?}"),
    }
    client.refresh().await.unwrap();
    assert!(!client.topology().is_standalone());
}
