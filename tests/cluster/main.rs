//! Integration tests against real local redis-server clusters started by
//! `shardlock::testkit`. Each test says in its doc line what it proves.

mod bad_input;
mod deadline;
mod deployments;
mod failover;
mod metrics;
mod migration;
mod pipelining;
mod reconnect;
mod refresh;
mod routing;
mod runtimes;
mod standalone;
mod support;
mod transient;
mod version;
