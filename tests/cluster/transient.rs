//! Transient refusals (`BUSY`, `NOREPLICAS`) from real servers are retried
//! within the request's deadline instead of failing the call.

use std::time::Duration;

use redis::Value;
use shardlock::testkit::StandaloneServer;
use shardlock::{Client, Request};

use crate::support::wait_until;

/// A raw connection to `server`, outside the client under test.
async fn raw(server: &StandaloneServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn standalone_client(server: &StandaloneServer) -> Client {
    Client::builder()
        .seeds([server.url()])
        .refresh_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap()
}

fn set(key: &str) -> Request {
    Request::cmd(redis::cmd("SET").arg(key).arg("v").clone())
}

/// A write that meets `BUSY` (a script running past `busy-reply-threshold`)
/// is retried and succeeds once the script is killed, within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_is_retried_until_the_script_ends() {
    let server = StandaloneServer::start().await.unwrap();
    let client = standalone_client(&server).await;
    let mut admin = raw(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg(50)
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut runner = raw(&server).await;
    let script = tokio::spawn(async move {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query_async::<Value>(&mut runner)
            .await
    });
    // The script runs once the server answers BUSY to someone else.
    wait_until(Duration::from_secs(10), "the server to answer BUSY", || {
        let mut admin = admin.clone();
        async move {
            matches!(
                redis::cmd("PING").query_async::<Value>(&mut admin).await,
                Err(e) if e.code() == Some("BUSY")
            )
        }
    })
    .await;

    let before = client.stats().retryable_errors;
    let slot = shardlock::key_slot(b"busy");
    let write = {
        let client = client.clone();
        tokio::spawn(async move { client.execute(slot, &set("busy")).await })
    };
    wait_until(Duration::from_secs(10), "the client to meet BUSY", || {
        let seen = client.stats().retryable_errors > before || write.is_finished();
        async move { seen }
    })
    .await;
    assert!(
        !write.is_finished(),
        "BUSY ended the request: {:?}",
        write.await
    );
    // SCRIPT KILL is the one command a busy server runs.
    let _: () = redis::cmd("SCRIPT")
        .arg("KILL")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(write.await.unwrap().unwrap(), vec![Value::Okay]);
    assert!(script.await.unwrap().is_err(), "the killed script fails");
}

/// A write refused with `NOREPLICAS` (`min-replicas-to-write 1`, no
/// replica) is retried and succeeds once a replica attaches, within its
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noreplicas_is_retried_until_a_replica_attaches() {
    let (primary, replica) = (
        StandaloneServer::start().await.unwrap(),
        StandaloneServer::start().await.unwrap(),
    );
    let client = standalone_client(&primary).await;
    let mut admin = raw(&primary).await;
    for (name, value) in [
        ("min-replicas-to-write", "1"),
        ("repl-diskless-sync-delay", "0"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let before = client.stats().retryable_errors;
    let slot = shardlock::key_slot(b"noreplicas");
    let write = {
        let client = client.clone();
        tokio::spawn(async move { client.execute(slot, &set("noreplicas")).await })
    };
    wait_until(
        Duration::from_secs(10),
        "the client to meet NOREPLICAS",
        || {
            let seen = client.stats().retryable_errors > before || write.is_finished();
            async move { seen }
        },
    )
    .await;
    assert!(
        !write.is_finished(),
        "NOREPLICAS ended the request: {:?}",
        write.await
    );
    let (host, port) = primary
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg(host)
        .arg(port)
        .query_async(&mut raw(&replica).await)
        .await
        .unwrap();
    assert_eq!(write.await.unwrap().unwrap(), vec![Value::Okay]);
}
