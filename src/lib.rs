//! fvtt-relay: a single-threaded mio relay between apps and a Foundry VTT world.
//! See docs/ARCHITECTURE.md for the module map and the data flow.

pub mod auth;
pub mod budget;
pub mod cli;
pub mod config;
pub mod conn;
pub mod deadline;
pub mod enc;
pub mod error;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod outq;
pub mod ratelimit;
pub mod relay;
pub mod sdnotify;
pub mod server;
pub mod sse;
pub mod store;
pub mod ws;
