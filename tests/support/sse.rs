//! A Server-Sent Events reader: the WHATWG HTML "event stream interpretation" rules
//! (§9.2.6) over a raw HTTP response, chunked or close-delimited.
//!
//! `SseParser` is the pure part (bytes in, events out); `SseClient` adds the socket and
//! deadlines. Comment lines (`: keepalive`) are not events; they are counted and kept.

use super::http::{build_request, is_chunked, ChunkedDecoder, HttpConn, RawResponse, ReadError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field given in this event's block, if any (the sticky "last event ID" is
    /// `SseParser::last_event_id`).
    pub id: Option<String>,
    /// The `event:` field, or `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// `data` parsed as JSON; panics with the event when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_str(&self.data) {
            Ok(v) => v,
            Err(e) => panic!("SSE data is not JSON ({e}): {self:?}"),
        }
    }
}

/// Incremental event-stream parser.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The first line has been seen (the only place a BOM may sit).
    started: bool,
    /// The previous byte was a CR, so an LF right after it belongs to the same line end.
    after_cr: bool,
    data: String,
    event: String,
    block_id: Option<String>,
    pub last_event_id: String,
    pub retry: Option<u64>,
    pub comments: Vec<String>,
    events: VecDeque<SseEvent>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line();
                }
                b'\n' => self.end_line(),
                _ => self.line.push(b),
            }
        }
    }

    /// The next complete event.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.events.pop_front()
    }

    fn end_line(&mut self) {
        let raw = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&raw).into_owned();
        if !self.started {
            // §9.2.6: one U+FEFF at the very start of the stream is dropped.
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{FEFF}') {
                line = rest.to_string();
            }
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments
                .push(comment.strip_prefix(' ').unwrap_or(comment).to_string());
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
            None => (line.clone(), String::new()),
        };
        match field.as_str() {
            "event" => self.event = value,
            "data" => {
                self.data.push_str(&value);
                self.data.push('\n');
            }
            // §9.2.6: an id containing NULL is ignored.
            "id" if !value.contains('\0') => {
                self.last_event_id = value.clone();
                self.block_id = Some(value);
            }
            // §9.2.6: retry is used only when it is all ASCII digits.
            "retry" if !value.is_empty() && value.bytes().all(|c| c.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = std::mem::take(&mut self.event);
        let id = self.block_id.take();
        if self.data.is_empty() {
            // §9.2.6: an empty data buffer resets the block without dispatching.
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        self.events.push_back(SseEvent {
            id,
            event: if event.is_empty() {
                "message".into()
            } else {
                event
            },
            data,
        });
    }
}

/// An open event stream.
pub struct SseClient {
    conn: HttpConn,
    /// The response head (status 200, `text/event-stream`).
    pub response: RawResponse,
    chunked: Option<ChunkedDecoder>,
    /// Raw bytes the chunked decoder has not consumed yet.
    unread: Vec<u8>,
    parser: SseParser,
    ended: bool,
}

impl SseClient {
    /// `GET path` with `Accept: text/event-stream` and the given headers. A response that is
    /// not a 200 event stream comes back as `Err` with its full body. Panics when no
    /// response arrives within 10 s.
    pub fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseClient, RawResponse> {
        let mut all: Vec<(&str, &str)> = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let mut conn = match HttpConn::connect(addr) {
            Ok(c) => c,
            Err(e) => panic!("SSE connect to {addr} failed: {e}"),
        };
        let raw = build_request("GET", path, &addr.to_string(), &all, None);
        if let Err(e) = conn.send(&raw) {
            panic!("SSE request to {addr} failed: {e}");
        }
        let timeout = Duration::from_secs(10);
        let mut response = match conn.read_head(timeout) {
            Ok(r) => r,
            Err(e) => panic!("SSE {path}: no response head: {e}"),
        };
        let is_stream = response
            .header("content-type")
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if response.status != 200 || !is_stream {
            if let Err(e) = conn.read_body(&mut response, timeout) {
                panic!(
                    "SSE {path}: {} without a readable body: {e}",
                    response.status
                );
            }
            return Err(response);
        }
        let chunked = is_chunked(&response).then(ChunkedDecoder::default);
        let mut client = SseClient {
            conn,
            response,
            chunked,
            unread: Vec::new(),
            parser: SseParser::default(),
            ended: false,
        };
        let early = client.conn.take_buffered();
        client.absorb(early);
        Ok(client)
    }

    fn absorb(&mut self, bytes: Vec<u8>) {
        match &mut self.chunked {
            Some(dec) => {
                // The decoder stops at an incomplete size line; those bytes wait in `unread`.
                let mut pending = std::mem::take(&mut self.unread);
                pending.extend_from_slice(&bytes);
                let used = match dec.feed(&pending) {
                    Ok(used) => used,
                    Err(e) => panic!("SSE stream has bad chunked framing: {e}"),
                };
                pending.drain(..used);
                self.unread = pending;
                let out = std::mem::take(&mut dec.out);
                self.parser.feed(&out);
                if dec.done() {
                    self.ended = true;
                }
            }
            None => self.parser.feed(&bytes),
        }
    }

    /// The next event, or None on timeout or end of stream.
    pub fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.parser.next_event() {
                return Some(e);
            }
            if !self.pump(deadline) {
                return None;
            }
        }
    }

    /// The next event whose name is `name`; others are skipped.
    pub fn next_named(&mut self, name: &str, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.next_event(left)?;
            if e.event == name {
                return Some(e);
            }
        }
    }

    /// Reads once before `deadline`. False on timeout or end of stream.
    fn pump(&mut self, deadline: Instant) -> bool {
        if self.ended {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match self.conn.read_some(left) {
            Ok(0) => {
                self.ended = true;
                false
            }
            Ok(_) => {
                let bytes = self.conn.take_buffered();
                self.absorb(bytes);
                true
            }
            Err(ReadError::Timeout { .. }) => false,
            Err(_) => {
                self.ended = true;
                false
            }
        }
    }

    /// Number of comment lines seen (e.g. `: keepalive`).
    pub fn comments(&self) -> usize {
        self.parser.comments.len()
    }

    /// The comment texts, without the colon and one leading space.
    pub fn comment_texts(&self) -> &[String] {
        &self.parser.comments
    }

    /// Reads until at least `n` comments have arrived. False on timeout or end of stream.
    pub fn wait_comments(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.comments() < n {
            if !self.pump(deadline) {
                return self.comments() >= n;
            }
        }
        true
    }

    /// Reads (keeping events queued) until the server ends the stream. True if it ended.
    pub fn wait_ended(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.ended {
            if !self.pump(deadline) && !self.ended {
                return false;
            }
        }
        true
    }

    /// The server ended the stream (close, reset, or the last chunk).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    pub fn last_event_id(&self) -> &str {
        &self.parser.last_event_id
    }

    pub fn retry(&self) -> Option<u64> {
        self.parser.retry
    }

    /// Events already parsed but not yet taken.
    pub fn drain_events(&mut self) -> Vec<SseEvent> {
        std::iter::from_fn(|| self.parser.next_event()).collect()
    }
}
