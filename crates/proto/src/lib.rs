//! Wire types of Tether's native protocol.
//!
//! This crate is pure: no IO, no sockets, no clocks. Everything a client can send is
//! decoded and validated here, so that the server, the Rust client and the fuzz targets
//! share one definition of what is valid.
//!
//! # Layout
//!
//! - [`channel`]: channel names and namespaces (grammar, validation).
//! - [`pattern`]: channel patterns (`chat:*`) for grants and restrictions, and matching.
//! - [`tags`]: publication tags.
//! - [`filter`]: subscription filters over tags (parser, canonical form, matching).
//! - [`identity`]: connection identity and publication targeting.
//! - [`error`]: stable error codes.
//! - [`json`]: JSON helpers (minify).
//! - [`message`]: client frame decoder and server frame encoders.
//! - [`jetstream`]: wire types of the Jetstream Sync protocol (the `/jetstream` dialect).

pub mod channel;
pub mod error;
pub mod filter;
pub mod identity;
pub mod jetstream;
pub mod json;
pub mod message;
pub mod pattern;
pub mod tags;

pub use channel::ChannelName;
pub use error::{ErrorCode, ProtoError};
pub use filter::Filter;
pub use identity::{Identity, Target};
pub use pattern::ChannelPattern;
pub use tags::Tags;
