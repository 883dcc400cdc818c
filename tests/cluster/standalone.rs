use redis::Value;
use shardlock::testkit::StandaloneServer;
use shardlock::{Client, Request, SLOT_COUNT};

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
