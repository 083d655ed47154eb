//! Error enums with exactly one mapping each to the wire.
//!
//! `HttpError` is what the HTTP framing layer can refuse (status + `{"error": "..."}`, and
//! whether the connection must close because framing is lost). `WsClose` is a close code
//! and reason. `Fatal` is a start-up failure and its process exit code. Messages are
//! `&'static str` so error paths do not allocate and every text a peer can see is here.

use std::borrow::Cow;
use std::fmt;

/// A request the HTTP layer refuses before any route sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// 400: malformed syntax, smuggling forms (RFC 9112 §6.3), bad target. Closes.
    Malformed(&'static str),
    /// 431: the head passed the byte cap (RFC 6585 §5). Closes.
    HeadTooLarge,
    /// 431: more header fields than the cap. Closes.
    TooManyHeaders,
    /// 413: the body passed the byte cap. Closes (the rest of the body is not read).
    BodyTooLarge,
    /// 408: the head did not arrive within its deadline (slowloris). Closes.
    HeadTimeout,
    /// 505: an HTTP version other than 1.0 or 1.1. Closes.
    VersionNotSupported,
    /// 417: an `Expect` value other than `100-continue` (RFC 9110 §10.1.1). Closes.
    ExpectationFailed,
    /// 501: a transfer coding we do not implement (RFC 9112 §6.1). Closes.
    UnknownTransferCoding,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::HeadTimeout => 408,
            HttpError::VersionNotSupported => 505,
            HttpError::ExpectationFailed => 417,
            // The issue asks for 400 on an unknown coding (strict smuggling stance), so we
            // answer 400 rather than RFC 9112's suggested 501.
            HttpError::UnknownTransferCoding => 400,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HttpError::Malformed(m) => m,
            HttpError::HeadTooLarge => "Request header fields too large",
            HttpError::TooManyHeaders => "Too many header fields",
            HttpError::BodyTooLarge => "Request body too large",
            HttpError::HeadTimeout => "Request timed out",
            HttpError::VersionNotSupported => "HTTP version not supported",
            HttpError::ExpectationFailed => "Expectation failed",
            HttpError::UnknownTransferCoding => "Unsupported transfer coding",
        }
    }

    /// Every framing error closes: we no longer know where the next request would start.
    pub fn closes(&self) -> bool {
        true
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

/// A WebSocket close: code (RFC 6455 §7.4) and reason (at most 123 bytes of UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsClose {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

impl WsClose {
    pub const fn new(code: u16, reason: &'static str) -> Self {
        WsClose {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    pub const NORMAL: WsClose = WsClose::new(1000, "");
    pub const GOING_AWAY: WsClose = WsClose::new(1001, "Server shutting down");
    pub const PROTOCOL: WsClose = WsClose::new(1002, "Protocol error");
    pub const INVALID_DATA: WsClose = WsClose::new(1007, "Invalid frame payload data");
    pub const SLOW_CONSUMER: WsClose = WsClose::new(1008, "Slow consumer");
    pub const TOO_BIG: WsClose = WsClose::new(1009, "Message too big");
    pub const INTERNAL: WsClose = WsClose::new(1011, "Internal error");
    pub const OVERLOADED: WsClose = WsClose::new(1013, "Try again later");
    pub const PING_TIMEOUT: WsClose = WsClose::new(1001, "Ping timeout");
}

impl fmt::Display for WsClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.code, self.reason)
    }
}

/// A start-up failure; `main` prints it and exits with `exit_code()`.
#[derive(Debug)]
pub enum Fatal {
    /// A bad flag or environment value (exit 2, before anything is bound).
    Config(String),
    /// Binding the listener failed.
    Bind(String),
    /// The state file is unreadable, corrupt, or locked by another relay.
    State(String),
    /// Any other I/O failure during start-up.
    Io(String),
}

impl Fatal {
    pub fn exit_code(&self) -> i32 {
        match self {
            Fatal::Config(_) => 2,
            Fatal::Bind(_) | Fatal::State(_) | Fatal::Io(_) => 1,
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Config(m) => write!(f, "configuration error: {m}"),
            Fatal::Bind(m) => write!(f, "cannot listen: {m}"),
            Fatal::State(m) => write!(f, "state error: {m}"),
            Fatal::Io(m) => write!(f, "i/o error: {m}"),
        }
    }
}
