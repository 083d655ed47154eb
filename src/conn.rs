//! One client connection: its socket, input buffer, output queue, phase and deadline.
//!
//! A connection is an explicit state machine (STYLE.md habit 10):
//!
//! ```text
//!   Http ──(101 Accept)──▶ Ws ──(close sent / received)──▶ closing ─▶ reaped
//!     │  └─(StartSse)────▶ Sse ─────────────────────────────▶ closing ─▶ reaped
//!     └─(error, Connection: close, EOF)──────────────────────▶ closing ─▶ reaped
//! ```
//!
//! The connection computes its own interest (readable unless throttled, writable only while
//! the queue holds bytes) and its own next deadline; the loop applies both. It never touches
//! the registry or the slab, and it only writes through its `OutQueue`.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;
use mio::Interest;

use crate::config::Config;
use crate::error::{HttpError, WsClose};
use crate::http::request::{BodyDecoder, BodyKind, Head, HeadParser, Limits};
use crate::http::response::CONTINUE_100;
use crate::ids::ConnId;
use crate::outq::{Flush, OutQueue};
use crate::relay::io::Endpoint;
use crate::ws::link::{frame_text_into, Link, WsEvent, WsLimits};

/// An empty input buffer keeps at most this much capacity between reads.
const IDLE_INBUF_CAPACITY: usize = 4 * 1024;

/// The loop's shared read buffer size: the most one `read` call takes.
pub const READ_CHUNK: usize = 64 * 1024;

/// The phase a connection is in, with the data that only that phase needs.
pub enum Phase {
    Http(HttpPhase),
    Ws(WsPhase),
    Sse(SsePhase),
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Http(_) => "http",
            Phase::Ws(_) => "ws",
            Phase::Sse(_) => "sse",
        }
    }
}

pub struct HttpPhase {
    parser: HeadParser,
    /// A head whose body is still arriving.
    body: Option<PendingBody>,
    /// A request is with the relay; further pipelined requests wait in `inbuf`.
    pub awaiting: bool,
    /// When the current head started arriving (slowloris deadline), or the body's deadline.
    head_started: Option<Instant>,
    /// When the connection last became idle between requests (keep-alive deadline).
    idle_since: Instant,
    /// No request head has arrived yet. A connection that has sent nothing since its accept
    /// is closed quietly after --head-timeout (or --keepalive-timeout, if shorter): one that
    /// never speaks is a slowloris, not an idle keep-alive.
    fresh: bool,
    /// Keep-alive, HEAD-ness and version of the request in flight, for its response.
    pub cur_keep_alive: bool,
    pub cur_head: bool,
    pub cur_minor: u8,
}

struct PendingBody {
    head: Head,
    decoder: BodyDecoder,
    body: Vec<u8>,
    started: Instant,
    /// Charged to the memory budget from admission on (the declared length, or the
    /// route's limit for a chunked body), so admissions cannot all pass at once.
    reserved: usize,
}

pub struct WsPhase {
    pub link: Link,
    pub endpoint: Endpoint,
    last_rx: Instant,
    next_ping: Option<Instant>,
    ping_interval: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// The link stopped at its message budget and may hold complete frames already.
    more: bool,
    /// A world link whose auth message has not succeeded yet: small message limit, one
    /// message per step (so the full limit applies from the message after the auth).
    pub preauth: bool,
}

pub struct SsePhase {
    next_keepalive: Instant,
    interval: Duration,
}

/// What one step of HTTP processing produced.
pub enum HttpStep {
    /// Nothing complete yet (or a request is already in flight).
    Idle,
    /// A complete request for the loop to route.
    Request(Head, Vec<u8>),
    /// The head of a request with a body: the relay decides (`Input::Head`) whether and up
    /// to what size the body is read (`http_begin_body`), before any of it is.
    Head(Head),
    /// A framing error: answer it and close.
    Error(HttpError),
}

/// What a due deadline means for this connection.
pub enum Due {
    /// Nothing to do (a stale wake-up).
    Nothing,
    /// The slowloris head deadline passed: answer 408 and close.
    HeadTimeout,
    /// Close at once, without ceremony (idle keep-alive, linger over, dead peer).
    Drop(&'static str),
    /// A WebSocket peer went quiet for too long: close it with this.
    WsIdle,
    /// The output queue stayed over its soft limit past the grace period.
    SlowConsumer,
}

pub struct Conn {
    pub id: ConnId,
    pub sock: TcpStream,
    pub peer: SocketAddr,
    pub phase: Phase,
    pub inbuf: Vec<u8>,
    pub outq: OutQueue,
    /// Interest currently registered with the poller (None = not registered).
    pub registered: Option<Interest>,
    /// Closing: no more requests are read. Set when the close begins, and set again when
    /// our last byte is written and the FIN sent (`start_linger`): from then on it is the
    /// start of the close linger, so `--close-linger` never bounds the transfer itself.
    pub closing_since: Option<Instant>,
    /// While output is queued: when bytes last left the queue, or when the queue last
    /// started holding bytes (None while it is empty). A response, or a closing
    /// connection, that makes no write progress for `--slow-consumer-grace` is dropped;
    /// a slow but moving reader is never cut.
    pub write_stall_from: Option<Instant>,
    /// Marked for removal at the end of the turn.
    pub dead: bool,
    /// The relay has seen this connection, so it must hear of its end.
    pub relay_known: bool,
    /// The earliest deadline currently armed in the loop's heap for this connection.
    pub armed: Option<Instant>,
    /// Reading stopped because of a budget or buffer cap: try again without a new edge.
    pub read_pending: bool,
    /// The peer sent EOF.
    pub eof: bool,
    /// Our write side is shut (lingering close: we wait for the peer's EOF so that unread
    /// input does not turn our last response into a reset).
    pub wr_shut: bool,
    /// The `Sec-WebSocket-Accept` value of an upgrade the relay is deciding on.
    pub pending_accept: Option<String>,
    /// Already on the loop's flush list for this turn.
    pub on_dirty_list: bool,
    /// HTTP: the next pipelined request waits until the queued answers drain below
    /// `--pipeline-outq-bytes` (the flush resumes it).
    pub http_stalled: bool,
    /// The relay accepted this connection's credentials (a key on an HTTP request, a world's
    /// auth message, a WebSocket's auth): the memory budget never sheds it.
    pub trusted: bool,
    /// Bytes charged to the memory budget for this connection (`held_bytes` when last
    /// counted).
    pub charged: usize,
    /// When the socket last took bytes from the queue: an HTTP client that reads keeps its
    /// keep-alive; one that only sends does not.
    pub last_write: Instant,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// Result of draining the socket.
pub struct ReadResult {
    pub bytes: usize,
    /// A hard error (reset): drop the connection.
    pub error: bool,
}

impl Conn {
    pub fn new(id: ConnId, sock: TcpStream, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            id,
            sock,
            peer,
            phase: Phase::Http(HttpPhase {
                parser: HeadParser::new(),
                body: None,
                awaiting: false,
                // A new connection's first head must arrive within --head-timeout, as the
                // option says: a silent connection is a slowloris too, not a keep-alive.
                head_started: Some(now),
                idle_since: now,
                fresh: true,
                cur_keep_alive: true,
                cur_head: false,
                cur_minor: 1,
            }),
            inbuf: Vec::new(),
            outq: OutQueue::new(),
            registered: None,
            closing_since: None,
            write_stall_from: None,
            dead: false,
            relay_known: false,
            armed: None,
            read_pending: false,
            eof: false,
            wr_shut: false,
            pending_accept: None,
            on_dirty_list: false,
            http_stalled: false,
            trusted: false,
            charged: 0,
            last_write: now,
        }
    }

    fn set_phase(&mut self, next: Phase) {
        debug!(
            "{} {} {} -> {}",
            self.id,
            self.peer,
            self.phase.name(),
            next.name()
        );
        self.phase = next;
    }

    pub fn is_closing(&self) -> bool {
        self.closing_since.is_some() || self.dead
    }

    /// The interest this connection needs now (STYLE.md habit 2).
    pub fn interest(&self) -> Interest {
        let want_write = !self.outq.is_empty();
        if want_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// How many bytes the input buffer may hold in the current phase before we stop reading.
    fn read_cap(&self, cfg: &Config) -> usize {
        match &self.phase {
            Phase::Http(h) if h.awaiting || self.http_backlogged(cfg) => cfg.pipeline_buffer_bytes,
            Phase::Http(_) => cfg.max_head_bytes + cfg.read_budget_bytes,
            // tungstenite keeps partial frames in its own buffer; ours only stages reads.
            Phase::Ws(_) => cfg.read_budget_bytes + 64 * 1024,
            // Nothing is expected from an SSE client; read only to notice EOF.
            Phase::Sse(_) => 64 * 1024,
        }
    }

    /// Read until WouldBlock, the per-turn budget, or the buffer cap (STYLE.md habit 3).
    ///
    /// Reads land in the loop's shared `scratch` buffer and only the bytes received are
    /// appended to `inbuf`: an idle connection then holds no read buffer at all (one 64 KiB
    /// buffer per connection would dominate the memory of 10,000 idle subscribers).
    pub fn read_socket(&mut self, cfg: &Config, scratch: &mut [u8]) -> ReadResult {
        let cap = self.read_cap(cfg);
        let mut total = 0usize;
        self.read_pending = false;
        if self.eof {
            return ReadResult {
                bytes: 0,
                error: false,
            };
        }
        let discard = matches!(self.phase, Phase::Sse(_)) || self.closing_since.is_some();
        if discard && self.inbuf.capacity() > 0 {
            // Nothing buffered will be used now. Left in place, it also shrank `room`
            // below: a request refused on its head while its body kept coming was read
            // in slivers of a few hundred bytes, a syscall each (issue 15).
            self.inbuf = Vec::new();
        }
        loop {
            if total >= cfg.read_budget_bytes {
                // Stopped by the budget, not by the socket: the edge will not repeat, so
                // come back next turn.
                self.read_pending = true;
                break;
            }
            if !discard && self.inbuf.len() >= cap {
                // Stopped by the buffer cap: nothing can be read until the buffered bytes
                // are used, and whatever uses them (an answered request: `http_done`) asks
                // for another read. Retrying every turn would spin (pitfall 10).
                break;
            }
            let room = if discard {
                scratch.len()
            } else {
                (cap - self.inbuf.len()).min(scratch.len())
            };
            match self.sock.read(&mut scratch[..room]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    total += n;
                    // An SSE client has nothing to say, and a closing connection reads
                    // only to see the peer's EOF: discard whatever arrives.
                    if !discard {
                        self.inbuf.extend_from_slice(&scratch[..n]);
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(e) if would_block(&e) => break,
                Err(e) => {
                    debug!("{} {} read error: {e}", self.id, self.peer);
                    return ReadResult {
                        bytes: total,
                        error: true,
                    };
                }
            }
        }
        ReadResult {
            bytes: total,
            error: false,
        }
    }

    /// What this connection holds for its peer: input buffer, a body being read, owned
    /// output (the memory budget's measure, budget.rs).
    pub fn held_bytes(&self) -> usize {
        let body = match &self.phase {
            Phase::Http(h) => h
                .body
                .as_ref()
                .map_or(0, |b| b.body.capacity().max(b.reserved)),
            _ => 0,
        };
        self.inbuf.capacity() + body + self.outq.owned_bytes()
    }

    /// Drop everything buffered for the peer, for the memory budget: unread input, a body
    /// being read, output not yet started. The caller then answers or closes.
    pub fn shed_buffers(&mut self) {
        self.inbuf = Vec::new();
        if let Phase::Http(h) = &mut self.phase {
            h.body = None;
        }
        self.outq.discard_unstarted();
    }

    /// Give back the spare capacity of buffers a past burst grew (output queue slots, an
    /// empty input buffer); run with the heap trim, not per request.
    pub fn shrink_idle(&mut self) {
        self.trim_buffers();
        if self.outq.is_empty() {
            self.outq.shrink();
        }
    }

    /// Give back buffer memory that an idle connection no longer needs.
    pub fn trim_buffers(&mut self) {
        if self.inbuf.is_empty() && self.inbuf.capacity() > IDLE_INBUF_CAPACITY {
            self.inbuf = Vec::new();
        }
    }

    /// Advance HTTP framing over the buffered bytes: at most one request leaves per call,
    /// and none while another is in flight (responses go out in request order).
    pub fn http_step(&mut self, cfg: &Config, now: Instant) -> HttpStep {
        let limits = Limits {
            max_head_bytes: cfg.max_head_bytes,
            max_headers: cfg.max_headers,
            max_body_bytes: cfg.max_body_bytes as u64,
        };
        let Phase::Http(h) = &mut self.phase else {
            return HttpStep::Idle;
        };
        if h.awaiting || self.closing_since.is_some() {
            return HttpStep::Idle;
        }
        if h.body.is_none() {
            if self.inbuf.is_empty() {
                if !h.fresh {
                    h.head_started = None;
                }
                return HttpStep::Idle;
            }
            if h.head_started.is_none() {
                h.head_started = Some(now);
            }
            match h.parser.parse(&self.inbuf, &limits) {
                Ok(None) => return HttpStep::Idle,
                Err(e) => return HttpStep::Error(e),
                Ok(Some((head, n))) => {
                    self.inbuf.drain(..n);
                    h.parser.reset();
                    h.head_started = None;
                    h.fresh = false;
                    match head.body {
                        BodyKind::None | BodyKind::Length(0) => {
                            h.awaiting = true;
                            h.cur_keep_alive = head.keep_alive;
                            h.cur_head = head.method == crate::http::request::Method::Head;
                            h.cur_minor = head.minor_version;
                            return HttpStep::Request(head, Vec::new());
                        }
                        _ => {
                            // A refusal of this head answers it and closes.
                            h.cur_keep_alive = false;
                            h.cur_head = false;
                            h.cur_minor = head.minor_version;
                            return HttpStep::Head(head);
                        }
                    }
                }
            }
        }
        if let Some(pb) = h.body.as_mut() {
            match pb.decoder.decode(&self.inbuf, &mut pb.body) {
                Err(e) => return HttpStep::Error(e),
                Ok((used, done)) => {
                    self.inbuf.drain(..used);
                    if done {
                        if let Some(pb) = h.body.take() {
                            h.awaiting = true;
                            h.cur_keep_alive = pb.head.keep_alive;
                            h.cur_head = false;
                            h.cur_minor = pb.head.minor_version;
                            return HttpStep::Request(pb.head, pb.body);
                        }
                    }
                }
            }
        }
        HttpStep::Idle
    }

    /// Read the body of an admitted head, up to `limit` bytes (413 past it).
    pub fn http_begin_body(
        &mut self,
        head: Head,
        limit: usize,
        reserved: usize,
        cfg: &Config,
        now: Instant,
    ) {
        let Phase::Http(h) = &mut self.phase else {
            return;
        };
        // RFC 9110 §10.1.1: send 100 only if the body has not started.
        if head.expect_continue && self.inbuf.is_empty() {
            self.outq.push_slice(CONTINUE_100);
        }
        let decoder = BodyDecoder::new(&head.body, limit as u64)
            .chunk_limits(cfg.max_chunk_line, cfg.max_trailer_bytes);
        // Grow with what arrives rather than trusting the declared length up front.
        let cap = match head.body {
            BodyKind::Length(n) => n.min(64 * 1024) as usize,
            _ => 0,
        };
        h.body = Some(PendingBody {
            head,
            decoder,
            body: Vec::with_capacity(cap),
            started: now,
            reserved,
        });
    }

    /// The request in flight was answered; the connection may read its next one.
    /// `caught_up`: the client had read every earlier answer. Only then does the keep-alive
    /// timer start over: a client that pipelines (or trickles) requests without reading
    /// must not keep its connection forever by asking again (issue 15).
    pub fn http_done(&mut self, now: Instant, caught_up: bool) {
        if let Phase::Http(h) = &mut self.phase {
            h.awaiting = false;
            if caught_up {
                h.idle_since = now;
            }
        }
        self.read_pending = true;
    }

    /// Answers wait unread beyond `--pipeline-outq-bytes`: the next pipelined request is
    /// not processed (nor more input read) until the client reads.
    pub fn http_backlogged(&self, cfg: &Config) -> bool {
        matches!(self.phase, Phase::Http(_)) && self.outq.bytes() > cfg.pipeline_outq_bytes
    }

    /// (keep-alive, HEAD request, HTTP minor version) of the request in flight.
    ///
    /// A peer that half-closed after pipelining more requests is still owed their
    /// responses, so EOF ends the connection only after the last buffered request: that
    /// response says `Connection: close`, the ones before it keep the connection open.
    pub fn http_meta(&self) -> (bool, bool, u8) {
        match &self.phase {
            Phase::Http(h) => {
                let last = self.eof && self.inbuf.is_empty();
                (h.cur_keep_alive && !last, h.cur_head, h.cur_minor)
            }
            _ => (false, false, 1),
        }
    }

    pub fn http_awaiting(&self) -> bool {
        matches!(&self.phase, Phase::Http(h) if h.awaiting)
    }

    /// EOF while in HTTP and no complete request buffered: close, unless a request is in
    /// flight (its answer, and the pipelined requests behind it, come first: `http_meta`).
    pub fn http_eof_should_close(&self) -> bool {
        match &self.phase {
            Phase::Http(h) => !h.awaiting,
            _ => true,
        }
    }

    pub fn upgrade_ws(&mut self, endpoint: Endpoint, cfg: &Config, now: Instant) {
        let (mut limits, ping, idle) = ws_settings(endpoint, cfg);
        let preauth = endpoint == Endpoint::Module;
        // /ws/events authenticates before the upgrade (relay/gateway.rs).
        self.trusted = endpoint == Endpoint::Events;
        if preauth {
            limits.max_message = limits.max_message.min(cfg.module_preauth_max_message);
            limits.max_frame = limits.max_frame.min(cfg.module_preauth_max_message);
        }
        self.set_phase(Phase::Ws(WsPhase {
            link: Link::new(limits),
            endpoint,
            last_rx: now,
            next_ping: ping.map(|p| now + p),
            ping_interval: ping,
            idle_timeout: idle,
            more: false,
            preauth,
        }));
        // Bytes that followed the handshake in the same read are frames: keep them.
        self.read_pending = true;
    }

    pub fn start_sse(&mut self, cfg: &Config, now: Instant) {
        // Every stream route checked a key first.
        self.trusted = true;
        self.set_phase(Phase::Sse(SsePhase {
            next_keepalive: now + cfg.sse_keepalive,
            interval: cfg.sse_keepalive,
        }));
        self.inbuf.clear();
    }

    /// The relay accepted this WebSocket's credentials: its endpoint's full limits apply.
    pub fn ws_authenticated(&mut self, cfg: &Config) {
        if let Phase::Ws(w) = &mut self.phase {
            if w.preauth {
                w.preauth = false;
                let (limits, _, _) = ws_settings(w.endpoint, cfg);
                w.link.set_limits(limits.max_message, limits.max_frame);
            }
        }
    }

    /// A world link still waiting for its auth message to succeed.
    pub fn ws_preauth(&self) -> bool {
        matches!(&self.phase, Phase::Ws(w) if w.preauth)
    }

    pub fn endpoint(&self) -> Option<Endpoint> {
        match &self.phase {
            Phase::Ws(w) => Some(w.endpoint),
            _ => None,
        }
    }

    pub fn is_sse(&self) -> bool {
        matches!(self.phase, Phase::Sse(_))
    }

    /// Parse WebSocket messages from the buffer (bounded per call for fairness).
    /// Returns Ok(true) if the message budget stopped it.
    pub fn ws_read(
        &mut self,
        events: &mut Vec<WsEvent>,
        max_messages: usize,
        now: Instant,
    ) -> Result<bool, WsClose> {
        let Phase::Ws(w) = &mut self.phase else {
            return Ok(false);
        };
        if self.inbuf.is_empty() && !w.more {
            return Ok(false);
        }
        if !self.inbuf.is_empty() {
            w.last_rx = now;
        }
        let mut out = Vec::new();
        let r = w.link.read(&mut self.inbuf, &mut out, events, max_messages);
        self.outq.push(out);
        w.more = matches!(r, Ok(true));
        if w.more {
            self.read_pending = true;
        }
        r
    }

    /// Queue one text message, framing it here; the payload is moved, not copied.
    pub fn ws_send_owned(&mut self, payload: Vec<u8>) {
        if self.is_closing() {
            return;
        }
        let mut head = Vec::with_capacity(10);
        frame_text_into(payload.len(), &mut head);
        self.outq.push(head);
        self.outq.push(payload);
    }

    /// Queue one binary message (the echo route only).
    pub fn ws_send_binary(&mut self, data: &[u8]) {
        if self.is_closing() {
            return;
        }
        if let Phase::Ws(w) = &mut self.phase {
            let mut out = Vec::with_capacity(data.len() + 10);
            w.link.send_binary(data, &mut out);
            self.outq.push(out);
        }
    }

    /// Start the closing handshake (WebSocket) or end the stream, then linger.
    pub fn close_with(&mut self, close: &WsClose, now: Instant) {
        if self.is_closing() {
            return;
        }
        match &mut self.phase {
            Phase::Ws(w) => {
                let mut out = Vec::new();
                w.link.close(close, &mut out);
                self.outq.push(out);
            }
            Phase::Sse(_) | Phase::Http(_) => {}
        }
        self.begin_close(now);
    }

    /// Stop reading requests; close once the queue drains or the linger passes.
    pub fn begin_close(&mut self, now: Instant) {
        if self.closing_since.is_none() {
            debug!("{} {} closing ({})", self.id, self.peer, self.phase.name());
            self.closing_since = Some(now);
        }
    }

    /// Write what the socket takes. Returns Err on a hard error (drop the connection).
    /// Keeps `write_stall_from` current: reset by every byte written, cleared when empty.
    pub fn flush(&mut self, budget: usize, now: Instant) -> io::Result<Flush> {
        let before = self.outq.written_total;
        let r = self.outq.write_to(&mut self.sock, budget);
        if self.outq.written_total != before {
            self.last_write = now;
        }
        let r = r?;
        if r == Flush::Drained && self.write_stall_from.is_some() {
            // A response that took a while to leave: the keep-alive idle time starts now,
            // not when it was queued.
            if let Phase::Http(h) = &mut self.phase {
                if !h.awaiting {
                    h.idle_since = now;
                }
            }
        }
        self.write_stall_from = match r {
            Flush::Drained => None,
            _ if self.outq.written_total != before => Some(now),
            _ => Some(self.write_stall_from.unwrap_or(now)),
        };
        Ok(r)
    }

    /// Our last byte is written: send our FIN and start the close linger, during which
    /// the peer's EOF (or the deadline) ends the connection. Lingering instead of closing
    /// at once keeps unread input from turning our last response into a reset (RFC 9112
    /// §9.6).
    pub fn start_linger(&mut self, now: Instant) {
        if !self.wr_shut {
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
            self.wr_shut = true;
            self.closing_since = Some(now);
        }
    }

    /// When a queue that holds bytes stops counting as making progress.
    fn stall_deadline(&self, cfg: &Config) -> Option<Instant> {
        self.write_stall_from
            .filter(|_| !self.outq.is_empty())
            .map(|s| s + cfg.slow_consumer_grace)
    }

    /// The earliest instant at which this connection needs attention.
    pub fn deadline(&self, cfg: &Config) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| {
            d = Some(match d {
                Some(x) if x <= t => x,
                _ => t,
            })
        };
        if let Some(s) = self.closing_since {
            if self.wr_shut {
                at(s + cfg.close_linger);
            } else {
                // Still writing: governed by write progress, not by the linger.
                at(self
                    .stall_deadline(cfg)
                    .unwrap_or(s + cfg.slow_consumer_grace));
            }
            return d;
        }
        if let Some(s) = self.outq.soft_since {
            at(s + cfg.slow_consumer_grace);
        }
        match &self.phase {
            Phase::Http(h) => {
                if let Some(pb) = &h.body {
                    at(pb.started + cfg.request_body_timeout);
                } else if let (true, Some(s)) = (h.fresh && self.inbuf.is_empty(), h.head_started) {
                    at(s + cfg.head_timeout.min(cfg.keepalive_timeout));
                } else if let Some(s) = h.head_started {
                    at(s + cfg.head_timeout);
                } else if let Some(t) = self.stall_deadline(cfg) {
                    // A response still leaving is not idle: it ends only if it stalls.
                    at(t);
                } else if !h.awaiting {
                    at(h.idle_since.max(self.last_write) + cfg.keepalive_timeout);
                }
            }
            Phase::Ws(w) => {
                if let Some(p) = w.next_ping {
                    at(p);
                }
                if let Some(i) = w.idle_timeout {
                    at(w.last_rx + i);
                }
            }
            Phase::Sse(s) => at(s.next_keepalive),
        }
        d
    }

    /// Act on a due deadline. Periodic work (pings, keepalives) is done here directly;
    /// anything that ends the connection is returned for the loop to carry out.
    pub fn on_deadline(&mut self, now: Instant, cfg: &Config) -> Due {
        if let Some(s) = self.closing_since {
            if self.wr_shut {
                return if now >= s + cfg.close_linger {
                    Due::Drop("close linger over")
                } else {
                    Due::Nothing
                };
            }
            let stall = self
                .stall_deadline(cfg)
                .unwrap_or(s + cfg.slow_consumer_grace);
            return if now >= stall {
                Due::Drop("no write progress while closing")
            } else {
                Due::Nothing
            };
        }
        if let Some(s) = self.outq.soft_since {
            if now >= s + cfg.slow_consumer_grace {
                return Due::SlowConsumer;
            }
        }
        let stall = self.stall_deadline(cfg);
        match &mut self.phase {
            Phase::Http(h) => {
                if let Some(pb) = &h.body {
                    if now >= pb.started + cfg.request_body_timeout {
                        return Due::HeadTimeout;
                    }
                } else if let (true, Some(s)) = (h.fresh && self.inbuf.is_empty(), h.head_started) {
                    // Not a byte since the accept: closed quietly, as an idle keep-alive is.
                    if now >= s + cfg.head_timeout.min(cfg.keepalive_timeout) {
                        return Due::Drop("no request since the connection opened");
                    }
                } else if let Some(s) = h.head_started {
                    if now >= s + cfg.head_timeout {
                        return Due::HeadTimeout;
                    }
                } else if let Some(t) = stall {
                    if now >= t {
                        return Due::Drop("no write progress on a response");
                    }
                } else if !h.awaiting
                    && now >= h.idle_since.max(self.last_write) + cfg.keepalive_timeout
                {
                    return Due::Drop("keep-alive idle timeout");
                }
                Due::Nothing
            }
            Phase::Ws(w) => {
                if let Some(i) = w.idle_timeout {
                    if now >= w.last_rx + i {
                        return Due::WsIdle;
                    }
                }
                if let (Some(p), Some(iv)) = (w.next_ping, w.ping_interval) {
                    if now >= p {
                        let mut out = Vec::new();
                        w.link.ping(b"keepalive", &mut out);
                        self.outq.push(out);
                        w.next_ping = Some(now + iv);
                    }
                }
                Due::Nothing
            }
            Phase::Sse(s) => {
                if now >= s.next_keepalive {
                    self.outq.push_slice(b": keepalive\n\n");
                    s.next_keepalive = now + s.interval;
                }
                Due::Nothing
            }
        }
    }

    /// Apply the queue limits after new output was queued. Returns true if the connection is
    /// now a slow consumer over its hard limit.
    pub fn over_hard_limit(&mut self, cfg: &Config, now: Instant) -> bool {
        let (hard_bytes, hard_msgs) = match &self.phase {
            Phase::Ws(w) => match w.endpoint {
                Endpoint::Module => (cfg.module_outq_hard_bytes, usize::MAX),
                Endpoint::Events => (cfg.outq_hard_bytes, cfg.events_max_queue_messages),
                Endpoint::Api => (cfg.outq_hard_bytes, cfg.outq_hard_messages),
                // tools/README.md: a 16 MiB message must get back out, so the echo queue
                // holds a few of them, but it is bounded like every other queue: a client
                // that never reads is a slow consumer here too (STYLE.md pitfall 5).
                Endpoint::Echo => (
                    cfg.outq_hard_bytes
                        .max(cfg.echo_max_message.saturating_mul(4)),
                    usize::MAX,
                ),
            },
            Phase::Sse(_) => (cfg.outq_hard_bytes, cfg.outq_hard_messages),
            // Our own responses: bounded by the body cap, never a slow consumer.
            Phase::Http(_) => return false,
        };
        let bytes = self.outq.bytes();
        if bytes > cfg.outq_soft_bytes {
            if self.outq.soft_since.is_none() {
                self.outq.soft_since = Some(now);
            }
        } else {
            self.outq.soft_since = None;
        }
        bytes > hard_bytes || self.outq.chunks() > hard_msgs
    }
}

/// Frame limits, ping interval and idle timeout for an endpoint.
pub fn ws_settings(
    endpoint: Endpoint,
    cfg: &Config,
) -> (WsLimits, Option<Duration>, Option<Duration>) {
    match endpoint {
        Endpoint::Module => (
            WsLimits {
                max_message: cfg.module_max_message,
                max_frame: cfg.module_max_frame,
                // NOTE: tungstenite zero-fills up to a whole chunk before every read of its
                // input (`FrameCodec::read_in`), so a big chunk costs a big memset per small
                // message; 4 KiB keeps that small and large messages still stream through.
                read_chunk: 4096,
            },
            Some(cfg.module_ping_interval),
            Some(cfg.module_idle_timeout),
        ),
        Endpoint::Api => (
            WsLimits {
                max_message: cfg.api_max_message,
                max_frame: cfg.api_max_frame,
                read_chunk: 4096,
            },
            Some(cfg.api_ping_interval),
            Some(cfg.api_idle_timeout),
        ),
        Endpoint::Events => (
            WsLimits {
                max_message: cfg.events_max_frame,
                max_frame: cfg.events_max_frame,
                // Many idle listeners that send almost nothing: keep each one small.
                read_chunk: 1024,
            },
            Some(cfg.events_ping_interval),
            Some(cfg.events_pong_timeout),
        ),
        // Autobahn: no heartbeat during a case (tools/README.md), 16 MiB messages.
        Endpoint::Echo => (
            WsLimits {
                max_message: cfg.echo_max_message,
                max_frame: cfg.echo_max_message,
                read_chunk: 4096,
            },
            None,
            None,
        ),
    }
}
