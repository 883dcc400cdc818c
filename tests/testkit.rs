//! The testkit against real `redis-server` processes: cluster shape, slot
//! migration, failover, kill / restart, pause / resume, standalone servers,
//! a missing binary, and the partitions of a proxied cluster.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::Value;
use shardlock::testkit::{
    ClusterSpec, Peer, StandaloneServer, StandaloneSpec, TestCluster, TestkitError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/wait.rs"]
mod wait;
use wait::wait_until;

const SETTLE: Duration = Duration::from_secs(30);

fn text(value: Value) -> String {
    redis::from_redis_value(value).expect("a string reply")
}

fn field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

async fn info_field(cluster: &TestCluster, addr: &str, section: &str, key: &str) -> Option<String> {
    let info = cluster
        .command(addr, redis::cmd("INFO").arg(section))
        .await
        .unwrap();
    field(&text(info), key)
}

/// A default cluster has 3 primaries with one live replica each covering all
/// 16384 slots, and dropping it leaves no process and no open port behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_starts_with_three_primaries_and_three_replicas_and_drop_kills_them() {
    let cluster = TestCluster::start().await.unwrap();
    let addrs = cluster.addrs();
    assert_eq!(addrs.len(), 6);
    assert_eq!(cluster.seeds().len(), 6);
    assert!(
        cluster
            .seeds()
            .iter()
            .all(|s| s.starts_with("redis://127.0.0.1:"))
    );

    let primaries = cluster.primaries().await.unwrap();
    assert_eq!(primaries.len(), 3);
    let mut replicas = Vec::new();
    for p in &primaries {
        let r = cluster.replica_of(p).await.unwrap();
        assert!(!primaries.contains(&r));
        replicas.push(r);
    }
    replicas.sort();
    replicas.dedup();
    assert_eq!(replicas.len(), 3);
    for slot in [0, 5461, 5462, 16383] {
        assert!(primaries.contains(&cluster.primary_of_slot(slot).await.unwrap()));
    }
    for addr in &addrs {
        assert_eq!(
            info_cluster(&cluster, addr, "cluster_slots_assigned").await,
            "16384"
        );
        assert_eq!(
            info_cluster(&cluster, addr, "cluster_known_nodes").await,
            "6"
        );
        assert_eq!(cluster.node_id(addr).await.unwrap().len(), 40);
    }

    let pids: Vec<u32> = addrs
        .iter()
        .map(|a| cluster.pid(a).unwrap().unwrap())
        .collect();
    drop(cluster);
    for (pid, addr) in pids.iter().zip(&addrs) {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} of {addr} survived"
        );
        assert!(
            TcpStream::connect(addr).is_err(),
            "{addr} still accepts connections"
        );
    }
}

async fn info_cluster(cluster: &TestCluster, addr: &str, key: &str) -> String {
    let info = cluster
        .command(addr, redis::cmd("CLUSTER").arg("INFO"))
        .await
        .unwrap();
    field(&text(info), key).unwrap()
}

/// A slot migration stopped halfway makes the source answer `-ASK target`
/// for moved keys (and serve the rest), and after `finish` the source answers
/// `-MOVED target` and the target serves every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_halfway_shows_ask_and_moved_after_finish() {
    let cluster = TestCluster::start().await.unwrap();
    let keys: Vec<String> = (0..10).map(|i| format!("{{mig}}:{i}")).collect();
    let any = &cluster.addrs()[0];
    let slot: u16 = redis::from_redis_value(
        cluster
            .command(any, redis::cmd("CLUSTER").arg("KEYSLOT").arg(&keys[0]))
            .await
            .unwrap(),
    )
    .unwrap();
    let source = cluster.primary_of_slot(slot).await.unwrap();
    for k in &keys {
        cluster
            .command(&source, redis::cmd("SET").arg(k).arg(k))
            .await
            .unwrap();
    }
    let target = cluster
        .primaries()
        .await
        .unwrap()
        .into_iter()
        .find(|p| *p != source)
        .unwrap();

    let mut migration = cluster.begin_migration(slot, &target).await.unwrap();
    assert_eq!(
        (migration.source(), migration.target(), migration.slot()),
        (source.as_str(), target.as_str(), slot)
    );
    assert_eq!(migration.move_keys(4).await.unwrap(), 4);
    let mut asked = 0;
    for k in &keys {
        match cluster.command(&source, redis::cmd("GET").arg(k)).await {
            Ok(v) => assert_eq!(text(v), *k),
            Err(e) => {
                assert_eq!(e.server_code(), Some("ASK"), "{e}");
                assert!(e.to_string().contains(&target), "{e}");
                asked += 1;
            }
        }
    }
    assert_eq!(asked, 4);
    // Still in the middle: the slot map has not changed.
    assert_eq!(cluster.primary_of_slot(slot).await.unwrap(), source);

    migration.finish().await.unwrap();
    let err = cluster
        .command(&source, redis::cmd("GET").arg(&keys[0]))
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some("MOVED"), "{err}");
    assert!(err.to_string().contains(&target), "{err}");
    for k in &keys {
        assert_eq!(
            text(
                cluster
                    .command(&target, redis::cmd("GET").arg(k))
                    .await
                    .unwrap()
            ),
            *k
        );
    }
    assert_eq!(cluster.primary_of_slot(slot).await.unwrap(), target);
    // And back again in one call.
    cluster.migrate_slot(slot, &source).await.unwrap();
    assert_eq!(cluster.primary_of_slot(slot).await.unwrap(), source);
    assert_eq!(
        text(
            cluster
                .command(&source, redis::cmd("GET").arg(&keys[9]))
                .await
                .unwrap()
        ),
        keys[9]
    );
}

fn assert_send<T: Send>(_: &T) {}

/// `failover` promotes the primary's replica, demotes the primary to its
/// replica, and can be repeated right away to swap them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_swaps_roles() {
    let cluster = TestCluster::start().await.unwrap();
    let old = cluster.primary_of_slot(0).await.unwrap();
    let replica = cluster.replica_of(&old).await.unwrap();
    let failover = cluster.failover(&old);
    assert_send(&failover); // the load test may spawn it
    let new = failover.await.unwrap();
    assert_eq!(new, replica);
    assert_eq!(cluster.primary_of_slot(0).await.unwrap(), new);
    assert_eq!(cluster.replica_of(&new).await.unwrap(), old);
    assert_eq!(
        info_field(&cluster, &new, "replication", "role")
            .await
            .as_deref(),
        Some("master")
    );
    assert_eq!(
        info_field(&cluster, &old, "replication", "role")
            .await
            .as_deref(),
        Some("slave")
    );
    assert!(!cluster.primaries().await.unwrap().contains(&old));

    assert_eq!(cluster.failover(&new).await.unwrap(), old);
    assert_eq!(cluster.primary_of_slot(0).await.unwrap(), old);
}

/// A killed primary is replaced by its replica, and once restarted on its
/// old ports with its `nodes.conf` it rejoins as that replica's replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_is_replaced_and_rejoins_after_restart() {
    let cluster = TestCluster::start().await.unwrap();
    let old = cluster.primary_of_slot(100).await.unwrap();
    let replica = cluster.replica_of(&old).await.unwrap();
    let old_id = cluster.node_id(&old).await.unwrap();

    cluster.kill(&old).unwrap();
    assert_eq!(cluster.pid(&old).unwrap(), None);
    assert!(TcpStream::connect(&old).is_err());
    cluster.wait_cluster_ok(SETTLE).await.unwrap();
    assert_eq!(cluster.primary_of_slot(100).await.unwrap(), replica);

    cluster.restart(&old).await.unwrap();
    cluster.wait_cluster_ok(SETTLE).await.unwrap();
    assert_eq!(cluster.node_id(&old).await.unwrap(), old_id);
    assert_eq!(cluster.replica_of(&replica).await.unwrap(), old);
    assert_eq!(cluster.primary_of_slot(100).await.unwrap(), replica);
}

/// A paused node keeps running but a PING to it times out; after resume it
/// answers again and the cluster settles; a paused primary makes
/// `wait_cluster_ok` time out naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_makes_ping_time_out_and_resume_answers_again() {
    let cluster = TestCluster::start().await.unwrap();
    let primary = cluster.primary_of_slot(0).await.unwrap();
    let replica = cluster.replica_of(&primary).await.unwrap();
    let ping = redis::cmd("PING");

    cluster.pause(&replica).unwrap();
    assert!(cluster.pid(&replica).unwrap().is_some());
    let err = cluster
        .command_with_timeout(&replica, &ping, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, TestkitError::Timeout { .. }), "{err}");
    // The other nodes still answer, and queries skip the paused one.
    assert_eq!(cluster.primary_of_slot(0).await.unwrap(), primary);

    cluster.resume(&replica).unwrap();
    assert_eq!(
        text(cluster.command(&replica, &ping).await.unwrap()),
        "PONG"
    );
    cluster.wait_cluster_ok(SETTLE).await.unwrap();

    // A paused primary is not "ok": the wait times out and says who is silent.
    cluster.pause(&primary).unwrap();
    let err = cluster
        .wait_cluster_ok(Duration::from_millis(200))
        .await
        .unwrap_err();
    cluster.resume(&primary).unwrap();
    assert!(matches!(err, TestkitError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&primary), "{err}");
    cluster.wait_cluster_ok(SETTLE).await.unwrap();
}

/// A cluster with a password starts (replicas authenticate with masterauth),
/// its seeds carry the password, and migration moves keys with AUTH2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_cluster_migrates_with_auth() {
    let cluster = TestCluster::start_with(ClusterSpec {
        password: Some("s3cret pw".into()),
        ..ClusterSpec::default()
    })
    .await
    .unwrap();
    assert!(cluster.seeds()[0].starts_with("redis://:s3cret%20pw@127.0.0.1:"));
    let key = "{b}";
    let any = &cluster.addrs()[0];
    let slot: u16 = redis::from_redis_value(
        cluster
            .command(any, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .unwrap(),
    )
    .unwrap();
    let source = cluster.primary_of_slot(slot).await.unwrap();
    cluster
        .command(&source, redis::cmd("SET").arg(key).arg("v"))
        .await
        .unwrap();
    let target = cluster
        .primaries()
        .await
        .unwrap()
        .into_iter()
        .find(|p| *p != source)
        .unwrap();
    cluster.migrate_slot(slot, &target).await.unwrap();
    assert_eq!(
        text(
            cluster
                .command(&target, redis::cmd("GET").arg(key))
                .await
                .unwrap()
        ),
        "v"
    );

    // Without the password a node refuses to talk.
    let client = redis::Client::open(format!("redis://{target}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let err = redis::cmd("GET")
        .arg(key)
        .query_async::<Value>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
}

/// A standalone server answers PING on its URL, says cluster support is
/// disabled to CLUSTER SHARDS, and enforces its password when it has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_answers_and_has_no_cluster_support() {
    let server = StandaloneServer::start().await.unwrap();
    assert_eq!(server.url(), format!("redis://{}", server.addr()));
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let err = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async::<Value>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cluster support disabled"),
        "{err}"
    );

    let secured = StandaloneServer::start_with_password("pw/with:odd@chars")
        .await
        .unwrap();
    let mut conn = redis::Client::open(secured.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let pid = secured.pid().unwrap();
    drop(secured);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// A missing binary is reported as `RedisServerNotFound`, and the message
/// tells how to install it on Debian.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binary_names_the_debian_package() {
    let missing = PathBuf::from("/nonexistent/redis-server");
    let err = TestCluster::start_with(ClusterSpec {
        redis_server: Some(missing.clone()),
        ..ClusterSpec::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, TestkitError::RedisServerNotFound { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("apt-get install redis-server"),
        "{message}"
    );
    assert!(message.contains("/nonexistent/redis-server"), "{message}");

    let err = StandaloneServer::start_with(StandaloneSpec {
        redis_server: Some(missing),
        ..StandaloneSpec::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, TestkitError::RedisServerNotFound { .. }),
        "{err:?}"
    );
}

/// How long a cut connection is watched for a byte, a close or a reset.
/// Silence for this long is what a cut must give (no bound on speed).
const SILENCE: Duration = Duration::from_millis(500);
/// Upper bound for a reply that is due (after a heal), not a speed claim.
const REPLY: Duration = Duration::from_secs(5);

fn proxied() -> ClusterSpec {
    ClusterSpec {
        proxied: true,
        ..ClusterSpec::default()
    }
}

/// Reads exactly `want.len()` bytes within [`REPLY`] and compares them.
async fn expect_bytes(stream: &mut tokio::net::TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(REPLY, stream.read_exact(&mut got))
        .await
        .expect("a reply in time")
        .expect("the connection stays open");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// Asserts that nothing arrives for [`SILENCE`]: no byte, no end of stream,
/// no reset.
async fn expect_silence(stream: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(SILENCE, stream.read(&mut buf)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("the connection was closed"),
        Ok(Ok(n)) => panic!("got {:?}", String::from_utf8_lossy(&buf[..n])),
        Ok(Err(e)) => panic!("the connection failed: {e}"),
    }
}

/// In a proxied cluster clients go through the proxies (seeds and the slot
/// map name them); `cut_client` silences one node for the client side on
/// an open connection and on a new one — no reply, no close, no reset —
/// while other nodes answer and the kit still reaches the cut node
/// directly; after the heal the request queued on the open connection
/// gets its reply, late, and so does the one sent on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_client_silences_one_node_and_heal_delivers_what_was_queued() {
    let cluster = TestCluster::start_with(proxied()).await.unwrap();
    assert!(cluster.is_proxied());
    let addrs = cluster.addrs();
    let (node, other) = (&addrs[0], &addrs[1]);
    assert_eq!(cluster.seeds()[0], format!("redis://{node}"));
    // The nodes announce the proxies, which hold the public addresses.
    let Value::Array(ranges) = cluster
        .command(node, redis::cmd("CLUSTER").arg("SLOTS"))
        .await
        .unwrap()
    else {
        panic!("CLUSTER SLOTS is an array");
    };
    let mut announced: Vec<String> = ranges
        .into_iter()
        .map(|range| {
            let Value::Array(fields) = range else {
                panic!("a slot range is an array");
            };
            let Value::Array(primary) = &fields[2] else {
                panic!("a slot range names its primary");
            };
            let ip: String = redis::from_redis_value(primary[0].clone()).unwrap();
            let port: u16 = redis::from_redis_value(primary[1].clone()).unwrap();
            format!("{ip}:{port}")
        })
        .collect();
    announced.sort();
    let mut primaries = cluster.primaries().await.unwrap();
    primaries.sort();
    assert_eq!(announced, primaries);
    assert!(primaries.iter().all(|p| addrs.contains(p)));

    let mut open = tokio::net::TcpStream::connect(node).await.unwrap();
    open.write_all(b"PING\r\n").await.unwrap();
    expect_bytes(&mut open, b"+PONG\r\n").await;

    cluster.cut_client(node).unwrap();
    open.write_all(b"ECHO late\r\n").await.unwrap();
    expect_silence(&mut open).await;
    // A new connection is accepted (the kernel completes the handshake) but
    // carries nothing either.
    let mut fresh = tokio::net::TcpStream::connect(node).await.unwrap();
    fresh.write_all(b"ECHO fresh\r\n").await.unwrap();
    expect_silence(&mut fresh).await;
    // Another node answers its clients; the kit reaches the cut node past
    // its proxy.
    let mut beside = tokio::net::TcpStream::connect(other).await.unwrap();
    beside.write_all(b"PING\r\n").await.unwrap();
    expect_bytes(&mut beside, b"+PONG\r\n").await;
    assert_eq!(
        text(cluster.command(node, &redis::cmd("PING")).await.unwrap()),
        "PONG"
    );

    cluster.heal(Peer::Client, Peer::node(node)).unwrap();
    expect_bytes(&mut open, b"$4\r\nlate\r\n").await;
    expect_bytes(&mut fresh, b"$5\r\nfresh\r\n").await;
    open.write_all(b"PING\r\n").await.unwrap();
    expect_bytes(&mut open, b"+PONG\r\n").await;

    // Bad peers are typed errors.
    let err = cluster.cut_client("127.0.0.1:1").unwrap_err();
    assert!(matches!(err, TestkitError::UnknownNode(_)), "{err:?}");
    let err = cluster.cut(Peer::node(node), Peer::node(node)).unwrap_err();
    assert!(matches!(err, TestkitError::InvalidArgument(_)), "{err:?}");
    let err = cluster.cut(Peer::Client, Peer::Client).unwrap_err();
    assert!(matches!(err, TestkitError::InvalidArgument(_)), "{err:?}");
}

/// A cluster started without proxies refuses every cut and heal with
/// `InvalidArgument` saying how to get one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_need_a_proxied_cluster() {
    let cluster = TestCluster::start_with(ClusterSpec {
        primaries: 1,
        replicas_per_primary: 0,
        ..ClusterSpec::default()
    })
    .await
    .unwrap();
    assert!(!cluster.is_proxied());
    let node = cluster.addrs()[0].clone();
    let results = [
        cluster.cut_client(&node),
        cluster.isolate(&node),
        cluster.cut(Peer::Client, Peer::node(&node)),
        cluster.heal(Peer::Client, Peer::node(&node)),
        cluster.heal_all(),
    ];
    for result in results {
        let err = result.unwrap_err();
        assert!(matches!(err, TestkitError::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("proxied: true"), "{err}");
    }
}

/// The faults that exist without proxies work behind them: a manual
/// failover, a restart on the same ports (the proxies stay), a slot
/// migration; and dropping the cluster closes the proxies' ports too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_cluster_fails_over_restarts_migrates_and_drop_closes_the_proxies() {
    let cluster = TestCluster::start_with(proxied()).await.unwrap();
    let old = cluster.primary_of_slot(0).await.unwrap();
    let replica = cluster.replica_of(&old).await.unwrap();
    assert_eq!(cluster.failover(&old).await.unwrap(), replica);
    assert_eq!(cluster.replica_of(&replica).await.unwrap(), old);

    cluster.restart(&old).await.unwrap();
    cluster.wait_cluster_ok(SETTLE).await.unwrap();
    assert_eq!(cluster.replica_of(&replica).await.unwrap(), old);

    let key = "{p}";
    let slot: u16 = redis::from_redis_value(
        cluster
            .command(&replica, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .unwrap(),
    )
    .unwrap();
    let source = cluster.primary_of_slot(slot).await.unwrap();
    cluster
        .command(&source, redis::cmd("SET").arg(key).arg("v"))
        .await
        .unwrap();
    let target = cluster
        .primaries()
        .await
        .unwrap()
        .into_iter()
        .find(|p| *p != source)
        .unwrap();
    cluster.migrate_slot(slot, &target).await.unwrap();
    // Read through the target's proxy, as a client would.
    let mut conn = redis::Client::open(format!("redis://{target}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "v");
    drop(conn);

    let addrs = cluster.addrs();
    drop(cluster);
    for addr in &addrs {
        assert!(
            TcpStream::connect(addr).is_err(),
            "{addr} (a proxy) still accepts connections"
        );
    }
}

/// `isolate(primary)` is a split brain: the rest of the cluster promotes
/// its replica, while the old primary still answers its clients and took a
/// write after the isolation that its replica never got; once its
/// `cluster-node-timeout` has passed without hearing the others, it refuses
/// writes (`CLUSTERDOWN`). After `heal_all` the cluster converges with the
/// old primary as the new one's replica.
///
/// Timing (node timeout 1 s): the old primary stops taking writes about
/// 1 s after the cut (it sees the other primaries silent), the replica is
/// elected 0.5–1 s after the others mark the primary failed, so with Redis
/// 7.0 the old primary normally refuses writes before the promotion: the
/// accepted write is the one sent right after the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_primary_is_replaced_refuses_writes_and_rejoins_as_replica() {
    let cluster = TestCluster::start_with(proxied()).await.unwrap();
    let old = cluster.primary_of_slot(0).await.unwrap();
    let replica = cluster.replica_of(&old).await.unwrap();
    let tag = shardlock::slot_tag(0);
    let (before, during) = (format!("{{{tag}}}:before"), format!("{{{tag}}}:during"));
    // A client of the old primary, through its proxy.
    let mut conn = redis::Client::open(format!("redis://{old}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&before)
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(acked, 1, "the replica has the first write");

    cluster.isolate(&old).unwrap();
    let _: () = redis::cmd("SET")
        .arg(&during)
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("the isolated primary still takes a write at once");

    wait_until(SETTLE, "the replica to be promoted", || async {
        cluster.primary_of_slot(0).await.ok().as_deref() == Some(replica.as_str())
    })
    .await;
    assert_eq!(
        info_field(&cluster, &replica, "replication", "role")
            .await
            .as_deref(),
        Some("master")
    );
    // The old primary still answers clients and still thinks it is one.
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(
        info_field(&cluster, &old, "replication", "role")
            .await
            .as_deref(),
        Some("master")
    );
    // It refuses writes once it has given up on the others (bounded: the
    // node timeout has passed already, so this is at most a few tries).
    let mut refusal = None;
    for attempt in 0..100 {
        match redis::cmd("SET")
            .arg(&during)
            .arg(attempt)
            .query_async::<()>(&mut conn)
            .await
        {
            Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("the isolated primary refuses writes");
    assert_eq!(refusal.code(), Some("CLUSTERDOWN"), "{refusal}");
    // The split: the new primary has the write from before the cut, not
    // the one the old primary acknowledged after it.
    let get = |key: &str| redis::cmd("GET").arg(key).clone();
    assert_eq!(
        cluster.command(&replica, &get(&before)).await.unwrap(),
        Value::BulkString(b"1".to_vec())
    );
    assert_eq!(
        cluster.command(&replica, &get(&during)).await.unwrap(),
        Value::Nil
    );

    cluster.heal_all().unwrap();
    cluster.wait_cluster_ok(SETTLE).await.unwrap();
    assert_eq!(cluster.primary_of_slot(0).await.unwrap(), replica);
    assert_eq!(cluster.replica_of(&replica).await.unwrap(), old);
}
