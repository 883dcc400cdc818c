//! Lock tests against real local redis-server clusters started by
//! `shardlock::testkit`. Each test says in its doc line what it proves.

mod bad_input;
mod basics;
mod blocking;
mod durations;
mod edges;
mod exclusion;
mod fencing;
mod many;
mod metrics;
mod partition;
mod renewal;
mod shutdown;
mod storms;
mod support;
