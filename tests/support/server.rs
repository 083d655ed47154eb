//! Starting the real `fvtt-relay` binary for a test, and temporary directories.
//!
//! `Relay::start` runs `fvtt-relay --listen 127.0.0.1:0 --data-dir <dir> <args…>`, waits for
//! its one stdout line `fvtt-relay listening on http://127.0.0.1:PORT`, and keeps stderr in a
//! file (`logs()`). Drop kills the process; temporary directories are removed on drop.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The prefix of the one line the binary prints when it is ready.
pub const READY_PREFIX: &str = "fvtt-relay listening on http://";

/// How long the binary may take to print its ready line (debug build on a busy machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A directory under `std::env::temp_dir()` with a unique name, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "fvtt-relay-{prefix}-{}-{n}-{nanos}",
            std::process::id()
        ));
        if let Err(e) = fs::create_dir_all(&path) {
            panic!("cannot create {}: {e}", path.display());
        }
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Why the binary did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// The exit status, if it exited.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<String>,
    pub stderr: String,
}

enum DataDir {
    Owned(TempDir),
    Borrowed(PathBuf),
}

/// A running relay process.
pub struct Relay {
    child: Child,
    addr: SocketAddr,
    data: DataDir,
    /// Holds `stderr.log`; separate from the data dir so the relay never sees it.
    logdir: TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
}

/// The path of the binary under test.
pub fn relay_binary() -> &'static str {
    env!("CARGO_BIN_EXE_fvtt-relay")
}

/// The environment variable naming the emulator that runs binaries built for another
/// architecture, e.g. `qemu-aarch64` (`make pi-test` sets it; split on whitespace, so it
/// may carry arguments). Unset or empty: binaries run directly.
pub const RUNNER_ENV: &str = "FVTT_TEST_RUNNER";

/// The environment variable by which slow runs (ARM under qemu-user, `make pi-test`)
/// stretch the limits of the wall-clock asserts that are only about speed. Default 1.
pub const TIME_FACTOR_ENV: &str = "FVTT_TEST_TIME_FACTOR";

/// A `Command` for `program`, a binary built for the target under test: wrapped in
/// `FVTT_TEST_RUNNER` when that is set. Cargo's `target.<triple>.runner` covers only the
/// test binaries it starts, not the processes they start in turn.
pub fn target_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let runner = std::env::var(RUNNER_ENV).unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut cmd = Command::new(emulator);
            cmd.args(words).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// `target_command(relay_binary())`: the relay, emulated when the suite is.
pub fn relay_command() -> Command {
    target_command(relay_binary())
}

/// `FVTT_TEST_TIME_FACTOR` (a positive integer; 1 when unset or unreadable).
pub fn time_factor() -> u32 {
    std::env::var(TIME_FACTOR_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&f| f > 0)
        .unwrap_or(1)
}

/// `d` stretched by `time_factor()`: for limits that bound how fast something happens,
/// never for ones that bound how early (a timeout must still not fire too soon).
pub fn scaled(d: Duration) -> Duration {
    d * time_factor()
}

impl Relay {
    /// Starts with a fresh temporary data dir (removed when the relay is dropped).
    pub fn start(args: &[&str]) -> Relay {
        let dir = TempDir::new("data");
        let path = dir.path().to_path_buf();
        match Relay::spawn(&path, args, &[]) {
            Ok(mut r) => {
                r.data = DataDir::Owned(dir);
                r
            }
            Err(f) => panic!("fvtt-relay did not start: {f:?}"),
        }
    }

    /// Starts on an existing data dir, which the caller keeps (for restart tests).
    pub fn start_in(dir: &Path, args: &[&str]) -> Relay {
        match Relay::spawn(dir, args, &[]) {
            Ok(r) => r,
            Err(f) => panic!("fvtt-relay did not start: {f:?}"),
        }
    }

    /// `start_in`, retried while the dir is "in use by another" process. The test process
    /// holds the store's lock fd while `provision` runs, and a relay spawned by a parallel
    /// test can inherit it between its fork and exec; the relay waits 500 ms for a busy
    /// lock itself (`store::LOCK_PATIENCE`), and this covers a loaded machine.
    pub fn start_in_when_free(dir: &Path, args: &[&str]) -> Relay {
        for _ in 0..20 {
            match Relay::spawn(dir, args, &[]) {
                Ok(r) => return r,
                Err(f) if f.stderr.contains("in use by another") => {
                    thread::sleep(Duration::from_millis(100))
                }
                Err(f) => panic!("fvtt-relay did not start: {f:?}"),
            }
        }
        panic!("fvtt-relay did not start: {} stayed locked", dir.display());
    }

    /// Like `start_in`, with extra environment variables, returning the failure instead of
    /// panicking (for tests that expect a refusal, e.g. exit 2 on a bad flag).
    pub fn try_start_in(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Relay, StartFailure> {
        Relay::spawn(dir, args, env)
    }

    fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Relay, StartFailure> {
        let logdir = TempDir::new("log");
        let log_path = logdir.path().join("stderr.log");
        let stderr = match File::create(&log_path) {
            Ok(f) => f,
            Err(e) => panic!("cannot create {}: {e}", log_path.display()),
        };
        let mut cmd = relay_command();
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot spawn {}: {e}", relay_binary()),
        };
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(out) = child.stdout.take() {
            let lines = Arc::clone(&stdout_lines);
            // Keep draining stdout for the life of the process so it can never block on a
            // full pipe; the first line goes to the starter.
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    lock(&lines).push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + scaled(START_TIMEOUT);
        let fail = |child: &mut Child, status: Option<ExitStatus>| {
            let status = status.or_else(|| {
                let _ = child.kill();
                child.wait().ok()
            });
            StartFailure {
                status,
                stdout: lock(&stdout_lines).clone(),
                stderr: fs::read_to_string(&log_path).unwrap_or_default(),
            }
        };
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => match line
                    .strip_prefix(READY_PREFIX)
                    .and_then(|a| a.trim().parse().ok())
                {
                    Some(addr) => break addr,
                    None => continue,
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting; collect its status.
                    let status = wait_for(&mut child, Duration::from_secs(5));
                    return Err(fail(&mut child, status));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(fail(&mut child, Some(status)));
            }
            if Instant::now() >= deadline {
                return Err(fail(&mut child, None));
            }
        };
        Ok(Relay {
            child,
            addr,
            data: DataDir::Borrowed(dir.to_path_buf()),
            logdir,
            stdout: stdout_lines,
            exit: None,
        })
    }

    /// The bound address from the ready line.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://127.0.0.1:PORT<path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        match &self.data {
            DataDir::Owned(d) => d.path(),
            DataDir::Borrowed(p) => p,
        }
    }

    /// Sends SIGTERM (through `kill -TERM`, since there is no libc crate here).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends any signal by name (`TERM`, `INT`, `HUP`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("kill -{name} {} failed: {other:?}", self.pid()),
        }
    }

    /// Waits for the process to exit. None if it is still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_for(&mut self.child, timeout);
        }
        self.exit
    }

    /// Everything the relay wrote to stderr so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.logdir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Every line the relay printed on stdout so far (the ready line first).
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `try_wait` until the deadline (a deadline loop, not a bare sleep).
fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Locks a mutex even if a panicking test thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
