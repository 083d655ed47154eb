//! A blocking WebSocket client for tests: our own upgrade request (so a refusal comes back
//! as a full HTTP response with status and body), then tungstenite frames over the same
//! `TcpStream`. Every read runs under a deadline set with `set_read_timeout`.

use super::enc::{ws_accept_key, ws_random_key};
use super::http::{build_request, is_peer_gone, timed_out, HttpConn, RawResponse, ReadError};
use serde_json::Value;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// Deadline for the upgrade response.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Large enough for the multi-MB files and images the module sends (module-protocol.md §0
/// fact 12); tungstenite's defaults (64 MiB message, 16 MiB frame) would cut them.
const MAX_MESSAGE: usize = 512 << 20;

/// Why a WebSocket connection could not be opened.
pub enum ConnectError {
    /// TCP connect or write failed.
    Io(io::Error),
    /// The server answered with a non-101 response (status, headers and body included).
    Refused(Box<RawResponse>),
    /// No complete response arrived (timeout, or the server closed).
    NoResponse(ReadError),
    /// A 101 that fails the client checks of RFC 6455 §4.2.2 (reason, response).
    BadHandshake(String, Box<RawResponse>),
}

impl ConnectError {
    /// The HTTP status, when a response arrived.
    pub fn status(&self) -> Option<u16> {
        self.response().map(|r| r.status)
    }

    pub fn response(&self) -> Option<&RawResponse> {
        match self {
            ConnectError::Refused(r) | ConnectError::BadHandshake(_, r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Debug for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Refused(r) => write!(f, "upgrade refused: {r:?}"),
            ConnectError::NoResponse(e) => write!(f, "no upgrade response: {e}"),
            ConnectError::BadHandshake(why, r) => write!(f, "bad 101 ({why}): {r:?}"),
        }
    }
}

/// Opens a TCP connection, sends the upgrade request for `path_and_query` with the given
/// extra headers (a header given here replaces the default of the same name, so a test can
/// send `Sec-WebSocket-Version: 8`), and checks the 101 (RFC 6455 §4.2.2).
pub fn ws_handshake(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(WebSocket<TcpStream>, RawResponse), ConnectError> {
    let key = ws_random_key();
    let defaults = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key.as_str()),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut all: Vec<(&str, &str)> = defaults
        .iter()
        .filter(|(n, _)| !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n)))
        .copied()
        .collect();
    all.extend_from_slice(headers);
    let sent_key = all
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();

    let mut conn = HttpConn::connect(addr).map_err(ConnectError::Io)?;
    let host = addr.to_string();
    conn.send(&build_request("GET", path_and_query, &host, &all, None))
        .map_err(ConnectError::Io)?;
    let resp = conn
        .read_response(timeout)
        .map_err(ConnectError::NoResponse)?;
    if resp.status != 101 {
        return Err(ConnectError::Refused(Box::new(resp)));
    }
    let upgrade_ok = resp
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection_ok = resp.header("connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !upgrade_ok || !connection_ok {
        return Err(ConnectError::BadHandshake(
            "missing Upgrade/Connection".into(),
            Box::new(resp),
        ));
    }
    if resp.header("sec-websocket-accept") != Some(ws_accept_key(&sent_key).as_str()) {
        return Err(ConnectError::BadHandshake(
            "wrong Sec-WebSocket-Accept".into(),
            Box::new(resp),
        ));
    }
    let (stream, tail) = conn.into_parts();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(ConnectError::Io)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    // Bytes that arrived behind the 101 head are the first frames; hand them over.
    let ws = WebSocket::from_partially_read(stream, tail, Role::Client, Some(config));
    Ok((ws, resp))
}

/// Connects a test client to `path_and_query` (for example `/ws/api?token=...`).
pub fn ws_connect(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, ConnectError> {
    let (ws, handshake) = ws_handshake(addr, path_and_query, headers, HANDSHAKE_TIMEOUT)?;
    Ok(WsClient {
        ws,
        handshake,
        close: None,
        ended: false,
    })
}

/// One result of a deadline-bounded read.
enum ReadOutcome {
    Msg(Message),
    Timeout,
    Ended,
}

/// Reads one message before `deadline`. `Ended` after the connection is gone.
fn read_before(
    ws: &mut WebSocket<TcpStream>,
    deadline: Instant,
) -> Result<ReadOutcome, tungstenite::Error> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(ReadOutcome::Timeout);
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        if let Err(e) = ws.get_ref().set_read_timeout(Some(wait)) {
            return Err(tungstenite::Error::Io(e));
        }
        match ws.read() {
            Ok(m) => return Ok(ReadOutcome::Msg(m)),
            Err(tungstenite::Error::Io(e))
                if timed_out(&e) || e.kind() == io::ErrorKind::Interrupted =>
            {
                continue
            }
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return Ok(ReadOutcome::Ended)
            }
            Err(tungstenite::Error::Io(e)) if is_peer_gone(&e) => return Ok(ReadOutcome::Ended),
            Err(e) => return Err(e),
        }
    }
}

/// Close code and reason of a received close frame; 1005 when it had no code (RFC 6455 §7.1.5).
fn close_pair(frame: &Option<CloseFrame>) -> (u16, String) {
    match frame {
        Some(f) => (u16::from(f.code), f.reason.as_str().to_string()),
        None => (1005, String::new()),
    }
}

/// A connected test client.
pub struct WsClient {
    ws: WebSocket<TcpStream>,
    /// The 101 response.
    pub handshake: RawResponse,
    close: Option<(u16, String)>,
    ended: bool,
}

impl WsClient {
    pub fn send_json(&mut self, v: &Value) -> Result<(), tungstenite::Error> {
        self.send(Message::text(v.to_string()))
    }

    pub fn send_text(&mut self, s: &str) -> Result<(), tungstenite::Error> {
        self.send(Message::text(s))
    }

    /// Sends any message (binary, ping, a raw `Message::Frame`).
    pub fn send(&mut self, m: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(m)
    }

    /// The next message of any kind (pings and pongs included), or None on timeout or after
    /// the connection ended. A close frame is recorded for `recv_close` and returned.
    pub fn recv(&mut self, timeout: Duration) -> Option<Message> {
        if self.ended {
            return None;
        }
        let deadline = Instant::now() + timeout;
        match read_before(&mut self.ws, deadline) {
            Ok(ReadOutcome::Msg(m)) => {
                if let Message::Close(f) = &m {
                    self.close.get_or_insert_with(|| close_pair(f));
                    // RFC 6455 §5.5.1: tungstenite queued our echo; send it now.
                    let _ = self.ws.flush();
                }
                Some(m)
            }
            Ok(ReadOutcome::Timeout) => None,
            Ok(ReadOutcome::Ended) | Err(_) => {
                self.ended = true;
                // TCP ended without a close frame: what a browser reports as 1006.
                self.close.get_or_insert((1006, String::new()));
                None
            }
        }
    }

    /// The next text message parsed as JSON, skipping pings and pongs. None on timeout or
    /// close. Panics on a binary or non-JSON message: the relay sends only JSON text.
    pub fn recv_json(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                Message::Text(t) => match serde_json::from_str(t.as_str()) {
                    Ok(v) => return Some(v),
                    Err(e) => panic!("non-JSON text message ({e}): {:?}", t.as_str()),
                },
                Message::Binary(b) => panic!("unexpected binary message of {} bytes", b.len()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next JSON message for which `pred` holds; others are skipped.
    pub fn recv_json_where(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.recv_json(left)?;
            if pred(&v) {
                return Some(v);
            }
        }
    }

    /// The next JSON message whose `type` is `ty`.
    pub fn recv_type(&mut self, ty: &str, timeout: Duration) -> Option<Value> {
        self.recv_json_where(timeout, |v| v["type"] == ty)
    }

    /// Waits for the server's close: `(code, reason)`, skipping other messages. A close
    /// frame without a code gives 1005; TCP ending without a close frame gives 1006.
    /// None on timeout.
    pub fn recv_close(&mut self, timeout: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + timeout;
        while self.close.is_none() {
            if self.ended || Instant::now() >= deadline {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = self.recv(left);
        }
        self.close.clone()
    }

    /// The close received so far, if any.
    pub fn last_close(&self) -> Option<(u16, String)> {
        self.close.clone()
    }

    /// Closes with 1000 and waits up to 2 s for the server's echo.
    pub fn close(&mut self) {
        self.close_with(1000, "");
    }

    /// Sends a close frame with this code and reason, then waits up to 2 s for the echo.
    pub fn close_with(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        if self.ws.close(Some(frame)).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.ended && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = self.recv(left);
        }
    }

    /// The connection has ended (close handshake done, EOF, or reset).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The tungstenite socket, for raw frames or socket options.
    pub fn socket(&mut self) -> &mut WebSocket<TcpStream> {
        &mut self.ws
    }
}
