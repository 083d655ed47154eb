//! The owner's web UI (`/admin`, `/pair/<code>`) in a real headless Chromium, driven over the
//! Chrome DevTools Protocol (CDP) with the tungstenite client and std only.
//!
//! One test walks the issue's story: sign in with the admin key (a wrong key first), create an
//! API key and see it exactly once, let a simulated module open a pair request, approve it on
//! the pair page, and watch the module's status poll turn `approved` with a `pairingCode`. It
//! then finishes pairing as the module would, brings the world online, and checks the worlds,
//! tokens and live-event panels, and unpairs from the UI.
//!
//! Chromium comes from the distribution (`apt-get install -y chromium`, only as root and only
//! when no browser is found). When it truly cannot be had, the test prints
//! `admin_browser: SKIPPED (chromium unavailable: <reason>)` and passes. With
//! `FVTT_RELAY_SCREENSHOT=1` it also writes docs/admin.png.

mod support;
use support::*;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use tungstenite::{Message, WebSocket};

/// A browser start on a busy 2-core machine, and one CDP command (a navigation included).
const BROWSER_START: Duration = Duration::from_secs(30);
const CDP_CALL: Duration = Duration::from_secs(20);
/// How long the page may take to show what a step expects (it polls every 3 s at most).
const UI_WAIT: Duration = Duration::from_secs(15);
/// apt-get on a slow mirror.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

const BROWSERS: [&str; 4] = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
];

// ---- Getting a browser ---------------------------------------------------------------

fn find_browser() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FVTT_RELAY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    BROWSERS.iter().map(PathBuf::from).find(|p| p.exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a command to completion with a deadline; Err says why it failed.
fn run(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    // Drain stderr on a thread so a chatty apt can never block on a full pipe.
    let err = child.stderr.take().map(|s| {
        thread::spawn(move || {
            let lines: Vec<String> = BufReader::new(s).lines().map_while(Result::ok).collect();
            lines[lines.len().saturating_sub(3)..].join(" / ")
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => thread::sleep(millis(200)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} timed out after {timeout:?}"));
            }
            Err(e) => return Err(format!("{cmd:?}: {e}")),
        }
    };
    let tail = err.and_then(|h| h.join().ok()).unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status}): {tail}"))
    }
}

/// A browser binary, installing Chromium from the distribution's packages when we may.
fn browser_or_install() -> Result<PathBuf, String> {
    if let Some(p) = find_browser() {
        return Ok(p);
    }
    if !is_root() {
        return Err("no chromium in /usr/bin and not root, so cannot apt-get install it".into());
    }
    let install = || {
        run(
            Command::new("apt-get")
                .args(["install", "-y", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            INSTALL_TIMEOUT,
        )
    };
    if let Err(first) = install() {
        eprintln!("admin_browser: apt-get install failed ({first}); running apt-get update");
        run(Command::new("apt-get").arg("update"), INSTALL_TIMEOUT)?;
        install()?;
    }
    find_browser().ok_or_else(|| "apt-get installed chromium but no binary was found".into())
}

// ---- The browser process and its DevTools socket ---------------------------------------

/// A headless Chromium with its own profile; killed (and the profile removed) on drop.
struct Browser {
    child: Child,
    ws_url: String,
    _profile: TempDir,
}

impl Browser {
    fn launch(binary: &Path) -> Result<Browser, String> {
        let profile = TempDir::new("chromium");
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        // Chromium announces the browser endpoint on stderr; keep draining stderr afterwards
        // (its dbus/GPU chatter) so the browser never blocks writing to it.
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(err) = child.stderr.take() {
            thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + BROWSER_START;
        let mut seen = Vec::new();
        let ws_url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(millis(250))) {
                Ok(line) => match line.split_once("DevTools listening on ") {
                    Some((_, url)) => break url.trim().to_string(),
                    None => seen.push(line),
                },
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "no DevTools URL within {BROWSER_START:?}; stderr: {}",
                        seen.join("\n")
                    ));
                }
            }
        };
        Ok(Browser {
            child,
            ws_url,
            _profile: profile,
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CDP connection to the browser, talking to one page through a flattened session.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    session: Option<String>,
    /// Errors the page reported meanwhile: console errors, failed loads (a 401 included),
    /// CSP violations, uncaught exceptions.
    errors: Vec<String>,
}

fn timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

impl Cdp {
    fn connect(ws_url: &str) -> Result<Cdp, String> {
        let hostport = ws_url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| format!("odd DevTools URL {ws_url}"))?;
        let stream = TcpStream::connect(hostport).map_err(|e| format!("{hostport}: {e}"))?;
        // A timeout that cannot interrupt the handshake (a `WouldBlock` mid-handshake is fatal
        // here), then short reads so that every wait below can check its own deadline.
        stream
            .set_read_timeout(Some(BROWSER_START))
            .map_err(|e| e.to_string())?;
        let (ws, _) = tungstenite::client::client(ws_url, stream)
            .map_err(|e| format!("DevTools handshake: {e}"))?;
        ws.get_ref()
            .set_read_timeout(Some(millis(200)))
            .map_err(|e| e.to_string())?;
        Ok(Cdp {
            ws,
            next_id: 1,
            session: None,
            errors: Vec::new(),
        })
    }

    /// Sends one command and waits for its reply. Events that arrive meanwhile are dropped,
    /// except JavaScript dialogs (the UI's `confirm()`), which are accepted.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(id, method, params)?;
        let deadline = Instant::now() + CDP_CALL;
        while Instant::now() < deadline {
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(e) if timed_out(&e) => continue,
                Err(e) => return Err(format!("{method}: DevTools socket: {e}")),
            };
            let msg: Value = serde_json::from_str(text.as_str())
                .map_err(|e| format!("{method}: bad CDP message ({e}): {text}"))?;
            if msg["id"].as_u64() == Some(id) {
                if let Some(err) = msg.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(msg["result"].clone());
            }
            match msg["method"].as_str() {
                Some("Log.entryAdded") if msg["params"]["entry"]["level"] == "error" => {
                    let e = &msg["params"]["entry"];
                    self.errors.push(format!("{} {}", e["text"], e["url"]));
                }
                Some("Runtime.exceptionThrown") => {
                    self.errors
                        .push(msg["params"]["exceptionDetails"].to_string());
                }
                Some("Runtime.consoleAPICalled") if msg["params"]["type"] == "error" => {
                    self.errors.push(msg["params"]["args"].to_string());
                }
                _ => {}
            }
            if msg["method"] == "Page.javascriptDialogOpening" {
                let dialog = self.next_id;
                self.next_id += 1;
                self.send(
                    dialog,
                    "Page.handleJavaScriptDialog",
                    json!({"accept": true}),
                )?;
            }
        }
        Err(format!("{method}: no reply within {CDP_CALL:?}"))
    }

    fn send(&mut self, id: u64, method: &str, params: Value) -> Result<(), String> {
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("{method}: send: {e}"))
    }

    /// Opens a page target and talks to it from now on.
    fn open_page(&mut self) -> Result<(), String> {
        let target = self.call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or("no targetId")?
            .to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        let session = attached["sessionId"].as_str().ok_or("no sessionId")?;
        self.session = Some(session.to_string());
        self.call("Page.enable", json!({}))?;
        self.call("Runtime.enable", json!({}))?;
        self.call("Log.enable", json!({}))?;
        self.call("Network.enable", json!({}))?;
        Ok(())
    }
}

// ---- Page helpers (panicking: a failed step fails the test with the page's text) --------

struct Page {
    cdp: Cdp,
    base: String,
}

impl Page {
    /// Evaluates `expr` (promises awaited) and returns its JSON value.
    fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.cdp.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{expr}: {ex}"));
        }
        Ok(r["result"]["value"].clone())
    }

    fn js(&mut self, expr: &str) -> Value {
        match self.eval(expr) {
            Ok(v) => v,
            Err(e) => panic!("{e}\npage: {}", self.text()),
        }
    }

    /// The visible text of the page, for failure messages.
    fn text(&mut self) -> String {
        match self.eval("document.body ? document.body.innerText : ''") {
            Ok(v) => v.as_str().unwrap_or_default().chars().take(3000).collect(),
            Err(e) => format!("<{e}>"),
        }
    }

    /// Waits until `expr` is truthy; returns its value.
    fn wait(&mut self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + UI_WAIT;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.eval(expr) {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = v,
                Err(e) => last = Value::String(e),
            }
            thread::sleep(millis(100));
        }
        panic!(
            "timed out waiting for {what} ({expr}); last value {last}\npage: {}",
            self.text()
        );
    }

    fn goto(&mut self, path: &str) {
        let url = format!("{}{path}", self.base);
        if let Err(e) = self.cdp.call("Page.navigate", json!({"url": url})) {
            panic!("navigate to {url}: {e}");
        }
        self.wait(
            &format!("{path} to load"),
            &format!(
                "location.href === {} && document.readyState === 'complete'",
                js_str(&url)
            ),
        );
    }

    /// Focuses an input and types into it through CDP's Input domain, like a user.
    fn type_into(&mut self, id: &str, text: &str) {
        self.js(&format!(
            "(() => {{ const i = document.getElementById({0}); i.value = ''; i.focus(); return true; }})()",
            js_str(id)
        ));
        if let Err(e) = self.cdp.call("Input.insertText", json!({"text": text})) {
            panic!("typing into #{id}: {e}");
        }
    }

    fn click(&mut self, selector: &str) {
        self.js(&format!(
            "(() => {{ const b = document.querySelector({0}); if (!b) throw new Error('no ' + {0}); b.click(); return true; }})()",
            js_str(selector)
        ));
    }

    fn shown(&mut self, id: &str) -> bool {
        self.js(&format!("!document.getElementById({}).hidden", js_str(id))) == json!(true)
    }

    fn text_of(&mut self, id: &str) -> String {
        let v = self.js(&format!(
            "document.getElementById({}).textContent",
            js_str(id)
        ));
        v.as_str().unwrap_or_default().to_string()
    }
}

impl Page {
    /// One key press through CDP's Input domain (what a keyboard user does).
    fn press(&mut self, key: &str) {
        let (code, vk, text) = match key {
            "Tab" => ("Tab", 9, ""),
            "Enter" => ("Enter", 13, "\r"),
            " " => ("Space", 32, " "),
            other => panic!("press: no mapping for {other:?}"),
        };
        let mut down = json!({"type": "keyDown", "key": key, "code": code,
            "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk});
        if !text.is_empty() {
            down["text"] = json!(text);
        }
        let up = json!({"type": "keyUp", "key": key, "code": code,
            "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk});
        for ev in [down, up] {
            if let Err(e) = self.cdp.call("Input.dispatchKeyEvent", ev) {
                panic!("pressing {key:?}: {e}");
            }
        }
    }

    /// Presses Tab until the focused element matches `selector` (at most `max` presses):
    /// proves it is reachable by keyboard, in tab order.
    fn tab_to(&mut self, selector: &str, max: usize) {
        let check = format!(
            "document.activeElement !== null && document.activeElement.matches({})",
            js_str(selector)
        );
        for _ in 0..max {
            self.press("Tab");
            if self.js(&check) == json!(true) {
                return;
            }
        }
        let at = self
            .js("document.activeElement ? document.activeElement.outerHTML.slice(0, 200) : 'none'");
        panic!("{selector} not reached with {max} Tab presses; focus is on {at}");
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        let m = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        if let Err(e) = self.cdp.call("Emulation.setDeviceMetricsOverride", m) {
            panic!("viewport: {e}");
        }
    }

    fn color_scheme(&mut self, scheme: &str) {
        let media = json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]});
        if let Err(e) = self.cdp.call("Emulation.setEmulatedMedia", media) {
            panic!("color scheme: {e}");
        }
    }

    /// Runs axe-core on the page as it is now and fails with every violation, of any impact.
    fn axe(&mut self, what: &str, axe_js: &str) {
        if axe_js.is_empty() {
            return;
        }
        if self.js("typeof window.axe === 'object'") != json!(true) {
            if let Err(e) = self.eval(axe_js) {
                panic!("injecting axe-core into {what}: {}", &e[..e.len().min(500)]);
            }
        }
        let found = self.js(
            "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v =>              v.id + ' (' + v.impact + '): ' + v.help + ' -- ' + v.nodes.map(n => n.target.join(' ') +              ' ' + (n.failureSummary || '').replace(/\\s+/g, ' ')).join(' | ')))",
        );
        let list: Vec<String> = found
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        println!("admin_browser: axe on {what}: {} violations", list.len());
        assert!(list.is_empty(), "axe on {what}:\n{}", list.join("\n"));
    }

    /// Fails with whatever the page logged as an error since the last call, and forgets it.
    fn no_errors(&mut self, what: &str) {
        // One round trip so that events already sent are read.
        self.js("1");
        let errs = std::mem::take(&mut self.cdp.errors);
        assert!(
            errs.is_empty(),
            "{what}: the page logged errors:\n{}",
            errs.join("\n")
        );
    }
}

// ---- axe-core -----------------------------------------------------------------------

/// axe.min.js, from `make test-deps` (npm into target/axe) or installed here with npm; Err
/// says why there is none.
fn axe_source() -> Result<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = match std::env::var("FVTT_RELAY_AXE") {
        Ok(p) => PathBuf::from(p),
        Err(_) => root.join("target/axe/node_modules/axe-core/axe.min.js"),
    };
    if !path.exists() {
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(root.join("target/axe"))
                .arg("axe-core"),
            INSTALL_TIMEOUT,
        )?;
    }
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A relay's admin key, waited for (written on its first start, before it listens).
fn admin_key_of(relay: &Relay) -> String {
    let key_file = relay.data_dir().join("admin.key");
    let mut key = String::new();
    let found = wait_for(secs(5), || {
        key = std::fs::read_to_string(&key_file)
            .unwrap_or_default()
            .trim()
            .to_string();
        !key.is_empty()
    });
    assert!(found, "no admin key in {}", key_file.display());
    key
}

/// Chromium, axe-core (empty when it cannot be had) and a page on `relay`; None (with the
/// SKIPPED line printed) when the browser cannot be had.
fn browser_page(test: &str, relay: &Relay) -> Option<(Browser, Page, String)> {
    let binary = match browser_or_install() {
        Ok(b) => b,
        Err(reason) => {
            println!("{test}: SKIPPED (chromium unavailable: {reason})");
            return None;
        }
    };
    // Without axe-core the pages are still driven; only the accessibility checks are
    // skipped, and said so.
    let axe = match axe_source() {
        Ok(a) => a,
        Err(reason) => {
            println!("{test}: axe checks SKIPPED (axe-core unavailable: {reason})");
            String::new()
        }
    };
    let browser = match Browser::launch(&binary) {
        Ok(b) => b,
        Err(e) => panic!("chromium at {} did not start: {e}", binary.display()),
    };
    let mut cdp = match Cdp::connect(&browser.ws_url) {
        Ok(c) => c,
        Err(e) => panic!("DevTools connection: {e}"),
    };
    if let Err(e) = cdp.open_page() {
        panic!("opening a page: {e}");
    }
    let page = Page {
        cdp,
        base: relay.url(""),
    };
    Some((browser, page, axe))
}

fn shots() -> bool {
    std::env::var("FVTT_RELAY_SCREENSHOT").is_ok_and(|v| v == "1")
}

fn sign_in(page: &mut Page, key: &str) {
    page.wait(
        "the sign-in form",
        "!document.getElementById('login').hidden",
    );
    page.type_into("login-key", key);
    page.click("#login-form button[type=submit]");
    page.wait("signed in", "!document.getElementById('app').hidden");
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// A JS string literal (JSON strings are valid JS).
fn js_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn expect_status(resp: &RawResponse, want: u16, what: &str) {
    assert_eq!(resp.status, want, "{what}: {resp:?}");
}

// ---- The test --------------------------------------------------------------------------

#[test]
fn owner_signs_in_creates_a_key_and_approves_a_pairing() {
    // An allow-list for another app adds to same-origin: the page's own live view still
    // connects (issue 10: the list used to replace it).
    let relay = Relay::start(&["--allowed-ws-origins", "https://other-app.example"]);
    let addr = relay.addr();
    let admin_key = admin_key_of(&relay);
    let Some((browser, mut page, axe)) = browser_page("admin_browser", &relay) else {
        return;
    };
    page.viewport(1280, 1000, false);

    // 0. A browser at / gets the landing page, which leads to /admin.
    page.goto("/");
    page.wait(
        "the landing page",
        "document.querySelector('a[href=\"/admin\"]') !== null",
    );
    page.axe("the landing page", &axe);
    if shots() {
        screenshot(&mut page, "docs/home.png", 1280);
    }

    // 1. Sign in: a wrong key is refused on the page, the right one opens the panels. A
    // signed-out load logs no error (the session check answers 200 "signed out").
    page.goto("/admin");
    page.wait(
        "the sign-in form",
        "!document.getElementById('login').hidden",
    );
    page.no_errors("a signed-out load of /admin");
    page.axe("the sign-in page", &axe);
    page.type_into("login-key", "not-the-admin-key");
    page.click("#login-form button[type=submit]");
    page.wait(
        "the refusal",
        "document.getElementById('login-msg').classList.contains('err')",
    );
    assert!(!page.shown("app"), "a wrong key opened the admin panels");
    page.cdp.errors.clear(); // the refused sign-in's 401, expected
    page.type_into("login-key", &admin_key);
    page.click("#login-form button[type=submit]");
    page.wait(
        "the admin panels with the 32 scopes",
        "!document.getElementById('app').hidden && \
         document.querySelectorAll('#key-scopes input').length === 32",
    );
    let defaults = page.js("document.querySelectorAll('#key-scopes input:checked').length");
    assert_eq!(defaults, json!(17), "the read-only defaults start checked");

    // 2. Create a key with two scopes, expiring in 30 days; it is shown once, then never again.
    page.js("document.getElementById('key-create').open = true");
    page.type_into("key-name", "browser-test");
    page.type_into("key-days", "30");
    page.click("#scopes-none");
    page.click("#key-scopes input[value='clients:read']");
    page.click("#key-scopes input[value='world:info']");
    page.click("#key-submit");
    let key = page.wait(
        "the new key",
        "!document.getElementById('new-key').hidden && document.getElementById('new-key-value').value",
    );
    let key = key.as_str().unwrap_or_default().to_string();
    assert!(key.len() >= 32, "new key looks short: {key:?}");
    page.wait(
        "the key in the list",
        "document.getElementById('key-list').textContent.includes('browser-test') && \
         document.getElementById('key-list').textContent.includes('2 scopes')",
    );
    // 30 days read as 30, not 29; "created 0 s ago" keeps counting without a redraw.
    let expiry = page.js("document.getElementById('key-list').textContent");
    assert!(
        expiry
            .as_str()
            .unwrap_or_default()
            .contains("expires in 30 d"),
        "{expiry}"
    );
    let first = page.js("document.querySelector('#key-list time[data-ms]').textContent");
    page.wait(
        "the key's relative time to move on",
        &format!(
            "document.querySelector('#key-list time[data-ms]').textContent !== {}",
            first
        ),
    );
    let listed = get(addr, "/clients", &[("x-api-key", key.as_str())]);
    assert!(
        listed.status != 401 && listed.status != 403,
        "the key made in the UI does not work for clients:read: {listed:?}"
    );
    page.click("#new-key-done");
    assert!(!page.shown("new-key"), "Done does not hide the key");
    page.goto("/admin");
    page.wait(
        "the panels again (the session cookie persists)",
        "!document.getElementById('app').hidden && \
         document.getElementById('key-list').textContent.includes('browser-test')",
    );
    let html = page.js("document.documentElement.outerHTML");
    assert!(
        !html.as_str().unwrap_or_default().contains(&key),
        "the key's plaintext is on the page after a reload"
    );

    // 3. A module asks to pair; the request shows on the admin page.
    let world = json!({
        "worldId": "browser-world",
        "worldTitle": "Browser <i>Test</i> World",
        "systemId": "dnd5e",
        "systemTitle": "Dungeons & Dragons Fifth Edition",
        "systemVersion": "4.3.1",
        "foundryVersion": "13.345",
        "serverFingerprint": "fp-browser-test",
    });
    let created = post_json(addr, "/auth/pair-request", &[], &world);
    expect_status(&created, 201, "POST /auth/pair-request");
    let created = created.json();
    let code = created["code"].as_str().unwrap_or_default().to_string();
    assert!(!code.is_empty(), "no code: {created}");
    let pair_url = created["pairUrl"].as_str().unwrap_or_default();
    assert!(
        pair_url.ends_with(&format!("/pair/{code}")),
        "pairUrl {pair_url:?} is not this relay's /pair/{code}"
    );
    page.wait(
        "the pending request on the admin page",
        "document.getElementById('req-list').textContent.includes('Browser <i>Test</i> World')",
    );

    // 4. The pair page shows the world (as text: the title's tags stay visible) and approves.
    page.goto(&format!("/pair/{code}"));
    page.wait(
        "the request's details",
        "!document.getElementById('pair-actions').hidden && \
         document.getElementById('pi-title').textContent === 'Browser <i>Test</i> World'",
    );
    assert_eq!(
        page.js("document.querySelectorAll('#pi-title i').length"),
        json!(0),
        "the world title was parsed as HTML"
    );
    assert!(page
        .text_of("pi-system")
        .contains("Dungeons & Dragons Fifth Edition 4.3.1"));
    assert_eq!(page.text_of("pi-foundry"), "13.345");
    page.axe("the pair page (pending)", &axe);
    if shots() {
        screenshot(&mut page, "docs/pair.png", 1280);
    }
    page.click("#pair-approve");
    page.wait(
        "the approval, at once",
        "document.getElementById('pair-status').textContent.startsWith('Paired: return to Foundry')",
    );
    assert!(
        !page.shown("pair-actions"),
        "Approve/Deny stay after answering"
    );
    page.axe("the pair page (approved)", &axe);

    // 5. The module's poll (every 3 s in the module; rate-limited per IP) turns `approved`.
    let status_path = format!("/auth/pair-request/{code}/status");
    let deadline = Instant::now() + secs(10);
    let status = loop {
        let r = get(addr, &status_path, &[]);
        let v = if r.status == 200 {
            r.json()
        } else {
            Value::Null
        };
        if v["status"] == "approved" {
            break v;
        }
        assert!(Instant::now() < deadline, "status never approved: {r:?}");
        thread::sleep(secs(1));
    };
    let pairing_code = status["pairingCode"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(pairing_code.len(), 6, "pairingCode: {status}");

    // 6. The module spends the code, connects, and the admin page follows it live. The page is
    // open before the world exists, so its first world-connected names a world it has not
    // listed yet.
    page.goto("/admin");
    page.wait(
        "the live event view",
        "document.getElementById('ev-status').textContent === 'live'",
    );
    let paired = post_json(
        addr,
        "/auth/pair",
        &[],
        &json!({"code": pairing_code, "worldId": "browser-world",
                "worldTitle": "Browser <i>Test</i> World", "serverFingerprint": "fp-browser-test",
                "existingClientId": "", "serverOrigin": "http://localhost:30000"}),
    );
    expect_status(&paired, 200, "POST /auth/pair");
    let paired = paired.json();
    let client_id = paired["clientId"].as_str().unwrap_or_default().to_string();
    let token = paired["token"].as_str().unwrap_or_default().to_string();
    assert!(!client_id.is_empty() && !token.is_empty(), "{paired}");

    let online = FakeWorld::online(addr, &client_id, &token);
    page.wait(
        "the world online in the worlds panel",
        &format!(
            "document.getElementById('world-list').textContent.includes({}) && \
             document.querySelector('#world-list .badge.ok') !== null",
            js_str(&client_id)
        ),
    );
    // (FakeWorld's hello says its title is "Test World & Co".)
    page.wait(
        "the world-connected event, named by the world's title",
        "[...document.querySelectorAll('#ev-list li')].some(li => \
           li.querySelector('.badge').textContent === 'world-connected' && \
           li.querySelector('strong') && li.querySelector('strong').textContent === 'Test World & Co')",
    );
    page.wait(
        "the world's connection token",
        &format!(
            "document.getElementById('token-list').textContent.includes({})",
            js_str(&client_id)
        ),
    );
    // Issue 10: who is logged in (player-list) and the module's notices (module-notify).
    page.wait(
        "the world's players",
        "document.getElementById('world-list').textContent.includes('players: Gamemaster (GM)')",
    );
    assert!(
        online.send_json(&json!({"type": "module-notify", "event": "settings-change",
        "details": "Setting `wsRelayUrl` was changed", "actor": "Gamemaster", "world": "W"}))
    );
    page.wait(
        "the module-notify event",
        "[...document.querySelectorAll('#ev-list li')].some(li => \
         li.textContent.includes('module-notify') && li.textContent.includes('wsRelayUrl'))",
    );

    // The MCP panel: the endpoint and ready-to-paste client configurations for a pasted key.
    page.type_into("mcp-key", &key);
    let config = page.wait(
        "the MCP client configuration",
        &format!(
            "document.getElementById('mcp-url').textContent === location.origin + '/mcp' && \
             document.getElementById('mcp-config').textContent.includes('Bearer ' + {}) && \
             document.getElementById('mcp-config').textContent",
            js_str(&key)
        ),
    );
    let config = config.as_str().unwrap_or_default();
    assert!(
        config.contains("claude mcp add --transport http foundry http://"),
        "{config}"
    );
    assert!(config.contains("\"type\": \"http\""), "{config}");
    page.js("document.getElementById('mcp-key').value = ''; true");

    {
        // A second world waiting, and a fresh pairing code, so every panel has data.
        let second = json!({"worldId": "second", "worldTitle": "Curse of Strahd",
            "systemId": "dnd5e", "systemTitle": "Dungeons & Dragons Fifth Edition",
            "systemVersion": "4.3.1", "foundryVersion": "13.345"});
        expect_status(
            &post_json(addr, "/auth/pair-request", &[], &second),
            201,
            "second pair request",
        );
        page.wait(
            "the second request",
            "document.getElementById('req-list').textContent.includes('Curse of Strahd')",
        );
        page.click("#code-new");
        page.wait(
            "a pairing code",
            "document.getElementById('code-value').textContent.length === 6",
        );
        // A second world that connected and went away: its row says why it is offline.
        let code = post_json(
            addr,
            "/admin/api/pairing-codes",
            &[("x-api-key", admin_key.as_str())],
            &json!({}),
        );
        let code = code.json()["code"].as_str().unwrap_or_default().to_string();
        let paired = post_json(
            addr,
            "/auth/pair",
            &[],
            &json!({"code": code, "worldId": "lost-mine", "worldTitle": "Lost Mine"}),
        );
        expect_status(&paired, 200, "second POST /auth/pair");
        let paired = paired.json();
        let mut gone = FakeWorld::online(
            addr,
            paired["clientId"].as_str().unwrap_or_default(),
            paired["token"].as_str().unwrap_or_default(),
        );
        page.wait(
            "the second world online",
            "document.querySelectorAll('#world-list .badge.ok').length === 2",
        );
        gone.stop();
        page.wait(
            "why the second world is offline",
            "[...document.querySelectorAll('#world-list .why')].some(p => \
               p.textContent.startsWith(\"The GM's browser closed the connection\"))",
        );
        page.js(
            "document.querySelectorAll('#world-list details.history').forEach(d => d.open = true)",
        );
        // A chat message long enough that its opened JSON scrolls: a scrollable region
        // keyboard users must be able to reach (axe scrollable-region-focusable).
        let long: Vec<String> = (1..=60)
            .map(|i| format!("line {i} of a long chat message"))
            .collect();
        let mut msg = chat_message("long-1", &long.join("\n"));
        msg["flags"] = json!((1..=40)
            .map(|i| (format!("flag{i}"), json!(i)))
            .collect::<serde_json::Map<_, _>>());
        assert!(online.emit_event("chat-event", json!({"eventType": "create", "data": msg})));
        page.wait(
            "the long chat event",
            "document.querySelector('#ev-list li .badge') && \
             document.querySelector('#ev-list li .badge').textContent === 'chat-create'",
        );
        let scrolls = page.js(
            "(() => { const d = document.querySelector('#ev-list details'); d.open = true; \
               const p = d.querySelector('pre'); return p.scrollHeight > p.clientHeight; })()",
        );
        assert_eq!(scrolls, json!(true), "the opened event does not scroll");
        page.axe("the admin page (light)", &axe);
        if shots() {
            screenshot(&mut page, "docs/admin.png", 1280);
        }
        page.color_scheme("dark");
        page.axe("the admin page (dark)", &axe);
        if shots() {
            screenshot(&mut page, "docs/admin-dark.png", 1280);
        }
        page.color_scheme("light");
        // The nav lists the panels in the order the page shows them.
        let order = page.js(
            "[...document.querySelectorAll('#nav a')].map(a => a.getAttribute('href').slice(1)).join() === \
             [...document.querySelectorAll('#app > section')].map(s => s.id).join()",
        );
        assert_eq!(order, json!(true), "nav order differs from the page order");
        page.viewport(390, 844, true);
        // Every nav link is visible on a phone, none clipped.
        let clipped = page.js(
            "[...document.querySelectorAll('#nav a')].filter(a => { const r = a.getBoundingClientRect(); \
               return r.width === 0 || r.left < 0 || r.right > window.innerWidth; }).map(a => a.textContent)",
        );
        assert_eq!(clipped, json!([]), "nav links clipped on a phone");
        if shots() {
            screenshot(&mut page, "docs/admin-phone.png", 390);
        }
        page.viewport(1280, 1000, false);
        page.no_errors("the admin page with every panel");
    }

    // The relay unreachable: one notice across the whole grid, in words, gone when it is back.
    if let Err(e) = page.cdp.call(
        "Network.emulateNetworkConditions",
        json!({"offline": true, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
    ) {
        panic!("offline: {e}");
    }
    page.wait(
        "the unreachable notice",
        "document.getElementById('notice').textContent === \
           'Pair requests could not be loaded: The relay cannot be reached.'",
    );
    let spans = page.js(
        "Math.abs(document.getElementById('notice').getBoundingClientRect().width - \
           document.getElementById('app').getBoundingClientRect().width) < 2",
    );
    assert_eq!(spans, json!(true), "the notice does not span the grid");
    if let Err(e) = page.cdp.call(
        "Network.emulateNetworkConditions",
        json!({"offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
    ) {
        panic!("online: {e}");
    }
    page.wait(
        "the notice gone",
        "document.getElementById('notice').textContent === ''",
    );
    page.cdp.errors.clear(); // the failed loads while offline

    // Issue 10: the module's Upgrade button asks for cross-world permission; the pair page
    // shows exactly what approving grants, refuses an approval that grants nothing, and
    // stores what the owner chose.
    let up = post_json(
        addr,
        "/auth/pair-request",
        &[],
        &json!({"clientId": client_id, "worldId": "browser-world", "worldTitle": "Browser World",
                "upgradeOnly": true}),
    );
    expect_status(&up, 201, "upgrade request");
    let up_code = up.json()["code"].as_str().unwrap_or_default().to_string();
    page.goto(&format!("/pair/{up_code}"));
    page.wait(
        "the grant fields",
        "!document.getElementById('pair-grant').hidden && document.getElementById('pg-targets') !== null",
    );
    page.click("#pair-approve");
    page.wait(
        "the refusal of an empty grant",
        "document.getElementById('pair-status').textContent.includes('grants nothing')",
    );
    page.type_into("pg-targets", "*");
    page.type_into("pg-scopes", "roll:execute, entity:read");
    page.click("#pair-approve");
    page.wait(
        "the approval",
        "document.getElementById('pair-status').textContent.startsWith('Approved')",
    );
    let worlds = get(
        addr,
        "/admin/api/worlds",
        &[("x-api-key", admin_key.as_str())],
    )
    .json();
    let w = &worlds["worlds"][0];
    assert_eq!(w["allowedTargets"], json!(["*"]), "{worlds}");
    assert_eq!(w["remoteScopes"], json!(["roll:execute", "entity:read"]));
    page.goto("/admin");
    page.wait(
        "the grant in the worlds panel",
        "document.getElementById('world-list').textContent.includes('cross-world: to every other world')",
    );

    // 7. Unpair from the UI (its confirm() is accepted): the world and its token go away.
    page.click("#world-list button.danger");
    page.wait(
        "the world gone",
        &format!(
            "!document.getElementById('world-list').textContent.includes({0}) && \
             !document.getElementById('token-list').textContent.includes({0})",
            js_str(&client_id)
        ),
    );
    drop(online);
    drop(browser);
}

/// Saves a full-page PNG of the current page under the crate root, `width` pixels wide.
fn screenshot(page: &mut Page, rel: &str, width: u32) {
    let height = page.js("Math.ceil(document.documentElement.scrollHeight)");
    let height = height.as_u64().unwrap_or(1000).clamp(600, 4000);
    let metrics =
        json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600});
    if let Err(e) = page.cdp.call("Emulation.setDeviceMetricsOverride", metrics) {
        panic!("viewport for the screenshot: {e}");
    }
    let shot = match page
        .cdp
        .call("Page.captureScreenshot", json!({"format": "png"}))
    {
        Ok(s) => s,
        Err(e) => panic!("screenshot: {e}"),
    };
    let png = match base64_decode(shot["data"].as_str().unwrap_or_default()) {
        Ok(b) => b,
        Err(e) => panic!("screenshot data: {e:?}"),
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if let Err(e) = std::fs::write(&path, png) {
        panic!("cannot write {}: {e}", path.display());
    }
    println!("admin_browser: wrote {}", path.display());
}

impl Page {
    fn wait_up_to(&mut self, what: &str, expr: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            match self.eval(expr) {
                Ok(v) if truthy(&v) => return v,
                _ if Instant::now() < deadline => thread::sleep(millis(200)),
                other => panic!(
                    "timed out waiting for {what} ({expr}): {other:?}\npage: {}",
                    self.text()
                ),
            }
        }
    }

    /// A browser-level CDP call (no page session), e.g. permissions.
    fn browser_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.cdp.session.take();
        let r = self.cdp.call(method, params);
        self.cdp.session = session;
        r
    }
}

/// The keyboard alone, on a phone-sized page: sign in, create a key, copy it, done. The new
/// key shows whole (wrapped), and every step is reached with Tab.
#[test]
fn keyboard_only_sign_in_create_copy_done_on_a_phone() {
    let relay = Relay::start(&[]);
    let admin_key = admin_key_of(&relay);
    let Some((browser, mut page, axe)) = browser_page("admin_browser keyboard", &relay) else {
        return;
    };
    // 127.0.0.1 is a secure context: with the permission the Clipboard API copies for real.
    let origin = relay.url("");
    let origin = origin.trim_end_matches('/');
    if let Err(e) = page.browser_call(
        "Browser.grantPermissions",
        json!({"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
    ) {
        panic!("clipboard permission: {e}");
    }
    page.viewport(390, 844, true);
    page.goto("/admin");
    page.wait(
        "the sign-in form",
        "!document.getElementById('login').hidden",
    );
    if shots() {
        screenshot(&mut page, "docs/signin-phone.png", 390);
    }
    page.js("document.activeElement && document.activeElement.blur(), true");
    page.tab_to("#login-key", 10);
    if let Err(e) = page
        .cdp
        .call("Input.insertText", json!({"text": admin_key}))
    {
        panic!("typing the key: {e}");
    }
    page.press("Enter");
    page.wait(
        "the panels, signed in by keyboard",
        "!document.getElementById('app').hidden && \
         document.querySelectorAll('#key-scopes input').length === 32",
    );
    page.tab_to("#key-create > summary", 80);
    page.press("Enter");
    assert_eq!(
        page.js("document.getElementById('key-create').open"),
        json!(true),
        "Enter on 'Create a key' does not open it"
    );
    page.tab_to("#key-name", 3);
    if let Err(e) = page
        .cdp
        .call("Input.insertText", json!({"text": "keyboard-key"}))
    {
        panic!("typing the name: {e}");
    }
    page.press("Enter");
    let key = page.wait(
        "the new key",
        "!document.getElementById('new-key').hidden && document.getElementById('new-key-value').value",
    );
    let key = key.as_str().unwrap_or_default().to_string();
    assert_eq!(key.len(), 64, "{key:?}");
    // Whole and wrapped: nothing scrolled out of the box, horizontally or vertically.
    let whole = page.js(
        "(() => { const t = document.getElementById('new-key-value'); \
           return t.scrollWidth <= t.clientWidth && t.scrollHeight <= t.clientHeight + 1; })()",
    );
    assert_eq!(whole, json!(true), "the new key is cut off on a phone");
    page.axe("the admin page with a new key (phone)", &axe);
    if shots() {
        screenshot(&mut page, "docs/admin-newkey-phone.png", 390);
        page.viewport(390, 844, true);
    }
    page.tab_to("#new-key-copy", 3);
    page.press("Enter");
    page.wait(
        "the copy confirmed",
        "document.getElementById('new-key-copy').textContent === 'Copied'",
    );
    let copied = page.js("navigator.clipboard.readText()");
    assert_eq!(copied, json!(key), "the clipboard does not hold the key");
    page.tab_to("#new-key-done", 3);
    page.press("Enter");
    assert!(
        !page.shown("new-key"),
        "Done by keyboard does not hide the key"
    );
    page.no_errors("the keyboard walk");
    drop(browser);
}

/// The pair page in each state: unknown code (only the error), denied, expired (buttons
/// disabled, "expired" said), each with 0 axe violations.
#[test]
fn pair_page_states() {
    let relay = Relay::start(&["--pair-request-ttl", "12s"]);
    let addr = relay.addr();
    let admin_key = admin_key_of(&relay);
    let Some((browser, mut page, axe)) = browser_page("admin_browser pair", &relay) else {
        return;
    };
    page.viewport(390, 844, true);
    page.goto("/pair/ZZZZZZZZ");
    sign_in(&mut page, &admin_key);
    page.wait(
        "the unknown-code error",
        "document.getElementById('pair-status').textContent.includes('no pending request')",
    );
    for id in ["pair-intro", "pair-info", "pair-actions"] {
        assert!(!page.shown(id), "#{id} shown for an unknown code");
    }
    page.cdp.errors.clear(); // the unknown code's 404, expected
    page.axe("the pair page (unknown code)", &axe);

    let ask = |title: &str| {
        let r = post_json(
            addr,
            "/auth/pair-request",
            &[],
            &json!({"worldId": title.to_lowercase(), "worldTitle": title,
                    "systemId": "pf2e", "systemTitle": "Pathfinder Second Edition",
                    "systemVersion": "6.0.0", "foundryVersion": "13.345"}),
        );
        expect_status(&r, 201, "POST /auth/pair-request");
        r.json()["code"].as_str().unwrap_or_default().to_string()
    };
    let to_deny = ask("Denied World");
    let to_expire = ask("Expiring World");

    page.goto(&format!("/pair/{to_deny}"));
    page.wait(
        "the request",
        "!document.getElementById('pair-actions').hidden",
    );
    page.click("#pair-deny");
    page.wait(
        "the denial",
        "document.getElementById('pair-status').textContent.startsWith('Denied')",
    );
    page.axe("the pair page (denied)", &axe);

    page.goto(&format!("/pair/{to_expire}"));
    page.wait(
        "the request",
        "!document.getElementById('pair-actions').hidden && \
         document.getElementById('pi-expires').textContent.startsWith('in ')",
    );
    if shots() {
        screenshot(&mut page, "docs/pair-phone.png", 390);
        page.viewport(390, 844, true);
    }
    // At zero, by the page's own countdown or the relay's answer, whichever comes first.
    page.wait_up_to(
        "the countdown at zero",
        "document.getElementById('pi-expires').textContent === 'expired' && \
         document.getElementById('pair-status').textContent.includes('expired')",
        secs(30),
    );
    let dead = page.js(
        "document.getElementById('pair-approve').disabled && document.getElementById('pair-deny').disabled",
    );
    assert_eq!(dead, json!(true), "Approve/Deny still active at 0");
    assert!(
        page.text_of("pair-status").contains("expired"),
        "{}",
        page.text_of("pair-status")
    );
    page.axe("the pair page (expired)", &axe);
    if shots() {
        screenshot(&mut page, "docs/pair-expired-phone.png", 390);
    }
    page.no_errors("the pair page states");
    drop(browser);
}

/// A reverse proxy that rewrites `Host` (a common nginx mistake): the admin page's live view
/// is then cross-origin to the relay and refused. The page must say why, and the relay must
/// log the refused origin (issue 10). The proxy rewrites the first request head of each
/// connection, which is the upgrade for a WebSocket.
fn host_rewriting_proxy(relay: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
    let addr = listener.local_addr().expect("proxy addr");
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            thread::spawn(move || {
                let Ok(mut upstream) = TcpStream::connect(relay) else {
                    return;
                };
                let mut reader = BufReader::new(match client.try_clone() {
                    Ok(c) => c,
                    Err(_) => return,
                });
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let end = line == "\r\n";
                    if line.to_ascii_lowercase().starts_with("host:") {
                        line = "Host: relay.internal:3010\r\n".into();
                    }
                    head.push_str(&line);
                    if end {
                        break;
                    }
                }
                use std::io::Write;
                if upstream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let buffered = reader.buffer().to_vec();
                if upstream.write_all(&buffered).is_err() {
                    return;
                }
                let (Ok(mut up_r), Ok(mut down_w)) = (upstream.try_clone(), client.try_clone())
                else {
                    return;
                };
                let mut client_r = client;
                let t = thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut down_w);
                    let _ = down_w.shutdown(std::net::Shutdown::Both);
                });
                let _ = std::io::copy(&mut client_r, &mut upstream);
                let _ = upstream.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    addr
}

#[test]
fn the_live_view_says_why_it_cannot_connect() {
    let binary = match browser_or_install() {
        Ok(b) => b,
        Err(reason) => {
            println!("admin_browser: SKIPPED (chromium unavailable: {reason})");
            return;
        }
    };
    let relay = Relay::start(&[]);
    let key_file = relay.data_dir().join("admin.key");
    let mut admin_key = String::new();
    assert!(wait_for(secs(5), || {
        admin_key = std::fs::read_to_string(&key_file)
            .unwrap_or_default()
            .trim()
            .to_string();
        !admin_key.is_empty()
    }));
    let proxy = host_rewriting_proxy(relay.addr());
    let browser = Browser::launch(&binary).unwrap_or_else(|e| panic!("chromium: {e}"));
    let mut cdp = Cdp::connect(&browser.ws_url).unwrap_or_else(|e| panic!("DevTools: {e}"));
    cdp.open_page().unwrap_or_else(|e| panic!("page: {e}"));
    let mut page = Page {
        cdp,
        base: format!("http://{proxy}"),
    };
    page.goto("/admin");
    page.wait(
        "the sign-in form",
        "!document.getElementById('login').hidden",
    );
    page.type_into("login-key", &admin_key);
    page.click("#login-form button[type=submit]");
    page.wait(
        "the live view refused, with the reason",
        "document.getElementById('ev-status').textContent === 'cannot connect' && \
         !document.getElementById('ev-why').hidden && \
         document.getElementById('ev-why').textContent.includes('--allowed-ws-origins')",
    );
    let why = page.text_of("ev-why");
    assert!(why.contains(&format!("http://{proxy}")), "{why}");
    assert!(
        wait_for(secs(5), || relay
            .logs()
            .contains(&format!("origin \"http://{proxy}\""))),
        "the refusal was not logged: {}",
        relay.logs()
    );
    drop(browser);
}
