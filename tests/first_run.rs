//! A new owner's first contact with the relay: the landing page a browser gets at `/` (API
//! clients keep `{"status":"ok"}`), and the start-up log line that names the admin page and
//! where the admin key is, never the key.

mod support;
use support::*;

#[test]
fn a_browser_at_the_root_gets_a_page_and_api_clients_keep_the_json() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let r = get(addr, "/", &[("Accept", browser)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{r:?}"
    );
    let page = r.text();
    assert!(page.contains("fvtt-relay"), "{page}");
    assert!(
        page.contains(env!("CARGO_PKG_VERSION")),
        "no version: {page}"
    );
    assert!(
        page.contains("href=\"/admin\""),
        "no link to /admin: {page}"
    );
    assert!(page.contains("Pair"), "no pairing help: {page}");
    assert!(!page.contains("{{"), "an unfilled placeholder: {page}");
    assert!(r
        .header("content-security-policy")
        .is_some_and(|c| c.contains("frame-ancestors 'none'")));
    for accept in [None, Some("*/*"), Some("application/json")] {
        let h: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let r = get(addr, "/", &h);
        assert_eq!(r.status, 200, "{accept:?}: {r:?}");
        assert_eq!(r.json(), json!({"status": "ok"}), "{accept:?}");
    }
}

#[test]
fn the_start_up_log_names_the_admin_page_and_the_key_file_not_the_key() {
    let relay = Relay::start(&[]);
    let key = std::fs::read_to_string(relay.data_dir().join("admin.key"))
        .expect("admin.key")
        .trim()
        .to_string();
    let want = format!("admin page: http://{}/admin", relay.addr());
    let mut logs = String::new();
    let seen = wait_for(secs(5), || {
        logs = relay.logs();
        logs.contains(&want)
    });
    assert!(seen, "no {want:?} in the log:\n{logs}");
    let key_file = relay.data_dir().join("admin.key");
    assert!(
        logs.contains(&format!("the admin key is in {}", key_file.display())),
        "{logs}"
    );
    assert!(!logs.contains(&key), "the admin key is in the log");
    assert!(
        !logs.contains(&key[..12]),
        "part of the admin key is in the log"
    );
}
