//! The testkit against real `redis-server` processes: cluster shape, slot
//! migration, failover, kill / restart, pause / resume, standalone servers,
//! and a missing binary.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::Value;
use shardlock::testkit::{
    ClusterSpec, StandaloneServer, StandaloneSpec, TestCluster, TestkitError,
};

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
