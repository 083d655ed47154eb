//! "Acknowledged means durable": a change the relay or the CLI confirms survives `kill -9`,
//! and a change whose save failed is refused (HTTP 503 / CLI exit 1) and undone, while the
//! relay keeps serving everything else. Three ways to make saves fail:
//! - a real full filesystem: a small tmpfs mounted over the data dir (needs root and a
//!   kernel that lets us mount; the test prints why and skips otherwise);
//! - the debug-build fault hook `FVTT_RELAY_TEST_FAIL_SAVES=N` (the next N saves fail);
//! - EMFILE: the relay's descriptor limit lowered with prlimit(1) and used up by clients.

mod support;
use support::*;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(relay_binary());
    cmd.args(args).arg("--data-dir").arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run fvtt-relay")
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn admin(p: &Provisioned) -> [(&'static str, &str); 1] {
    [("x-api-key", p.admin_key.as_str())]
}

/// The ids of the stored API keys, as the admin API lists them.
fn key_ids(addr: SocketAddr, p: &Provisioned) -> Vec<String> {
    let r = get(addr, "/admin/api/keys", &admin(p));
    assert_eq!(r.status, 200, "{r:?}");
    let mut ids: Vec<String> = r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// A forwarded request through the online world answers 200 with this key.
fn forwards(addr: SocketAddr, key: &str) -> u16 {
    get(addr, "/search?query=x", &[("x-api-key", key)]).status
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// None (with the reason printed) when this machine does not let us mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = TempDir::new("tmpfs");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                println!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    stderr_of(&o).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a filler file until the filesystem is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = fs::File::create(&path).expect("filler");
        let block = [0u8; 4096];
        loop {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        // A file smaller than a page must not fit either: small writes until ENOSPC too.
        while f.write_all(&block[..64]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn full_disk_refuses_changes_keeps_serving_and_recovers() {
    let Some(fs_) = Tmpfs::mount("512k") else {
        return;
    };
    let dir = fs_.path().join("data");
    let p = provision_with(&dir, &[(&["search"], &[])]);
    let victim = p.extra_keys[0].clone();
    let mut relay = Relay::start_in_when_free(&dir, &[]);
    let addr = relay.addr();
    let _world = FakeWorld::online(addr, &p.client_id, &p.token);
    let before = key_ids(addr, &p);
    assert_eq!(before.len(), 2);
    let victim_id = get(addr, "/admin/api/keys", &admin(&p)).json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"].as_str() == victim.get(..6))
        .and_then(|k| k["id"].as_str())
        .unwrap()
        .to_string();

    let filler = fs_.fill();

    // Three key creations over the admin API: each refused with the reason, none stored.
    for i in 0..3 {
        let r = post_json(
            addr,
            "/admin/api/keys",
            &admin(&p),
            &json!({"name": format!("bot {i}")}),
        );
        assert_eq!(r.status, 503, "{r:?}");
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("No space left on device"), "{msg}");
        assert!(
            r.json().get("key").is_none(),
            "a refused key must not be shown"
        );
    }
    // The CLI (through the running relay) exits non-zero with the reason, prints no key.
    let o = cli(&dir, &["key", "create", "--name", "cli bot"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr_of(&o));
    assert!(o.stdout.is_empty(), "printed a key: {:?}", o.stdout);
    assert!(stderr_of(&o).contains("No space left"), "{}", stderr_of(&o));
    // Revocation refused: the key keeps working and the CLI says it failed.
    let o = cli(&dir, &["key", "revoke", &victim_id], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr_of(&o));
    assert!(!stderr_of(&o).contains("revoked"), "{}", stderr_of(&o));
    let r = request(
        addr,
        "DELETE",
        &format!("/admin/api/keys/{victim_id}"),
        &admin(&p),
        None,
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(forwards(addr, &victim), 200);
    assert_eq!(forwards(addr, &p.api_key), 200);
    // Pairing codes and admin-key rotation are refused the same way.
    let r = post_json(addr, "/admin/api/pairing-codes", &admin(&p), &json!({}));
    assert_eq!(r.status, 503, "{r:?}");
    let r = post_json(addr, "/admin/api/admin-key/rotate", &admin(&p), &json!({}));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(key_ids(addr, &p), before, "the admin key still works");
    // The relay still serves the world and reads.
    assert_eq!(
        get(addr, "/clients", &[("x-api-key", &p.api_key)]).status,
        200
    );

    // kill -9 and restart: the state is what was acknowledged (nothing since the fill).
    relay.kill();
    fs::remove_file(&filler).unwrap();
    let relay = Relay::start_in_when_free(&dir, &[]);
    let addr = relay.addr();
    assert_eq!(key_ids(addr, &p), before);
    let world = FakeWorld::online(addr, &p.client_id, &p.token);
    assert_eq!(forwards(addr, &victim), 200);

    // Space is back: the same changes succeed and survive another kill -9.
    let filler = fs_.fill();
    let r = post_json(addr, "/admin/api/keys", &admin(&p), &json!({"name": "x"}));
    assert_eq!(r.status, 503, "{r:?}");
    fs::remove_file(&filler).unwrap();
    let r = post_json(
        addr,
        "/admin/api/keys",
        &admin(&p),
        &json!({"name": "late"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let late = r.json()["key"].as_str().unwrap().to_string();
    let o = cli(&dir, &["key", "revoke", &victim_id], &[]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(forwards(addr, &victim), 401);
    let mut relay = relay;
    relay.kill();
    drop(world);
    let relay = Relay::start_in_when_free(&dir, &[]);
    let addr = relay.addr();
    let _world = FakeWorld::online(addr, &p.client_id, &p.token);
    assert_eq!(forwards(addr, &late), 200);
    assert_eq!(forwards(addr, &victim), 401);
    assert_eq!(key_ids(addr, &p).len(), 2);
}

const FAIL_SAVES: &str = "FVTT_RELAY_TEST_FAIL_SAVES";

#[test]
fn injected_save_failures_are_refused_by_the_running_relay() {
    let dir = TempDir::new("inject");
    let p = provision(dir.path());
    // The first three saves fail, then saves work again.
    let mut relay = match Relay::try_start_in(dir.path(), &[], &[(FAIL_SAVES, "3")]) {
        Ok(r) => r,
        Err(f) => panic!("did not start: {f:?}"),
    };
    let addr = relay.addr();
    // No world yet: its metadata save would spend one of the injected failures.
    let before = key_ids(addr, &p);
    let r = post_json(addr, "/admin/api/keys", &admin(&p), &json!({"name": "a"}));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.json()["error"].as_str().unwrap().contains("injected"),
        "{r:?}"
    );
    let o = cli(dir.path(), &["pair"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr_of(&o));
    assert!(o.stdout.is_empty(), "printed a code: {:?}", o.stdout);
    let o = cli(dir.path(), &["admin-key", "--rotate"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr_of(&o));
    assert_eq!(
        fs::read_to_string(dir.path().join("admin.key"))
            .unwrap()
            .trim(),
        p.admin_key,
        "admin.key must keep the key that still works"
    );
    assert_eq!(
        get(addr, "/clients", &[("x-api-key", &p.api_key)]).status,
        200
    );
    let m = get(addr, "/metrics", &admin(&p)).text();
    assert!(m.contains("state_save_failing 1"), "{m}");
    // One failure line for the whole failing period, not one per attempt.
    let logs = relay.logs();
    assert_eq!(
        logs.matches("saving the state failed:").count(),
        1,
        "{logs}"
    );
    // Saves work again: acknowledged, and still there after kill -9.
    let r = post_json(addr, "/admin/api/keys", &admin(&p), &json!({"name": "b"}));
    assert_eq!(r.status, 201, "{r:?}");
    let b = r.json()["key"].as_str().unwrap().to_string();
    assert!(wait_for(secs(5), || relay
        .logs()
        .contains("saving the state works again")));
    let m = get(addr, "/metrics", &admin(&p)).text();
    assert!(m.contains("state_save_failing 0"), "{m}");
    relay.kill();
    let relay = Relay::start_in_when_free(dir.path(), &[]);
    let addr = relay.addr();
    let _world = FakeWorld::online(addr, &p.client_id, &p.token);
    assert_eq!(key_ids(addr, &p).len(), before.len() + 1);
    assert_eq!(forwards(addr, &b), 200);
}

#[test]
fn stopped_mode_cli_fails_without_printing_when_the_save_fails() {
    let dir = TempDir::new("inject-cli");
    let d = dir.path();
    let p = provision(d);
    let id = {
        let o = cli(d, &["key", "list", "--json"], &[]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["id"].as_str().unwrap().to_string()
    };
    let state = fs::read(d.join("state.json")).unwrap();
    let fail = [(FAIL_SAVES, "1")];
    for args in [
        &["key", "create", "--name", "x"][..],
        &["key", "revoke", &id],
        &["pair"],
        &["unpair", &p.client_id],
        &["admin-key", "--rotate"],
    ] {
        let o = cli(d, args, &fail);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?} printed {:?}", o.stdout);
        assert!(
            err.contains("could not be saved") && err.contains("injected"),
            "{err}"
        );
        assert!(
            !err.contains("revoked") && !err.contains("unpaired"),
            "{err}"
        );
        assert_eq!(fs::read(d.join("state.json")).unwrap(), state, "{args:?}");
    }
    assert_eq!(
        fs::read_to_string(d.join("admin.key")).unwrap().trim(),
        p.admin_key
    );
    // Without the fault the same command works.
    let o = cli(d, &["key", "revoke", &id], &[]);
    assert!(o.status.success(), "{}", stderr_of(&o));
}

/// Descriptors of `pid` numbered below `limit`: the slots RLIMIT_NOFILE counts (a
/// descriptor opened before the limit was lowered may sit above it and takes no slot).
fn slots_used(pid: u32, limit: usize) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
            .filter(|&n| n < limit)
            .count()
    })
}

#[test]
fn out_of_descriptors_a_change_fails_cleanly_or_is_durable() {
    const LIMIT: usize = 48;
    let dir = TempDir::new("emfile");
    let p = provision(dir.path());
    let mut relay = Relay::start_in_when_free(dir.path(), &["--head-timeout", "60s"]);
    let addr = relay.addr();
    let pid = relay.pid();
    let set = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={LIMIT}:{LIMIT}"))
        .status();
    if !set.is_ok_and(|s| s.success()) {
        println!("SKIPPED: prlimit cannot lower the relay's descriptor limit");
        return;
    }
    let before = key_ids(addr, &p);
    // Hold idle connections until exactly one descriptor is left: the admin request's
    // connection takes it, so the save cannot open its temp file (EMFILE).
    // Wait for the listing's connection to be gone, so the count is the relay's own.
    let settled = wait_for(secs(5), || {
        let a = slots_used(pid, LIMIT);
        std::thread::sleep(millis(100));
        a == slots_used(pid, LIMIT)
    });
    assert!(settled, "descriptor count never settled");
    let base = slots_used(pid, LIMIT);
    let mut held = Vec::new();
    while base + held.len() < LIMIT - 1 {
        held.push(TcpStream::connect(addr).expect("connect"));
        let want = base + held.len();
        assert!(
            wait_for(secs(5), || slots_used(pid, LIMIT) >= want),
            "the relay did not accept connection {} ({} slots used)",
            held.len(),
            slots_used(pid, LIMIT)
        );
    }
    let r = post_json(
        addr,
        "/admin/api/keys",
        &admin(&p),
        &json!({"name": "emfile"}),
    );
    let acknowledged = match r.status {
        201 => Some(r.json()["key"].as_str().unwrap().to_string()),
        503 => {
            let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(msg.contains("Too many open files"), "{msg}");
            None
        }
        other => panic!("unexpected {other}: {r:?}"),
    };
    assert_eq!(
        acknowledged, None,
        "with no descriptor left the save should fail"
    );
    // Still serving at the limit (the refused request's descriptor is free again).
    assert_eq!(
        get(addr, "/clients", &[("x-api-key", &p.api_key)]).status,
        200
    );
    drop(held);
    // Descriptors are back: the change goes through.
    let r = post_json(
        addr,
        "/admin/api/keys",
        &admin(&p),
        &json!({"name": "later"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let later = r.json()["key"].as_str().unwrap().to_string();
    relay.kill();
    let relay = Relay::start_in_when_free(dir.path(), &[]);
    let addr = relay.addr();
    let _world = FakeWorld::online(addr, &p.client_id, &p.token);
    assert_eq!(key_ids(addr, &p).len(), before.len() + 1);
    assert_eq!(forwards(addr, &later), 200);
}

#[test]
fn a_missing_state_file_with_a_backup_is_not_started_empty() {
    let dir = TempDir::new("nostate");
    let d = dir.path();
    let p = provision(d);
    // A second save, so state.json.bak exists.
    let o = cli(d, &["key", "create", "--name", "second"], &[]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(d.join("state.json.bak").exists());
    fs::remove_file(d.join("state.json")).unwrap();
    let f = match Relay::try_start_in(d, &[], &[]) {
        Ok(_) => panic!("started on a missing state.json with a .bak"),
        Err(f) => f,
    };
    assert_ne!(f.status.and_then(|s| s.code()), Some(0), "{f:?}");
    assert!(f.stderr.contains("is missing but"), "{}", f.stderr);
    assert!(f.stderr.contains("cp -p"), "{}", f.stderr);
    assert!(!d.join("state.json").exists());
    assert_eq!(
        fs::read_to_string(d.join("admin.key")).unwrap().trim(),
        p.admin_key,
        "admin.key must not be replaced"
    );
    // Restored as the message says, it starts with the backed-up keys.
    fs::copy(d.join("state.json.bak"), d.join("state.json")).unwrap();
    let relay = Relay::start_in_when_free(d, &[]);
    assert_eq!(key_ids(relay.addr(), &p).len(), 1);
}

#[test]
fn fifos_where_files_belong_are_refused_not_waited_on() {
    let dir = TempDir::new("fifo");
    let d = dir.path();
    provision(d);
    let mkfifo = |name: &str| {
        let _ = fs::remove_file(d.join(name));
        let ok = Command::new("mkfifo").arg(d.join(name)).status();
        assert!(ok.is_ok_and(|s| s.success()), "mkfifo {name}");
    };
    // Run with a deadline: a regression blocks on the FIFO forever.
    let run = |args: &[&str]| -> Output {
        let mut child = Command::new(relay_binary())
            .args(args)
            .arg("--data-dir")
            .arg(d)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let done = wait_for(secs(10), || child.try_wait().is_ok_and(|s| s.is_some()));
        if !done {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("wait");
        assert!(done, "{args:?} blocked: {}", stderr_of(&out));
        out
    };
    mkfifo("admin.key");
    let o = run(&["admin-key"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_of(&o).contains("it is a FIFO, not a regular file"),
        "{}",
        stderr_of(&o)
    );
    mkfifo("state.json");
    let o = run(&["key", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_of(&o).contains("state.json: it is a FIFO"),
        "{}",
        stderr_of(&o)
    );
    fs::remove_file(d.join("state.json")).unwrap();
    mkfifo("lock");
    let o = run(&["--listen", "127.0.0.1:0"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr_of(&o).contains("lock: it is a FIFO"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn refused_changes_are_not_retried_and_logged_once() {
    let dir = TempDir::new("noretry");
    let p = provision(dir.path());
    let relay = match Relay::try_start_in(dir.path(), &[], &[(FAIL_SAVES, "1000000")]) {
        Ok(r) => r,
        Err(f) => panic!("did not start: {f:?}"),
    };
    let addr = relay.addr();
    for i in 0..25 {
        let r = post_json(
            addr,
            "/admin/api/keys",
            &admin(&p),
            &json!({"name": format!("k{i}")}),
        );
        assert_eq!(r.status, 503, "{r:?}");
    }
    let failed = |addr| {
        let m = get(addr, "/metrics", &admin(&p)).text();
        m.lines()
            .find_map(|l| l.strip_prefix("fvtt_relay_state_saves_total{outcome=\"failed\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no failed-saves counter in {m}"))
    };
    assert_eq!(failed(addr), 25, "one attempt per refused change");
    // Watching for absence needs a window: a refused change has nothing left to retry, so
    // no save may be attempted in it (the old loop retried each one every 2 s).
    std::thread::sleep(secs(3));
    assert_eq!(failed(addr), 25, "refused changes were retried");
    let logs = relay.logs();
    assert_eq!(logs.matches("saving the state failed").count(), 1, "{logs}");
}
