use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use shardlock::testkit::TestCluster;

use crate::support::{client, key_in, source_and_other};

/// A recorded counter: name, labels, value.
type Counter = (String, Vec<(String, String)>, u64);

/// Redirects, refreshes and command errors are recorded through the
/// `metrics` facade under their documented names and labels.
#[test]
fn routing_events_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A current-thread runtime keeps every task on this thread, where the
    // local recorder is installed.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let cluster = TestCluster::start().await.unwrap();
            let client = client(&cluster).await;
            let slot = 1234;
            let key = key_in(slot, "m");
            let (_, target) = source_and_other(&cluster, slot).await;
            cluster.migrate_slot(slot, &target).await.unwrap();
            let _: () = client
                .query(&key, redis::cmd("SET").arg(&key).arg(1).clone())
                .await
                .unwrap();
            client.refresh().await.unwrap();
            let err = client
                .query::<()>(&key, redis::cmd("HGET").arg(&key).arg("f").clone())
                .await;
            assert!(matches!(err, Err(shardlock::Error::Server { ref code, .. }) if code == "WRONGTYPE"), "{err:?}");
        })
    });
    let counters: Vec<Counter> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => {
                let labels = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                Some((key.key().name().to_owned(), labels, n))
            }
            _ => None,
        })
        .collect();
    let find = |name: &str, label: (&str, &str)| {
        counters
            .iter()
            .filter(|(n, labels, _)| {
                n == name && labels.iter().any(|(k, v)| k == label.0 && v == label.1)
            })
            .map(|(_, _, v)| *v)
            .sum::<u64>()
    };
    assert!(
        find(shardlock::metrics::REDIRECTS_TOTAL, ("kind", "moved")) >= 1,
        "{counters:?}"
    );
    assert!(
        find(
            shardlock::metrics::TOPOLOGY_REFRESHES_TOTAL,
            ("outcome", "ok")
        ) >= 1,
        "{counters:?}"
    );
    assert!(
        find(shardlock::metrics::COMMAND_ERRORS_TOTAL, ("kind", "server")) >= 1,
        "{counters:?}"
    );
}
