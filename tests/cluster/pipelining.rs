use futures_util::future::join_all;
use redis::Value;
use shardlock::testkit::TestCluster;
use shardlock::{Client, Request, key_slot};

use crate::support::{client, key_in};

/// Reads the server has done from client sockets (`INFO stats`).
async fn reads_processed(cluster: &TestCluster, addr: &str) -> u64 {
    let info = cluster
        .command(addr, redis::cmd("INFO").arg("stats"))
        .await
        .unwrap();
    let text: String = redis::from_redis_value(info).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .expect("INFO stats has total_reads_processed")
        .trim()
        .parse()
        .unwrap()
}

/// Runs `tasks` tasks that each send `per_task` SETs for keys of `slot`
/// one after another (a closed loop, as lock workers do), checks every
/// reply, and returns how many socket reads the slot's primary needed.
async fn closed_loop(
    cluster: &TestCluster,
    client: &Client,
    slot: u16,
    tasks: usize,
    per_task: usize,
    tag: &str,
) -> u64 {
    let addr = cluster.primary_of_slot(slot).await.unwrap();
    // Connect first, so the loop is the only traffic on the connection.
    client
        .execute(slot, &Request::cmd(redis::cmd("PING").clone()))
        .await
        .unwrap();
    let before = reads_processed(cluster, &addr).await;
    let workers = (0..tasks).map(|t| {
        let client = client.clone();
        let tag = format!("{tag}:{t}");
        tokio::spawn(async move {
            for i in 0..per_task {
                let key = key_in(slot, &format!("{tag}:{i}"));
                assert_eq!(key_slot(key.as_bytes()), slot);
                let set = redis::cmd("SET").arg(&key).arg(i).arg("GET").clone();
                let reply = client.execute(slot, &Request::cmd(set)).await.unwrap();
                assert_eq!(reply, vec![Value::Nil], "{key}");
            }
        })
    });
    for worker in join_all(workers).await {
        worker.unwrap();
    }
    // Minus the INFO read that measured `before`.
    reads_processed(cluster, &addr).await - before - 1
}

/// A burst of requests for one node, submitted before the node's worker
/// runs, leaves as one pipeline: 400 concurrent SETs from one task cost two
/// writes (the first request finds the node idle and goes straight out, the
/// other 399 wait for the worker and leave together) and a handful of
/// server reads, and every reply reaches its own request.
#[tokio::test]
async fn a_burst_leaves_in_one_pipeline() {
    let cluster = TestCluster::start().await.unwrap();
    let client = client(&cluster).await;
    let slot = 4321;
    let addr = cluster.primary_of_slot(slot).await.unwrap();
    client
        .execute(slot, &Request::cmd(redis::cmd("PING").clone()))
        .await
        .unwrap();
    let before = client.stats();
    let reads_before = reads_processed(&cluster, &addr).await;
    let requests: Vec<(String, Request)> = (0..400)
        .map(|i| {
            let key = key_in(slot, &format!("burst:{i}"));
            let set = redis::cmd("SET").arg(&key).arg(i).arg("GET").clone();
            (key, Request::cmd(set))
        })
        .collect();
    let replies = join_all(requests.iter().map(|(_, r)| client.execute(slot, r))).await;
    for reply in replies {
        assert_eq!(reply.unwrap(), vec![Value::Nil]);
    }
    let after = client.stats();
    let reads = reads_processed(&cluster, &addr).await - reads_before - 1;
    println!(
        "a burst of 400: {} write(s), {reads} server reads",
        after.writes - before.writes
    );
    assert_eq!(after.attempts - before.attempts, 400);
    assert_eq!(
        after.writes - before.writes,
        2,
        "the first request, then one pipeline"
    );
    // Each key holds the value of its own request.
    for (i, (key, _)) in requests.iter().enumerate().step_by(37) {
        let got = cluster
            .command(&addr, redis::cmd("GET").arg(key))
            .await
            .unwrap();
        assert_eq!(got, Value::BulkString(i.to_string().into_bytes()), "{key}");
    }
}

/// Under a closed-loop load like the lock workers' (50 tasks, 20 SETs each,
/// one node, multi-thread runtime) requests share writes: fewer than half
/// as many writes as requests. With auto-pipelining off each request is its
/// own write. Server reads for both are printed for comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_requests_share_writes() {
    let cluster = TestCluster::start().await.unwrap();
    let slot = 1234;
    let mut writes = Vec::new();
    for (tag, auto) in [("on", true), ("off", false)] {
        let client = Client::builder()
            .seeds(cluster.seeds())
            .auto_pipeline(auto)
            .build()
            .await
            .unwrap();
        let before = client.stats();
        let reads = closed_loop(&cluster, &client, slot, 50, 20, tag).await;
        let after = client.stats();
        let (sent, wrote) = (
            after.attempts - before.attempts,
            after.writes - before.writes,
        );
        println!(
            "auto_pipeline {tag}: 1000 requests, {sent} attempts, {wrote} writes, {reads} server reads"
        );
        writes.push((sent, wrote));
    }
    let (sent_on, wrote_on) = writes[0];
    let (sent_off, wrote_off) = writes[1];
    assert!(sent_on >= 1001 && sent_off >= 1001, "PING plus 1000 SETs");
    assert!(
        wrote_on * 2 < sent_on,
        "{wrote_on} writes for {sent_on} batched attempts"
    );
    assert_eq!(wrote_off, sent_off, "unbatched: one write per attempt");
}
