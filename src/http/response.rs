//! HTTP/1.1 response heads on the server side: status line, header fields, framing.
//!
//! Owns the one decision about response framing (RFC 9110 §8.6, RFC 9112 §6.3): which
//! statuses carry Content-Length and a body, what HEAD gets, when to say `Connection: close`
//! or `keep-alive`, and the close-delimited head of an event stream. It also owns the
//! `{"error": "..."}` body shape, reason phrases and the IMF-fixdate `Date` value.
//!
//! `write_head` serializes the head only: the body stays in the `Response` (possibly a shared
//! `Rc<[u8]>`, STYLE habit 8) and the caller queues it, so one event body is never copied
//! per subscriber. Every header value is checked for CR/LF here, the one gate to the wire.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A response body. `Shared` lets many responses point at one serialization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    Shared(Rc<[u8]>),
}

impl Body {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Bytes(b) => b,
            Body::Shared(b) => b,
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A complete response ready for `write_head`.
///
/// `headers` are the route's own fields; `write_head` adds Date, Server, Content-Length and
/// Connection itself, so those four are not put here (a `Content-Length` here is ignored;
/// a `Connection` here replaces the automatic one, as a 101 needs `Connection: Upgrade`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// `value` serialized as the body, with `Content-Type: application/json`.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        // Serializing a `Value` into memory cannot fail (its keys are always strings).
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        Response::json_bytes(status, body)
    }

    /// An already-serialized JSON body (e.g. a module reply passed through verbatim).
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Self {
        Response::text(status, "application/json", body)
    }

    /// `{"error":"<message>"}`, the one error body shape (STYLE habit 12), JSON-escaped.
    pub fn error(status: u16, message: &str) -> Self {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: if body.is_empty() {
                Body::Empty
            } else {
                Body::Bytes(body)
            },
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// What `write_head` needs to know about the request and the moment.
#[derive(Clone, Copy, Debug)]
pub struct WriteCtx<'a> {
    /// The request was HEAD: same head as GET, no body (RFC 9110 §9.3.2).
    pub head_request: bool,
    /// The connection stays open after this response (decided from the request head and
    /// the server's own state, e.g. shutting down).
    pub keep_alive: bool,
    /// The request's minor version: 1.0 clients need an explicit `Connection: keep-alive`.
    pub minor_version: u8,
    /// The `Date` value (from `DateCache`); omitted when empty.
    pub date: &'a str,
    /// The `Server` value; omitted when empty.
    pub server: &'a str,
}

/// The interim response a server sends before reading a body the client is holding back
/// under `Expect: 100-continue` (RFC 9110 §10.1.1).
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Statuses whose responses never carry content (RFC 9110 §6.4.1, §8.6, §15.3.5, §15.4.5).
fn status_has_no_content(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Serialize the status line and header fields into `out`. The body is not copied: when this
/// returns true, the caller queues `resp.body` right behind the head; when false (HEAD,
/// 1xx/204/304, or an empty body) nothing follows the head.
///
/// Content-Length is sent for every status that may have content, HEAD included (the length
/// GET would have, RFC 9110 §8.6), and never for 1xx/204/304: a 204 or 304 with a length is
/// one some intermediaries read a body for. `Connection: close` goes on when the connection
/// ends after this response, `Connection: keep-alive` for an HTTP/1.0 client we keep
/// (RFC 9112 §9.3); a 1xx gets neither unless the route set one (a 101 sets `Upgrade`).
pub fn write_head(resp: &Response, ctx: &WriteCtx, out: &mut Vec<u8>) -> bool {
    let no_content = status_has_no_content(resp.status);
    write_status_line(resp.status, out);
    write_common(ctx, out);
    let mut has_connection = false;
    for (name, value) in &resp.headers {
        // The length is ours to compute from the body; two would be a smuggling seam.
        debug_assert!(
            !name.eq_ignore_ascii_case("content-length"),
            "Content-Length is set by write_head"
        );
        if name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        has_connection |= name.eq_ignore_ascii_case("connection");
        push_header(out, name, value);
    }
    if !no_content {
        push_header(out, "Content-Length", &resp.body_len().to_string());
    }
    if !has_connection && !(100..200).contains(&resp.status) {
        if !ctx.keep_alive {
            push_header(out, "Connection", "close");
        } else if ctx.minor_version == 0 {
            push_header(out, "Connection", "keep-alive");
        }
    }
    out.extend_from_slice(b"\r\n");
    !no_content && !ctx.head_request && resp.body_len() > 0
}

/// The head of a streaming response (Server-Sent Events, `text/event-stream`).
///
/// No Content-Length and no chunking: the body runs until we close the connection
/// (RFC 9112 §6.3 rule 8), which is why `Connection: close` is sent whatever
/// `ctx.keep_alive` says (unless `extra` sets Connection itself). `Cache-Control: no-cache`
/// keeps caches from holding the stream; `X-Accel-Buffering: no` stops nginx from buffering
/// it. `ctx.head_request` is not consulted: the caller answers HEAD with `write_head`.
pub fn write_stream_head(
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
    ctx: &WriteCtx,
    out: &mut Vec<u8>,
) {
    write_status_line(status, out);
    write_common(ctx, out);
    push_header(out, "Content-Type", content_type);
    push_header(out, "Cache-Control", "no-cache");
    push_header(out, "X-Accel-Buffering", "no");
    let mut has_connection = false;
    for (name, value) in extra {
        has_connection |= name.eq_ignore_ascii_case("connection");
        push_header(out, name, value);
    }
    if !has_connection {
        push_header(out, "Connection", "close");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_status_line(status: u16, out: &mut Vec<u8>) {
    // We always speak HTTP/1.1, to 1.0 clients too (RFC 9110 §6.2).
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_common(ctx: &WriteCtx, out: &mut Vec<u8>) {
    if !ctx.date.is_empty() {
        push_header(out, "Date", ctx.date);
    }
    if !ctx.server.is_empty() {
        push_header(out, "Server", ctx.server);
    }
}

/// Write one field line. Names are `&'static str` from our own code; values may carry text
/// that started at a peer (a file name from the module, say), so CR and LF are refused in
/// debug builds and stripped in release builds: a header value must never end the line
/// early (response splitting). NUL is stripped as well (RFC 9110 §5.5).
fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(
        !name.is_empty() && name.bytes().all(is_tchar),
        "invalid header name {name:?}"
    );
    debug_assert!(
        !value.contains(['\r', '\n']),
        "CR or LF in the value of header {name}"
    );
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend(
        value
            .bytes()
            .filter(|&b| b != b'\r' && b != b'\n' && b != 0),
    );
    out.extend_from_slice(b"\r\n");
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The standard reason phrase (RFC 9110 §15, RFC 6585), or "" for a code we do not name
/// (the phrase is optional, RFC 9112 §4).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`. Times before 1970
/// (a broken clock) print as the epoch.
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format_date(secs)
}

fn format_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 4 with Sunday = 0).
    let weekday = WEEKDAYS.get(((days + 4) % 7) as usize).unwrap_or(&"Thu");
    let month = MONTHS.get((month - 1) as usize).unwrap_or(&"Jan");
    format!(
        "{weekday}, {day:02} {month} {year:04} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) in the proleptic Gregorian
/// calendar: Howard Hinnant's civil-from-days, with eras of 400 years starting on March 1
/// so that the leap day is the last day of a year. Unsigned, since days >= 0 here.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The `Date` value, formatted at most once per second however many responses go out.
#[derive(Debug, Default)]
pub struct DateCache {
    /// The whole second `text` was formatted for; `None` before the first `get`.
    secs: Option<u64>,
    text: String,
}

impl DateCache {
    pub fn new() -> Self {
        DateCache::default()
    }

    /// The date for `now`, passed in by the caller (no clock reads in this module).
    pub fn get(&mut self, now: SystemTime) -> &str {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.secs != Some(secs) {
            self.secs = Some(secs);
            self.text = format_date(secs);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ctx(head_request: bool, keep_alive: bool, minor_version: u8) -> WriteCtx<'static> {
        WriteCtx {
            head_request,
            keep_alive,
            minor_version,
            date: "Thu, 01 Jan 1970 00:00:00 GMT",
            server: "fvtt-relay",
        }
    }

    fn head_of(resp: &Response, c: &WriteCtx) -> (String, bool) {
        let mut out = Vec::new();
        let send = write_head(resp, c, &mut out);
        (String::from_utf8(out).expect("ascii head"), send)
    }

    const DS: &str = "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: fvtt-relay\r\n";

    #[test]
    fn response_heads() {
        let hello = || Response::text(200, "text/plain", "hello");
        // (response, ctx, expected head after the Date/Server lines, body sent)
        let cases: Vec<(Response, WriteCtx, &str, &str, bool)> = vec![
            (
                hello(),
                ctx(false, true, 1),
                "HTTP/1.1 200 OK\r\n",
                "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
                true,
            ),
            // HEAD: the GET length, no body.
            (
                hello(),
                ctx(true, true, 1),
                "HTTP/1.1 200 OK\r\n",
                "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
            (
                hello(),
                ctx(false, false, 1),
                "HTTP/1.1 200 OK\r\n",
                "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                true,
            ),
            // An HTTP/1.0 client we keep must be told so.
            (
                hello(),
                ctx(false, true, 0),
                "HTTP/1.1 200 OK\r\n",
                "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            (
                hello(),
                ctx(false, false, 0),
                "HTTP/1.1 200 OK\r\n",
                "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                true,
            ),
            // 204 and 304: no Content-Length and no body, even when the Response holds one.
            (
                Response::new(204),
                ctx(false, true, 1),
                "HTTP/1.1 204 No Content\r\n",
                "\r\n",
                false,
            ),
            (
                Response::new(304).header("ETag", "\"x\""),
                ctx(false, true, 1),
                "HTTP/1.1 304 Not Modified\r\n",
                "ETag: \"x\"\r\n\r\n",
                false,
            ),
            (
                Response::text(204, "text/plain", "x"),
                ctx(false, false, 1),
                "HTTP/1.1 204 No Content\r\n",
                "Content-Type: text/plain\r\nConnection: close\r\n\r\n",
                false,
            ),
            // An empty 200 still says Content-Length: 0 (keep-alive framing needs it).
            (
                Response::new(200),
                ctx(false, true, 1),
                "HTTP/1.1 200 OK\r\n",
                "Content-Length: 0\r\n\r\n",
                false,
            ),
            // 101: no length, and the route's Connection replaces ours.
            (
                Response::new(101)
                    .header("Upgrade", "websocket")
                    .header("Connection", "Upgrade"),
                ctx(false, false, 1),
                "HTTP/1.1 101 Switching Protocols\r\n",
                "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                false,
            ),
            (
                Response::new(599),
                ctx(false, true, 1),
                "HTTP/1.1 599 \r\n",
                "Content-Length: 0\r\n\r\n",
                false,
            ),
        ];
        for (resp, c, status_line, rest, send) in cases {
            let (head, sent) = head_of(&resp, &c);
            assert_eq!(head, format!("{status_line}{DS}{rest}"), "{resp:?}");
            assert_eq!(sent, send, "{resp:?}");
        }
    }

    #[test]
    fn date_and_server_omitted_when_empty() {
        let c = WriteCtx {
            head_request: false,
            keep_alive: true,
            minor_version: 1,
            date: "",
            server: "",
        };
        let (head, _) = head_of(&Response::new(200), &c);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn shared_body_is_not_copied() {
        let shared: Rc<[u8]> = Rc::from(&b"{\"a\":1}"[..]);
        let resp = Response::new(200)
            .header("Content-Type", "application/json")
            .tap_body(Body::Shared(shared.clone()));
        let mut out = Vec::new();
        assert!(write_head(&resp, &ctx(false, true, 1), &mut out));
        assert!(String::from_utf8_lossy(&out).ends_with("Content-Length: 7\r\n\r\n"));
        assert_eq!(Rc::strong_count(&shared), 2);
        assert_eq!(resp.body.as_bytes(), b"{\"a\":1}");
    }

    impl Response {
        fn tap_body(mut self, body: Body) -> Self {
            self.body = body;
            self
        }
    }

    #[test]
    fn json_bodies() {
        let cases: &[(&str, &str)] = &[
            ("plain", r#"{"error":"plain"}"#),
            (
                "quote \" backslash \\ newline \n tab \t",
                r#"{"error":"quote \" backslash \\ newline \n tab \t"}"#,
            ),
            ("ctl \u{1}", r#"{"error":"ctl \u0001"}"#),
            (
                "'<name>' is required",
                r#"{"error":"'<name>' is required"}"#,
            ),
            ("ünï", "{\"error\":\"ünï\"}"),
        ];
        for (msg, want) in cases {
            let r = Response::error(400, msg);
            assert_eq!(r.status, 400);
            assert_eq!(std::str::from_utf8(r.body.as_bytes()), Ok(*want));
            assert_eq!(
                r.headers,
                vec![("Content-Type", "application/json".to_owned())]
            );
            let back: serde_json::Value =
                serde_json::from_slice(r.body.as_bytes()).expect("valid JSON");
            assert_eq!(back["error"], *msg);
        }
        let r = Response::json(201, &serde_json::json!({"b": [1, 2], "a": null}));
        assert_eq!(r.body_len(), r.body.as_bytes().len());
        let v: serde_json::Value = serde_json::from_slice(r.body.as_bytes()).expect("json");
        assert_eq!(v, serde_json::json!({"a": null, "b": [1, 2]}));
        let r = Response::json_bytes(200, b"{\"x\":1}".to_vec());
        assert_eq!(
            (r.body_len(), r.headers[0].1.as_str()),
            (7, "application/json")
        );
        assert_eq!(Response::text(200, "text/html", "").body, Body::Empty);
    }

    #[test]
    fn stream_head() {
        let mut out = Vec::new();
        let extra = vec![("Access-Control-Allow-Origin", "*".to_owned())];
        write_stream_head(
            200,
            "text/event-stream",
            &extra,
            &ctx(false, true, 1),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            format!(
                "HTTP/1.1 200 OK\r\n{DS}Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                 X-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n"
            )
        );
        let mut out = Vec::new();
        let extra = vec![("Connection", "keep-alive".to_owned())];
        write_stream_head(
            200,
            "text/event-stream",
            &extra,
            &ctx(false, true, 0),
            &mut out,
        );
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.ends_with("Connection: keep-alive\r\n\r\n"), "{text}");
        assert!(
            !text.contains("Content-Length") && !text.contains("close"),
            "{text}"
        );
    }

    #[test]
    fn header_values_cannot_split_the_response() {
        let mut out = Vec::new();
        push_header(&mut out, "X-Ok", "a\tb c\u{e9}");
        assert_eq!(out, "X-Ok: a\tb c\u{e9}\r\n".as_bytes());
        let mut out = Vec::new();
        push_header(&mut out, "X-Nul", "a\0b");
        assert_eq!(out, b"X-Nul: ab\r\n");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "CR or LF")]
    fn crlf_in_value_asserts_in_debug() {
        push_header(&mut Vec::new(), "X-Evil", "a\r\nSet-Cookie: x");
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn crlf_in_value_stripped_in_release() {
        let mut out = Vec::new();
        push_header(&mut out, "X-Evil", "a\r\nSet-Cookie: x");
        assert_eq!(out, b"X-Evil: aSet-Cookie: x\r\n");
    }

    #[test]
    fn reasons() {
        let table: &[(u16, &str)] = &[
            (100, "Continue"),
            (101, "Switching Protocols"),
            (200, "OK"),
            (404, "Not Found"),
            (413, "Content Too Large"),
            (426, "Upgrade Required"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (501, "Not Implemented"),
            (502, "Bad Gateway"),
            (503, "Service Unavailable"),
            (504, "Gateway Timeout"),
            (505, "HTTP Version Not Supported"),
            (299, ""),
        ];
        for (code, phrase) in table {
            assert_eq!(reason(*code), *phrase, "{code}");
        }
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn dates() {
        let table: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (951_868_799, "Tue, 29 Feb 2000 23:59:59 GMT"),
            (1_700_000_000, "Tue, 14 Nov 2023 22:13:20 GMT"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for (secs, want) in table {
            let t = UNIX_EPOCH + Duration::from_secs(*secs) + Duration::from_millis(999);
            assert_eq!(http_date(t), *want, "{secs}");
        }
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn date_cache_changes_with_the_second() {
        let mut cache = DateCache::new();
        let t0 = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(cache.get(t0), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            cache.get(t0 + Duration::from_millis(999)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            cache.get(t0 + Duration::from_secs(1)),
            "Sun, 06 Nov 1994 08:49:38 GMT"
        );
        // A clock stepping back is followed too.
        assert_eq!(cache.get(t0), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
