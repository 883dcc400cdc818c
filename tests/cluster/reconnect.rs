use std::time::Duration;

use shardlock::testkit::StandaloneServer;
use shardlock::{Client, Error, Request, RetryCause};
use tokio::time::Instant;

/// A node that dies and comes back on the same address is reconnected:
/// while it is down, requests end with DeadlineExceeded naming the lost or
/// refused connection and a refresh fails with NoNodeReachable; after the
/// restart requests succeed on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_is_reconnected() {
    let server = StandaloneServer::start().await.unwrap();
    let client = Client::builder()
        .seeds([server.url()])
        .build()
        .await
        .unwrap();
    let set = Request::cmd(redis::cmd("SET").arg("k").arg("v").clone());
    let slot = shardlock::key_slot(b"k");
    assert_eq!(
        client.execute(slot, &set).await.unwrap(),
        vec![redis::Value::Okay]
    );

    server.kill();
    let deadline = Instant::now() + Duration::from_millis(500);
    match client.execute_until(slot, &set, deadline).await {
        Err(Error::DeadlineExceeded { last, .. }) => assert!(
            matches!(
                last,
                RetryCause::ConnectionLost
                    | RetryCause::ConnectionRefused
                    | RetryCause::NodeBackoff
            ),
            "{last:?}"
        ),
        other => panic!("expected DeadlineExceeded while the node is down, got {other:?}"),
    }

    // With no node left to ask, a refresh fails by name and keeps the map.
    match client.refresh().await {
        Err(Error::NoNodeReachable(failures)) => assert_eq!(failures.len(), 1, "{failures:?}"),
        other => panic!("expected NoNodeReachable, got {other:?}"),
    }
    assert!(client.topology().is_standalone());

    server.restart().await.unwrap();
    assert_eq!(
        client.execute(slot, &set).await.unwrap(),
        vec![redis::Value::Okay]
    );
}

/// An ACL user name and password are used for every connection: the right
/// pair authenticates as that user, a wrong password is Error::Auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_is_used() {
    let server = StandaloneServer::start().await.unwrap();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "alice", "on", ">alice-pw", "~*", "&*", "+@all"][..])
        .query_async(&mut admin)
        .await
        .unwrap();

    let client = Client::builder()
        .seeds([server.url()])
        .username("alice")
        .password("alice-pw")
        .build()
        .await
        .unwrap();
    let who: String = client
        .query("any", redis::cmd("ACL").arg("WHOAMI").clone())
        .await
        .unwrap();
    assert_eq!(who, "alice");

    let wrong = Client::builder()
        .seeds([server.url()])
        .username("alice")
        .password("not-alice-pw")
        .build()
        .await;
    assert!(matches!(wrong, Err(Error::Auth { .. })), "{wrong:?}");

    // A slot outside 0..16384 is refused before anything is sent.
    let out_of_range = client
        .execute(16384, &Request::cmd(redis::cmd("PING").clone()))
        .await;
    assert!(
        matches!(out_of_range, Err(Error::InvalidArgument(_))),
        "{out_of_range:?}"
    );
}
