//! `FakeWorld`: a simulated Foundry world that speaks the module protocol of
//! foundry-rest-api v3.4.1 exactly as module-protocol.md describes it.
//!
//! Lifecycle (one background thread per world):
//!
//! | Phase          | What the world does                                               | Spec  |
//! |----------------|-------------------------------------------------------------------|-------|
//! | connecting     | `GET <base>/relay?id=…&worldId=…` (URLSearchParams encoding), 5 s | §1.2, §1.4 |
//! | authenticating | first frame `{"type":"auth","token":…}`; drops all but auth-success, no timeout | §1.3 |
//! | connected      | `ping`, `player-list`, then `ping` every `ping_interval`; answers requests concurrently | §1.3, §3 |
//! | closed 1000    | stops for good                                                    | §1.6  |
//! | closed 1008/4001/4002 | stops, "token cleared"                                    | §1.6  |
//! | closed 4004    | retries every `deferred_retry` (30 s), outside the backoff budget | §1.6  |
//! | any other end  | backoff min(30 s, base × 2^(n−1)), n reset by auth-success, at most `reconnect_max_attempts`, then gives up | §1.5 |
//!
//! A failed connect or refused upgrade counts like a close 1006, as in a browser. The world
//! never answers a JSON `ping` (the module bug of §1.7) and never replies to unknown types.
//! Test-side knobs (`Knobs`) are shared through an `Arc<Mutex<_>>` and read per request.

use super::enc::form_query;
use super::http::{is_peer_gone, timed_out};
use super::replies::{channel_of, error_reply, module_reply, ReplyCtx, CHANNELS};
use super::server::lock;
use super::ws::ws_handshake;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How often the connection thread wakes to run commands, timers and delayed replies.
const POLL: Duration = Duration::from_millis(10);

/// The module's settings and world facts (module-protocol.md §1.2, §2.1).
#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub client_id: String,
    pub token: String,
    pub world_id: String,
    pub world_title: String,
    pub foundry_version: String,
    pub system_id: String,
    pub system_title: String,
    pub system_version: String,
    /// Sent as `customName` only when set (§1.2).
    pub custom_name: Option<String>,
    /// The configured relay URL's path, with any trailing `/relay` already stripped; the
    /// world connects to `<base_path>/relay`. `"/"` reproduces the module's `//relay`.
    pub base_path: String,
    /// The `Origin` header a browser adds [inference, §1.3]; None sends none.
    pub origin: Option<String>,
    /// Default 30 s (§1.7).
    pub ping_interval: Duration,
    /// Default 1000 ms (§1.5).
    pub reconnect_base: Duration,
    /// Default 20 (§1.5).
    pub reconnect_max_attempts: u32,
    /// The 4004 poll; default 30 s (§1.4).
    pub deferred_retry: Duration,
    /// The transport connect timeout; default 5 s (§1.4). Also bounds the upgrade response.
    pub connect_timeout: Duration,
    /// `player-list` users `{id,name,role,active}`; empty skips the message (§1.3 step 6).
    pub users: Vec<Value>,
}

impl WorldConfig {
    pub fn new(client_id: &str, token: &str) -> WorldConfig {
        WorldConfig {
            client_id: client_id.into(),
            token: token.into(),
            world_id: "test-world".into(),
            world_title: "Test World & Co".into(),
            foundry_version: "13.345".into(),
            system_id: "dnd5e".into(),
            system_title: "Dungeons & Dragons Fifth Edition".into(),
            system_version: "5.1.2".into(),
            custom_name: None,
            base_path: String::new(),
            origin: Some("http://localhost:30000".into()),
            ping_interval: Duration::from_secs(30),
            reconnect_base: Duration::from_millis(1000),
            reconnect_max_attempts: 20,
            deferred_retry: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            users: vec![
                json!({"id": "cpvaGKk3hgoBCzCS", "name": "Gamemaster", "role": 4, "active": true}),
                json!({"id": "zi1MHwh4aJs4L2Mn", "name": "test", "role": 1, "active": false}),
            ],
        }
    }

    /// `<base>/relay?id=…` with the params in the module's order (§1.2).
    pub fn relay_path(&self) -> String {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("id", &self.client_id),
            ("worldId", &self.world_id),
            ("worldTitle", &self.world_title),
            ("foundryVersion", &self.foundry_version),
            ("systemId", &self.system_id),
            ("systemTitle", &self.system_title),
            ("systemVersion", &self.system_version),
        ];
        if let Some(name) = &self.custom_name {
            pairs.push(("customName", name));
        }
        format!("{}/relay?{}", self.base_path, form_query(&pairs))
    }

    fn reply_ctx(&self, download_size: Option<usize>) -> ReplyCtx {
        ReplyCtx {
            world_id: self.world_id.clone(),
            world_title: self.world_title.clone(),
            foundry_version: self.foundry_version.clone(),
            system_id: self.system_id.clone(),
            system_title: self.system_title.clone(),
            system_version: self.system_version.clone(),
            users: self.users.clone(),
            download_size,
        }
    }
}

/// Behaviour a test can change at any time; read when each request arrives.
#[derive(Default, Debug)]
pub struct Knobs {
    /// Answer this type only after the delay (other requests are answered meanwhile).
    pub delay: HashMap<String, Duration>,
    /// Never answer this type.
    pub silent: HashSet<String>,
    /// Answer this type with the module's error shape and this message.
    pub errors: HashMap<String, String>,
    /// Answer this type with these fields (`type` and `requestId` are filled in unless given).
    pub replies: HashMap<String, Value>,
    /// Size in bytes of the file `download-file` returns (`replies::pattern_bytes`).
    pub download_size: Option<usize>,
    /// One-shot: when a request of this type arrives, drop the TCP connection without a
    /// close frame (the browser then sees 1006 and backs off).
    pub disconnect_on: Option<String>,
}

/// Everything observable about the world.
#[derive(Default)]
struct State {
    connected: bool,
    auth_success_count: u32,
    connect_attempts: u32,
    attempt_times: Vec<Instant>,
    closes: Vec<(u16, String)>,
    connect_errors: Vec<String>,
    token_cleared: bool,
    gave_up: bool,
    finished: bool,
    received: Vec<Value>,
    dropped_before_auth: Vec<Value>,
    invalid_frames: Vec<String>,
    sent: Vec<Value>,
    subscriptions: HashMap<String, i64>,
    subscription_log: Vec<(String, i64)>,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut lock(&self.state));
        self.cond.notify_all();
    }
}

enum Cmd {
    Send(String),
    Close(u16, String),
    Drop,
    Stop,
    /// Like `Stop`, with this close code: a browser tab that closes sends 1001.
    Leave(u16, String),
    /// Stop reading and writing but keep TCP open until `Stop`: the machine dropped off the
    /// network, so no close frame and no pong ever comes.
    Freeze,
}

/// A simulated world connected (or connecting) to a relay.
pub struct FakeWorld {
    shared: Arc<Shared>,
    knobs: Arc<Mutex<Knobs>>,
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    config: WorldConfig,
}

impl FakeWorld {
    /// Starts the world's connection thread; it connects at once.
    pub fn start(addr: SocketAddr, config: WorldConfig) -> FakeWorld {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        });
        let knobs = Arc::new(Mutex::new(Knobs::default()));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let shared = Arc::clone(&shared);
            let knobs = Arc::clone(&knobs);
            let config = config.clone();
            thread::Builder::new()
                .name(format!("fake-world-{}", config.client_id))
                .spawn(move || run(addr, config, shared, knobs, rx))
                .ok()
        };
        assert!(thread.is_some(), "cannot spawn the world thread");
        FakeWorld {
            shared,
            knobs,
            tx,
            thread,
            config,
        }
    }

    /// Default config; panics unless auth succeeds within 10 s.
    pub fn online(addr: SocketAddr, client_id: &str, token: &str) -> FakeWorld {
        let w = FakeWorld::start(addr, WorldConfig::new(client_id, token));
        assert!(
            w.wait_connected(Duration::from_secs(10)),
            "world {client_id} did not connect: closes {:?}, errors {:?}",
            w.closes(),
            w.connect_errors()
        );
        w
    }

    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    // ---- knobs -------------------------------------------------------------------------

    /// The shared knobs, for changes not covered by the setters below.
    pub fn knobs(&self) -> Arc<Mutex<Knobs>> {
        Arc::clone(&self.knobs)
    }

    pub fn set_delay(&self, ty: &str, delay: Duration) {
        lock(&self.knobs).delay.insert(ty.into(), delay);
    }

    pub fn set_silent(&self, ty: &str, silent: bool) {
        let mut k = lock(&self.knobs);
        if silent {
            k.silent.insert(ty.into());
        } else {
            k.silent.remove(ty);
        }
    }

    /// Some(msg): answer `ty` with its error shape; None: answer normally again.
    pub fn set_error(&self, ty: &str, msg: Option<&str>) {
        let mut k = lock(&self.knobs);
        match msg {
            Some(m) => k.errors.insert(ty.into(), m.into()),
            None => k.errors.remove(ty),
        };
    }

    /// Some(fields): answer `ty` with exactly these fields; None: the default shape.
    pub fn set_reply(&self, ty: &str, fields: Option<Value>) {
        let mut k = lock(&self.knobs);
        match fields {
            Some(f) => k.replies.insert(ty.into(), f),
            None => k.replies.remove(ty),
        };
    }

    /// `download-file` returns `bytes` bytes of `replies::pattern_bytes`.
    pub fn set_download_size(&self, bytes: Option<usize>) {
        lock(&self.knobs).download_size = bytes;
    }

    /// `download-file` returns `mib` MiB.
    pub fn set_download_mib(&self, mib: usize) {
        self.set_download_size(Some(mib << 20));
    }

    /// One-shot: drop the connection when a request of `ty` arrives.
    pub fn disconnect_on(&self, ty: &str) {
        lock(&self.knobs).disconnect_on = Some(ty.into());
    }

    // ---- actions -----------------------------------------------------------------------

    /// Pushes an event `{"type":ty,"data":data}` the way the module does: only while
    /// connected and only if the relay enabled its channel (§4.1). False if not sent.
    pub fn emit_event(&self, ty: &str, data: Value) -> bool {
        let Some(channel) = channel_of(ty) else {
            return false;
        };
        {
            let st = lock(&self.shared.state);
            if !st.connected || st.subscriptions.get(channel).copied().unwrap_or(0) <= 0 {
                return false;
            }
        }
        self.send_json(&json!({"type": ty, "data": data}))
    }

    /// Sends any JSON frame while the socket is open (e.g. `module-notify`, or an event on
    /// a channel that is off). False if the world is not connected.
    pub fn send_json(&self, v: &Value) -> bool {
        self.send_text(&v.to_string())
    }

    /// Sends a raw text frame (e.g. invalid JSON).
    pub fn send_text(&self, text: &str) -> bool {
        self.is_connected() && self.tx.send(Cmd::Send(text.into())).is_ok()
    }

    /// Drops TCP without a close frame; the world then reconnects with backoff (1006).
    pub fn drop_connection(&self) {
        let _ = self.tx.send(Cmd::Drop);
    }

    /// Sends a close frame; the code the relay echoes decides what happens next (§1.6).
    pub fn close_with(&self, code: u16, reason: &str) {
        let _ = self.tx.send(Cmd::Close(code, reason.into()));
    }

    /// The browser tab closes: close 1001 "Going away", and the world never comes back.
    /// Joins the thread.
    pub fn close_tab(&mut self) {
        let _ = self.tx.send(Cmd::Leave(1001, "Going away".into()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The machine drops off the network: the socket stays open on our side but nothing is
    /// read or sent any more (no pongs), until `stop` or drop releases it.
    pub fn freeze(&self) {
        let _ = self.tx.send(Cmd::Freeze);
    }

    /// The module's `disconnect()`: close 1000 "Disconnecting", no reconnect. Joins the
    /// thread (at most the connect timeout when a connect is in progress).
    pub fn stop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    // ---- observations ------------------------------------------------------------------

    fn wait_until<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            if let Some(t) = f(&st) {
                return Some(t);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = match self.shared.cond.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&lock(&self.shared.state))
    }

    /// Authenticated (auth-success seen) and the socket is open.
    pub fn is_connected(&self) -> bool {
        self.with(|s| s.connected)
    }

    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.connected.then_some(()))
            .is_some()
    }

    pub fn wait_disconnected(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| (!s.connected).then_some(()))
            .is_some()
    }

    /// Waits until `auth_success_count() >= n`.
    pub fn wait_auth_successes(&self, n: u32, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| (s.auth_success_count >= n).then_some(()))
            .is_some()
    }

    pub fn auth_success_count(&self) -> u32 {
        self.with(|s| s.auth_success_count)
    }

    /// The last close: the relay's close frame `(code, reason)`, or `(1006, "")` when the
    /// connection ended without one (including failed connects and refused upgrades).
    pub fn last_close(&self) -> Option<(u16, String)> {
        self.with(|s| s.closes.last().cloned())
    }

    pub fn closes(&self) -> Vec<(u16, String)> {
        self.with(|s| s.closes.clone())
    }

    /// Waits until at least `n` closes have been recorded; returns the n-th.
    pub fn wait_close(&self, n: usize, timeout: Duration) -> Option<(u16, String)> {
        self.wait_until(timeout, |s| s.closes.get(n.saturating_sub(1)).cloned())
    }

    /// Why connects failed (refused upgrades carry the HTTP status and body).
    pub fn connect_errors(&self) -> Vec<String> {
        self.with(|s| s.connect_errors.clone())
    }

    /// TCP connects started so far.
    pub fn connect_attempts(&self) -> u32 {
        self.with(|s| s.connect_attempts)
    }

    /// When each connect started, to check backoff spacing.
    pub fn attempt_times(&self) -> Vec<Instant> {
        self.with(|s| s.attempt_times.clone())
    }

    pub fn wait_attempts(&self, n: u32, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| (s.connect_attempts >= n).then_some(()))
            .is_some()
    }

    /// Closed with 1008, 4001 or 4002: the module erased its token and stopped (§1.6).
    pub fn token_cleared(&self) -> bool {
        self.with(|s| s.token_cleared)
    }

    /// The reconnect budget ran out (§1.5); the world stays offline.
    pub fn gave_up(&self) -> bool {
        self.with(|s| s.gave_up)
    }

    /// The connection thread has ended (stopped, closed 1000, token cleared, or gave up).
    pub fn is_finished(&self) -> bool {
        self.with(|s| s.finished)
    }

    pub fn wait_finished(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.finished.then_some(()))
            .is_some()
    }

    /// Every JSON message received after auth-success (auth-success included), in order.
    pub fn received(&self) -> Vec<Value> {
        self.with(|s| s.received.clone())
    }

    pub fn received_len(&self) -> usize {
        self.with(|s| s.received.len())
    }

    /// The first received message (from the start) matching `pred`.
    pub fn wait_message(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.wait_message_from(0, timeout, pred)
    }

    /// The first message at index `from` or later (see `received_len`) matching `pred`.
    pub fn wait_message_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.wait_until(timeout, |s| {
            s.received.iter().skip(from).find(|v| pred(v)).cloned()
        })
    }

    /// The first received request of type `ty`.
    pub fn wait_request(&self, ty: &str, timeout: Duration) -> Option<Value> {
        self.wait_message(timeout, |v| v["type"] == ty)
    }

    /// Every received message of type `ty`.
    pub fn messages_of(&self, ty: &str) -> Vec<Value> {
        self.with(|s| {
            s.received
                .iter()
                .filter(|v| v["type"] == ty)
                .cloned()
                .collect()
        })
    }

    /// Messages that arrived before auth-success, which the module drops (§1.3).
    pub fn dropped_before_auth(&self) -> Vec<Value> {
        self.with(|s| s.dropped_before_auth.clone())
    }

    /// Frames that were not JSON text (binary, or text that does not parse).
    pub fn invalid_frames(&self) -> Vec<String> {
        self.with(|s| s.invalid_frames.clone())
    }

    /// Every JSON message the world sent (auth, pings, player-list, replies, events).
    pub fn sent(&self) -> Vec<Value> {
        self.with(|s| s.sent.clone())
    }

    /// Current subscriber count per channel, from `event-subscription-update` (kept across
    /// reconnects, like the module's memory, §4.1).
    pub fn subscriptions(&self) -> HashMap<String, i64> {
        self.with(|s| s.subscriptions.clone())
    }

    pub fn subscription(&self, channel: &str) -> i64 {
        self.with(|s| s.subscriptions.get(channel).copied().unwrap_or(0))
    }

    /// Waits until the count for `channel` satisfies `pred`.
    pub fn wait_subscription(
        &self,
        channel: &str,
        timeout: Duration,
        pred: impl Fn(i64) -> bool,
    ) -> bool {
        self.wait_until(timeout, |s| {
            pred(s.subscriptions.get(channel).copied().unwrap_or(0)).then_some(())
        })
        .is_some()
    }

    /// Every `(channel, count)` update in arrival order.
    pub fn subscription_log(&self) -> Vec<(String, i64)> {
        self.with(|s| s.subscription_log.clone())
    }
}

impl Drop for FakeWorld {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a session ended.
enum End {
    /// A close code: the relay's, or 1006 for an abrupt end.
    Closed(u16, String),
    /// Connect or upgrade failed (a browser reports 1006).
    Failed(String),
    Stop,
}

/// The connection thread: sessions, then the module's reaction to each end (§1.5, §1.6).
fn run(
    addr: SocketAddr,
    cfg: WorldConfig,
    shared: Arc<Shared>,
    knobs: Arc<Mutex<Knobs>>,
    rx: Receiver<Cmd>,
) {
    let mut attempt: u32 = 0;
    loop {
        shared.update(|s| {
            s.connect_attempts += 1;
            s.attempt_times.push(Instant::now());
        });
        let (end, authed) = session(addr, &cfg, &shared, &knobs, &rx);
        shared.update(|s| s.connected = false);
        if authed {
            // The counter resets only on auth-success (§1.5).
            attempt = 0;
        }
        let wait = match end {
            End::Stop => break,
            End::Failed(why) => {
                shared.update(|s| {
                    s.connect_errors.push(why);
                    s.closes.push((1006, String::new()));
                });
                None
            }
            End::Closed(code, reason) => {
                shared.update(|s| s.closes.push((code, reason)));
                match code {
                    1000 => break,
                    1008 | 4001 | 4002 => {
                        shared.update(|s| s.token_cleared = true);
                        break;
                    }
                    4004 => Some(cfg.deferred_retry),
                    _ => None,
                }
            }
        };
        let delay = match wait {
            Some(d) => d,
            None => {
                attempt += 1;
                if attempt > cfg.reconnect_max_attempts {
                    shared.update(|s| s.gave_up = true);
                    break;
                }
                backoff(cfg.reconnect_base, attempt)
            }
        };
        if wait_or_stop(&rx, delay) {
            break;
        }
    }
    shared.update(|s| {
        s.connected = false;
        s.finished = true;
    });
}

/// min(30 s, base × 2^(n−1)) for attempt n ≥ 1 (§1.5).
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = Duration::from_secs(30);
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(cap, |d| d.min(cap))
}

/// Sleeps for `delay` unless a Stop arrives (true). Other commands are dropped, like the
/// module's `send()` while not connected (§1.8).
fn wait_or_stop(rx: &Receiver<Cmd>, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(Cmd::Stop | Cmd::Leave(..)) | Err(RecvTimeoutError::Disconnected) => return true,
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

/// One connection, from TCP connect to its end. Returns how it ended and whether
/// auth-success was seen.
fn session(
    addr: SocketAddr,
    cfg: &WorldConfig,
    shared: &Shared,
    knobs: &Mutex<Knobs>,
    rx: &Receiver<Cmd>,
) -> (End, bool) {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(o) = &cfg.origin {
        headers.push(("Origin", o));
    }
    let mut ws = match ws_handshake(addr, &cfg.relay_path(), &headers, cfg.connect_timeout) {
        Ok((ws, _)) => ws,
        Err(e) => return (End::Failed(format!("{e:?}")), false),
    };
    let mut conn = Conn {
        ws: &mut ws,
        shared,
        authed: false,
        close: None,
        scheduled: Vec::new(),
        next_ping: None,
    };
    // §1.3 step 2: the first frame after open.
    if !conn.send(json!({"type": "auth", "token": cfg.token})) {
        return (End::Closed(1006, String::new()), false);
    }
    let end = conn.pump(cfg, knobs, rx);
    let authed = conn.authed;
    (end, authed)
}

struct Conn<'a> {
    ws: &'a mut WebSocket<TcpStream>,
    shared: &'a Shared,
    authed: bool,
    /// The close frame the relay sent, kept until the TCP connection ends.
    close: Option<(u16, String)>,
    /// Delayed replies: (due, message).
    scheduled: Vec<(Instant, Value)>,
    next_ping: Option<Instant>,
}

impl Conn<'_> {
    fn send(&mut self, v: Value) -> bool {
        let ok = self.send_text(v.to_string());
        if ok {
            self.shared.update(|s| s.sent.push(v));
        }
        ok
    }

    fn send_text(&mut self, text: String) -> bool {
        match self.ws.send(Message::text(text)) {
            Ok(()) => true,
            // A write timeout leaves the frame queued in tungstenite; finish it.
            Err(tungstenite::Error::Io(e)) if timed_out(&e) => self.ws.flush().is_ok(),
            Err(_) => false,
        }
    }

    /// Our own close, once; the session then ends as `End::Stop` within a second.
    fn start_close(&mut self, stopping: &mut Option<Instant>, code: CloseCode, reason: &str) {
        if stopping.is_none() {
            let frame = CloseFrame {
                code,
                reason: reason.to_string().into(),
            };
            let _ = self.ws.close(Some(frame));
            *stopping = Some(Instant::now() + Duration::from_secs(1));
        }
    }

    fn abrupt(&mut self) -> End {
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
        End::Closed(1006, String::new())
    }

    /// The session loop: commands, timers, then one bounded read.
    fn pump(&mut self, cfg: &WorldConfig, knobs: &Mutex<Knobs>, rx: &Receiver<Cmd>) -> End {
        let mut stopping: Option<Instant> = None;
        loop {
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Send(text)) => {
                        let v = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
                        if !self.send_text(text) {
                            return self.abrupt();
                        }
                        self.shared.update(|s| s.sent.push(v));
                    }
                    Ok(Cmd::Close(code, reason)) => {
                        let frame = CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        };
                        let _ = self.ws.close(Some(frame));
                    }
                    Ok(Cmd::Drop) => return self.abrupt(),
                    Ok(Cmd::Freeze) => loop {
                        match rx.recv() {
                            Ok(Cmd::Stop | Cmd::Leave(..)) | Err(_) => return End::Stop,
                            Ok(_) => {}
                        }
                    },
                    Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => {
                        // The module's disconnect() (§1.6).
                        self.start_close(&mut stopping, CloseCode::Normal, "Disconnecting");
                        break;
                    }
                    Ok(Cmd::Leave(code, reason)) => {
                        self.start_close(&mut stopping, CloseCode::from(code), &reason);
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            if let Some(deadline) = stopping {
                if Instant::now() >= deadline {
                    let _ = self.ws.get_ref().shutdown(Shutdown::Both);
                    return End::Stop;
                }
            }
            let now = Instant::now();
            if self.authed && stopping.is_none() {
                let due: Vec<Value> = {
                    let (due, later): (Vec<_>, Vec<_>) =
                        self.scheduled.drain(..).partition(|(t, _)| *t <= now);
                    self.scheduled = later;
                    due.into_iter().map(|(_, v)| v).collect()
                };
                for v in due {
                    if !self.send(v) {
                        return self.abrupt();
                    }
                }
                if self.next_ping.is_some_and(|t| t <= now) {
                    self.next_ping = Some(now + cfg.ping_interval);
                    if !self.send(json!({"type": "ping"})) {
                        return self.abrupt();
                    }
                }
            }
            if let Err(e) = self.ws.get_ref().set_read_timeout(Some(POLL)) {
                return End::Failed(format!("set_read_timeout: {e}"));
            }
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    if let Some(end) = self.on_text(t.as_str(), cfg, knobs) {
                        return end;
                    }
                }
                Ok(Message::Binary(b)) => {
                    // JSON.parse of a binary frame fails; the module logs and drops it (§1.8).
                    self.shared
                        .update(|s| s.invalid_frames.push(format!("<binary {} bytes>", b.len())));
                }
                Ok(Message::Close(f)) => {
                    let pair = match f {
                        Some(f) => (u16::from(f.code), f.reason.as_str().to_string()),
                        None => (1005, String::new()),
                    };
                    self.close.get_or_insert(pair);
                    // RFC 6455 §5.5.1: send the queued echo, then end the session without
                    // waiting for the relay to drop TCP first (a browser does not wait long).
                    let _ = self.ws.flush();
                    return self.finish(stopping.is_some());
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if timed_out(&e) || e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(tungstenite::Error::ConnectionClosed)
                | Err(tungstenite::Error::AlreadyClosed) => {
                    return self.finish(stopping.is_some());
                }
                Err(tungstenite::Error::Io(e)) if is_peer_gone(&e) => {
                    return self.finish(stopping.is_some())
                }
                Err(_) => return self.finish(stopping.is_some()),
            }
        }
    }

    fn finish(&mut self, stopping: bool) -> End {
        if stopping {
            return End::Stop;
        }
        match self.close.take() {
            Some((code, reason)) => End::Closed(code, reason),
            None => End::Closed(1006, String::new()),
        }
    }

    /// Handles one text frame; Some(end) when the session must end.
    fn on_text(&mut self, text: &str, cfg: &WorldConfig, knobs: &Mutex<Knobs>) -> Option<End> {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            self.shared
                .update(|s| s.invalid_frames.push(text.to_string()));
            return None;
        };
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if ty == "auth-success" {
            // Accepted in any state; a second one repeats the setup (§1.3 step 3).
            self.authed = true;
            self.shared.update(|s| {
                s.connected = true;
                s.auth_success_count += 1;
                s.received.push(v);
            });
            if !self.send(json!({"type": "ping"})) {
                return Some(self.abrupt());
            }
            if !cfg.users.is_empty()
                && !self.send(json!({"type": "player-list", "users": cfg.users}))
            {
                return Some(self.abrupt());
            }
            self.next_ping = Some(Instant::now() + cfg.ping_interval);
            return None;
        }
        if !self.authed {
            self.shared.update(|s| s.dropped_before_auth.push(v));
            return None;
        }
        self.shared.update(|s| s.received.push(v.clone()));
        match ty.as_str() {
            "event-subscription-update" => {
                // §4.1: a non-string channel is ignored; count > 0 enables, anything else
                // disables; unknown channel names are ignored.
                if let Some(ch) = v.get("channel").and_then(Value::as_str) {
                    if CHANNELS.iter().any(|(c, _)| *c == ch) {
                        let n = v.get("count").and_then(Value::as_f64).unwrap_or(0.0);
                        let count = if n > 0.0 { n as i64 } else { 0 };
                        self.shared.update(|s| {
                            s.subscriptions.insert(ch.to_string(), count);
                            s.subscription_log.push((ch.to_string(), count));
                        });
                    }
                }
                None
            }
            // §1.7: the module's ping handler throws, so no pong is ever sent.
            "ping" | "pong" | "remote-response" | "transfer-result" => None,
            _ => self.on_request(&ty, &v, cfg, knobs),
        }
    }

    fn on_request(
        &mut self,
        ty: &str,
        req: &Value,
        cfg: &WorldConfig,
        knobs: &Mutex<Knobs>,
    ) -> Option<End> {
        let (reply, delay) = {
            let mut k = lock(knobs);
            if k.disconnect_on.as_deref() == Some(ty) {
                k.disconnect_on = None;
                drop(k);
                return Some(self.abrupt());
            }
            if k.silent.contains(ty) {
                return None;
            }
            let reply = if let Some(msg) = k.errors.get(ty) {
                error_reply(req, msg)
            } else if let Some(fields) = k.replies.get(ty) {
                // A test-given reply is sent even for types the module would not answer.
                let mut r = json!({"type": format!("{ty}-result"), "requestId": req.get("requestId").cloned().unwrap_or(Value::Null)});
                if let (Some(m), Some(f)) = (r.as_object_mut(), fields.as_object()) {
                    m.extend(f.clone());
                }
                Some(r)
            } else {
                module_reply(req, &cfg.reply_ctx(k.download_size))
            };
            (reply, k.delay.get(ty).copied())
        };
        let reply = reply?;
        match delay {
            Some(d) if !d.is_zero() => {
                self.scheduled.push((Instant::now() + d, reply));
                None
            }
            _ => (!self.send(reply)).then(|| self.abrupt()),
        }
    }
}
