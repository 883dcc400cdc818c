use shardlock::testkit::TestCluster;

use crate::support::{client, key_in, source_and_other};

#[path = "../common/recorded.rs"]
mod recorded;
use recorded::{counter, recorded};

/// Redirects, refreshes and command errors are recorded through the
/// `metrics` facade under their documented names and labels.
#[test]
fn routing_events_are_recorded() {
    let snapshot = recorded(|| async {
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
        assert!(
            matches!(err, Err(shardlock::Error::Server { ref code, .. }) if code == "WRONGTYPE"),
            "{err:?}"
        );
    });
    let find = |name: &str, label: (&str, &str)| counter(&snapshot, name, Some(label));
    assert!(
        find(shardlock::metrics::REDIRECTS_TOTAL, ("kind", "moved")) >= 1,
        "{snapshot:?}"
    );
    assert!(
        find(
            shardlock::metrics::TOPOLOGY_REFRESHES_TOTAL,
            ("outcome", "ok")
        ) >= 1,
        "{snapshot:?}"
    );
    assert!(
        find(shardlock::metrics::COMMAND_ERRORS_TOTAL, ("kind", "server")) >= 1,
        "{snapshot:?}"
    );
}
