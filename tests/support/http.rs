//! A raw HTTP/1.x client over `std::net::TcpStream`, strict enough to test framing.
//!
//! It writes exactly the bytes a test gives it and parses responses itself: status line and
//! headers with `httparse`, then the body by the framing rules of RFC 9112 §6.3 (no body for
//! HEAD, 1xx, 204 and 304; `Transfer-Encoding: chunked`; `Content-Length`; otherwise until
//! the server closes). `HttpConn` keeps unread bytes, so keep-alive and pipelining work.
//! Every read has a deadline; nothing here can block forever.

use serde_json::Value;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Default deadline for a whole response in the one-shot helpers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Header count we accept in a response; more is a test failure, not a silent truncation.
const MAX_RESPONSE_HEADERS: usize = 128;

/// A parsed response. Header names are lower-cased; order and duplicates are kept.
#[derive(Clone)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// Minor version of the status line: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body arrived with chunked framing (already decoded in `body`).
    pub chunked: bool,
    /// The status line and headers exactly as received, for failure messages.
    pub raw_head: String,
}

impl RawResponse {
    /// First value of a header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON; panics with the status and body text when it is not JSON.
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "response body is not JSON ({e}): {} {}\n{}",
                self.status,
                self.reason,
                self.text()
            ),
        }
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The server announced it will close the connection after this response.
    pub fn closes(&self) -> bool {
        match self.header("connection") {
            Some(v) => v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")),
            None => self.version == 0,
        }
    }
}

impl fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.text();
        let shown: String = body.chars().take(2000).collect();
        write!(f, "{}{}", self.raw_head, shown)
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed; `partial` holds what had arrived of this response.
    Timeout {
        partial: Vec<u8>,
    },
    /// The server closed (or reset) the connection before a full response.
    Closed {
        partial: Vec<u8>,
    },
    /// The bytes are not a valid HTTP response.
    Malformed(String),
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Timeout { partial } => write!(
                f,
                "timed out after {} bytes: {:?}",
                partial.len(),
                String::from_utf8_lossy(&partial[..partial.len().min(500)])
            ),
            ReadError::Closed { partial } => write!(
                f,
                "connection closed after {} bytes: {:?}",
                partial.len(),
                String::from_utf8_lossy(&partial[..partial.len().min(500)])
            ),
            ReadError::Malformed(m) => write!(f, "malformed response: {m}"),
            ReadError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

/// Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1). Decoded bytes
/// accumulate in `out`; a streaming reader (SSE) drains `out` as it goes.
#[derive(Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    pub out: Vec<u8>,
}

#[derive(Default, PartialEq, Eq, Debug)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    DataCrlf,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    /// Consumes as much of `input` as possible; returns how many bytes were used.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, String> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => {
                    let Some(eol) = find_crlf(rest) else {
                        return Ok(pos);
                    };
                    let line = std::str::from_utf8(&rest[..eol])
                        .map_err(|_| "chunk size line is not UTF-8".to_string())?;
                    let size_text = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_text, 16)
                        .map_err(|_| format!("bad chunk size {line:?}"))?;
                    pos += eol + 2;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let take = left.min(rest.len());
                    self.out.extend_from_slice(&rest[..take]);
                    pos += take;
                    self.state = if take == left {
                        ChunkState::DataCrlf
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataCrlf => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".to_string());
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(eol) = find_crlf(rest) else {
                        return Ok(pos);
                    };
                    pos += eol + 2;
                    if eol == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }

    /// The last chunk and the trailer section have arrived.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// One client connection. Unread bytes stay buffered between responses.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl HttpConn {
    /// Connects with a 5 s connect timeout and Nagle off (so dribbled bytes leave at once).
    pub fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// `connect` to `relay`, panicking on failure (a test cannot go on without it).
    pub fn to(relay: &super::server::Relay) -> HttpConn {
        match HttpConn::connect(relay.addr()) {
            Ok(c) => c,
            Err(e) => panic!("connect: {e}"),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket and any bytes read past the last response (e.g. after a 101).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Writes all bytes.
    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)?;
        self.stream.flush()
    }

    /// Writes one byte per `write` call (Nagle is off, so one segment each). Stops quietly
    /// if the server has already closed; the caller then reads what it answered.
    pub fn dribble(&mut self, raw: &[u8]) -> io::Result<()> {
        for b in raw {
            if let Err(e) = self.stream.write_all(std::slice::from_ref(b)) {
                return if is_peer_gone(&e) { Ok(()) } else { Err(e) };
            }
            self.stream.flush()?;
        }
        Ok(())
    }

    /// Half-closes the write side (the server sees EOF on read).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Reads one response, its body framed by the usual rules.
    pub fn read_response(&mut self, timeout: Duration) -> Result<RawResponse, ReadError> {
        self.read_inner(timeout, false)
    }

    /// Reads the response to a HEAD request: a head and never a body (RFC 9110 §9.3.2).
    pub fn read_head_response(&mut self, timeout: Duration) -> Result<RawResponse, ReadError> {
        self.read_inner(timeout, true)
    }

    /// `send` then `read_response`.
    pub fn roundtrip(&mut self, raw: &[u8], timeout: Duration) -> Result<RawResponse, ReadError> {
        self.send(raw).map_err(ReadError::Io)?;
        self.read_response(timeout)
    }

    /// Waits up to `timeout` for the server to close; bytes that arrive meanwhile are kept.
    /// True when the connection is closed (EOF or reset).
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(ReadError::Timeout { .. }) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Bytes received but not consumed by a response.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more bytes into the buffer. Ok(0) means EOF (a reset counts as EOF).
    fn fill(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        if self.eof {
            return Ok(0);
        }
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadError::Timeout {
                    partial: self.buf.clone(),
                });
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(wait))
                .map_err(ReadError::Io)?;
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if timed_out(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_peer_gone(&e) => {
                    self.eof = true;
                    return Ok(0);
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    fn read_inner(&mut self, timeout: Duration, head_only: bool) -> Result<RawResponse, ReadError> {
        let deadline = Instant::now() + timeout;
        let mut resp = self.read_head_before(deadline)?;
        // RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304.
        let no_body = head_only
            || (100..200).contains(&resp.status)
            || resp.status == 204
            || resp.status == 304;
        if !no_body {
            self.read_body_before(&mut resp, deadline)?;
        }
        Ok(resp)
    }

    /// Reads only a status line and headers; body bytes stay buffered (`read_body`,
    /// `read_some`, `take_buffered`).
    pub fn read_head(&mut self, timeout: Duration) -> Result<RawResponse, ReadError> {
        self.read_head_before(Instant::now() + timeout)
    }

    /// Reads the body that belongs to `resp` (a head from `read_head`) into `resp.body`.
    pub fn read_body(
        &mut self,
        resp: &mut RawResponse,
        timeout: Duration,
    ) -> Result<(), ReadError> {
        self.read_body_before(resp, Instant::now() + timeout)
    }

    /// Reads whatever arrives next into the buffer (at most one `read`). Ok(0) is EOF.
    pub fn read_some(&mut self, timeout: Duration) -> Result<usize, ReadError> {
        self.fill(Instant::now() + timeout)
    }

    /// Takes every buffered byte.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    fn read_head_before(&mut self, deadline: Instant) -> Result<RawResponse, ReadError> {
        loop {
            if let Some((resp, head_len)) = parse_head(&self.buf)? {
                self.buf.drain(..head_len);
                return Ok(resp);
            }
            if self.fill(deadline)? == 0 {
                return Err(ReadError::Closed {
                    partial: std::mem::take(&mut self.buf),
                });
            }
        }
    }

    /// RFC 9112 §6.3, in its order: chunked wins, then Content-Length, else until close.
    fn read_body_before(
        &mut self,
        resp: &mut RawResponse,
        deadline: Instant,
    ) -> Result<(), ReadError> {
        if is_chunked(resp) {
            resp.chunked = true;
            let mut dec = ChunkedDecoder::default();
            loop {
                let used = dec.feed(&self.buf).map_err(ReadError::Malformed)?;
                self.buf.drain(..used);
                if dec.done() {
                    resp.body = dec.out;
                    return Ok(());
                }
                if self.fill(deadline)? == 0 {
                    return Err(ReadError::Closed { partial: dec.out });
                }
            }
        }
        if let Some(cl) = resp.header("content-length") {
            let len: usize = cl
                .trim()
                .parse()
                .map_err(|_| ReadError::Malformed(format!("bad Content-Length {cl:?}")))?;
            while self.buf.len() < len {
                if self.fill(deadline)? == 0 {
                    return Err(ReadError::Closed {
                        partial: std::mem::take(&mut self.buf),
                    });
                }
            }
            resp.body = self.buf.drain(..len).collect();
            return Ok(());
        }
        while self.fill(deadline)? != 0 {}
        resp.body = std::mem::take(&mut self.buf);
        Ok(())
    }
}

/// The final transfer coding is `chunked` (RFC 9112 §6.1).
pub fn is_chunked(resp: &RawResponse) -> bool {
    resp.header("transfer-encoding")
        .map(|v| {
            v.rsplit(',')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("chunked")
        })
        .unwrap_or(false)
}

/// Parses a status line and headers; `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(RawResponse, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) => {
            let resp = RawResponse {
                status: parsed.code.unwrap_or(0),
                reason: parsed.reason.unwrap_or("").to_string(),
                version: parsed.version.unwrap_or(1),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
                body: Vec::new(),
                chunked: false,
                raw_head: String::from_utf8_lossy(&buf[..n]).into_owned(),
            };
            Ok(Some((resp, n)))
        }
        Err(e) => Err(ReadError::Malformed(format!(
            "{e}: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(300)])
        ))),
    }
}

/// A read timeout shows up as WouldBlock on Unix and TimedOut on Windows.
pub fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The peer closed or reset the connection.
pub fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Builds a request: request line, `Host`, the given headers, then `Content-Length` when a
/// body is given and the caller did not set it or `Transfer-Encoding`. Adds nothing else.
pub fn build_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if let Some(b) = body {
        if !has("content-length") && !has("transfer-encoding") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

/// Sends `raw` on a fresh connection and reads one response (10 s). Panics on failure with
/// what arrived, so a test failure names the problem.
pub fn http_request(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    match try_http_request(addr, raw, DEFAULT_TIMEOUT) {
        Ok(r) => r,
        Err(e) => panic!(
            "HTTP request to {addr} failed: {e}\nrequest: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(500)])
        ),
    }
}

/// Like `http_request` but returns the error.
pub fn try_http_request(
    addr: SocketAddr,
    raw: &[u8],
    timeout: Duration,
) -> Result<RawResponse, ReadError> {
    let mut conn = HttpConn::connect(addr).map_err(ReadError::Io)?;
    conn.send(raw).map_err(ReadError::Io)?;
    conn.read_response(timeout)
}

/// Sends `raw` one byte at a time (Nagle off), then reads one response.
pub fn dribble(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    let mut conn = match HttpConn::connect(addr) {
        Ok(c) => c,
        Err(e) => panic!("connect to {addr} failed: {e}"),
    };
    if let Err(e) = conn.dribble(raw) {
        panic!("dribble to {addr} failed: {e}");
    }
    match conn.read_response(DEFAULT_TIMEOUT) {
        Ok(r) => r,
        Err(e) => panic!("dribbled request to {addr}: {e}"),
    }
}

/// A one-shot request with `Connection: close` (unless the caller sets `Connection`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> RawResponse {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        all.push(("Connection", "close"));
    }
    let host = addr.to_string();
    http_request(addr, &build_request(method, path, &host, &all, body))
}

/// `GET path` with the given headers.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    request(addr, "GET", path, headers, None)
}

/// `POST path` with a JSON body and `Content-Type: application/json`.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> RawResponse {
    send_json(addr, "POST", path, headers, body)
}

/// Any method with a JSON body and `Content-Type: application/json`.
pub fn send_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> RawResponse {
    let bytes = body.to_string().into_bytes();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        all.push(("Content-Type", "application/json"));
    }
    request(addr, method, path, &all, Some(&bytes))
}
