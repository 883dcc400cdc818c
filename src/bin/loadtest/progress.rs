//! The live line on stderr while the load runs: elapsed, cycles/s over the
//! last second, acquire p99 so far, contention, errors, lost leases. Drawn
//! only when stderr is a terminal, so logs and tests see none of it.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::workload::Shared;

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(shared: Arc<Shared>) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                task: None,
            };
        }
        let total_ms = shared.args.duration.as_millis() as u64;
        let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:20}] {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        let task = tokio::spawn({
            let bar = bar.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                let mut last_cycles = 0;
                let mut last_at = shared.start;
                loop {
                    tick.tick().await;
                    let now = tokio::time::Instant::now();
                    let total = shared.total();
                    let rate = (total.cycles - last_cycles) as f64
                        / now.duration_since(last_at).as_secs_f64().max(1e-3);
                    (last_cycles, last_at) = (total.cycles, now);
                    let attempts = total.acquired + total.failed_acquires;
                    let contention = if attempts > 0 {
                        total.failed_acquires as f64 * 100.0 / attempts as f64
                    } else {
                        0.0
                    };
                    let p99_ms = if total.acquire.is_empty() {
                        0.0
                    } else {
                        total.acquire.value_at_quantile(0.99) as f64 / 1e3
                    };
                    bar.set_position(now.duration_since(shared.start).as_millis() as u64);
                    bar.set_message(format!(
                        "{rate:.0} cycles/s, acquire p99 {p99_ms:.2} ms, contention {contention:.1}%, errors {}, lost {}, violations {}",
                        total.errors(),
                        total.lost_leases,
                        shared.safety.violations()
                    ));
                }
            }
        });
        Progress {
            bar: Some(bar),
            task: Some(task),
        }
    }

    /// A line above the live one (or plain on stderr when there is none).
    pub(crate) fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
