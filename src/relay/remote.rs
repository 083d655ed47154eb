//! Cross-world requests (relay-protocol.md §5.8; module-protocol.md §5 `remote-request`).
//!
//! A module calls `api.remoteRequest(target, action, payload)`; its world link sends
//! `{"type":"remote-request","requestId","targetClientId","action","payload"}`. The relay
//! checks the asking world's grants, sends the action to the target's link as an ordinary
//! request with a requestId of its own, and answers the asker with `{"type":
//! "remote-response","requestId":<the asker's>,"success",…}`: `data` (the target's reply
//! without its requestId) on success, `error` otherwise.
//!
//! ```text
//!  remote-request ─▶ target is itself? ─▶ target allowed? ─▶ action known? ─▶ scope granted?
//!       ─▶ target online? ─▶ --remote-max-inflight ─▶ forwarded (own requestId,
//!          --remote-request-timeout)
//!            each "no" ─▶ remote-response {success:false, error}
//!  target reply ─▶ remote-response {success, data|error};  timeout / target gone ─▶ error
//! ```
//!
//! Grants live with each known world (`allowed_targets`: clientIds or `*`, never itself;
//! `remote_scopes`): nothing is allowed until the owner grants it, by approving the module's
//! "Upgrade" request (pair page, admin page) or on the admin page and CLI
//! (`PATCH /admin/api/worlds/{clientId}`). `autoStartIfOffline` cannot be honoured: this relay
//! does not start worlds, so an offline target is an error at once.

use std::time::Instant;

use log::info;
use serde_json::{json, Map, Value};

use super::api_ws::{module_request, required_scope};
use super::io::{Action, Bytes};
use super::pending::Caller;
use super::Relay;
use crate::auth::ALL_SCOPES;
use crate::ids::ConnId;
use crate::store::State;

/// Check and normalize a world's grants: targets are `*` or known clientIds other than the
/// world itself (deduplicated; `*` alone replaces a list), scopes are known scope names.
pub(crate) fn validate_grants(
    state: &State,
    world: &str,
    targets: &[String],
    scopes: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut t: Vec<String> = Vec::new();
    for raw in targets {
        let id = raw.trim();
        if id.is_empty() || t.iter().any(|x| x == id) {
            continue;
        }
        if id == world {
            return Err("A world cannot be its own cross-world target".into());
        }
        if id != "*" && !state.worlds.iter().any(|w| w.client_id == id) {
            return Err(format!("Unknown target clientId: {id}"));
        }
        t.push(id.to_owned());
    }
    if t.iter().any(|x| x == "*") {
        t = vec!["*".to_owned()];
    }
    let mut s: Vec<String> = Vec::new();
    for raw in scopes {
        let sc = raw.trim();
        if sc.is_empty() || s.iter().any(|x| x == sc) {
            continue;
        }
        if !ALL_SCOPES.contains(&sc) {
            return Err(format!("Invalid scope: {sc}"));
        }
        s.push(sc.to_owned());
    }
    Ok((t, s))
}

/// A list given as a JSON array of strings or one comma-separated string.
pub(crate) fn string_list(v: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "expected an array of strings".to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err("expected an array of strings or a comma-separated string".into()),
    }
}

impl Relay {
    /// A `remote-request` from the world link `conn`.
    pub(crate) fn remote_request(
        &mut self,
        conn: ConnId,
        text: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(source) = self.worlds.client_of(conn).map(str::to_string) else {
            return;
        };
        let mut msg = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => return,
        };
        let rid = msg
            .get("requestId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let target = msg
            .get("targetClientId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let action = msg
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let payload = match msg.remove("payload") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return self.remote_error(conn, &rid, "'payload' must be an object", out),
        };
        let (targets, scopes) = self
            .state
            .worlds
            .iter()
            .find(|w| w.client_id == source)
            .map(|w| (w.allowed_targets.clone(), w.remote_scopes.clone()))
            .unwrap_or_default();
        let refusal = if target.is_empty() || action.is_empty() {
            Some("'targetClientId' and 'action' are required".to_owned())
        } else if target == source {
            Some("A world cannot send a remote request to itself".to_owned())
        } else if !targets.iter().any(|t| t == "*" || *t == target) {
            Some(format!(
                "This world may not send requests to {target}: the relay owner has not allowed \
                 it (approve an Upgrade request, or set cross-world permissions on the admin page)"
            ))
        } else {
            match required_scope(&action) {
                None => Some(format!("Unknown remote action: {action}")),
                Some(scope) if !scopes.iter().any(|s| s == scope) => Some(format!(
                    "Remote scope {scope} (needed for {action}) is not granted to this world"
                )),
                Some(_) => None,
            }
        };
        if let Some(e) = refusal {
            info!("{conn}: remote-request {action} from {source} to {target} refused: {e}");
            return self.remote_error(conn, &rid, &e, out);
        }
        let Some(link) = self.worlds.get(&target).map(|l| l.conn) else {
            let e = format!("Target world {target} is not connected (this relay cannot start it)");
            return self.remote_error(conn, &rid, &e, out);
        };
        if self.pending.count_for_caller(conn) >= self.cfg.remote_max_inflight {
            return self.remote_error(conn, &rid, "Too many remote requests in flight", out);
        }
        // An ordinary request on the target, with a requestId of ours: the asker's id is
        // not unique across worlds, and the target's reply must be matched by ours.
        let relay_id = self.req_ids.next(&action);
        let body = module_request(&action, payload, &relay_id, &scopes, None);
        let deadline = now + self.cfg.remote_request_timeout;
        info!("{conn}: remote-request {action} from {source} to {target} as {relay_id}");
        let caller = Caller::Remote {
            conn,
            source_request_id: rid,
        };
        self.dispatch_to_world((&target, link), relay_id, caller, body, deadline, out);
    }

    /// The target answered: `remote-response` to the asker, the target's requestId removed.
    pub(crate) fn deliver_remote_reply(
        &mut self,
        conn: ConnId,
        source_request_id: &str,
        text: &str,
        out: &mut Vec<Action>,
    ) {
        let mut v = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        v.remove("requestId");
        // relay-protocol.md §2.4: a string `error` is a failure; so is `success: false`.
        let error = v.get("error").and_then(Value::as_str).map(str::to_owned);
        let failed = error.is_some() || v.get("success") == Some(&Value::Bool(false));
        let reply = if failed {
            json!({"type": "remote-response", "requestId": source_request_id, "success": false,
                   "error": error.unwrap_or_else(|| "The target world reported a failure".into()),
                   "data": Value::Object(v)})
        } else {
            json!({"type": "remote-response", "requestId": source_request_id, "success": true,
                   "data": Value::Object(v)})
        };
        out.push(Action::Text {
            conn,
            payload: Bytes::Owned(reply.to_string().into_bytes()),
        });
    }

    /// `remote-response` with `success: false` and `error` to the asking world.
    pub(crate) fn remote_error(
        &self,
        conn: ConnId,
        source_request_id: &str,
        error: &str,
        out: &mut Vec<Action>,
    ) {
        let reply = json!({"type": "remote-response", "requestId": source_request_id,
                           "success": false, "error": error});
        out.push(Action::Text {
            conn,
            payload: Bytes::Owned(reply.to_string().into_bytes()),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::validate_grants;
    use crate::config::Config;
    use crate::relay::events::harness::*;
    use crate::relay::io::{Action, Input, Timer};

    fn texts(out: &[Action], conn: crate::ids::ConnId) -> Vec<Value> {
        bytes_to(out, conn)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn ask(
        h: &mut H,
        from: crate::ids::ConnId,
        rid: &str,
        target: &str,
        action: &str,
    ) -> Vec<Action> {
        let msg = json!({"type": "remote-request", "requestId": rid, "targetClientId": target,
            "action": action, "payload": {"formula": "1d20", "requestId": "spoof"},
            "autoStartIfOffline": true});
        h.text(from, &msg.to_string())
    }

    fn grant(h: &mut H, targets: &[&str], scopes: &[&str]) {
        let w = h
            .relay
            .state
            .worlds
            .iter_mut()
            .find(|w| w.client_id == WORLD)
            .expect("world");
        w.allowed_targets = targets.iter().map(|s| s.to_string()).collect();
        w.remote_scopes = scopes.iter().map(|s| s.to_string()).collect();
    }

    fn response_error(out: &[Action], conn: crate::ids::ConnId, rid: &str) -> String {
        let r = texts(out, conn)
            .into_iter()
            .find(|v| v["type"] == "remote-response")
            .unwrap_or(Value::Null);
        assert_eq!(r["requestId"], rid, "{r}");
        assert_eq!(r["success"], false, "{r}");
        r["error"].as_str().unwrap_or("").to_owned()
    }

    #[test]
    fn a_granted_request_goes_to_the_target_and_its_reply_comes_back() {
        let mut h = H::new(Config::default());
        let (a, _) = h.world_online(WORLD);
        let (b, _) = h.world_online(OTHER);
        grant(&mut h, &[OTHER], &["roll:execute"]);
        let out = ask(&mut h, a, "rr_1_1_roll", OTHER, "roll");
        let sent = texts(&out, b);
        assert_eq!(sent.len(), 1, "{sent:?}");
        let req = &sent[0];
        assert_eq!(req["type"], "roll");
        assert_eq!(req["formula"], "1d20");
        let relay_id = req["requestId"].as_str().unwrap_or("").to_owned();
        assert!(!relay_id.is_empty() && relay_id != "spoof" && relay_id != "rr_1_1_roll");
        assert_eq!(req["_scopes"], json!(["roll:execute"]));
        assert!(texts(&out, a).is_empty(), "no answer before the target's");
        let reply = json!({"type": "roll-result", "requestId": relay_id, "success": true,
                           "data": {"total": 12}});
        let out = h.text(b, &reply.to_string());
        let got = texts(&out, a);
        assert_eq!(
            got,
            vec![
                json!({"type": "remote-response", "requestId": "rr_1_1_roll", "success": true,
                        "data": {"type": "roll-result", "success": true, "data": {"total": 12}}})
            ]
        );
        // A module error string is a failure with that error.
        let out = ask(&mut h, a, "rr_2", OTHER, "roll");
        let relay_id = texts(&out, b)[0]["requestId"].clone();
        let reply = json!({"type": "roll-result", "requestId": relay_id, "error": "Bad formula"});
        let out = h.text(b, &reply.to_string());
        assert_eq!(response_error(&out, a, "rr_2"), "Bad formula");
        // A wildcard grant reaches any other world.
        grant(&mut h, &["*"], &["roll:execute"]);
        let out = ask(&mut h, a, "rr_3", OTHER, "roll");
        assert_eq!(texts(&out, b).len(), 1);
    }

    #[test]
    fn every_refusal_is_a_clear_remote_response() {
        let mut h = H::new(Config {
            remote_request_timeout: Duration::from_secs(60),
            ..Config::default()
        });
        let (a, _) = h.world_online(WORLD);
        // (targets, scopes, target, action, expected error text)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a str, &'a str, &'a str);
        let cases: [Case; 5] = [
            (
                &[],
                &["roll:execute"],
                OTHER,
                "roll",
                "may not send requests to",
            ),
            (&[OTHER], &["chat:read"], OTHER, "roll", "roll:execute"),
            (
                &[OTHER],
                &["roll:execute"],
                OTHER,
                "no-such-action",
                "Unknown remote action",
            ),
            (&["*"], &["roll:execute"], WORLD, "roll", "itself"),
            (&[OTHER], &["roll:execute"], OTHER, "roll", "not connected"),
        ];
        for (targets, scopes, target, action, want) in cases {
            grant(&mut h, targets, scopes);
            let out = ask(&mut h, a, "rr_x", target, action);
            let e = response_error(&out, a, "rr_x");
            assert!(e.contains(want), "{targets:?} {scopes:?} {action}: {e}");
        }
        // Timeout and a target that leaves.
        let (b, _) = h.world_online(OTHER);
        let out = ask(&mut h, a, "rr_t", OTHER, "roll");
        let (at, timer) = out
            .iter()
            .find_map(|x| match x {
                Action::Arm {
                    at,
                    timer: t @ Timer::Request(_),
                } => Some((*at, t.clone())),
                _ => None,
            })
            .expect("a request timer");
        assert_eq!(at, h.now + Duration::from_secs(60));
        h.now = at;
        let out = h.input(Input::Timer(timer));
        assert_eq!(response_error(&out, a, "rr_t"), "Remote request timed out");
        ask(&mut h, a, "rr_d", OTHER, "roll");
        let out = h.input(Input::Closed { conn: b });
        assert_eq!(
            response_error(&out, a, "rr_d"),
            "The target world disconnected"
        );
    }

    #[test]
    fn in_flight_requests_are_capped() {
        let mut h = H::new(Config {
            remote_max_inflight: 1,
            ..Config::default()
        });
        let (a, _) = h.world_online(WORLD);
        let (b, _) = h.world_online(OTHER);
        grant(&mut h, &[OTHER], &["roll:execute"]);
        let out = ask(&mut h, a, "rr_1", OTHER, "roll");
        assert_eq!(texts(&out, b).len(), 1);
        let out = ask(&mut h, a, "rr_2", OTHER, "roll");
        assert!(texts(&out, b).is_empty());
        assert!(response_error(&out, a, "rr_2").contains("Too many"));
    }

    #[test]
    fn grants_are_validated() {
        let mut h = H::new(Config::default());
        let st = &mut h.relay.state;
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            validate_grants(st, WORLD, &s(&[OTHER, OTHER, " "]), &s(&["roll:execute"])),
            Ok((s(&[OTHER]), s(&["roll:execute"])))
        );
        assert_eq!(
            validate_grants(st, WORLD, &s(&[OTHER, "*"]), &s(&[])),
            Ok((s(&["*"]), s(&[])))
        );
        assert!(validate_grants(st, WORLD, &s(&[WORLD]), &s(&[])).is_err());
        assert!(validate_grants(st, WORLD, &s(&["fvtt_unknown"]), &s(&[])).is_err());
        assert!(validate_grants(st, WORLD, &s(&[]), &s(&["nope"])).is_err());
    }
}
