//! Dialects: each translates one wire protocol onto the hub. They never reimplement hub
//! logic; they decode, call the engine, and encode.

pub mod echo;
pub mod event_server;
pub mod native;
