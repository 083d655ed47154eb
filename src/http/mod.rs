//! The HTTP/1.1 wire layer, server side, on byte buffers only (no sockets, no clock):
//! `request` frames heads and bodies with every cap and smuggling check, `response` writes
//! heads and owns response framing. The mio loop in `conn.rs` feeds it bytes and queues what
//! it writes; nothing here imports `relay/` (ARCHITECTURE.md, boundary rules).

pub mod request;
pub mod response;
pub mod route;

pub use request::{BodyDecoder, BodyKind, Head, HeadParser, Header, Limits, Method};
pub use response::{
    http_date, reason, write_head, write_stream_head, Body, DateCache, Response, WriteCtx,
    CONTINUE_100,
};
