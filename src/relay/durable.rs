//! "Acknowledged means durable": when and how the relay's `State` reaches the disk.
//!
//! Two kinds of change:
//! - **Owner changes** (API keys, the admin key, connection tokens, pairing codes, worlds):
//!   saved synchronously, in the turn that makes them and before any side effect or reply.
//!   If the save fails the state is put back exactly as it was and the caller gets 503 with
//!   the reason; nothing was changed, so nothing needs a retry. They are rare, so an fsync'd
//!   save (a few ms on an SD card) in the loop's turn is the right price for an honest answer.
//! - **Bookkeeping** (last-used times, a world's reported metadata): nobody is told it was
//!   saved, so it waits for one timer (`Timer::LazyPersist`, 60 s), and a failed save retries
//!   on that same single timer with doubling back-off (2 s … 60 s).
//!
//! A failing disk is logged once when saves start failing and once when they work again,
//! not once per attempt. The relay saves through the [`Saver`] the loop attaches (the
//! store in the binary); it never touches a file itself.

use std::time::{Duration, Instant};

use log::{debug, error, info};

use super::io::{Action, Timer};
use super::Relay;
use crate::http::response::Response;
use crate::store::{SaveError, Saver, State};

/// How long bookkeeping changes wait before they are saved.
pub(crate) const LAZY_PERSIST: Duration = Duration::from_secs(60);
/// The first retry of a failed bookkeeping save; doubles up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Where saves go until the loop attaches the store: every save fails, so a relay built
/// without one refuses owner changes rather than acknowledging what it cannot keep.
struct Detached;

impl Saver for Detached {
    fn save(&mut self, _: &State) -> Result<(), SaveError> {
        Err(SaveError {
            path: "state.json".into(),
            error: std::io::Error::other("no state file is attached to this relay"),
        })
    }
}

/// The relay's side of persistence.
pub(crate) struct Disk {
    saver: Box<dyn Saver>,
    /// Bookkeeping changed since the last successful save.
    pub(crate) lazy_dirty: bool,
    /// A `Timer::LazyPersist` is armed (there is never more than one).
    lazy_armed: bool,
    /// The last save failed (for logging the change of state once).
    failing: bool,
    /// The wait before the next retry of failed bookkeeping.
    retry: Duration,
}

impl Default for Disk {
    fn default() -> Self {
        Disk {
            saver: Box::new(Detached),
            lazy_dirty: false,
            lazy_armed: false,
            failing: false,
            retry: RETRY_MIN,
        }
    }
}

impl Relay {
    /// Attach where the state is saved (the binary: its `Store`).
    pub fn set_saver(&mut self, saver: Box<dyn Saver>) {
        self.disk.saver = saver;
    }

    /// Whether saves are failing right now (for `/metrics`).
    pub fn saves_failing(&self) -> bool {
        self.disk.failing
    }

    /// Save the whole state now. A success also carries any pending bookkeeping.
    fn save_now(&mut self) -> Result<(), SaveError> {
        match self.disk.saver.save(&self.state) {
            Ok(()) => {
                self.metrics.state_saves += 1;
                self.disk.lazy_dirty = false;
                self.disk.retry = RETRY_MIN;
                if self.disk.failing {
                    self.disk.failing = false;
                    info!("saving the state works again");
                }
                Ok(())
            }
            Err(e) => {
                self.metrics.state_save_failures += 1;
                if self.disk.failing {
                    debug!("saving the state failed again: {e}");
                } else {
                    self.disk.failing = true;
                    error!(
                        "saving the state failed: {e}; owner changes are refused (503) and \
                         bookkeeping is retried until a save succeeds"
                    );
                }
                Err(e)
            }
        }
    }

    /// Make an owner change durable: `undo` is the state from before the change. Saves now;
    /// on failure puts `undo` back and returns the 503 for the caller to send. Call it right
    /// after changing `self.state` and before any side effect (closing links, ending
    /// sessions) or reply that depends on the change.
    pub(crate) fn commit(&mut self, undo: State) -> Result<(), Response> {
        match self.save_now() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.state = undo;
                Err(Response::error(
                    503,
                    &format!(
                        "The change could not be saved ({}); it was not made. Try again once \
                         the relay's disk is writable",
                        e.reason()
                    ),
                ))
            }
        }
    }

    /// Record that bookkeeping changed (a key's or token's last use): it is saved within
    /// `LAZY_PERSIST`, by a timer, never by the request that caused it, so forwarding never
    /// waits for the disk (issue 5: "never on the hot path of forwarding").
    pub(crate) fn persist_later(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.disk.lazy_dirty = true;
        self.arm_lazy(now + LAZY_PERSIST, out);
    }

    /// Bookkeeping worth saving at once (a world's new metadata), but that nobody waits on:
    /// tried now, and on failure left to the retry timer.
    pub(crate) fn persist_soon(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.disk.lazy_dirty = true;
        self.lazy_save(now, out);
    }

    fn arm_lazy(&mut self, at: Instant, out: &mut Vec<Action>) {
        if !self.disk.lazy_armed {
            self.disk.lazy_armed = true;
            out.push(Action::Arm {
                at,
                timer: Timer::LazyPersist,
            });
        }
    }

    /// `Timer::LazyPersist` fired.
    pub(crate) fn lazy_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.disk.lazy_armed = false;
        self.lazy_save(now, out);
    }

    fn lazy_save(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.disk.lazy_dirty || self.save_now().is_ok() {
            return;
        }
        let wait = self.disk.retry;
        self.disk.retry = (wait * 2).min(RETRY_MAX);
        self.arm_lazy(now + wait, out);
    }

    /// Whether in-memory bookkeeping is newer than `state.json`.
    pub fn has_unsaved_bookkeeping(&self) -> bool {
        self.disk.lazy_dirty
    }

    /// At shutdown: save bookkeeping whose timer will not fire now.
    pub fn save_before_exit(&mut self) {
        if self.disk.lazy_dirty {
            if let Err(e) = self.save_now() {
                error!("saving the state at shutdown failed: {e}; the last-used times since the last save are lost");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// A saver for unit tests: keeps the last saved state, and fails while `fail` > 0.
    #[derive(Clone, Default)]
    pub(crate) struct MemorySaver(pub Rc<RefCell<Saved>>);

    #[derive(Default)]
    pub(crate) struct Saved {
        pub last: Option<State>,
        pub saves: u32,
        pub attempts: u32,
        pub fail: u32,
    }

    impl Saver for MemorySaver {
        fn save(&mut self, state: &State) -> Result<(), SaveError> {
            let mut s = self.0.borrow_mut();
            s.attempts += 1;
            if s.fail > 0 {
                s.fail -= 1;
                return Err(SaveError {
                    path: "/data/state.json.tmp".into(),
                    error: std::io::Error::from_raw_os_error(28),
                });
            }
            s.saves += 1;
            s.last = Some(state.clone());
            Ok(())
        }
    }
}

#[cfg(test)]
mod refusal_tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use crate::config::Config;
    use crate::http::request::Method;
    use crate::relay::events::harness::*;
    use crate::relay::io::{Action, Input, Timer};

    fn call(h: &mut H, method: Method, target: &str, key: &str, body: Value) -> (u16, Value) {
        let conn = h.conn();
        let hd = head(method, target, &[("x-api-key", key)]);
        let out = h.input(Input::Request {
            conn,
            peer: PEER,
            head: &hd,
            body: body.to_string().into_bytes(),
        });
        let (status, text) = response_of(&out, conn).expect("a response");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn admin(h: &mut H) -> String {
        h.relay.state.rotate_admin_key()
    }

    fn fail_next(h: &H, n: u32) {
        h.disk.0.borrow_mut().fail = n;
    }

    fn lazy_arms(out: &[Action]) -> Vec<std::time::Instant> {
        out.iter()
            .filter_map(|a| match a {
                Action::Arm {
                    at,
                    timer: Timer::LazyPersist,
                } => Some(*at),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn refused_changes_are_undone_and_say_why() {
        let mut h = H::new(Config::default());
        let adm = admin(&mut h);
        let before = h.relay.state.clone();
        let post = Method::Post;
        let del = Method::Delete;
        let key = h.api_key.clone();
        let key_id = h.key_id(&key);
        let token_id = h.relay.state.tokens[0].id.clone();
        let cases: Vec<(Method, String, Value)> = vec![
            (post, "/admin/api/keys".into(), json!({"name": "bot"})),
            (del, format!("/admin/api/keys/{key_id}"), Value::Null),
            (post, "/admin/api/pairing-codes".into(), json!({})),
            (post, "/admin/api/admin-key/rotate".into(), Value::Null),
            (del, format!("/admin/api/tokens/{token_id}"), Value::Null),
            (
                Method::Patch,
                format!("/admin/api/tokens/{token_id}"),
                json!({"allowedIps": ["10.0.0.1"]}),
            ),
            (del, format!("/admin/api/worlds/{WORLD}"), Value::Null),
        ];
        for (m, target, body) in cases {
            fail_next(&h, 1);
            let (status, v) = call(&mut h, m, &target, &adm, body);
            assert_eq!(status, 503, "{target}: {v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(
                msg.contains("No space left on device") && msg.contains("not made"),
                "{target}: {msg}"
            );
            assert!(!msg.contains("/data"), "no server path on the wire: {msg}");
            assert!(v.get("key").is_none() && v.get("code").is_none(), "{v}");
            assert_eq!(
                serde_json::to_value(&h.relay.state).unwrap(),
                serde_json::to_value(&before).unwrap(),
                "{target} left a change behind"
            );
        }
        // The key still works and the old admin key still signs in.
        let c = h.conn();
        let out = h.get(c, "/clients", &[("x-api-key", &key)]);
        assert_eq!(response_of(&out, c).map(|r| r.0), Some(200));
        // Once saves work again, the same change goes through and is what was saved.
        let (status, v) = call(&mut h, post, "/admin/api/keys", &adm, json!({"name": "b"}));
        assert_eq!(status, 201, "{v}");
        let saved = h.disk.0.borrow().last.clone().unwrap();
        assert!(saved.api_keys.iter().any(|k| k.name == "b"));
    }

    #[test]
    fn a_refused_revocation_closes_nothing() {
        let mut h = H::new(Config::default());
        let adm = admin(&mut h);
        let (link, _) = h.world_online(WORLD);
        let token_id = h.relay.state.tokens[0].id.clone();
        fail_next(&h, 1);
        let conn = h.conn();
        let target = format!("/admin/api/tokens/{token_id}");
        let hd = head(Method::Delete, &target, &[("x-api-key", &adm)]);
        let out = h.input(Input::Request {
            conn,
            peer: PEER,
            head: &hd,
            body: Vec::new(),
        });
        assert_eq!(response_of(&out, conn).map(|r| r.0), Some(503));
        assert_eq!(close_of(&out, link), None, "the link must stay up");
        // Rotation refused: the sessions opened with the old key stay.
        let (status, v) = call(
            &mut h,
            Method::Post,
            "/admin/api/login",
            "",
            json!({"key": adm}),
        );
        assert_eq!(status, 200, "{v}");
        fail_next(&h, 1);
        let (status, _) = call(
            &mut h,
            Method::Post,
            "/admin/api/admin-key/rotate",
            &adm,
            Value::Null,
        );
        assert_eq!(status, 503);
        assert_eq!(h.relay.state.admin_sessions.len(), 1);
    }

    #[test]
    fn a_refused_pairing_leaves_the_code_usable() {
        let mut h = H::new(Config::default());
        let adm = admin(&mut h);
        let (_, v) = call(
            &mut h,
            Method::Post,
            "/admin/api/pairing-codes",
            &adm,
            json!({}),
        );
        let code = v["code"].as_str().unwrap().to_string();
        let body = json!({"code": code, "worldId": "w1", "worldTitle": "W"});
        fail_next(&h, 1);
        let (status, v) = call(&mut h, Method::Post, "/auth/pair", "", body.clone());
        assert_eq!(status, 503, "{v}");
        assert!(v.get("token").is_none());
        let (status, v) = call(&mut h, Method::Post, "/auth/pair", "", body);
        assert_eq!(status, 200, "the code was not spent: {v}");
    }

    #[test]
    fn a_refused_approval_leaves_the_request_pending() {
        let mut h = H::new(Config::default());
        let adm = admin(&mut h);
        let (status, v) = call(
            &mut h,
            Method::Post,
            "/auth/pair-request",
            "",
            json!({"worldId": "w9"}),
        );
        assert_eq!(status, 201, "{v}");
        let code = v["code"].as_str().unwrap().to_string();
        let approve = format!("/admin/api/pair-requests/{code}/approve");
        fail_next(&h, 1);
        let (status, v) = call(&mut h, Method::Post, &approve, &adm, Value::Null);
        assert_eq!(status, 503, "{v}");
        let poll = format!("/auth/pair-request/{code}/status");
        let (_, v) = call(&mut h, Method::Get, &poll, "", Value::Null);
        assert_eq!(v["status"], "pending", "{v}");
        assert!(h.relay.state.pairing_codes.is_empty());
        let (status, v) = call(&mut h, Method::Post, &approve, &adm, Value::Null);
        assert_eq!(status, 200, "{v}");
        let (_, v) = call(&mut h, Method::Get, &poll, "", Value::Null);
        assert_eq!(v["status"], "approved", "{v}");
    }

    #[test]
    fn failing_bookkeeping_retries_on_one_timer_with_backoff() {
        let mut h = H::new(Config::default());
        let key = h.api_key.clone();
        fail_next(&h, 1000);
        let mut armed = Vec::new();
        for _ in 0..25 {
            let c = h.conn();
            armed.extend(lazy_arms(&h.get(c, "/clients", &[("x-api-key", &key)])));
        }
        assert_eq!(armed.len(), 1, "one timer for every change");
        assert_eq!(h.disk.0.borrow().attempts, 0, "requests never save");
        // Each firing tries once and arms the next retry, further out each time.
        let mut gaps = Vec::new();
        for _ in 0..8 {
            h.now = armed.pop().unwrap();
            let out = h.input(Input::Timer(Timer::LazyPersist));
            let next = lazy_arms(&out);
            assert_eq!(next.len(), 1);
            gaps.push(next[0] - h.now);
            armed.extend(next);
        }
        let secs: Vec<u64> = gaps.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(h.disk.0.borrow().attempts, 8);
        assert!(h.relay.saves_failing());
        // The disk recovers: the next firing saves, arms nothing, and resets the back-off.
        fail_next(&h, 0);
        h.now = armed.pop().unwrap();
        let out = h.input(Input::Timer(Timer::LazyPersist));
        assert!(lazy_arms(&out).is_empty());
        assert!(!h.relay.saves_failing() && !h.relay.has_unsaved_bookkeeping());
        assert_eq!(h.disk.0.borrow().saves, 1);
    }
}
