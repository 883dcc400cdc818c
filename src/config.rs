//! Connection settings shared by the router, the node pool and the refresher.

use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::backoff::Backoff;
use crate::error::{Error, Result};

/// The longest timeout or interval a client accepts: one day.
pub(crate) const MAX_SETTING: Duration = Duration::from_secs(24 * 3600);

/// Settings for a [`Client`](crate::Client); built by [`ClientBuilder`](crate::ClientBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Seed nodes as `host:port`.
    pub(crate) seeds: Vec<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// TCP connect plus handshake, per attempt.
    pub(crate) connect_timeout: Duration,
    /// Wait for one reply; an attempt is also cut at the caller's deadline.
    pub(crate) response_timeout: Duration,
    /// Default deadline of one routed request, retries included.
    pub(crate) request_timeout: Duration,
    /// Full topology fetch at least this often.
    pub(crate) refresh_interval: Duration,
    /// Fetches triggered by hints (MOVED, errors) are at least this far apart.
    pub(crate) refresh_min_gap: Duration,
    /// Between retries of one request.
    pub(crate) retry_backoff: Backoff,
    /// Between connection attempts to one node.
    pub(crate) reconnect_backoff: Backoff,
    /// Requests to one node submitted together leave in one write.
    pub(crate) auto_pipeline: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seeds: Vec::new(),
            username: None,
            password: None,
            // Loopback and LAN connects take well under a millisecond; one
            // second tells a dead node from a slow one without stalling a
            // refresh that walks several nodes.
            connect_timeout: Duration::from_secs(1),
            // Lock commands are O(1) and answer in well under a millisecond;
            // one second rides out fork and AOF-rewrite stalls, while a
            // stopped node is noticed soon enough for a retry within the
            // default request deadline. (The redis crate's own default is
            // 500 ms.)
            response_timeout: Duration::from_secs(1),
            // Long enough to ride out a failover (node timeout plus
            // election, typically 1–3 s with a 1 s node timeout).
            request_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(10),
            refresh_min_gap: Duration::from_millis(100),
            retry_backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(200)),
            reconnect_backoff: Backoff::new(Duration::from_millis(20), Duration::from_secs(1)),
            auto_pipeline: true,
        }
    }
}

impl Config {
    /// Checks the settings; every failure names the setting and why.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() {
            return Err(Error::InvalidArgument(
                "no seed nodes: give at least one `redis://host:port`".into(),
            ));
        }
        // Every bound keeps `Instant + setting` far from overflow.
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("request_timeout", self.request_timeout),
            ("refresh_interval", self.refresh_interval),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(Error::InvalidArgument(format!("{name} must be above zero")));
            }
            if value > MAX_SETTING {
                return Err(Error::InvalidArgument(format!(
                    "{name} of {value:?} is above one day; that is almost certainly a unit mistake"
                )));
            }
        }
        if self.refresh_min_gap > MAX_SETTING {
            return Err(Error::InvalidArgument(format!(
                "refresh_min_gap of {:?} is above one day; that is almost certainly a unit mistake",
                self.refresh_min_gap
            )));
        }
        Ok(())
    }

    /// Connection info for `host:port` with this configuration's credentials.
    pub(crate) fn connection_info(&self, addr: &str) -> Result<redis::ConnectionInfo> {
        let (host, port) = split_addr(addr)?;
        let mut redis = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let info = ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()
            .map_err(|e| Error::InvalidArgument(format!("address {addr:?}: {e}")))?;
        Ok(info.set_redis_settings(redis))
    }

    /// Adds a seed given as `redis://[user:password@]host:port` or
    /// `host:port`. Credentials in the URL become the defaults for every
    /// node unless set explicitly.
    pub(crate) fn add_seed(&mut self, seed: &str) -> Result<()> {
        let url = if seed.contains("://") {
            seed.to_owned()
        } else {
            format!("redis://{seed}")
        };
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::InvalidArgument(format!("seed {seed:?}: {e}")))?;
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(Error::InvalidArgument(format!(
                "seed {seed:?}: only plain TCP (`redis://host:port`) is supported"
            )));
        };
        if host.is_empty() || *port == 0 {
            return Err(Error::InvalidArgument(format!(
                "seed {seed:?}: needs a host and a non-zero port"
            )));
        }
        let settings = info.redis_settings();
        if self.username.is_none() {
            self.username = settings.username().map(str::to_owned);
        }
        if self.password.is_none() {
            self.password = settings.password().map(str::to_owned);
        }
        self.seeds.push(format!("{host}:{port}"));
        Ok(())
    }
}

/// `"127.0.0.1:7000"` → `("127.0.0.1", 7000)`; the port follows the last colon.
pub(crate) fn split_addr(addr: &str) -> Result<(&str, u16)> {
    let bad = || Error::InvalidArgument(format!("address {addr:?} is not host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds accept URLs and bare addresses; URL credentials become defaults.
    #[test]
    fn seeds_parse() {
        let mut c = Config::default();
        c.add_seed("redis://127.0.0.1:7000").unwrap();
        c.add_seed("localhost:7001").unwrap();
        c.add_seed("redis://alice:s3cret@10.0.0.1:7002").unwrap();
        assert_eq!(
            c.seeds,
            ["127.0.0.1:7000", "localhost:7001", "10.0.0.1:7002"]
        );
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
    }

    /// Unusable seeds are refused with a message naming the seed.
    #[test]
    fn bad_seeds_are_invalid_arguments() {
        for seed in ["", "redis://", "unix:///tmp/redis.sock", "rediss://h:1x"] {
            let mut c = Config::default();
            match c.add_seed(seed) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains("seed"), "{m}"),
                other => panic!("{seed:?}: {other:?}"),
            }
        }
    }

    /// Zero and absurd durations are refused by name.
    #[test]
    fn validate_names_the_setting() {
        let mut c = Config::default();
        assert!(matches!(c.validate(), Err(Error::InvalidArgument(m)) if m.contains("seed")));
        c.seeds.push("127.0.0.1:7000".into());
        c.validate().unwrap();
        c.response_timeout = Duration::ZERO;
        assert!(
            matches!(c.validate(), Err(Error::InvalidArgument(m)) if m.contains("response_timeout"))
        );
        c.response_timeout = Duration::from_secs(7 * 24 * 3600);
        assert!(matches!(c.validate(), Err(Error::InvalidArgument(m)) if m.contains("one day")));
        c.response_timeout = Duration::from_secs(1);
        c.refresh_min_gap = Duration::ZERO;
        c.validate().unwrap();
        c.refresh_min_gap = MAX_SETTING + Duration::from_nanos(1);
        assert!(
            matches!(c.validate(), Err(Error::InvalidArgument(m)) if m.contains("refresh_min_gap"))
        );
    }

    /// Addresses split at the last colon.
    #[test]
    fn split_addr_table() {
        assert_eq!(split_addr("127.0.0.1:7000").unwrap(), ("127.0.0.1", 7000));
        assert_eq!(
            split_addr("redis-0.svc:6379").unwrap(),
            ("redis-0.svc", 6379)
        );
        assert_eq!(split_addr("[::1]:7000").unwrap(), ("::1", 7000));
        for bad in ["", ":7000", "host", "host:", "host:0", "host:70000"] {
            assert!(split_addr(bad).is_err(), "{bad:?}");
        }
    }
}
