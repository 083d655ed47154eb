//! A `kill -9` at any moment of a save never leaves a state file that fails to load.
//!
//! The parent re-runs this test binary, filtered to `crash_child_writer`, with an environment
//! variable naming the data directory; that child saves in a tight loop until it is killed
//! (SIGKILL via `Child::kill`). After each kill the parent opens the store, which must succeed
//! and must not have gone back in time. Without the variable the child test does nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fvtt_relay::auth::NewKey;
use fvtt_relay::store::{self, KnownWorld, Store};

const CHILD_ENV: &str = "FVTT_RELAY_CRASH_CHILD_DIR";
const READY: &str = "CRASH_CHILD_READY";
const COUNTER_WORLD: &str = "fvtt_counter";
const ROUNDS: u32 = 20;

/// A `Command` re-running this test binary. Under `make pi-test` it is ARM code that cargo
/// starts through qemu-user; `FVTT_TEST_RUNNER` names that emulator (tests/support/server.rs),
/// and the child needs it just the same.
fn self_command(exe: &Path) -> Command {
    let runner = std::env::var("FVTT_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut cmd = Command::new(emulator);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}

/// `FVTT_TEST_TIME_FACTOR` (tests/support/server.rs): how much slower this run may be.
fn time_factor() -> u32 {
    std::env::var("FVTT_TEST_TIME_FACTOR")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&f| f > 0)
        .unwrap_or(1)
}

fn counter(store: &Store) -> u64 {
    store
        .state()
        .worlds
        .iter()
        .find(|w| w.client_id == COUNTER_WORLD)
        .map_or(0, |w| w.paired_ms)
}

/// The child: keep mutating and saving until killed (or 20 s, so a lost parent cannot leave
/// it running forever).
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut store = Store::open(Path::new(&dir)).expect("child: open");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut announced = false;
    while Instant::now() < deadline {
        let n = counter(&store) + 1;
        let st = store.state_mut();
        st.upsert_world(KnownWorld {
            client_id: COUNTER_WORLD.into(),
            paired_ms: n,
            ..KnownWorld::default()
        });
        let spec = NewKey {
            name: format!("crash {n}"),
            scopes: vec!["entity:read".into()],
            ..NewKey::default()
        };
        st.create_api_key(spec, n).expect("child: create key");
        // Keep the file small so each save stays quick.
        if st.api_keys.len() > 50 {
            let oldest = st.api_keys[0].id.clone();
            st.revoke_api_key(&oldest);
        }
        store.save().expect("child: save");
        if !announced {
            println!("{READY}");
            std::io::stdout().flush().expect("child: flush");
            announced = true;
        }
    }
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    fvtt_relay::ids::fill_random(&mut b);
    u64::from_le_bytes(b) % n
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn state_survives_kill_9_at_random_moments() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // we are a child that the filter let through
    }
    let start = Instant::now();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "fvtt-relay-crash-{}-{}",
        std::process::id(),
        fvtt_relay::ids::random_hex(6)
    )));
    let exe = std::env::current_exe().expect("test executable");
    let mut last = 0;
    for round in 0..ROUNDS {
        let mut child = self_command(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    // libtest prints "test crash_child_writer ... " in front of it.
                    Ok(l) if l.contains(READY) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(5) * time_factor());
        // A random moment inside the save loop: saves take a few ms each.
        std::thread::sleep(Duration::from_micros(random_below(15_000)));
        child.kill().expect("kill -9");
        child.wait().expect("reap child");
        assert!(ready.is_ok(), "round {round}: child never saved");

        let store = Store::open(&dir.0)
            .unwrap_or_else(|e| panic!("round {round}: state did not load after kill -9: {e}"));
        let now = counter(&store);
        assert!(
            now >= last && now > u64::from(round),
            "round {round}: counter went from {last} to {now}"
        );
        last = now;
        drop(store);
    }
    // The backup is a whole, loadable state too, and no temp file survives an open.
    let bak = std::fs::read(dir.0.join("state.json.bak")).expect("backup exists");
    let bak: serde_json::Value = serde_json::from_slice(&bak).expect("backup is JSON");
    store::migrate(bak).expect("backup loads");
    let _reopen = Store::open(&dir.0).expect("final open");
    assert!(!dir.0.join("state.json.tmp").exists());
    assert!(
        start.elapsed() < Duration::from_secs(10) * time_factor(),
        "took {:?}",
        start.elapsed()
    );
}
