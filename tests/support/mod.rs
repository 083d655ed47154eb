//! Integration-test support for fvtt-relay: the real binary, raw clients, and a simulated
//! Foundry world. Test files use it with `mod support; use support::*;`.
//!
//! | Item | File | What it is |
//! |------|------|------------|
//! | `Relay::start(args)`, `Relay::start_in(dir, args)`, `start_in_when_free` (retries a locked dir), `try_start_in` | server.rs | runs `fvtt-relay --listen 127.0.0.1:0 --data-dir <dir>`; `.addr() .url(p) .pid() .sigterm() .signal(n) .wait_exit(t) .logs() .stdout_lines() .kill()`; killed on drop |
//! | `TempDir::new(prefix)` | server.rs | unique dir under `temp_dir()`, removed on drop |
//! | `provision(dir) -> Provisioned`, `start_provisioned(args) -> ProvisionedRelay` | provision.rs | admin key, full-scope API key, clientId + token, via `fvtt_relay::store`; the relay started with `start_in_when_free` |
//! | `provision_with(dir, extra)`, `start_provisioned_with(args, extra)` | provision.rs | the same plus one scoped key per `(scopes, clientIds)` in `extra` (`Provisioned::extra_keys`) |
//! | `start_provisioned_edited(args, edit) -> (ProvisionedRelay, T)`, `open_store_when_free(dir)` | provision.rs | `edit(&mut State, &Provisioned) -> T` runs on the saved store before the start (extra worlds, odd keys) |
//! | `ProvisionedRelay` | provision.rs | `relay`, `keys`, `dir`; `.key()` (full-scope key), `.world()` (the world, online) |
//! | `http_request(addr, raw)`, `try_http_request`, `dribble(addr, raw)` | http.rs | one raw request on a fresh connection; dribble sends one byte per write |
//! | `get`, `post_json`, `send_json`, `request`, `build_request` | http.rs | convenience requests (`Connection: close`) |
//! | `HttpConn` | http.rs | keep-alive: `connect(addr)`, `to(&relay)` (panics on failure), `send`, `dribble`, `read_response(t)`, `read_head_response(t)`, `read_head`, `read_body`, `wait_closed(t)` |
//! | `RawResponse` | http.rs | `status, headers (lower-case), body, chunked`; `.header(n) .json() .text() .closes()` |
//! | `ChunkedDecoder` | http.rs | incremental RFC 9112 §7.1 decoder |
//! | `ws_connect(addr, path, headers) -> Result<WsClient, ConnectError>` | ws.rs | `send_json`, `recv_json(t)`, `recv_type(ty, t)`, `recv_close(t)`, `close()`; refusals carry status + body |
//! | `SseClient::connect(addr, path, headers) -> Result<SseClient, RawResponse>` | sse.rs | `next_event(t) -> Option<SseEvent{id, event, data}>`, `next_named`, `comments()`, `wait_comments`, `wait_ended` |
//! | `SseParser` | sse.rs | the pure WHATWG event-stream parser |
//! | `FakeWorld::start(addr, WorldConfig)`, `FakeWorld::online(addr, id, token)` | world.rs | the module: auth, pings, player-list, replies, events, reconnect rules |
//! | `Knobs` / `set_delay`, `set_silent`, `set_error`, `set_reply`, `set_download_size`, `disconnect_on` | world.rs | per-type behaviour, changeable at run time |
//! | `emit_event(ty, data)`, `wait_subscription`, `wait_request`, `wait_message`, `last_close`, `closes`, `token_cleared` | world.rs | drive and observe the world |
//! | `close_with(code, reason)`, `drop_connection()`, `close_tab()` (1001, gone for good), `freeze()` (no close, no pongs: the machine left the network), `stop()` (the module's 1000) | world.rs | ways a world leaves |
//! | `module_reply`, `error_reply`, `ROUTER_TYPES`, `DND5E_TYPES`, `pattern_bytes`, `TINY_PNG`, event payload builders | replies.rs | reply shapes of module v3.4.1 |
//! | `cpu_ticks(pid)`, `status_field(pid, name)` | procfs.rs | /proc CPU ticks and status fields (`VmRSS`, `voluntary_ctxt_switches`) |
//! | `base64_encode/decode`, `data_url`, `decode_data_url`, `form_encode`, `form_query`, `percent_encode`, `ws_accept_key`, `client_frame` | enc.rs | client-side encodings; `client_frame` is a raw masked WS frame |
//!
//! Every blocking read has a deadline; waits are deadline loops or condition variables.
//! Constants: `http::DEFAULT_TIMEOUT` (10 s), `server::START_TIMEOUT` (20 s), `secs(n)`.

// Each test binary uses a different part of this library.
#![allow(dead_code, unused_imports)]

pub mod enc;
pub mod http;
pub mod procfs;
pub mod provision;
pub mod replies;
pub mod server;
pub mod sse;
pub mod world;
pub mod ws;

pub use enc::*;
pub use http::*;
pub use procfs::*;
pub use provision::*;
pub use replies::*;
pub use server::*;
pub use sse::*;
pub use world::*;
pub use ws::*;

pub use serde_json::{json, Value};
pub use std::time::Duration;

/// `Duration::from_secs(n)`, for short timeouts in tests.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `Duration::from_millis(n)`.
pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `cond` until it holds or `timeout` passes (for conditions no helper waits on).
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
