//! The owner's web UI (`/admin`, `/pair/<code>`) in a real headless Chromium, driven over the
//! Chrome DevTools Protocol (CDP) with the tungstenite client and std only.
//!
//! One test walks the story: sign in with the admin key (a wrong key first), create an
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
    let binary = match browser_or_install() {
        Ok(b) => b,
        Err(reason) => {
            println!("admin_browser: SKIPPED (chromium unavailable: {reason})");
            return;
        }
    };
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    // The relay writes the admin key on its first start (main.rs), before it listens.
    let key_file = relay.data_dir().join("admin.key");
    let mut admin_key = String::new();
    let found = wait_for(secs(5), || {
        admin_key = std::fs::read_to_string(&key_file)
            .unwrap_or_default()
            .trim()
            .to_string();
        !admin_key.is_empty()
    });
    assert!(found, "no admin key in {}", key_file.display());

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
    let mut page = Page {
        cdp,
        base: relay.url(""),
    };
    if let Err(e) = page.cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
    ) {
        panic!("viewport: {e}");
    }

    // 1. Sign in: a wrong key is refused on the page, the right one opens the panels.
    page.goto("/admin");
    page.wait(
        "the sign-in form",
        "!document.getElementById('login').hidden",
    );
    page.type_into("login-key", "not-the-admin-key");
    page.click("#login-form button[type=submit]");
    page.wait(
        "the refusal",
        "document.getElementById('login-msg').classList.contains('err')",
    );
    assert!(!page.shown("app"), "a wrong key opened the admin panels");
    page.type_into("login-key", &admin_key);
    page.click("#login-form button[type=submit]");
    page.wait(
        "the admin panels with the 32 scopes",
        "!document.getElementById('app').hidden && \
         document.querySelectorAll('#key-scopes input').length === 32",
    );
    let defaults = page.js("document.querySelectorAll('#key-scopes input:checked').length");
    assert_eq!(defaults, json!(17), "the read-only defaults start checked");

    // 2. Create a key with two scopes; it is shown once, then never again.
    page.js("document.getElementById('key-create').open = true");
    page.type_into("key-name", "browser-test");
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
    page.click("#pair-approve");
    page.wait(
        "the approval",
        "document.getElementById('pair-status').textContent.startsWith('Approved')",
    );
    assert!(
        !page.shown("pair-actions"),
        "Approve/Deny stay after answering"
    );

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

    // 6. The module spends the code, connects, and the admin page follows it live.
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

    page.goto("/admin");
    page.wait(
        "the live event view",
        "document.getElementById('ev-status').textContent === 'live'",
    );
    let online = FakeWorld::online(addr, &client_id, &token);
    page.wait(
        "the world online in the worlds panel",
        &format!(
            "document.getElementById('world-list').textContent.includes({}) && \
             document.querySelector('#world-list .badge.ok') !== null",
            js_str(&client_id)
        ),
    );
    page.wait(
        "the world-connected event",
        "[...document.querySelectorAll('#ev-list .badge')].some(b => b.textContent === 'world-connected')",
    );
    page.wait(
        "the world's connection token",
        &format!(
            "document.getElementById('token-list').textContent.includes({})",
            js_str(&client_id)
        ),
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

    if std::env::var("FVTT_RELAY_SCREENSHOT").is_ok_and(|v| v == "1") {
        // A second world waiting, and a fresh pairing code, so the picture shows every panel.
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
        screenshot(&mut page, "docs/admin.png");
    }

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

/// Saves a full-page PNG of the current page under the crate root.
fn screenshot(page: &mut Page, rel: &str) {
    let height = page.js("Math.ceil(document.documentElement.scrollHeight)");
    let height = height.as_u64().unwrap_or(1000).clamp(600, 4000);
    let metrics = json!({"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": false});
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
