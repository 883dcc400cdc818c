//! A client serves one cluster: seeds that name nodes of two clusters (or
//! a cluster and a standalone server) are refused at build, and a refresh
//! never moves the client to another cluster's node.

use std::time::Duration;

use shardlock::testkit::{ClusterSpec, StandaloneServer, TestCluster};
use shardlock::{Client, Error};

/// A one-primary cluster without replicas: enough to tell deployments apart.
async fn small_cluster() -> TestCluster {
    TestCluster::start_with(ClusterSpec {
        primaries: 1,
        replicas_per_primary: 0,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn build(seeds: &[String]) -> Result<Client, Error> {
    Client::builder()
        .seeds(seeds.iter().cloned())
        .refresh_interval(Duration::from_secs(3600))
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(300))
        .build()
        .await
}

fn expect_refused(what: &str, built: Result<Client, Error>, needle: &str) {
    match built {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{what}: {m}"),
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

/// Seeds of two clusters, in either order, and a cluster node with a
/// standalone server are refused; two nodes of one cluster build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_of_two_deployments_are_refused() {
    let (a, b) = (small_cluster().await, small_cluster().await);
    let server = StandaloneServer::start().await.unwrap();
    let (a0, b0) = (a.seeds()[0].clone(), b.seeds()[0].clone());
    expect_refused(
        "[a, b]",
        build(&[a0.clone(), b0.clone()]).await,
        "another cluster",
    );
    expect_refused(
        "[b, a]",
        build(&[b0.clone(), a0.clone()]).await,
        "another cluster",
    );
    expect_refused(
        "[a, standalone]",
        build(&[a0.clone(), server.url()]).await,
        "standalone server",
    );
    let whole = TestCluster::start().await.unwrap();
    let client = build(&whole.seeds()).await.unwrap();
    assert_eq!(client.topology().shards().len(), 3);
}

/// A seed of another cluster that did not answer at build is skipped, and
/// when the client's own nodes stop answering later, that seed's map is
/// refused: the refresh fails and the client keeps its cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_never_moves_to_another_cluster() {
    let (a, b) = (small_cluster().await, small_cluster().await);
    let (a0, b0) = (a.addrs()[0].clone(), b.addrs()[0].clone());
    b.pause(&b0).unwrap();
    let built = build(&[a.seeds()[0].clone(), b.seeds()[0].clone()]).await;
    b.resume(&b0).unwrap();
    let client = built.unwrap();
    let own_id = a.node_id(&a0).await.unwrap();
    let ids = |c: &Client| -> Vec<String> {
        c.topology()
            .nodes()
            .filter_map(|n| n.id().map(str::to_owned))
            .collect()
    };
    assert_eq!(ids(&client), vec![own_id.clone()]);

    a.pause(&a0).unwrap();
    let refreshed = client.refresh().await;
    a.resume(&a0).unwrap();
    match refreshed {
        Err(Error::NoNodeReachable(failures)) => assert!(
            failures
                .iter()
                .any(|f| f.addr == b0 && f.to_string().contains("another cluster")),
            "{failures:?}"
        ),
        other => panic!("expected NoNodeReachable, got {other:?}"),
    }
    assert_eq!(
        ids(&client),
        vec![own_id.clone()],
        "the client moved to another cluster"
    );
    client.refresh().await.unwrap();
    assert_eq!(ids(&client), vec![own_id]);
}
