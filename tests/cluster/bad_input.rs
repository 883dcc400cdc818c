use std::time::Duration;

use shardlock::testkit::StandaloneServer;
use shardlock::{Client, Error, FailCause, NodeFailureCause, RetryCause};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Generous outer bound: a build that takes longer than this has hung.
const HANG: Duration = Duration::from_secs(30);

async fn build(seed: String, password: Option<&str>) -> Result<Client, Error> {
    let mut builder = Client::builder()
        .seeds([seed])
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(300));
    if let Some(p) = password {
        builder = builder.password(p);
    }
    tokio::time::timeout(HANG, builder.build())
        .await
        .expect("build must end within its timeouts, not hang")
}

/// A loopback port nobody listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn only_cause(result: Result<Client, Error>) -> NodeFailureCause {
    match result {
        Err(Error::NoNodeReachable(failures)) => {
            assert_eq!(failures.len(), 1, "{failures:?}");
            failures[0].cause.clone()
        }
        other => panic!("expected NoNodeReachable, got {other:?}"),
    }
}

/// A seed where nothing listens gives NoNodeReachable naming the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_without_redis_is_refused() {
    let port = closed_port().await;
    let cause = only_cause(build(format!("redis://127.0.0.1:{port}"), None).await);
    assert_eq!(
        cause,
        NodeFailureCause::Unavailable(RetryCause::ConnectionRefused)
    );
}

/// Several unreachable seeds: each is tried and named in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_seeds_are_all_named() {
    let (a, b) = (closed_port().await, closed_port().await);
    let result = tokio::time::timeout(
        HANG,
        Client::builder()
            .seeds([format!("127.0.0.1:{a}"), format!("redis://127.0.0.1:{b}")])
            .connect_timeout(Duration::from_millis(300))
            .build(),
    )
    .await
    .unwrap();
    match result {
        Err(Error::NoNodeReachable(failures)) => {
            let addrs: Vec<_> = failures.iter().map(|f| f.addr.clone()).collect();
            assert_eq!(addrs, [format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}")]);
            let message = Error::NoNodeReachable(failures).to_string();
            assert!(message.contains("connection_refused"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// A TCP listener that accepts and never answers: the connect timeout
/// ends the attempt with a timeout, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_listener_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let cause = only_cause(build(format!("127.0.0.1:{port}"), None).await);
    assert_eq!(cause, NodeFailureCause::Unavailable(RetryCause::TimedOut));
    server.abort();
}

/// A TCP listener that answers with something other than Redis protocol
/// (an HTTP server, say) gives a typed failure, not a panic or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_redis_listener_is_rejected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let cause = only_cause(build(format!("127.0.0.1:{port}"), None).await);
    assert!(
        matches!(
            cause,
            NodeFailureCause::Failed(FailCause::Protocol(_))
                | NodeFailureCause::Unavailable(RetryCause::ConnectionLost)
        ),
        "{cause:?}"
    );
    server.abort();
}

/// A wrong password, and a missing one, give Error::Auth naming the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_error() {
    let server = StandaloneServer::start_with_password("right-secret")
        .await
        .unwrap();
    let addr = server.addr();
    for password in [Some("wrong-secret"), None] {
        match build(format!("redis://{addr}"), password).await {
            Err(Error::Auth { addr: a, message }) => {
                assert_eq!(a, addr);
                assert!(!message.is_empty());
            }
            other => panic!("password {password:?}: {other:?}"),
        }
    }
    let client = build(format!("redis://{addr}"), Some("right-secret"))
        .await
        .unwrap();
    let pong: String = client.query("k", redis::cmd("PING").clone()).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// Bad settings are refused before any connection is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_invalid_arguments() {
    let cases = [
        Client::builder(),
        Client::builder().seeds(["redis://"]),
        Client::builder().seeds(["unix:///tmp/redis.sock"]),
        Client::builder()
            .seeds(["127.0.0.1:7000"])
            .response_timeout(Duration::ZERO),
        Client::builder()
            .seeds(["127.0.0.1:7000"])
            .request_timeout(Duration::from_secs(365 * 24 * 3600)),
    ];
    for builder in cases {
        let result = builder.build().await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
    }
}
