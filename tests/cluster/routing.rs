use redis::Value;
use shardlock::testkit::TestCluster;
use shardlock::{Request, SLOT_COUNT, key_slot};

use crate::support::{client, key_in};

/// Commands for keys in every one of the 16384 slots go straight to the
/// primary that serves the slot: no redirect is ever needed, and each key is
/// found on exactly that primary when asked directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_reaches_its_primary() {
    let cluster = TestCluster::start().await.unwrap();
    let client = client(&cluster).await;
    for slot in 0..SLOT_COUNT {
        let key = key_in(slot, "routed");
        let request = Request::cmd(redis::cmd("SET").arg(&key).arg(slot).clone());
        let replies = client
            .execute(key_slot(key.as_bytes()), &request)
            .await
            .unwrap();
        assert_eq!(replies, vec![Value::Okay], "slot {slot}");
    }
    let stats = client.stats();
    assert_eq!(stats.moved, 0, "a fresh slot map needs no MOVED");
    assert_eq!(stats.ask, 0);

    // Check each key on the node the cluster itself names, without routing.
    let topology = client.topology();
    for slot in (0..SLOT_COUNT).step_by(97).chain([SLOT_COUNT - 1]) {
        let owner = cluster.primary_of_slot(slot).await.unwrap();
        assert_eq!(
            topology.primary_of_slot(slot).unwrap().addr().as_ref(),
            owner,
            "slot {slot}"
        );
        let got = cluster
            .command(&owner, redis::cmd("GET").arg(key_in(slot, "routed")))
            .await
            .unwrap();
        assert_eq!(
            got,
            Value::BulkString(slot.to_string().into_bytes()),
            "slot {slot}"
        );
    }
}

/// `key_slot` agrees with the server's own `CLUSTER KEYSLOT` for 10,000
/// random binary keys (with and without braces).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_slot_matches_cluster_keyslot() {
    let cluster = TestCluster::start().await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let mut conn = redis::Client::open(format!("redis://{addr}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5107);
    let alphabet = [b'{', b'}', b'a', b'z', 0, 0xff, b':'];
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|i| {
            let len = rng.usize(0..40);
            (0..len)
                .map(|_| {
                    if i % 2 == 0 {
                        alphabet[rng.usize(..alphabet.len())]
                    } else {
                        rng.u8(..)
                    }
                })
                .collect()
        })
        .collect();
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("CLUSTER").arg("KEYSLOT").arg(key.as_slice());
        }
        let server: Vec<u16> = pipe.query_async(&mut conn).await.unwrap();
        for (key, want) in chunk.iter().zip(server) {
            assert_eq!(key_slot(key), want, "key {key:?}");
        }
    }
}
