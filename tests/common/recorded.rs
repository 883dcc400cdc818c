//! Running a test body under a local `metrics` recorder, shared by the test
//! binaries.

// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::future::Future;

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// One recorded metric: its key and its value.
pub type Recorded = (CompositeKey, DebugValue);

/// Runs `body` on a current-thread runtime with a debugging recorder
/// installed for this thread, and returns everything it recorded. The
/// current-thread runtime keeps every task on this thread, where the local
/// recorder is installed.
pub fn recorded<F, Fut>(body: F) -> Vec<Recorded>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    metrics::with_local_recorder(&recorder, || runtime.block_on(body()));
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

/// The sum of the counters named `name` (with the label `label`, if given).
pub fn counter(recorded: &[Recorded], name: &str, label: Option<(&str, &str)>) -> u64 {
    recorded
        .iter()
        .filter(|(key, _)| {
            key.key().name() == name
                && label
                    .is_none_or(|(k, v)| key.key().labels().any(|l| l.key() == k && l.value() == v))
        })
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

/// The number of samples recorded in the histograms named `name`.
pub fn histogram_samples(recorded: &[Recorded], name: &str) -> usize {
    recorded
        .iter()
        .filter(|(key, _)| key.key().name() == name)
        .map(|(_, value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            _ => 0,
        })
        .sum()
}

/// True when `key` has every label in `labels`.
fn has_labels(key: &CompositeKey, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
}

/// The sum of the counters named `name` that carry every label in `labels`.
pub fn counter_with(recorded: &[Recorded], name: &str, labels: &[(&str, &str)]) -> u64 {
    recorded
        .iter()
        .filter(|(key, _)| key.key().name() == name && has_labels(key, labels))
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

/// The value of the gauge named `name` with exactly these labels, if recorded.
pub fn gauge_with(recorded: &[Recorded], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    recorded
        .iter()
        .find(|(key, _)| {
            key.key().name() == name
                && key.key().labels().count() == labels.len()
                && has_labels(key, labels)
        })
        .and_then(|(_, value)| match value {
            DebugValue::Gauge(v) => Some(v.into_inner()),
            _ => None,
        })
}

/// Samples in the histograms named `name` that carry every label in `labels`.
pub fn histogram_samples_with(recorded: &[Recorded], name: &str, labels: &[(&str, &str)]) -> usize {
    recorded
        .iter()
        .filter(|(key, _)| key.key().name() == name && has_labels(key, labels))
        .map(|(_, value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            _ => 0,
        })
        .sum()
}
