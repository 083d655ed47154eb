//! The server side of the WebSocket opening handshake (RFC 6455 §4.2): checking an upgrade
//! request, computing `Sec-WebSocket-Accept`, writing the `101` response, and the `Origin`
//! policy for browser clients (RFC 6455 §10.2).
//!
//! Pure functions over header values: the HTTP layer parses the request (httparse) and the
//! bytes behind the head stay in the connection's input buffer, where `ws::link` reads them.
//! We offer no extensions (no permessage-deflate) and no subprotocol.

use crate::enc;

/// RFC 6455 §1.3: the GUID appended to the client's key before hashing.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request was refused: the HTTP status (400, or 426 for an unsupported
/// `Sec-WebSocket-Version`, to which the caller adds `Sec-WebSocket-Version: 13`) and the text
/// for the `{"error": ...}` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeError {
    pub status: u16,
    pub message: &'static str,
}

const fn bad(message: &'static str) -> HandshakeError {
    HandshakeError {
        status: 400,
        message,
    }
}

/// True if the comma-separated token list `value` holds `token`, compared case-insensitively
/// (RFC 9110 §5.6.1 lists; `Upgrade` and `Connection` tokens are case-insensitive, RFC 6455 §4.2.1).
fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Validate an upgrade request (RFC 6455 §4.2.1): method GET, HTTP/1.1 (`minor_version` 1),
/// `Upgrade` has the token `websocket` (any case), the `Connection` token list contains
/// `upgrade` (any case), `Sec-WebSocket-Version: 13` (else 426, RFC 6455 §4.2.2), and a
/// `Sec-WebSocket-Key` that base64-decodes to exactly 16 bytes.
///
/// `header(name_lowercase)` returns all values of that header joined by ", ", or `None`.
/// Returns the key as sent (trimmed), for [`accept_key`].
pub fn validate(
    method: &str,
    minor_version: u8,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<String, HandshakeError> {
    // RFC 6455 §4.1 item 2: "The method of the request MUST be GET, and the HTTP version MUST
    // be at least 1.1"; HTTP/1.0 has no Upgrade mechanism to speak of.
    if method != "GET" {
        return Err(bad("WebSocket upgrade requires GET"));
    }
    if minor_version != 1 {
        return Err(bad("WebSocket upgrade requires HTTP/1.1"));
    }
    if !has_token(header("upgrade").as_deref(), "websocket") {
        return Err(bad("Missing or invalid Upgrade header"));
    }
    if !has_token(header("connection").as_deref(), "upgrade") {
        return Err(bad("Missing or invalid Connection header"));
    }
    // RFC 6455 §4.2.2 item 4 / §4.4: answer a version we do not speak with 426 and the
    // versions we do. Two values joined by ", " are not "13" either.
    if header("sec-websocket-version").as_deref().map(str::trim) != Some("13") {
        return Err(HandshakeError {
            status: 426,
            message: "Unsupported WebSocket version",
        });
    }
    let key = header("sec-websocket-key").ok_or(bad("Missing Sec-WebSocket-Key"))?;
    let key = key.trim();
    // RFC 6455 §4.1 item 7 and §11.3.1: the key is one base64 token of a 16-byte nonce. A
    // repeated header arrives joined by ", " and fails here, as it should (§4.2.1 item 5).
    let decoded_len = if key.bytes().any(|b| b.is_ascii_whitespace()) {
        None
    } else {
        enc::base64_decode(key).map(|k| k.len())
    };
    if decoded_len != Some(16) {
        return Err(bad("Invalid Sec-WebSocket-Key"));
    }
    Ok(key.to_owned())
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2 item 5.4):
/// base64(SHA-1(key ++ GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    enc::base64_encode(&sha.digest().bytes())
}

/// The full `101 Switching Protocols` response (RFC 6455 §4.2.2 item 5). No
/// `Sec-WebSocket-Extensions` and no `Sec-WebSocket-Protocol`: we negotiate neither.
/// `server` becomes the `Server` header; it is left out when empty or when it holds a control
/// character (a header value must not be able to inject lines).
pub fn response_101(accept: &str, server: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    out.extend_from_slice(b"Upgrade: websocket\r\n");
    out.extend_from_slice(b"Connection: Upgrade\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !server.is_empty() && !server.chars().any(char::is_control) {
        out.extend_from_slice(b"Server: ");
        out.extend_from_slice(server.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Splits a serialized origin (RFC 6454 §6.2: `scheme "://" host [ ":" port ]`) into the
/// lower-cased scheme and its host[:port] with the scheme's default port removed, so that
/// `https://A.example:443` and `https://a.example` compare equal. `None` for `null` or any
/// value with a path, query, fragment or user info.
fn split_origin(origin: &str) -> Option<(String, String)> {
    let (scheme, authority) = origin.trim().split_once("://")?;
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let authority = strip_default_port(&authority.to_ascii_lowercase(), &scheme);
    Some((scheme, authority))
}

fn strip_default_port(authority: &str, scheme: &str) -> String {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return authority.to_owned(),
    };
    authority
        .strip_suffix(default)
        .unwrap_or(authority)
        .to_owned()
}

/// Origin policy for browser clients (RFC 6455 §10.2: the server decides from `Origin`).
///
/// - No `Origin` header: allowed. Bots and native apps send none, and a browser always does.
/// - `"*"` in `allow`: any origin.
/// - Same-origin is always allowed: the origin's host[:port] equals the `Host` header. The
///   list only adds to it (issue 10: a list set for one app must not lock out the relay's
///   own admin page).
/// - Otherwise the origin must equal an entry of `allow` (scheme://host[:port],
///   case-insensitive, default ports and a trailing `/` in the entry ignored).
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allow: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allow.iter().any(|a| a.trim() == "*") {
        return true;
    }
    let Some((scheme, authority)) = split_origin(origin) else {
        // `null` (sandboxed frames, file: pages) or a malformed value: never matches.
        return false;
    };
    let same_origin = host
        .is_some_and(|h| strip_default_port(&h.trim().to_ascii_lowercase(), &scheme) == authority);
    same_origin
        || allow.iter().any(|entry| {
            split_origin(entry.trim().trim_end_matches('/'))
                .is_some_and(|(s, a)| s == scheme && a == authority)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid RFC 6455 §1.3 request, as (name, value) pairs; tests override single fields.
    const GOOD: &[(&str, &str)] = &[
        ("host", "server.example.com"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];

    /// Runs `validate` on GOOD with `name` replaced by `value` (`None` removes it).
    fn check(
        method: &str,
        minor: u8,
        name: &str,
        value: Option<&str>,
    ) -> Result<String, HandshakeError> {
        let headers: Vec<(String, String)> = GOOD
            .iter()
            .filter(|(n, _)| *n != name)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .chain(value.map(|v| (name.to_string(), v.to_string())))
            .collect();
        let lookup = move |n: &str| {
            let values: Vec<&str> = headers
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        validate(method, minor, &lookup)
    }

    /// (method, minor version, header changed, its value, expected result).
    type ValidateCase<'a> = (
        &'a str,
        u8,
        &'a str,
        Option<&'a str>,
        Result<String, HandshakeError>,
    );
    /// (Origin, Host, allow list, allowed).
    type OriginCase<'a> = (Option<&'a str>, Option<&'a str>, &'a [String], bool);

    #[test]
    fn validate_table() {
        const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = |k: &str| Ok::<String, HandshakeError>(k.to_string());
        let e400 = |m| Err(bad(m));
        let e426 = Err(HandshakeError {
            status: 426,
            message: "Unsupported WebSocket version",
        });
        #[rustfmt::skip]
        let cases: Vec<ValidateCase> = vec![
            ("GET", 1, "", None, ok(KEY)),
            ("GET", 1, "upgrade", Some("WebSocket"), ok(KEY)),
            ("GET", 1, "upgrade", Some("foo, websocket"), ok(KEY)),
            ("GET", 1, "connection", Some("keep-alive, UPGRADE"), ok(KEY)),
            ("GET", 1, "connection", Some("keep-alive,upgrade"), ok(KEY)),
            ("GET", 1, "sec-websocket-version", Some(" 13 "), ok(KEY)),
            ("GET", 1, "sec-websocket-key", Some(" dGhlIHNhbXBsZSBub25jZQ== "), ok(KEY)),
            ("POST", 1, "", None, e400("WebSocket upgrade requires GET")),
            ("get", 1, "", None, e400("WebSocket upgrade requires GET")),
            ("GET", 0, "", None, e400("WebSocket upgrade requires HTTP/1.1")),
            ("GET", 1, "upgrade", None, e400("Missing or invalid Upgrade header")),
            ("GET", 1, "upgrade", Some("websocket2"), e400("Missing or invalid Upgrade header")),
            ("GET", 1, "upgrade", Some("h2c"), e400("Missing or invalid Upgrade header")),
            ("GET", 1, "connection", None, e400("Missing or invalid Connection header")),
            ("GET", 1, "connection", Some("keep-alive"), e400("Missing or invalid Connection header")),
            ("GET", 1, "connection", Some("upgraded"), e400("Missing or invalid Connection header")),
            ("GET", 1, "sec-websocket-version", None, e426.clone()),
            ("GET", 1, "sec-websocket-version", Some("8"), e426.clone()),
            ("GET", 1, "sec-websocket-version", Some("13, 8"), e426.clone()),
            ("GET", 1, "sec-websocket-key", None, e400("Missing Sec-WebSocket-Key")),
            ("GET", 1, "sec-websocket-key", Some(""), e400("Invalid Sec-WebSocket-Key")),
            // 15 and 17 bytes.
            ("GET", 1, "sec-websocket-key", Some("dGhlIHNhbXBsZSBub25j"), e400("Invalid Sec-WebSocket-Key")),
            ("GET", 1, "sec-websocket-key", Some("dGhlIHNhbXBsZSBub25jZSE="), e400("Invalid Sec-WebSocket-Key")),
            ("GET", 1, "sec-websocket-key", Some("not base64 at all!!!!!=="), e400("Invalid Sec-WebSocket-Key")),
            ("GET", 1, "sec-websocket-key", Some("dGhlIHNhbXBs ZSBub25jZQ=="), e400("Invalid Sec-WebSocket-Key")),
            // A repeated key header arrives joined.
            ("GET", 1, "sec-websocket-key", Some("dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ=="), e400("Invalid Sec-WebSocket-Key")),
        ];
        for (method, minor, name, value, want) in cases {
            assert_eq!(
                check(method, minor, name, value),
                want,
                "{method} 1.{minor} {name}={value:?}"
            );
        }
    }

    #[test]
    fn accept_key_rfc6455_sample() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // RFC 6455 §4.2.2 depends on the exact key text: a different key, a different answer.
        assert_ne!(
            accept_key("dGhlIHNhbXBsZSBub25jZA=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn response_101_bytes() {
        let want = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nServer: fvtt-relay\r\n\r\n";
        assert_eq!(
            response_101("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "fvtt-relay"),
            want.as_bytes()
        );
        let bare =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: abc\r\n\r\n";
        assert_eq!(response_101("abc", ""), bare.as_bytes());
        assert_eq!(response_101("abc", "x\r\nSet-Cookie: a=b"), bare.as_bytes());
    }

    #[test]
    fn response_101_is_parsed_by_httparse() {
        let bytes = response_101(&accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "fvtt-relay");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        assert_eq!(
            resp.parse(&bytes),
            Ok(httparse::Status::Complete(bytes.len()))
        );
        assert_eq!(resp.code, Some(101));
        let accept = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value);
        assert_eq!(accept, Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..]));
    }

    #[test]
    fn origin_table() {
        let none: Vec<String> = vec![];
        let list: Vec<String> = vec![
            "https://foundry.example.com".into(),
            "http://LocalHost:30000/".into(),
            "https://b.example:443".into(),
        ];
        let star: Vec<String> = vec!["*".into()];
        #[rustfmt::skip]
        let cases: &[OriginCase] = &[
            // No Origin: a bot.
            (None, None, &none, true),
            (None, Some("relay.example"), &list, true),
            // Same-origin when the list is empty.
            (Some("https://relay.example"), Some("relay.example"), &none, true),
            (Some("http://relay.example:8080"), Some("relay.example:8080"), &none, true),
            (Some("https://RELAY.example"), Some("relay.EXAMPLE"), &none, true),
            (Some("https://relay.example"), Some("relay.example:443"), &none, true),
            (Some("http://relay.example:8080"), Some("relay.example"), &none, false),
            (Some("https://evil.example"), Some("relay.example"), &none, false),
            (Some("https://relay.example"), None, &none, false),
            (Some("null"), Some("relay.example"), &none, false),
            (Some("https://relay.example/path"), Some("relay.example"), &none, false),
            // Allow list.
            (Some("https://foundry.example.com"), Some("relay.example"), &list, true),
            (Some("HTTPS://Foundry.Example.com"), Some("relay.example"), &list, true),
            (Some("http://localhost:30000"), Some("relay.example"), &list, true),
            (Some("https://b.example"), Some("relay.example"), &list, true),
            (Some("http://foundry.example.com"), Some("relay.example"), &list, false),
            (Some("https://foundry.example.com:8443"), Some("relay.example"), &list, false),
            (Some("http://localhost:30001"), Some("relay.example"), &list, false),
            // With a list, same-origin is still allowed: the list only adds.
            (Some("https://relay.example"), Some("relay.example"), &list, true),
            (Some("http://relay.example:8080"), Some("relay.example:8080"), &list, true),
            (Some("https://evil.example"), Some("relay.example"), &list, false),
            (Some("null"), Some("relay.example"), &list, false),
            // Wildcard.
            (Some("https://anything.example"), Some("relay.example"), &star, true),
            (Some("null"), None, &star, true),
        ];
        for &(origin, host, allow, want) in cases {
            assert_eq!(
                origin_allowed(origin, host, allow),
                want,
                "origin {origin:?} host {host:?} allow {allow:?}"
            );
        }
    }
}
