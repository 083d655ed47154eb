//! The event loop: one thread, one `mio::Poll`, the listener, the signal pipe, the slab of
//! connections and the deadline heap. It is the only module that sees both sockets and the
//! relay core: it turns readiness into `Input`s, applies the relay's `Action`s, and owns the
//! registry (ARCHITECTURE.md, "One turn of the loop").
//!
//! Order of a turn: poll (timeout = earliest deadline, or zero while work is left over from a
//! budget) → read every ready connection under its budget → due deadlines → one write attempt
//! per connection with queued bytes → reap closed ones. (Owner changes are saved by the relay
//! in the turn that makes them, through the store attached in `bind`: relay/durable.rs.)

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::conn::{Conn, Due, HttpStep, Phase};
use crate::deadline::Deadlines;
use crate::error::{Fatal, HttpError, WsClose};
use crate::http::request::Head;
use crate::http::response::{self, DateCache, Response, WriteCtx};
use crate::ids::ConnId;
use crate::metrics::SlowKind;
use crate::outq::Flush;
use crate::relay::io::{Action, Bytes, Endpoint, Input, Timer};
use crate::relay::Relay;
use crate::sdnotify::{self, Notifier};
use crate::store::Store;
use crate::ws::handshake;
use crate::ws::link::{frame_text_into, WsEvent};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const FIRST_CONN: usize = 2;

/// WebSocket messages parsed from one connection per turn.
const WS_MESSAGES_PER_TURN: usize = 64;
/// How long accepting pauses after EMFILE/ENFILE before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Least time between two systemd `STATUS=` updates: busy connect/disconnect churn costs
/// one datagram a second at most.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// TEST ONLY: when this variable holds a number of milliseconds, SIGUSR1 makes the loop
/// sleep that long, as a wedged loop would (tests/sdnotify.rs proves the systemd watchdog
/// then stops hearing from us). Only a local signal can trigger it, never a network peer;
/// without the variable SIGUSR1 keeps its default action.
const TEST_WEDGE_ENV: &str = "FVTT_RELAY_TEST_WEDGE_MS";

pub const SERVER_NAME: &str = concat!("fvtt-relay/", env!("CARGO_PKG_VERSION"));

/// What the loop's heap carries.
#[derive(Clone, Debug)]
enum LoopTimer {
    Conn(ConnId),
    Relay(Timer),
    ResumeAccept,
    ShutdownDeadline,
    /// Time to tell systemd's watchdog that the loop is alive.
    Watchdog,
    /// A rate-limited `STATUS=` update is due.
    Status,
}

pub struct Server {
    cfg: Rc<Config>,
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    conns: Slab<Conn>,
    next_gen: u32,
    timers: Deadlines<LoopTimer>,
    relay: Relay,
    per_ip: HashMap<IpAddr, u32>,
    accept_paused: bool,
    emfile_logged: bool,
    /// Connections with unfinished input work (budget hit, request answered, upgrade tail).
    ready: Vec<ConnId>,
    /// Connections with bytes queued (or marked dead) this turn. Every place that marks a
    /// connection dead also marks it dirty, so reaping never scans the whole slab.
    dirty: Vec<ConnId>,
    /// Dead connections found by the flush, removed by `reap`.
    doomed: Vec<ConnId>,
    actions: Vec<Action>,
    shutdown_at: Option<Instant>,
    /// World links kept open after SIGTERM because an HTTP caller still waits for their
    /// reply; each gets its 1001 once none does, or when the grace ends.
    held_links: Vec<ConnId>,
    date: DateCache,
    local_addr: SocketAddr,
    /// One read buffer for every connection (see `Conn::read_socket`).
    scratch: Vec<u8>,
    /// The origin of the timer grain (see `coarse`).
    epoch: Instant,
    /// systemd notifications; inert without `NOTIFY_SOCKET`.
    notify: Notifier,
    /// (worlds online, clients) last sent as `STATUS=`, and when.
    status_shown: Option<(usize, usize)>,
    status_sent_at: Option<Instant>,
    status_timer: bool,
    /// Open client connections: SSE streams, `/ws/api` and `/ws/events` sockets.
    clients: usize,
    /// TEST ONLY: how long SIGUSR1 blocks the loop (`TEST_WEDGE_ENV`).
    test_wedge: Option<Duration>,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// Accept errors that mean "out of descriptors or memory": back off, keep serving.
fn resource_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(24) /* EMFILE */ | Some(23) /* ENFILE */ | Some(105) /* ENOBUFS */ | Some(12) /* ENOMEM */
    )
}

/// Connection deadlines (heartbeats, idle and head timeouts, lingers) are rounded up to this
/// grain, so thousands of idle subscribers whose pings fall due at scattered instants wake
/// the loop a few times a second in batches instead of once per connection. Relay timers
/// (request timeouts, auth deadlines) are not rounded.
const TIMER_GRAIN: Duration = Duration::from_millis(250);

/// `at` rounded up to the next multiple of `TIMER_GRAIN` after `epoch`.
fn coarse(epoch: Instant, at: Instant) -> Instant {
    let since = at.saturating_duration_since(epoch).as_nanos();
    let grain = TIMER_GRAIN.as_nanos();
    let rounded = since.div_ceil(grain) * grain;
    epoch + Duration::from_nanos(rounded.min(u64::MAX as u128) as u64)
}

/// The client's address for rate limits, allow-lists and logs: the TCP peer, or, behind a
/// reverse proxy on this host (`trust_forwarded`), the address that proxy appended to
/// `X-Forwarded-For` (the rightmost entry: earlier ones are whatever the client claimed).
fn client_ip(peer: IpAddr, head: &Head, trust_forwarded: bool) -> IpAddr {
    if !trust_forwarded || !peer.is_loopback() {
        return peer;
    }
    head.headers
        .iter()
        .filter(|h| h.name == "x-forwarded-for")
        .filter_map(|h| std::str::from_utf8(&h.value).ok())
        .flat_map(|v| v.split(','))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .next_back()
        .unwrap_or(peer)
}

impl Server {
    /// Bind the listener and prepare the loop. Nothing is accepted until `run`.
    /// The relay saves its own owner changes through `store` (relay/durable.rs).
    pub fn bind(cfg: Config, store: Store, mut relay: Relay) -> Result<Server, Fatal> {
        relay.set_saver(Box::new(store));
        let poll = Poll::new().map_err(|e| Fatal::Io(format!("poll: {e}")))?;
        let mut listener = TcpListener::bind(cfg.listen)
            .map_err(|e| Fatal::Bind(format!("{}: {e}", cfg.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Fatal::Bind(format!("{}: {e}", cfg.listen)))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| Fatal::Io(format!("register listener: {e}")))?;
        let test_wedge = std::env::var(TEST_WEDGE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        let mut wanted = vec![SIGTERM, SIGINT];
        if test_wedge.is_some() {
            wanted.push(SIGUSR1);
        }
        let mut signals = Signals::new(wanted).map_err(|e| Fatal::Io(format!("signals: {e}")))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| Fatal::Io(format!("register signals: {e}")))?;
        Ok(Server {
            cfg: Rc::new(cfg),
            poll,
            listener,
            signals,
            conns: Slab::new(),
            next_gen: 0,
            timers: Deadlines::new(),
            relay,
            per_ip: HashMap::new(),
            accept_paused: false,
            emfile_logged: false,
            ready: Vec::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            actions: Vec::new(),
            shutdown_at: None,
            held_links: Vec::new(),
            date: DateCache::new(),
            local_addr,
            scratch: vec![0u8; crate::conn::READ_CHUNK],
            epoch: Instant::now(),
            notify: Notifier::from_env(),
            status_shown: None,
            status_sent_at: None,
            status_timer: false,
            clients: 0,
            test_wedge,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Run until a signal asks us to stop and the grace period ends.
    pub fn run(&mut self) -> Result<(), Fatal> {
        let mut events = Events::with_capacity(1024);
        let mut due = Vec::new();
        self.notify_ready(Instant::now());
        loop {
            let now = Instant::now();
            let mut timeout = self.timers.next_timeout(now);
            if !self.ready.is_empty() {
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if interrupted(&e) {
                    continue;
                }
                return Err(Fatal::Io(format!("poll: {e}")));
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(now),
                    SIGNALS => self.on_signals(now),
                    Token(t) => {
                        let key = t - FIRST_CONN;
                        let Some(c) = self.conns.get_mut(key) else {
                            continue; // closed earlier in this batch (pitfall 2)
                        };
                        if c.dead {
                            continue;
                        }
                        let id = c.id;
                        if ev.is_writable() {
                            self.mark_dirty(id);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(id, now);
                        }
                    }
                }
            }
            // Work left over from budgets, answered requests and upgrades.
            let ready = std::mem::take(&mut self.ready);
            for id in ready {
                self.on_readable(id, now);
            }
            due.clear();
            self.timers.expired(now, &mut due);
            for t in due.drain(..) {
                self.on_timer(t, now);
            }
            if !self.held_links.is_empty() {
                self.release_links(now, false);
            }
            self.flush_dirty();
            self.reap();
            if self.notify.enabled() && self.shutdown_at.is_none() {
                self.update_status(now);
            }
            if let Some(at) = self.shutdown_at {
                if self.conns.is_empty() || Instant::now() >= at {
                    // Last-used times wait for a timer that will not fire now: save them.
                    self.relay.save_before_exit();
                    // Grace over: the callers still waiting get 503 before their world link
                    // closes (its close would fail them with 502 "Foundry client
                    // disconnected", which blames the world for our exit).
                    self.fail_in_flight(Instant::now());
                    self.release_links(Instant::now(), true);
                    self.flush_dirty();
                    info!(
                        "shutdown complete ({} connections left open)",
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// systemd: we listen and the state is loaded (`Server::bind` ran after `Store::open`),
    /// so dependent units may start. The watchdog's first due time is armed here.
    fn notify_ready(&mut self, now: Instant) {
        if !self.notify.enabled() {
            return;
        }
        let cur = (self.relay.worlds_online(), self.clients);
        self.notify.send(&format!(
            "READY=1\nSTATUS={}",
            sdnotify::status_line(cur.0, cur.1)
        ));
        self.status_shown = Some(cur);
        self.status_sent_at = Some(now);
        if let Some(every) = self.notify.watchdog() {
            info!("systemd watchdog: WATCHDOG=1 every {every:?}");
            self.timers.arm(now + every, LoopTimer::Watchdog);
        }
    }

    /// Send `STATUS=` when the worlds or clients changed, at most once per
    /// `STATUS_INTERVAL`. A change inside the interval arms one timer for its end, so the
    /// last change is always shown and an idle relay is never woken for nothing.
    fn update_status(&mut self, now: Instant) {
        let cur = (self.relay.worlds_online(), self.clients);
        if self.status_shown == Some(cur) {
            return;
        }
        if let Some(due) = self.status_sent_at.map(|t| t + STATUS_INTERVAL) {
            if now < due {
                if !self.status_timer {
                    self.status_timer = true;
                    self.timers.arm(due, LoopTimer::Status);
                }
                return;
            }
        }
        self.notify
            .send(&format!("STATUS={}", sdnotify::status_line(cur.0, cur.1)));
        self.status_shown = Some(cur);
        self.status_sent_at = Some(now);
    }

    fn on_signals(&mut self, now: Instant) {
        let mut stop = false;
        let mut wedge = false;
        for sig in self.signals.pending() {
            if sig == SIGTERM || sig == SIGINT {
                stop = true;
            }
            if sig == SIGUSR1 {
                wedge = true;
            }
        }
        if let Some(d) = self.test_wedge.filter(|_| wedge) {
            warn!("SIGUSR1: blocking the loop for {d:?} ({TEST_WEDGE_ENV}, test only)");
            std::thread::sleep(d);
        }
        if stop && self.shutdown_at.is_none() {
            self.begin_shutdown(now);
        }
    }

    /// Stop accepting, close WebSockets with 1001, end streams, let exchanges in flight
    /// finish within the grace period. A world link that an HTTP request in flight waits
    /// on stays open until that request is answered (or the grace ends), so a world that
    /// answers in time still reaches its caller (issue 15).
    fn begin_shutdown(&mut self, now: Instant) {
        info!(
            "shutting down: {} connections, grace {:?}",
            self.conns.len(),
            self.cfg.shutdown_grace
        );
        self.notify.send(&format!(
            "STOPPING=1\nSTATUS=Shutting down: {} connections, grace {:?}",
            self.conns.len(),
            self.cfg.shutdown_grace
        ));
        let at = now + self.cfg.shutdown_grace;
        self.shutdown_at = Some(at);
        self.timers.arm(at, LoopTimer::ShutdownDeadline);
        if let Err(e) = self.poll.registry().deregister(&mut self.listener) {
            warn!("deregister listener: {e}");
        }
        let ids: Vec<(ConnId, bool)> = self
            .conns
            .iter()
            .map(|(_, c)| (c.id, c.endpoint() == Some(Endpoint::Module)))
            .collect();
        for (id, module) in ids {
            if module && self.relay.link_owes_http_reply(id) {
                self.held_links.push(id);
                continue;
            }
            if let Some(c) = self.conn_mut(id) {
                match &c.phase {
                    Phase::Ws(_) => c.close_with(&WsClose::GOING_AWAY, now),
                    Phase::Sse(_) => c.begin_close(now),
                    Phase::Http(_) if !c.http_awaiting() => c.begin_close(now),
                    Phase::Http(_) => {} // answered (then closed) or failed at the deadline
                }
            }
            self.mark_dirty(id);
        }
    }

    /// Close (1001) the held world links that no HTTP caller waits on any more, or all of
    /// them when the grace is over (`all`).
    fn release_links(&mut self, now: Instant, all: bool) {
        let mut held = std::mem::take(&mut self.held_links);
        held.retain(|&id| {
            if !all && self.relay.link_owes_http_reply(id) {
                return true;
            }
            if let Some(c) = self.conn_mut(id) {
                c.close_with(&WsClose::GOING_AWAY, now);
                self.mark_dirty(id);
                self.rearm(id);
            }
            false
        });
        self.held_links = held;
    }

    /// The grace period is over: every HTTP exchange still waiting for the relay gets a 503
    /// (issue 3: "finish or fail in-flight HTTP exchanges"; a silent close would look like a
    /// network fault to the client), written with one best-effort flush before we exit.
    fn fail_in_flight(&mut self, now: Instant) {
        let waiting: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.dead && !c.is_closing() && c.http_awaiting())
            .map(|(_, c)| c.id)
            .collect();
        if waiting.is_empty() {
            return;
        }
        info!("failing {} in-flight requests with 503", waiting.len());
        for id in waiting {
            self.respond(id, Response::error(503, "Server shutting down"), true, now);
        }
        self.flush_dirty();
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        match self.conns.get_mut(id.key) {
            Some(c) if c.id.gen == id.gen && !c.dead => Some(c),
            _ => None,
        }
    }

    /// Put a connection on this turn's flush list once (a flag on the connection dedups, so
    /// a fan-out to 10,000 sockets needs no sort).
    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id.key) {
            if c.id == id && !c.on_dirty_list {
                c.on_dirty_list = true;
                self.dirty.push(id);
            }
        }
    }

    // ---------------------------------------------------------------- accept

    fn accept_all(&mut self, now: Instant) {
        if self.accept_paused || self.shutdown_at.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((sock, peer)) => self.on_accept(sock, peer, now),
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) if resource_exhausted(&e) => {
                    // Pitfall 7: edge-triggered, so the listener stays "ready" while we
                    // pause; the timer retries accept() without waiting for a new edge.
                    if !self.emfile_logged {
                        error!("accept: {e}; pausing accepts (logged once)");
                        self.emfile_logged = true;
                    }
                    self.accept_paused = true;
                    self.timers
                        .arm(now + ACCEPT_BACKOFF, LoopTimer::ResumeAccept);
                    break;
                }
                Err(e) => {
                    // ECONNABORTED and friends concern one peer only.
                    debug!("accept: {e}");
                }
            }
        }
    }

    fn on_accept(&mut self, mut sock: TcpStream, peer: SocketAddr, now: Instant) {
        let ip = peer.ip();
        let per_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.conns.len() >= self.cfg.max_connections
            || per_ip >= self.cfg.max_connections_per_ip as u32
        {
            // Accepted and closed at once with 503, so the client learns why instead of
            // waiting in the backlog. Best effort: one non-blocking write, then close.
            let body = br#"{"error":"Too many connections"}"#;
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n",
                body.len()
            );
            let mut msg = head.into_bytes();
            msg.extend_from_slice(body);
            let _ = sock.write(&msg);
            let _ = sock.shutdown(Shutdown::Both);
            self.relay.metrics_mut().connections_refused += 1;
            warn!("{peer}: connection refused (limit reached)");
            return;
        }
        let _ = sock.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.next_gen = self.next_gen.wrapping_add(1);
        let id = ConnId {
            key,
            gen: self.next_gen,
        };
        let mut conn = Conn::new(id, sock, peer, now);
        if let Err(e) = self.poll.registry().register(
            &mut conn.sock,
            Token(key + FIRST_CONN),
            Interest::READABLE,
        ) {
            warn!("{peer}: register: {e}");
            return;
        }
        conn.registered = Some(Interest::READABLE);
        entry.insert(conn);
        *self.per_ip.entry(ip).or_insert(0) += 1;
        let m = self.relay.metrics_mut();
        m.connections_accepted += 1;
        m.connections_open += 1;
        debug!("{id} {peer} accepted");
        self.rearm(id);
        // A request may already be waiting (edge-triggered: read now).
        self.ready.push(id);
    }

    // ---------------------------------------------------------------- input

    fn on_readable(&mut self, id: ConnId, now: Instant) {
        let cfg = self.cfg.clone();
        let Some(c) = self.conns.get_mut(id.key).filter(|c| c.id == id && !c.dead) else {
            return;
        };
        let r = c.read_socket(&cfg, &mut self.scratch);
        if r.error {
            c.dead = true;
            self.mark_dirty(id);
            return;
        }
        if c.closing_since.is_some() {
            // The peer's EOF ends a closing connection only once everything queued for it
            // has been written (the flush decides): a client that half-closes right after
            // its request still reads our answer (issue 15).
            if c.eof {
                self.mark_dirty(id);
            }
            return;
        }
        match &c.phase {
            Phase::Http(_) => self.http_input(id, now),
            Phase::Ws(_) => self.ws_input(id, now),
            Phase::Sse(_) => {
                if c.eof {
                    c.dead = true;
                    self.mark_dirty(id);
                }
            }
        }
        if let Some(c) = self.conn_mut(id) {
            c.trim_buffers();
            if c.read_pending {
                self.ready.push(id);
            }
        }
        self.rearm(id);
    }

    fn http_input(&mut self, id: ConnId, now: Instant) {
        let cfg = self.cfg.clone();
        loop {
            let Some(c) = self.conn_mut(id) else { return };
            if !matches!(c.phase, Phase::Http(_)) {
                return;
            }
            match c.http_step(&cfg, now) {
                HttpStep::Idle => {
                    let eof = c.eof;
                    if !c.outq.is_empty() {
                        self.mark_dirty(id); // 100 Continue
                    }
                    let Some(c) = self.conn_mut(id) else { return };
                    if eof && c.http_eof_should_close() {
                        c.begin_close(now);
                        self.mark_dirty(id);
                    }
                    return;
                }
                HttpStep::Error(e) => {
                    debug!("{id} {} bad request: {e}", c.peer);
                    self.respond_error(id, e, now);
                    return;
                }
                HttpStep::Request(head, body) => {
                    self.dispatch(id, head, body, now);
                    // Answered synchronously? Then loop for a pipelined request.
                    let Some(c) = self.conn_mut(id) else { return };
                    if c.http_awaiting() || c.is_closing() {
                        return;
                    }
                }
            }
        }
    }

    /// Route a complete request: test echo upgrade, other upgrades (validated here, decided
    /// by the relay), or a plain request for the relay.
    fn dispatch(&mut self, id: ConnId, mut head: Head, body: Vec<u8>, now: Instant) {
        let trust = self.cfg.trust_forwarded;
        let Some(c) = self.conn_mut(id) else { return };
        let peer = client_ip(c.peer.ip(), &head, trust);
        // X-Forwarded-* reach the relay only from a trusted proxy on this host; from anyone
        // else they are whatever a client claims, so they are dropped here.
        if !(trust && c.peer.ip().is_loopback()) {
            head.headers.retain(|h| !h.name.starts_with("x-forwarded-"));
        }
        if head.wants_upgrade {
            let getter = |name: &str| -> Option<String> {
                let vals: Vec<&str> = head
                    .headers
                    .iter()
                    .filter(|h| h.name == name)
                    .filter_map(|h| std::str::from_utf8(&h.value).ok())
                    .collect();
                if vals.is_empty() {
                    None
                } else {
                    Some(vals.join(", "))
                }
            };
            match handshake::validate(head.method_raw.as_str(), head.minor_version, &getter) {
                Err(e) => {
                    let mut resp = Response::error(e.status, e.message);
                    if e.status == 426 {
                        resp = resp.header("Sec-WebSocket-Version", "13");
                    }
                    self.respond(id, resp, true, now);
                }
                Ok(key) => {
                    let accept = handshake::accept_key(&key);
                    let is_echo = head.path == "/test/echo";
                    if let Some(c) = self.conn_mut(id) {
                        c.pending_accept = Some(accept);
                    }
                    if is_echo && self.cfg.test_echo {
                        self.accept_ws(id, Endpoint::Echo, now);
                    } else {
                        self.send_to_relay(
                            Input::Upgrade {
                                conn: id,
                                peer,
                                head: &head,
                            },
                            now,
                        );
                    }
                }
            }
            return;
        }
        self.send_to_relay(
            Input::Request {
                conn: id,
                peer,
                head: &head,
                body,
            },
            now,
        );
    }

    fn ws_input(&mut self, id: ConnId, now: Instant) {
        let echo = self.conn_mut(id).and_then(|c| c.endpoint()) == Some(Endpoint::Echo);
        if !echo {
            self.ws_input_step(id, now, WS_MESSAGES_PER_TURN);
            return;
        }
        // The echo route answers inside the loop, so it reads one message at a time: each
        // echo is framed before the link reads a Close behind it. Read in one batch, the
        // link has already answered that Close when we echo, and tungstenite refuses data
        // after it (RFC 6455 §5.5.1), so the echo was lost (tests/regressions.rs,
        // pong_flushed_after_write_blocked). Same budget per turn as every connection.
        for _ in 0..WS_MESSAGES_PER_TURN {
            if !self.ws_input_step(id, now, 1) {
                break;
            }
        }
    }

    /// Parse up to `budget` messages and act on them. True when the budget stopped it and
    /// the connection is still open (more may be buffered).
    fn ws_input_step(&mut self, id: ConnId, now: Instant, budget: usize) -> bool {
        let mut events = Vec::new();
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        let endpoint = c.endpoint();
        let result = c.ws_read(&mut events, budget, now);
        let eof = c.eof;
        self.mark_dirty(id);
        for ev in events {
            match ev {
                WsEvent::Text(text) => {
                    if endpoint == Some(Endpoint::Echo) {
                        if let Some(c) = self.conn_mut(id) {
                            c.ws_send_owned(text.into_bytes());
                        }
                    } else {
                        self.send_to_relay(Input::WsText { conn: id, text }, now);
                    }
                }
                WsEvent::Binary(data) => {
                    if endpoint == Some(Endpoint::Echo) {
                        if let Some(c) = self.conn_mut(id) {
                            c.ws_send_binary(&data);
                        }
                    } else {
                        // The module and the client APIs speak JSON text only; a binary
                        // frame is ignored like any message we do not understand.
                        debug!("{id}: binary frame ignored");
                    }
                }
                WsEvent::Ping | WsEvent::Pong => {
                    if endpoint == Some(Endpoint::Module) {
                        self.send_to_relay(Input::Alive { conn: id }, now);
                    }
                }
                WsEvent::Closed { code, reason } => {
                    debug!("{id}: peer closed ({code:?} {reason:?})");
                    if endpoint == Some(Endpoint::Module) {
                        self.send_to_relay(
                            Input::PeerClose {
                                conn: id,
                                code,
                                reason,
                            },
                            now,
                        );
                    }
                    if let Some(c) = self.conn_mut(id) {
                        c.begin_close(now);
                    }
                }
            }
        }
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        let more = match result {
            Err(close) => {
                // The link already queued the close frame (1002/1007/1009).
                info!("{id} {}: websocket protocol error: {close}", c.peer);
                c.begin_close(now);
                self.relay.metrics_mut().ws_protocol_errors += 1;
                false
            }
            // EOF: finish what is buffered first (the budget may have stopped us).
            Ok(false) if eof => {
                c.dead = true;
                false
            }
            Ok(more) => more,
        };
        self.check_limits(id, now);
        more && self.conn_mut(id).is_some_and(|c| !c.is_closing())
    }

    // ---------------------------------------------------------------- relay glue

    fn send_to_relay(&mut self, input: Input<'_>, now: Instant) {
        let conn = match &input {
            Input::Request { conn, .. }
            | Input::Upgrade { conn, .. }
            | Input::WsText { conn, .. }
            | Input::Alive { conn }
            | Input::PeerClose { conn, .. }
            | Input::Closed { conn } => Some(*conn),
            Input::Timer(_) => None,
        };
        if let Some(id) = conn {
            if let Some(c) = self.conn_mut(id) {
                c.relay_known = true;
            }
        }
        let mut actions = std::mem::take(&mut self.actions);
        self.relay.handle(input, now, &mut actions);
        for a in actions.drain(..) {
            self.apply(a, now);
        }
        self.actions = actions;
    }

    fn apply(&mut self, action: Action, now: Instant) {
        match action {
            Action::Respond { conn, resp } => self.respond(conn, resp, false, now),
            Action::Accept { conn, endpoint } => self.accept_ws(conn, endpoint, now),
            Action::StartSse { conn, headers } => {
                let date = self.date.get(SystemTime::now()).to_string();
                let cfg = self.cfg.clone();
                let Some(c) = self.conn_mut(conn) else { return };
                let (_, _, minor) = c.http_meta();
                let mut head = Vec::with_capacity(512);
                response::write_stream_head(
                    200,
                    "text/event-stream",
                    &headers,
                    &WriteCtx {
                        head_request: false,
                        keep_alive: false,
                        minor_version: minor,
                        date: &date,
                        server: SERVER_NAME,
                    },
                    &mut head,
                );
                c.outq.push(head);
                c.start_sse(&cfg, now);
                self.clients += 1;
                self.mark_dirty(conn);
                self.rearm(conn);
            }
            Action::Text { conn, payload } => {
                let Some(c) = self.conn_mut(conn) else { return };
                if !matches!(c.phase, Phase::Ws(_)) {
                    return;
                }
                match payload {
                    Bytes::Owned(v) => c.ws_send_owned(v),
                    Bytes::Shared(r) => {
                        if !c.is_closing() {
                            let mut head = Vec::with_capacity(10);
                            frame_text_into(r.len(), &mut head);
                            c.outq.push(head);
                            c.outq.push_shared(r);
                        }
                    }
                }
                self.mark_dirty(conn);
                self.check_limits(conn, now);
            }
            Action::TextFanout { conns, payload } => {
                // Frame once; every socket gets a reference to the same bytes.
                let mut frame = Vec::with_capacity(payload.len() + 10);
                frame_text_into(payload.len(), &mut frame);
                frame.extend_from_slice(&payload);
                let frame: Rc<[u8]> = Rc::from(frame);
                for id in conns {
                    let Some(c) = self.conn_mut(id) else { continue };
                    if c.is_closing() || !matches!(c.phase, Phase::Ws(_)) {
                        continue;
                    }
                    c.outq.push_shared(frame.clone());
                    self.mark_dirty(id);
                    self.check_limits(id, now);
                }
            }
            Action::SseWrite { conns, bytes } => {
                for id in conns {
                    let Some(c) = self.conn_mut(id) else { continue };
                    if c.is_closing() || !c.is_sse() {
                        continue;
                    }
                    c.outq.push_shared(bytes.clone());
                    self.mark_dirty(id);
                    self.check_limits(id, now);
                }
            }
            Action::Close { conn, close } => {
                if let Some(c) = self.conn_mut(conn) {
                    c.close_with(&close, now);
                    self.mark_dirty(conn);
                    self.rearm(conn);
                }
            }
            Action::Arm { at, timer } => self.timers.arm(at, LoopTimer::Relay(timer)),
        }
    }

    fn accept_ws(&mut self, id: ConnId, endpoint: Endpoint, now: Instant) {
        let cfg = self.cfg.clone();
        let Some(c) = self.conn_mut(id) else { return };
        let Some(accept) = c.pending_accept.take() else {
            error!("{id}: accept without a pending handshake (bug)");
            c.dead = true;
            self.mark_dirty(id);
            return;
        };
        c.outq.push(handshake::response_101(&accept, SERVER_NAME));
        c.upgrade_ws(endpoint, &cfg, now);
        debug!("{id} {} upgraded to {}", c.peer, endpoint.name());
        if matches!(endpoint, Endpoint::Api | Endpoint::Events) {
            self.clients += 1;
        }
        self.ready.push(id);
        self.mark_dirty(id);
        self.rearm(id);
    }

    /// Queue an HTTP response for the request in flight on `id`.
    fn respond(&mut self, id: ConnId, resp: Response, force_close: bool, now: Instant) {
        let date = self.date.get(SystemTime::now()).to_string();
        let shutting_down = self.shutdown_at.is_some();
        let Some(c) = self.conn_mut(id) else {
            return; // the client left; a late answer finds no one (pitfall 3)
        };
        if !matches!(c.phase, Phase::Http(_)) {
            return;
        }
        let (keep_alive, head_req, minor) = c.http_meta();
        let keep_alive = keep_alive && !force_close && !shutting_down;
        let mut head = Vec::with_capacity(256);
        let send_body = response::write_head(
            &resp,
            &WriteCtx {
                head_request: head_req,
                keep_alive,
                minor_version: minor,
                date: &date,
                server: SERVER_NAME,
            },
            &mut head,
        );
        c.outq.push(head);
        if send_body {
            match resp.body {
                response::Body::Empty => {}
                response::Body::Bytes(v) => c.outq.push(v),
                response::Body::Shared(r) => c.outq.push_shared(r),
            }
        }
        if keep_alive {
            c.http_done(now);
            self.ready.push(id);
        } else {
            c.begin_close(now);
        }
        self.mark_dirty(id);
        self.rearm(id);
    }

    fn respond_error(&mut self, id: ConnId, e: HttpError, now: Instant) {
        self.relay.metrics_mut().http_framing_errors += 1;
        if let Some(c) = self.conn_mut(id) {
            // The error may come before any request was accepted as in flight.
            if let Phase::Http(_) = c.phase {
                c.http_done(now);
            }
        }
        self.respond(id, Response::error(e.status(), e.message()), true, now);
    }

    /// Slow-consumer enforcement after output was queued (STYLE.md habit 7).
    fn check_limits(&mut self, id: ConnId, now: Instant) {
        let cfg = self.cfg.clone();
        let Some(c) = self.conn_mut(id) else { return };
        if c.is_closing() {
            return;
        }
        if c.over_hard_limit(&cfg, now) {
            self.slow_consumer(id, now);
        }
    }

    fn slow_consumer(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conn_mut(id) else { return };
        warn!(
            "{id} {}: slow consumer ({} bytes, {} chunks queued), closing",
            c.peer,
            c.outq.bytes(),
            c.outq.chunks()
        );
        let kind = match c.endpoint() {
            _ if c.is_sse() => SlowKind::Sse,
            Some(Endpoint::Api) => SlowKind::WsApi,
            Some(Endpoint::Events) => SlowKind::WsEvents,
            Some(Endpoint::Module) => SlowKind::Module,
            _ => SlowKind::Other,
        };
        c.outq.discard_unstarted();
        if c.is_sse() {
            c.outq
                .push_slice(b"event: error\ndata: {\"error\":\"Slow consumer\"}\n\n");
            c.begin_close(now);
        } else if kind == SlowKind::Module {
            // 1008 would make the module forget its token and need re-pairing
            // (module-protocol.md §1.6); an overloaded link is transient: 1013, it reconnects.
            c.close_with(&WsClose::OVERLOADED, now);
        } else {
            c.close_with(&WsClose::SLOW_CONSUMER, now);
        }
        self.relay.metrics_mut().slow_consumer(kind);
        self.mark_dirty(id);
        self.rearm(id);
    }

    // ---------------------------------------------------------------- timers

    /// Make sure the heap holds an entry no later than the connection's next deadline.
    fn rearm(&mut self, id: ConnId) {
        let cfg = self.cfg.clone();
        let epoch = self.epoch;
        let Some(c) = self.conn_mut(id) else { return };
        let Some(d) = c.deadline(&cfg) else { return };
        let d = coarse(epoch, d);
        if c.armed.is_some_and(|a| a <= d) {
            return; // an earlier entry fires first and re-arms then
        }
        c.armed = Some(d);
        self.timers.arm(d, LoopTimer::Conn(id));
    }

    fn on_timer(&mut self, t: LoopTimer, now: Instant) {
        match t {
            LoopTimer::Conn(id) => {
                let cfg = self.cfg.clone();
                let Some(c) = self.conn_mut(id) else { return };
                c.armed = None;
                match c.on_deadline(now, &cfg) {
                    Due::Nothing => {}
                    Due::HeadTimeout => {
                        info!("{id} {}: request head/body timeout", c.peer);
                        self.respond_error(id, HttpError::HeadTimeout, now);
                    }
                    Due::Drop(why) => {
                        debug!("{id} {}: {why}", c.peer);
                        c.dead = true;
                    }
                    Due::WsIdle => {
                        info!("{id} {}: no frame within the idle timeout", c.peer);
                        c.close_with(&WsClose::PING_TIMEOUT, now);
                    }
                    Due::SlowConsumer => self.slow_consumer(id, now),
                }
                self.mark_dirty(id);
                self.rearm(id);
            }
            LoopTimer::Relay(rt) => self.send_to_relay(Input::Timer(rt), now),
            LoopTimer::ResumeAccept => {
                self.accept_paused = false;
                self.accept_all(now);
            }
            LoopTimer::ShutdownDeadline => {}
            LoopTimer::Watchdog => {
                // Sent from the loop's own timer: a wedged loop stops feeding the watchdog,
                // and systemd restarts us (WatchdogSec= in deploy/fvtt-relay.service).
                self.notify.send("WATCHDOG=1");
                if let Some(every) = self.notify.watchdog() {
                    self.timers.arm(now + every, LoopTimer::Watchdog);
                }
            }
            LoopTimer::Status => self.status_timer = false,
        }
    }

    // ---------------------------------------------------------------- output and reaping

    fn flush_dirty(&mut self) {
        let now = Instant::now();
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            let Some(c) = self.conns.get_mut(id.key) else {
                continue;
            };
            if c.id != id {
                continue;
            }
            c.on_dirty_list = false;
            if c.dead {
                self.doomed.push(id);
                continue;
            }
            match c.flush(self.cfg.write_budget_bytes, now) {
                Err(e) => {
                    debug!("{id} {}: write error: {e}", c.peer);
                    c.dead = true;
                    self.doomed.push(id);
                    continue;
                }
                Ok(Flush::Budget) => self.ready_write(id),
                Ok(Flush::Blocked) => {
                    // Back under the soft limit: the slow-consumer grace starts over.
                    if c.outq.bytes() <= self.cfg.outq_soft_bytes {
                        c.outq.soft_since = None;
                    }
                }
                Ok(Flush::Drained) => {
                    c.outq.soft_since = None;
                    if c.closing_since.is_some() {
                        // Lingering close: FIN now, wait for the peer's EOF (or the
                        // linger deadline, which starts here, after our last byte) so
                        // unread input cannot reset our last bytes.
                        c.start_linger(now);
                        if c.eof {
                            c.dead = true;
                            self.doomed.push(id);
                            continue;
                        }
                    }
                }
            }
            self.update_interest(id);
            self.rearm(id);
        }
        // Keep the allocation, and whatever was marked while flushing (a write stopped by
        // its budget re-marks itself for the next turn).
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    /// The budget stopped a write: keep the connection on the dirty list for next turn.
    fn ready_write(&mut self, id: ConnId) {
        self.ready.push(id);
        self.mark_dirty(id);
    }

    fn update_interest(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id.key) else {
            return;
        };
        if c.id != id || c.dead {
            return;
        }
        let want = c.interest();
        if c.registered != Some(want) {
            if let Err(e) =
                self.poll
                    .registry()
                    .reregister(&mut c.sock, Token(id.key + FIRST_CONN), want)
            {
                debug!("{id}: reregister: {e}");
                c.dead = true;
                self.doomed.push(id);
                return;
            }
            c.registered = Some(want);
        }
    }

    /// Remove connections marked dead this turn and tell the relay about them. Telling the
    /// relay may mark more connections (e.g. a world's streams), so loop until quiet.
    fn reap(&mut self) {
        let now = Instant::now();
        while !self.doomed.is_empty() {
            let doomed = std::mem::take(&mut self.doomed);
            for id in doomed {
                let Some(c) = self.conns.get(id.key) else {
                    continue;
                };
                if c.id != id || !c.dead {
                    continue;
                }
                let mut c = self.conns.remove(id.key);
                if c.is_sse() || matches!(c.endpoint(), Some(Endpoint::Api | Endpoint::Events)) {
                    self.clients = self.clients.saturating_sub(1);
                }
                let m = self.relay.metrics_mut();
                m.connections_open = m.connections_open.saturating_sub(1);
                let _ = self.poll.registry().deregister(&mut c.sock);
                let ip = c.peer.ip();
                if let Some(n) = self.per_ip.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.per_ip.remove(&ip);
                    }
                }
                debug!("{} {} closed", c.id, c.peer);
                let known = c.relay_known;
                drop(c);
                if known {
                    self.send_to_relay(Input::Closed { conn: id }, now);
                }
            }
            // Actions from the relay may have queued bytes or killed more connections.
            self.flush_dirty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{HeadParser, Limits};

    fn head(extra: &str) -> Head {
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let limits = Limits {
            max_head_bytes: 16384,
            max_headers: 100,
            max_body_bytes: 0,
        };
        match HeadParser::new().parse(raw.as_bytes(), &limits) {
            Ok(Some((h, _))) => h,
            other => panic!("test head did not parse: {other:?}"),
        }
    }

    #[test]
    fn deadlines_round_up_to_the_grain() {
        let e = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(coarse(e, e), e);
        assert_eq!(coarse(e, e + ms(1)), e + ms(250));
        assert_eq!(coarse(e, e + ms(250)), e + ms(250));
        assert_eq!(coarse(e, e + ms(251)), e + ms(500));
        assert_eq!(
            coarse(e, e + Duration::from_secs(54) + ms(3)),
            e + ms(54_250)
        );
    }

    #[test]
    fn forwarded_for_only_from_a_trusted_loopback_proxy() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        let h = head("X-Forwarded-For: 203.0.113.9, 198.51.100.4\r\n");
        assert_eq!(
            client_ip(lo, &h, true),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(lo, &h, false), lo, "not trusted");
        assert_eq!(client_ip(lan, &h, true), lan, "not from loopback");
        assert_eq!(client_ip(lo, &head(""), true), lo, "no header");
        assert_eq!(
            client_ip(lo, &head("X-Forwarded-For: junk\r\n"), true),
            lo,
            "unparseable"
        );
    }
}
