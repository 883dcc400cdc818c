//! A Prometheus endpoint in one call (feature `prometheus`).
//!
//! The library itself only records through the [`metrics`] facade; this
//! helper is for applications (and the load test) that want the usual
//! setup: `metrics-exporter-prometheus` serving `GET /metrics` over plain
//! HTTP, histograms with shardlock's buckets, every metric described. It is
//! off by default so that library users who export differently build none
//! of it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::error::{Error, Result};
use crate::metrics::{BATCH_BUCKETS, RENEW_BATCH_LEASES, SECONDS_BUCKETS, describe};

/// Where [`install_default`] listens: loopback only, port 9464.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// Installs a Prometheus recorder as the process's global `metrics`
/// recorder and serves it at `http://{addr}/metrics`, with
/// [`SECONDS_BUCKETS`] for every `_seconds` histogram and [`BATCH_BUCKETS`]
/// for renewal batch sizes, and describes every shardlock metric.
///
/// Call it before building a client: series are created on first use, by
/// whichever recorder is installed then. Inside a tokio runtime the HTTP
/// listener runs on it; outside one, on a thread of its own. Fails with
/// [`Error::Other`] when `addr` cannot be bound (checked first, so a port
/// in use is reported here), a recorder is already installed, or the
/// listener cannot be set up.
pub fn install(addr: SocketAddr) -> Result<()> {
    drop(
        std::net::TcpListener::bind(addr)
            .map_err(|e| Error::Other(format!("cannot serve metrics on {addr}: {e}")))?,
    );
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(RENEW_BATCH_LEASES.into()), BATCH_BUCKETS)
        })
        .and_then(|b| b.install())
        .map_err(|e| {
            Error::Other(format!(
                "cannot install the Prometheus exporter on {addr}: {e}"
            ))
        })?;
    describe();
    Ok(())
}

/// [`install`] on [`DEFAULT_ADDR`] (`127.0.0.1:9464`).
pub fn install_default() -> Result<()> {
    install(DEFAULT_ADDR)
}
