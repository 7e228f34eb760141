//! Tether's engine: the pure logic every transport and dialect shares.
//!
//! **Architecture invariant:** nothing in this crate performs IO, blocks on IO, reads a
//! clock or knows a wire format. Time is passed in by the caller; frames are produced by
//! encoders the caller registers; delivery goes to a [`hub::Sink`] the caller implements.
//!
//! # Layout
//!
//! - [`history`]: a channel's recent publications by offset and epoch; recovery that is
//!   all or nothing.
//! - [`hub`]: channels, subscriptions grouped by distinct filter, fan-out.
//! - [`namespace`]: per-namespace options and the permission rules built on them.
//! - [`presence`]: who is present on one channel, per connection, with a TTL and caller time.
//! - [`rate`]: token-bucket rate limiting with caller-supplied time, per key or not.
//! - [`sync`]: model sync (Jetstream): schemas, scope state, changesets and their validation.

pub mod history;
pub mod hub;
pub mod namespace;
pub mod presence;
pub mod rate;
pub mod sync;

pub use hub::{FormatId, Hub, Publication, PublishStats, Sink, SubscribeError, Subscriber};
pub use namespace::{Access, ClientRule, NamespaceOptions, Namespaces, SubscribeRule};
pub use rate::{KeyedLimiter, TokenBucket};
