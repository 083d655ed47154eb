//! systemd notifications from the real binary (issue 14): the test owns the datagram socket
//! that `NOTIFY_SOCKET` names, as systemd would, in both forms (a path and an abstract
//! `@name`), and checks what arrives: `READY=1` with a first `STATUS=`, `STATUS=` updates as
//! a world and a client come and go, `WATCHDOG=1` every half `WATCHDOG_USEC`, `STOPPING=1`
//! at SIGTERM, and silence from the watchdog while the loop is wedged.

mod support;
use support::*;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

const T: Duration = DEFAULT_TIMEOUT;
/// What the tests put in `WATCHDOG_USEC`: 400 ms, so `WATCHDOG=1` every 200 ms.
const WATCHDOG_USEC: &str = "400000";
const WATCHDOG_EVERY: Duration = Duration::from_millis(200);

/// Every assignment received (`READY=1`, `STATUS=...`), one per line of each datagram, with
/// its arrival time, collected by a thread for as long as the socket lives.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(Instant, String)>>>);

impl Inbox {
    fn listen(sock: UnixDatagram) -> Inbox {
        let inbox = Inbox::default();
        let out = inbox.0.clone();
        sock.set_read_timeout(Some(millis(100))).unwrap();
        thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let at = Instant::now();
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        let mut v = lock(&out);
                        for line in text.lines() {
                            v.push((at, line.to_string()));
                        }
                    }
                    Err(e) if timed_out(&e) => {
                        // Stop once the test dropped every other handle.
                        if Arc::strong_count(&out) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        inbox
    }

    fn all(&self) -> Vec<(Instant, String)> {
        lock(&self.0).clone()
    }

    fn lines(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, l)| l).collect()
    }

    /// Waits until `line` has arrived; returns its index in `lines()`.
    fn wait_line(&self, line: &str, timeout: Duration) -> Option<usize> {
        let mut found = None;
        wait_for(timeout, || {
            found = self.lines().iter().position(|l| l == line);
            found.is_some()
        });
        found
    }

    fn watchdog_times(&self) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .map(|(t, _)| t)
            .collect()
    }
}

/// Starts a provisioned relay with `env` on top of the notify variables, retrying while a
/// parallel test's child holds the data dir's lock (as `Relay::start_in_when_free` does).
fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Relay {
    for _ in 0..20 {
        match Relay::try_start_in(dir, args, env) {
            Ok(r) => return r,
            Err(f) if f.stderr.contains("in use by another") => thread::sleep(millis(100)),
            Err(f) => panic!("fvtt-relay did not start: {f:?}"),
        }
    }
    panic!("fvtt-relay did not start: {} stayed locked", dir.display());
}

/// The socket `NOTIFY_SOCKET` names: a file in `dir`, or an abstract name.
fn notify_socket(dir: &Path, abstract_name: bool) -> (String, UnixDatagram) {
    if abstract_name {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "fvtt-relay-test-{}-{}",
            std::process::id(),
            ws_random_key().replace(['/', '+', '='], "")
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        (format!("@{name}"), sock)
    } else {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        (path.to_string_lossy().into_owned(), sock)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The whole life of a relay under systemd, as its notifications tell it.
fn notification_sequence(abstract_name: bool) {
    let data = TempDir::new("data");
    let sockdir = TempDir::new("notify");
    let keys = provision(data.path());
    let (name, sock) = notify_socket(sockdir.path(), abstract_name);
    let inbox = Inbox::listen(sock);
    let mut relay = start_with_env(
        data.path(),
        &[],
        &[("NOTIFY_SOCKET", &name), ("WATCHDOG_USEC", WATCHDOG_USEC)],
    );
    let addr = relay.addr();

    // READY=1 with the first status, before anything else.
    assert!(
        inbox.wait_line("READY=1", T).is_some(),
        "no READY=1: {:?}; logs:\n{}",
        inbox.lines(),
        relay.logs()
    );
    let lines = inbox.lines();
    assert_eq!(lines[0], "READY=1", "{lines:?}");
    assert_eq!(lines[1], "STATUS=0 worlds online, 0 clients", "{lines:?}");

    // A world comes online, then a client subscribes: each shows in STATUS=.
    let world = FakeWorld::online(addr, &keys.client_id, &keys.token);
    assert!(
        inbox
            .wait_line("STATUS=1 world online, 0 clients", T)
            .is_some(),
        "{:?}",
        inbox.lines()
    );
    let path = format!("/chat/subscribe?clientId={}", keys.client_id);
    let sse = SseClient::connect(addr, &path, &[("x-api-key", keys.api_key.as_str())])
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    assert!(
        inbox
            .wait_line("STATUS=1 world online, 1 client", T)
            .is_some(),
        "{:?}",
        inbox.lines()
    );
    drop(sse);
    assert!(
        wait_for(T, || inbox
            .lines()
            .iter()
            .filter(|l| *l == "STATUS=1 world online, 0 clients")
            .count()
            == 2),
        "client leaving not shown: {:?}",
        inbox.lines()
    );

    // STATUS= is rate-limited: never two within a second (the READY datagram counts).
    let status_times: Vec<Instant> = inbox
        .all()
        .into_iter()
        .filter(|(_, l)| l.starts_with("STATUS="))
        .map(|(t, _)| t)
        .collect();
    assert!(
        status_times.windows(2).all(|w| w[1] - w[0] >= millis(900)),
        "STATUS= more often than once a second: {:?}",
        status_times
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect::<Vec<_>>()
    );

    // WATCHDOG=1 keeps coming, every half WATCHDOG_USEC.
    assert!(
        wait_for(secs(10), || inbox.watchdog_times().len() >= 8),
        "too few WATCHDOG=1: {:?}",
        inbox.lines()
    );
    let times = inbox.watchdog_times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let m = median(gaps.clone());
    assert!(
        m >= WATCHDOG_EVERY - millis(20) && m <= WATCHDOG_EVERY + millis(100),
        "median WATCHDOG=1 gap {m:?}, want about {WATCHDOG_EVERY:?}: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g >= WATCHDOG_EVERY / 2),
        "WATCHDOG=1 sent too often: {gaps:?}"
    );

    // SIGTERM: STOPPING=1, and then nothing but watchdog pings and status.
    relay.sigterm();
    let stop = inbox
        .wait_line("STOPPING=1", T)
        .unwrap_or_else(|| panic!("no STOPPING=1: {:?}", inbox.lines()));
    assert_eq!(
        relay.wait_exit(secs(10)).and_then(|s| s.code()),
        Some(0),
        "logs:\n{}",
        relay.logs()
    );
    let lines = inbox.lines();
    assert!(
        lines[stop + 1..]
            .iter()
            .all(|l| l == "WATCHDOG=1" || l.starts_with("STATUS=")),
        "after STOPPING=1: {lines:?}"
    );
    assert!(
        lines[stop + 1..]
            .iter()
            .any(|l| l.starts_with("STATUS=Shutting down")),
        "{lines:?}"
    );
    // The order of the kinds, each run of repeats folded: exactly this.
    let mut kinds: Vec<&str> = lines
        .iter()
        .map(|l| l.split('=').next().unwrap_or(""))
        .collect();
    kinds.dedup();
    assert_eq!(kinds[..2], ["READY", "STATUS"], "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| *l == "READY=1").count(),
        1,
        "{lines:?}"
    );
    drop(world);
}

#[test]
fn notify_sequence_over_a_path_socket() {
    notification_sequence(false);
}

#[test]
fn notify_sequence_over_an_abstract_socket() {
    notification_sequence(true);
}

/// Without `WATCHDOG_USEC` (or with a `WATCHDOG_PID` that is not the relay's) there is no
/// watchdog traffic, only READY/STATUS.
#[test]
fn no_watchdog_unless_asked_for_this_process() {
    let data = TempDir::new("data");
    let sockdir = TempDir::new("notify");
    let (name, sock) = notify_socket(sockdir.path(), false);
    let inbox = Inbox::listen(sock);
    let relay = start_with_env(
        data.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", &name),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
            ("WATCHDOG_PID", "1"),
        ],
    );
    assert!(inbox.wait_line("READY=1", T).is_some(), "{}", relay.logs());
    // Five watchdog intervals: a watchdog would have sent about five.
    thread::sleep(WATCHDOG_EVERY * 5);
    assert!(
        inbox.watchdog_times().is_empty(),
        "watchdog fed for another pid: {:?}",
        inbox.lines()
    );
}

/// A wedged loop stops feeding the watchdog (so systemd restarts it), and a loop that
/// recovers feeds it again. The wedge is the test-only `FVTT_RELAY_TEST_WEDGE_MS`: SIGUSR1
/// makes the loop sleep that long.
#[test]
fn a_stalled_loop_stops_sending_watchdog() {
    let data = TempDir::new("data");
    let sockdir = TempDir::new("notify");
    let (name, sock) = notify_socket(sockdir.path(), false);
    let inbox = Inbox::listen(sock);
    let relay = start_with_env(
        data.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", &name),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
            ("FVTT_RELAY_TEST_WEDGE_MS", "2500"),
        ],
    );
    assert!(
        wait_for(secs(10), || inbox.watchdog_times().len() >= 3),
        "watchdog never started: {:?}",
        inbox.lines()
    );
    relay.signal("USR1");
    assert!(
        wait_for(T, || relay.logs().contains("blocking the loop")),
        "the loop never wedged; logs:\n{}",
        relay.logs()
    );
    let wedged = Instant::now();
    // The loop sleeps 2.5 s from (just before) `wedged`: over 1.5 s of it, where a live
    // loop sends about seven WATCHDOG=1, not one may arrive.
    thread::sleep(millis(1600));
    let during: Vec<Duration> = inbox
        .watchdog_times()
        .into_iter()
        .filter(|t| *t > wedged + millis(100) && *t < wedged + millis(1600))
        .map(|t| t - wedged)
        .collect();
    assert!(
        during.is_empty(),
        "WATCHDOG=1 sent by a wedged loop at {during:?}"
    );
    // Once it wakes, the loop feeds the watchdog again.
    let before = inbox.watchdog_times().len();
    assert!(
        wait_for(secs(10), || inbox.watchdog_times().len() >= before + 3),
        "watchdog did not resume: {:?}",
        inbox.lines()
    );
}

/// Without `FVTT_RELAY_TEST_WEDGE_MS` SIGUSR1 is not caught at all: the
/// wedge cannot be armed by accident (the default action ends the process).
#[test]
fn sigusr1_is_not_a_wedge_without_the_test_variable() {
    let mut relay = Relay::start(&[]);
    relay.signal("USR1");
    assert!(
        relay.wait_exit(T).is_some(),
        "SIGUSR1 was caught without FVTT_RELAY_TEST_WEDGE_MS"
    );
    assert!(!relay.logs().contains("blocking the loop"));
}
