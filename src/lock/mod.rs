//! Exclusive locks: [`LockManager`], [`LockRequest`], [`LockGuard`],
//! [`FencingToken`].
//!
//! Lock protocol (Redis keys and values):
//! - The lock key is the namespace followed by the user key; the namespace
//!   has no braces, so a hash tag in the user key decides the slot.
//! - Its value is the holder's random 128-bit token in hex, followed by
//!   `.<fence>` when fenced. Release and extend compare it first, so only
//!   the holder can release or extend.
//! - Fencing counters live at `<fence_namespace>{<tag of the slot>}`: one per
//!   slot (at most 16384), in the same slot as the keys they fence.

mod class;
mod guard;
mod lease;
mod manager;
mod many;
mod request;
mod token;
mod wait;

pub use class::{MAX_KEY_CLASSES, OTHER as OTHER_KEY_CLASS};
pub use guard::LockGuard;
pub(crate) use lease::{Lease, release_lease_unrecorded};
pub(crate) use manager::wait_deadline;
pub use manager::{LockManager, LockManagerBuilder};
pub use many::{LockGuards, ManyLockRequest};
pub use request::LockRequest;
pub(crate) use request::nothing_written;
pub use token::FencingToken;
pub(crate) use token::new_token;
