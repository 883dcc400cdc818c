//! Servers before Redis 7.0 are refused at build with a typed error naming
//! the minimum; a real 7.0 server is accepted. No old `redis-server` is at
//! hand, so the old ones are a tiny RESP listener that answers `HELLO` the
//! way Redis 6.2 does (or, like Redis 5, not at all).

use std::time::Duration;

use shardlock::testkit::{StandaloneServer, TestCluster};
use shardlock::{Client, Error};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A listener on a free local port that answers `HELLO` with `version`
/// (like Redis 6.0, only when given a protocol version; for `None`, as an
/// unknown command, like Redis before 6.0), `PING`
/// with `PONG` and everything else as an unknown command.
async fn old_server(version: Option<&'static str>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, version));
        }
    });
    (addr, task)
}

/// Answers commands on one connection until the client closes it.
async fn serve(stream: TcpStream, version: Option<&'static str>) {
    let mut stream = BufReader::new(stream);
    while let Some(command) = read_command(&mut stream).await {
        let name = command.first().cloned().unwrap_or_default().to_uppercase();
        let reply = match (name.as_str(), version) {
            // Redis 6.0's HELLO requires the protocol version (6.2 made it
            // optional).
            ("HELLO", Some(v)) if v.starts_with("6.0") && command.len() == 1 => {
                "-ERR wrong number of arguments for 'hello' command\r\n".to_owned()
            }
            ("HELLO", Some(v)) => format!(
                "*6\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n${}\r\n{v}\r\n$5\r\nproto\r\n:2\r\n",
                v.len()
            ),
            ("PING", _) => "+PONG\r\n".to_owned(),
            (name, _) => {
                format!("-ERR unknown command '{name}', with args beginning with: \r\n")
            }
        };
        if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One RESP array of bulk strings, or `None` at the end of the stream or on
/// anything else.
async fn read_command(stream: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut words = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut word = vec![0; len + 2];
        stream.read_exact(&mut word).await.ok()?;
        word.truncate(len);
        words.push(String::from_utf8(word).ok()?);
    }
    Some(words)
}

async fn build(seed: &str) -> Result<Client, Error> {
    Client::builder()
        .seeds([seed])
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .build()
        .await
}

/// A server that reports Redis 6.2, answers a bare HELLO like Redis 6.0,
/// or has no HELLO (Redis 5) is
/// refused with `UnsupportedServer` naming its version and the minimum 7.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_before_7_0_are_refused() {
    for (version, reported) in [
        (Some("6.2.14"), "6.2.14"),
        (Some("6.0.20"), "6.0"),
        (None, "before 6.0"),
    ] {
        let (addr, server) = old_server(version).await;
        match build(&addr).await {
            Err(Error::UnsupportedServer {
                addr: at,
                version,
                minimum,
            }) => {
                assert_eq!(at, addr);
                assert!(version.contains(reported), "{version:?}");
                assert_eq!(minimum, "7.0");
                let message = Error::UnsupportedServer {
                    addr: at,
                    version,
                    minimum,
                }
                .to_string();
                assert!(message.contains("7.0 or later"), "{message}");
            }
            other => panic!("{reported}: expected UnsupportedServer, got {other:?}"),
        }
        server.abort();
    }
}

/// Real Redis 7.0 servers, standalone and clustered, are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_7_0_is_accepted() {
    let server = StandaloneServer::start().await.unwrap();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        info.contains("redis_version:7."),
        "the test server is not 7.x: {info}"
    );
    let client = build(&server.url()).await.unwrap();
    assert!(client.topology().is_standalone());
    client.refresh().await.unwrap();

    let cluster = TestCluster::start().await.unwrap();
    let client = build(&cluster.seeds()[0]).await.unwrap();
    assert!(!client.topology().is_standalone());
    client.refresh().await.unwrap();
}
