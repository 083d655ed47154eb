//! The WebSocket wire layer (RFC 6455, server side), free of sockets: `handshake` checks the
//! upgrade request and writes the `101`; `link` runs one upgraded connection over byte buffers
//! that the mio loop fills and drains, and encodes the shared server frames used for fan-out.

pub mod handshake;
pub mod link;
