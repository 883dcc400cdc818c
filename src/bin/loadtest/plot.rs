//! The plot of a run, as an SVG written by hand (it is only text): the
//! throughput per second in the top panel, acquire p50 and p99 per second
//! on a logarithmic axis in the bottom one (a failover's stall is seconds
//! while a normal acquire is a fraction of a millisecond), and every chaos
//! event as a labelled vertical line across both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::args::Args;
use crate::report::ChaosOutcome;
use crate::workload::Second;

/// Where the plot goes: `--plot`, else next to `--json` with the extension
/// `.svg`, else nowhere.
pub(crate) fn path(args: &Args) -> Option<PathBuf> {
    args.plot
        .clone()
        .or_else(|| args.json.as_ref().map(|json| json.with_extension("svg")))
}

/// Writes the plot of `seconds` (merged per-second buckets) to `path`.
pub(crate) fn write(
    path: &Path,
    args: &Args,
    shards: usize,
    seconds: &[Second],
    chaos: &[ChaosOutcome],
) -> std::io::Result<()> {
    std::fs::write(path, svg(args, shards, seconds, chaos))
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 620.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 120.0;
/// Vertical extent (top, bottom) of the throughput and latency panels.
const THROUGHPUT_PANEL: (f64, f64) = (70.0, 290.0);
const LATENCY_PANEL: (f64, f64) = (340.0, 560.0);
const THROUGHPUT_COLOUR: &str = "#1f77b4";
const P50_COLOUR: &str = "#2ca02c";
const P99_COLOUR: &str = "#d62728";
const CHAOS_COLOUR: &str = "#9467bd";

/// One point per whole second of the load, at the middle of the second;
/// `None` where nothing was measured (no acquire returned that second).
struct Series {
    cycles_per_sec: Vec<Option<f64>>,
    p50_ms: Vec<Option<f64>>,
    p99_ms: Vec<Option<f64>>,
}

fn series(args: &Args, seconds: &[Second]) -> Series {
    let load_s = args.duration.as_secs_f64();
    // Cycles that finish in the grace period after the end are in the
    // report's totals but not on the plot.
    let buckets = load_s.ceil() as usize;
    let mut out = Series {
        cycles_per_sec: Vec::with_capacity(buckets),
        p50_ms: Vec::with_capacity(buckets),
        p99_ms: Vec::with_capacity(buckets),
    };
    for i in 0..buckets {
        let width_s = (load_s - i as f64).min(1.0);
        let second = seconds.get(i);
        out.cycles_per_sec
            .push(Some(second.map_or(0, |s| s.cycles) as f64 / width_s));
        let quantile = |q: f64| {
            second
                .filter(|s| !s.acquire.is_empty())
                .map(|s| s.acquire.value_at_quantile(q) as f64 / 1e3)
        };
        out.p50_ms.push(quantile(0.5));
        out.p99_ms.push(quantile(0.99));
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about `wanted` ticks over `0..max`.
fn tick_step(max: f64, wanted: f64) -> f64 {
    let raw = max / wanted;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    step.max(f64::MIN_POSITIVE)
}

fn number(v: f64) -> String {
    // Steps added up or powers of ten may be off in the last bit.
    let v = if (v - v.round()).abs() < 1e-9 {
        v.round()
    } else {
        v
    };
    if v >= 1000.0 && v.fract() == 0.0 {
        // Thousands separated, as the report prints cycles/s.
        let digits = format!("{v:.0}");
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 1.0 || v == 0.0 {
        format!("{v}")
    } else {
        // Ticks below 1 are multiples of 0.001 at the finest.
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// An SVG path through the points that exist; a missing point breaks it.
fn path_data(points: impl Iterator<Item = Option<(f64, f64)>>) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for point in points {
        match point {
            Some((x, y)) => {
                let _ = write!(d, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d.trim_end().to_owned()
}

fn title(args: &Args, shards: usize) -> String {
    let hold = if args.hold.max > args.hold.min {
        format!("{:?}..{:?}", args.hold.min, args.hold.max)
    } else {
        format!("{:?}", args.hold.min)
    };
    let target = if args.seeds.is_empty() {
        format!("{shards} shards (embedded)")
    } else {
        format!("{shards} shards")
    };
    let pace = match args.rate {
        Some(rate) => format!("open loop {rate} cycles/s"),
        None => "closed loop".into(),
    };
    format!(
        "{target}, {} workers, {} keys ({:?}), mode {}, hold {hold}, ttl {:?}{}, {pace}, {:?} of load",
        args.workers,
        args.keys,
        args.distribution,
        args.mode,
        args.ttl,
        if args.auto_renew { ", auto-renew" } else { "" },
        args.duration,
    )
}

fn svg(args: &Args, shards: usize, seconds: &[Second], chaos: &[ChaosOutcome]) -> String {
    let s = series(args, seconds);
    let load_s = args.duration.as_secs_f64();
    let plot_right = WIDTH - RIGHT;
    let x_of = |t: f64| LEFT + (t / load_s) * (plot_right - LEFT);
    // A point stands at the middle of its second (of what of it the run had).
    let middle = |i: usize| i as f64 + (load_s - i as f64).min(1.0) / 2.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">shardlock load test</text>"#,
        WIDTH / 2.0,
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="40" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(&title(args, shards))
    );

    // Time axis, shared by both panels; labelled under the bottom one.
    // Whole seconds (the points are per second) unless the run is shorter.
    let time_step = tick_step(load_s, 10.0).max(if load_s >= 2.0 { 1.0 } else { 0.0 });
    let time_ticks: Vec<f64> = (0..)
        .map(|i| i as f64 * time_step)
        .take_while(|&t| t <= load_s + 1e-9)
        .collect();

    // Throughput panel: linear from 0.
    let (top, bottom) = THROUGHPUT_PANEL;
    let max_rate = s
        .cycles_per_sec
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(1.0);
    let rate_step = tick_step(max_rate * 1.1, 5.0);
    let rate_top = (max_rate * 1.1 / rate_step).ceil() * rate_step;
    let y_rate = |v: f64| bottom - (v / rate_top) * (bottom - top);
    frame(&mut out, top, bottom, &time_ticks, &x_of, false);
    for v in (0..)
        .map(|i| i as f64 * rate_step)
        .take_while(|&v| v <= rate_top + 1e-9)
    {
        y_tick(&mut out, y_rate(v), &number(v));
    }
    y_label(&mut out, (top + bottom) / 2.0, "throughput (cycles/s)");
    line(
        &mut out,
        "cycles_per_sec",
        THROUGHPUT_COLOUR,
        s.cycles_per_sec
            .iter()
            .enumerate()
            .map(|(i, v)| v.map(|v| (x_of(middle(i)), y_rate(v)))),
    );
    legend(&mut out, top, &[("cycles/s", THROUGHPUT_COLOUR)]);

    // Latency panel: log10, whole decades that cover every point.
    let (top, bottom) = LATENCY_PANEL;
    let latencies = || s.p50_ms.iter().chain(&s.p99_ms).flatten().copied();
    let low = latencies().fold(f64::INFINITY, f64::min).max(1e-3);
    let high = latencies().fold(0.0, f64::max).max(low);
    let (mut decade_low, mut decade_high) = (low.log10().floor(), high.log10().ceil());
    if decade_high <= decade_low {
        (decade_low, decade_high) = (decade_low - 1.0, decade_low + 1.0);
    }
    if !low.is_finite() || latencies().next().is_none() {
        (decade_low, decade_high) = (-1.0, 1.0);
    }
    let y_ms = |v: f64| {
        let e = v.max(1e-3).log10().clamp(decade_low, decade_high);
        bottom - (e - decade_low) / (decade_high - decade_low) * (bottom - top)
    };
    frame(&mut out, top, bottom, &time_ticks, &x_of, true);
    // Decades, and 2 and 5 within each when there are few decades to read.
    let steps: &[f64] = if decade_high - decade_low <= 3.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut decade = decade_low;
    while decade <= decade_high + 1e-9 {
        for &m in steps {
            let v = m * 10f64.powf(decade);
            if v.log10() <= decade_high + 1e-9 {
                y_tick(&mut out, y_ms(v), &number(v));
            }
        }
        decade += 1.0;
    }
    y_label(
        &mut out,
        (top + bottom) / 2.0,
        "acquire latency (ms, log scale)",
    );
    for (name, colour, points) in [
        ("acquire_p50_ms", P50_COLOUR, &s.p50_ms),
        ("acquire_p99_ms", P99_COLOUR, &s.p99_ms),
    ] {
        line(
            &mut out,
            name,
            colour,
            points
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|v| (x_of(middle(i)), y_ms(v)))),
        );
    }
    legend(
        &mut out,
        top,
        &[("acquire p50", P50_COLOUR), ("acquire p99", P99_COLOUR)],
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">time since the start of the load (s)</text>"#,
        (LEFT + plot_right) / 2.0,
        bottom + 40.0
    );

    // Chaos events: one line across both panels, labelled with the kind.
    for event in chaos {
        let x = x_of(event.at_s.clamp(0.0, load_s));
        let label = match &event.error {
            Some(_) => format!("{} (failed)", event.what),
            None => event.what.clone(),
        };
        let _ = writeln!(
            out,
            r#"<line class="chaos" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{CHAOS_COLOUR}" stroke-width="1.5" stroke-dasharray="6,4"/>"#,
            THROUGHPUT_PANEL.0 - 14.0,
            LATENCY_PANEL.1
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" fill="{CHAOS_COLOUR}" font-weight="bold">{} @ {:.1} s</text>"#,
            x + 4.0,
            THROUGHPUT_PANEL.0 - 4.0,
            escape(&label),
            event.at_s
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One series: a line through its points (broken where one is missing) and
/// a dot on each, so a lone point still shows.
fn line(
    out: &mut String,
    name: &str,
    colour: &str,
    points: impl Iterator<Item = Option<(f64, f64)>>,
) {
    let points: Vec<_> = points.collect();
    let _ = writeln!(
        out,
        r#"<path class="series" data-series="{name}" d="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
        path_data(points.iter().copied())
    );
    for (x, y) in points.into_iter().flatten() {
        let _ = writeln!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"/>"#
        );
    }
}

/// A panel's border, vertical grid at the time ticks, and (for the bottom
/// panel) the time labels.
fn frame(
    out: &mut String,
    top: f64,
    bottom: f64,
    time_ticks: &[f64],
    x_of: &dyn Fn(f64) -> f64,
    time_labels: bool,
) {
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        right - LEFT,
        bottom - top
    );
    for &t in time_ticks {
        let x = x_of(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/>"##
        );
        if time_labels {
            let _ = writeln!(
                out,
                r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                number(t)
            );
        }
    }
}

/// A horizontal grid line with its value on the left.
fn y_tick(out: &mut String, y: f64, label: &str) {
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#eee"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
        LEFT - 6.0,
        y + 4.0
    );
}

/// A panel's y-axis title, rotated along the axis.
fn y_label(out: &mut String, middle: f64, text: &str) {
    let _ = writeln!(
        out,
        r#"<text x="18" y="{middle}" text-anchor="middle" transform="rotate(-90 18 {middle})">{}</text>"#,
        escape(text)
    );
}

/// Colour keys to the right of a panel.
fn legend(out: &mut String, top: f64, entries: &[(&str, &str)]) {
    let x = WIDTH - RIGHT + 10.0;
    for (i, (name, colour)) in entries.iter().enumerate() {
        let y = top + 14.0 + i as f64 * 18.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="2"/>"#,
            x + 18.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 22.0,
            y + 4.0,
            escape(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_round() {
        for (max, wanted, step) in [
            (8.0, 10.0, 1.0),
            (30.0, 10.0, 5.0),
            (120.0, 10.0, 20.0),
            (6600.0, 5.0, 2000.0),
            (0.5, 10.0, 0.05),
        ] {
            assert!((tick_step(max, wanted) - step).abs() < 1e-12, "{max}");
        }
    }

    #[test]
    fn numbers_read_as_a_person_writes_them() {
        for (v, text) in [
            (0.0, "0"),
            (0.001, "0.001"),
            (0.05, "0.05"),
            (0.15, "0.15"),
            (2.0, "2"),
            (500.000_000_000_1, "500"),
            (6000.0, "6,000"),
            (1_200_000.0, "1,200,000"),
        ] {
            assert_eq!(number(v), text);
        }
    }

    #[test]
    fn a_missing_point_breaks_the_line() {
        let points = [Some((1.0, 2.0)), Some((3.0, 4.0)), None, Some((5.0, 6.0))];
        assert_eq!(path_data(points.into_iter()), "M1.0,2.0 L3.0,4.0 M5.0,6.0");
        assert_eq!(path_data(std::iter::empty()), "");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
