//! fvtt-relay: a single-threaded mio relay between apps and a Foundry VTT world.
//! See docs/ARCHITECTURE.md for the module map and the data flow.

pub mod error;
pub mod http;
pub mod ids;
pub mod relay;
