//! HTTP/1.1 request framing on the server side: the head (request line and header fields)
//! and the body (Content-Length or chunked), from byte buffers only: no sockets, no clock.
//!
//! Owns the head byte cap, the header-count cap, the body cap and every smuggling check of
//! RFC 9112 §6.3. `HeadParser` scans each new byte once and hands the head to httparse only
//! when a blank line has ended it (STYLE habit 11), so a head dribbled in one byte at a time
//! costs O(n), and the verdict depends on the bytes, never on how TCP split them.
//!
//! Scanner rule (why the verdict is split-independent): bytes are examined in order and the
//! first decisive position wins: a bare CR or LF, or obs-fold, is 400; holding more than
//! `max_head_bytes` bytes without the blank line is 431; the blank line ends the head and
//! httparse plus the checks below decide. Each of these looks only at bytes before it.
//!
//! `BodyDecoder` is a push state machine for the body: it copies bytes out of the caller's
//! buffer, says how many it consumed, and stops exactly at the end of the message so that a
//! pipelined request behind it stays in the buffer.

use crate::error::HttpError;

/// The caps applied while framing one request. The values come from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of head (leading empty lines, request line, fields, blank line) before 431.
    pub max_head_bytes: usize,
    /// Header fields before 431; it is the length of the array httparse fills.
    pub max_headers: usize,
    /// Decoded body bytes before 413, for Content-Length and chunked alike.
    pub max_body_bytes: u64,
}

/// The request method. Methods are case-sensitive (RFC 9110 §9.1): `get` is `Other`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl Method {
    fn from_token(raw: &str) -> Method {
        match raw {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// How the body after the head is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No Content-Length and no Transfer-Encoding: a request has no body (§6.3 rule 7).
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked` (§7.1).
    Chunked,
}

/// One header field; the name is lowercased, the value is trimmed of surrounding whitespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// A parsed and checked request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// The method token exactly as sent (useful for `Other` in logs and 405/501 replies).
    pub method_raw: String,
    /// The raw request-target as sent.
    pub target: String,
    /// The target's path up to `?`, not percent-decoded. For the absolute-form
    /// (`http://host/p?q`, which RFC 9112 §3.2.2 says a server MUST accept) this is the
    /// path part (`/p`, or `/` when empty); for `OPTIONS *` it is `*`.
    pub path: String,
    /// The raw query after `?` (without it); empty when there is none.
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<Header>,
    /// Whether the connection may carry another request after this one (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1 says to ignore it in
    /// HTTP/1.0). The caller sends `CONTINUE_100` before reading a body it wants, unless
    /// body bytes already arrived.
    pub expect_continue: bool,
    pub body: BodyKind,
    /// The `Upgrade` field lists the token `websocket` (any case).
    pub wants_upgrade: bool,
}

impl Head {
    /// The first value of a field if it is valid UTF-8. `name_lowercase` must be lowercase.
    pub fn header(&self, name_lowercase: &str) -> Option<&str> {
        self.header_bytes(name_lowercase)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of a field as bytes. `name_lowercase` must be lowercase.
    pub fn header_bytes(&self, name_lowercase: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name_lowercase)
            .map(|h| h.value.as_slice())
    }

    /// Whether a comma-separated token list (RFC 9110 §5.6.1), across every repetition of
    /// the field, holds `token`, compared case-insensitively.
    pub fn has_token(&self, name_lowercase: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name == name_lowercase)
            .any(|h| list_has_token(&h.value, token))
    }
}

fn list_has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| trim_ows(item).eq_ignore_ascii_case(token.as_bytes()))
}

/// Strip optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Incremental head parsing.
///
/// Call `parse` with everything buffered for the connection, starting at the request's first
/// byte, each time more bytes arrive. Only the bytes not seen before are scanned; httparse
/// runs once, when the head is complete. After `Ok(Some(..))` or `Err(..)` the parser is
/// reset, ready for the next request (which starts at a new buffer offset).
///
/// NOTE: between calls the caller may only append to the buffer. If it hands a shorter buffer
/// than last time, the parser starts over.
#[derive(Debug, Default)]
pub struct HeadParser {
    /// Bytes of the buffer examined so far; every scanner field below describes `buf[..pos]`.
    pos: usize,
    /// Index where the request line starts, after any leading empty lines.
    start: usize,
    /// The byte at `pos - 1` was a CR, so the next byte must be LF.
    cr_pending: bool,
    /// No byte other than the pending CR has been seen on the current line.
    line_empty: bool,
    /// The request line has begun (leading empty lines are behind us).
    in_head: bool,
}

impl HeadParser {
    pub fn new() -> Self {
        HeadParser {
            pos: 0,
            start: 0,
            cr_pending: false,
            line_empty: true,
            in_head: false,
        }
    }

    pub fn reset(&mut self) {
        *self = HeadParser::new();
    }

    /// `Ok(None)` while the head is incomplete; `Ok(Some((head, n)))` once it is complete and
    /// valid, where `n` is the head's length in `buf` (the body starts at `buf[n..]`).
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(Head, usize)>, HttpError> {
        if buf.len() < self.pos {
            self.reset();
        }
        let result = self.scan(buf, limits.max_head_bytes);
        let outcome = match result {
            Ok(Some(end)) => parse_head(buf, self.start, end, limits).map(|h| Some((h, end))),
            Ok(None) => return Ok(None),
            Err(e) => Err(e),
        };
        self.reset();
        outcome
    }

    /// Examine `buf[self.pos..]` byte by byte; `Ok(Some(n))` when the blank line ends at `n`.
    fn scan(&mut self, buf: &[u8], cap: usize) -> Result<Option<usize>, HttpError> {
        // Never look past the first `cap` bytes: holding more than that without the blank
        // line is the 431 verdict, whatever follows (habit 11: measure the head, not the
        // buffer). So a complete head is never longer than the cap.
        let limit = buf.len().min(cap);
        let new = buf.get(self.pos..limit).unwrap_or(&[]);
        for (offset, &b) in new.iter().enumerate() {
            let i = self.pos + offset;
            if self.cr_pending {
                // RFC 9112 §2.2: a bare CR is an error (or replaced; we reject).
                if b != b'\n' {
                    return Err(HttpError::Malformed("Bare CR in request head"));
                }
                self.cr_pending = false;
                if !self.line_empty {
                    self.line_empty = true;
                } else if self.in_head {
                    return Ok(Some(i + 1));
                } else {
                    // RFC 9112 §2.2: ignore empty lines before the request line.
                    self.start = i + 1;
                }
                continue;
            }
            match b {
                b'\r' => self.cr_pending = true,
                // We require CRLF: a bare LF is where parsers disagree, the smuggling seam.
                b'\n' => return Err(HttpError::Malformed("Bare LF in request head")),
                b' ' | b'\t' if self.line_empty && self.in_head => {
                    // RFC 9112 §5.2: obs-fold in a request is rejected with 400; the same for
                    // whitespace before the first field line (§2.2).
                    return Err(HttpError::Malformed(
                        "Obsolete line folding in request head",
                    ));
                }
                _ => {
                    self.line_empty = false;
                    self.in_head = true;
                }
            }
        }
        self.pos = limit;
        if buf.len() > cap {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(None)
    }
}

/// Run httparse over a complete head `buf[start..end]` and apply the framing rules.
fn parse_head(buf: &[u8], start: usize, end: usize, limits: &Limits) -> Result<Head, HttpError> {
    let bytes = buf
        .get(start..end)
        .ok_or(HttpError::Malformed("Malformed request head"))?;
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
        // The scanner found the blank line, so httparse must agree; if not, refuse.
        Ok(_) => return Err(HttpError::Malformed("Malformed request head")),
        Err(e) => return Err(map_httparse_error(e, bytes)),
    }
    let (Some(method_raw), Some(target), Some(version)) = (req.method, req.path, req.version)
    else {
        return Err(HttpError::Malformed("Malformed request line"));
    };
    let minor_version = version;
    let method = Method::from_token(method_raw);
    let (path, query) = split_target(method, target)?;

    let headers: Vec<Header> = req
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.to_ascii_lowercase(),
            value: trim_ows(h.value).to_vec(),
        })
        .collect();

    let mut head = Head {
        method,
        method_raw: method_raw.to_owned(),
        target: target.to_owned(),
        path,
        query,
        minor_version,
        headers,
        keep_alive: false,
        expect_continue: false,
        body: BodyKind::None,
        wants_upgrade: false,
    };

    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, or for any with several.
    match head.headers.iter().filter(|h| h.name == "host").count() {
        0 if minor_version == 1 => return Err(HttpError::Malformed("Missing Host header")),
        0 | 1 => {}
        _ => return Err(HttpError::Malformed("Multiple Host headers")),
    }

    head.body = body_kind(&head, limits)?;
    head.expect_continue = expect_continue(&head)?;
    // RFC 9112 §9.3: persistence from the version and the Connection options.
    head.keep_alive = if head.has_token("connection", "close") {
        false
    } else if minor_version == 1 {
        true
    } else {
        head.has_token("connection", "keep-alive")
    };
    head.wants_upgrade = head.has_token("upgrade", "websocket");
    Ok(head)
}

fn map_httparse_error(e: httparse::Error, head: &[u8]) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::HeaderName => HttpError::Malformed("Invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("Invalid header value"),
        httparse::Error::NewLine => HttpError::Malformed("Invalid line ending"),
        // httparse says Version for anything after the target that is not HTTP/1.0 or 1.1,
        // including a target with a space in it; only a well-formed line with an
        // HTTP-version we do not speak earns 505 (RFC 9110 §15.6.6).
        httparse::Error::Version if well_formed_request_line(head) => {
            HttpError::VersionNotSupported
        }
        _ => HttpError::Malformed("Malformed request line"),
    }
}

/// `method SP target SP HTTP/d.d` (RFC 9112 §3, §2.3), for the 505 versus 400 decision.
fn well_formed_request_line(head: &[u8]) -> bool {
    let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !m.is_empty()
        && !t.is_empty()
        && matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

/// Split the request-target into (path, query), per its form (RFC 9112 §3.2).
fn split_target(method: Method, target: &str) -> Result<(String, String), HttpError> {
    let path_and_query = if target.starts_with('/') {
        target
    } else if target == "*" {
        // §3.2.4: the asterisk-form is only for a server-wide OPTIONS.
        if method != Method::Options {
            return Err(HttpError::Malformed("Invalid request target"));
        }
        return Ok(("*".to_owned(), String::new()));
    } else if let Some(rest) = strip_scheme(target) {
        // §3.2.2 absolute-form: skip the authority; an empty path means "/".
        let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        match rest.get(cut..) {
            Some(p) if p.starts_with('/') => p,
            Some(p) if p.starts_with('?') => {
                let q = p.get(1..).unwrap_or("");
                return Ok(("/".to_owned(), strip_fragment(q).to_owned()));
            }
            _ => "/",
        }
    } else {
        return Err(HttpError::Malformed("Invalid request target"));
    };
    let path_and_query = strip_fragment(path_and_query);
    Ok(match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (path_and_query.to_owned(), String::new()),
    })
}

fn strip_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        if head.eq_ignore_ascii_case(scheme) {
            target.get(scheme.len()..)
        } else {
            None
        }
    })
}

/// A fragment is never sent by conforming clients (RFC 9110 §4.2.5); drop it if one is.
fn strip_fragment(s: &str) -> &str {
    s.split_once('#').map_or(s, |(before, _)| before)
}

/// Decide the body framing (RFC 9112 §6.3), refusing every ambiguous form with 400.
fn body_kind(head: &Head, limits: &Limits) -> Result<BodyKind, HttpError> {
    let mut te_codings: Vec<&[u8]> = Vec::new();
    let mut has_te = false;
    let mut content_length: Option<u64> = None;
    for h in &head.headers {
        match h.name.as_str() {
            "transfer-encoding" => {
                has_te = true;
                te_codings.extend(h.value.split(|&b| b == b',').map(trim_ows));
            }
            "content-length" => {
                if content_length.is_some() {
                    // §6.3 rule 5 allows merging identical repeats; we refuse all repeats:
                    // they only ever come from broken or hostile clients.
                    return Err(HttpError::Malformed("Multiple Content-Length headers"));
                }
                content_length = Some(parse_content_length(&h.value)?);
            }
            _ => {}
        }
    }
    if has_te {
        if content_length.is_some() {
            // §6.3 rule 3: CL plus TE may be smuggling; we reject, and close after replying.
            return Err(HttpError::Malformed(
                "Both Content-Length and Transfer-Encoding",
            ));
        }
        if head.minor_version == 0 {
            // §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
            return Err(HttpError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        // §6.3 rule 4: chunked must be the final coding; we implement no other coding, so
        // the only list we accept is exactly `chunked`.
        return match te_codings.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(BodyKind::Chunked),
            _ => Err(HttpError::UnknownTransferCoding),
        };
    }
    match content_length {
        Some(n) if n > limits.max_body_bytes => Err(HttpError::BodyTooLarge),
        Some(0) | None => Ok(BodyKind::None),
        Some(n) => Ok(BodyKind::Length(n)),
    }
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6): no sign, no list, no inner space, no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    const BAD: HttpError = HttpError::Malformed("Invalid Content-Length");
    if value.is_empty() {
        return Err(BAD);
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(BAD);
        }
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(BAD)
    })
}

/// RFC 9110 §10.1.1: only `100-continue` is defined; any other expectation is 417.
fn expect_continue(head: &Head) -> Result<bool, HttpError> {
    let mut cont = false;
    for h in head.headers.iter().filter(|h| h.name == "expect") {
        if h.value.eq_ignore_ascii_case(b"100-continue") {
            cont = true;
        } else {
            return Err(HttpError::ExpectationFailed);
        }
    }
    // An HTTP/1.0 client cannot understand 100 Continue; the expectation is ignored there.
    Ok(cont && head.minor_version == 1)
}

/// Default longest chunk-size line (size, extensions) we skip through before refusing, in
/// bytes. Extensions are ignored, but an endless one must not hold the connection forever.
/// The server sets its own from the config (`--max-chunk-line`).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Default longest trailer section (all trailer lines) we skip through before refusing, in
/// bytes (`--max-trailer-bytes`).
pub const MAX_TRAILER_BYTES: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size; `digits` counts them.
    Size {
        digits: usize,
    },
    /// Whitespace after the size: only more whitespace or `;` may follow (BWS, §7.1.1).
    SizeWs,
    /// Inside chunk extensions: skipped up to the CR.
    Ext,
    /// After the size line's CR: expecting LF.
    SizeLf,
    /// Chunk data bytes still to copy.
    Data {
        remaining: u64,
    },
    /// After chunk data: expecting CR, then LF.
    DataCr,
    DataLf,
    /// In the trailer section after the last chunk; `line_empty` as in the head scanner.
    Trailer {
        line_empty: bool,
    },
    /// After a CR in the trailer section: expecting LF.
    TrailerLf {
        line_empty: bool,
    },
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Fixed { remaining: u64 },
    Chunked(ChunkState),
}

/// Push decoder for one request body.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    framing: Framing,
    max_body_bytes: u64,
    /// Decoded body bytes so far.
    total: u64,
    /// Bytes of the current chunk-size line, or of the trailer section.
    line_bytes: usize,
    /// The chunk size being read.
    size: u64,
    /// Caps on a chunk-size line and on the trailer section (see `chunk_limits`).
    max_chunk_line: usize,
    max_trailer_bytes: usize,
}

impl BodyDecoder {
    pub fn new(kind: &BodyKind, max_body_bytes: u64) -> Self {
        let framing = match *kind {
            BodyKind::None => Framing::Fixed { remaining: 0 },
            BodyKind::Length(n) => Framing::Fixed { remaining: n },
            BodyKind::Chunked => Framing::Chunked(ChunkState::Size { digits: 0 }),
        };
        BodyDecoder {
            framing,
            max_body_bytes,
            total: 0,
            line_bytes: 0,
            size: 0,
            max_chunk_line: MAX_CHUNK_LINE,
            max_trailer_bytes: MAX_TRAILER_BYTES,
        }
    }

    /// Set the caps on a chunk-size line and on the trailer section (400 / 431 past them).
    pub fn chunk_limits(mut self, max_chunk_line: usize, max_trailer_bytes: usize) -> Self {
        self.max_chunk_line = max_chunk_line;
        self.max_trailer_bytes = max_trailer_bytes;
        self
    }

    /// Consume from `input` (bytes after the head), append decoded body bytes to `out`.
    /// Returns (bytes consumed from `input`, done). Bytes after the end of the body are left
    /// unconsumed: they belong to the next request. After `done`, returns `(0, true)`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), HttpError> {
        match self.framing {
            Framing::Fixed { remaining } => {
                if remaining > self.max_body_bytes {
                    return Err(HttpError::BodyTooLarge);
                }
                let take = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
                out.extend_from_slice(input.get(..take).unwrap_or(&[]));
                let remaining = remaining - take as u64;
                self.framing = Framing::Fixed { remaining };
                self.total += take as u64;
                Ok((take, remaining == 0))
            }
            Framing::Chunked(state) => self.decode_chunked(state, input, out),
        }
    }

    fn decode_chunked(
        &mut self,
        mut state: ChunkState,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), HttpError> {
        let mut i = 0;
        let result = loop {
            if state == ChunkState::Done {
                break Ok((i, true));
            }
            // Data is copied in runs, not byte by byte.
            if let ChunkState::Data { remaining } = state {
                let avail = input.get(i..).unwrap_or(&[]);
                if avail.is_empty() {
                    break Ok((i, false));
                }
                let take = usize::try_from(remaining).map_or(avail.len(), |r| r.min(avail.len()));
                out.extend_from_slice(avail.get(..take).unwrap_or(&[]));
                i += take;
                let remaining = remaining - take as u64;
                state = if remaining == 0 {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data { remaining }
                };
                continue;
            }
            let Some(&b) = input.get(i) else {
                break Ok((i, false));
            };
            i += 1;
            match self.step(state, b) {
                Ok(next) => state = next,
                Err(e) => break Err(e),
            }
        };
        self.framing = Framing::Chunked(state);
        result
    }

    /// One byte of chunked framing outside chunk data (RFC 9112 §7.1).
    fn step(&mut self, state: ChunkState, b: u8) -> Result<ChunkState, HttpError> {
        const BAD_SIZE: HttpError = HttpError::Malformed("Invalid chunk size");
        const BAD_LINE: HttpError = HttpError::Malformed("Invalid chunked framing");
        match state {
            ChunkState::Size { .. } | ChunkState::SizeWs | ChunkState::Ext | ChunkState::SizeLf => {
                self.line_bytes += 1;
                if self.line_bytes > self.max_chunk_line {
                    return Err(HttpError::Malformed("Chunk size line too long"));
                }
            }
            ChunkState::Trailer { .. } | ChunkState::TrailerLf { .. } => {
                self.line_bytes += 1;
                if self.line_bytes > self.max_trailer_bytes {
                    // The trailer section is header fields too (RFC 9112 §7.1.2): 431.
                    return Err(HttpError::HeadTooLarge);
                }
            }
            _ => {}
        }
        Ok(match state {
            ChunkState::Size { digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(u64::from(d)))
                        .ok_or(BAD_SIZE)?;
                    ChunkState::Size { digits: digits + 1 }
                }
                _ if digits == 0 => return Err(BAD_SIZE),
                b'\r' => ChunkState::SizeLf,
                b';' => ChunkState::Ext,
                b' ' | b'\t' => ChunkState::SizeWs,
                _ => return Err(BAD_SIZE),
            },
            ChunkState::SizeWs => match b {
                b' ' | b'\t' => ChunkState::SizeWs,
                b';' => ChunkState::Ext,
                _ => return Err(BAD_SIZE),
            },
            ChunkState::Ext => match b {
                b'\r' => ChunkState::SizeLf,
                // Extensions are tokens and quoted strings: no control bytes but HTAB.
                b'\t' => ChunkState::Ext,
                0..=0x1f | 0x7f => return Err(HttpError::Malformed("Invalid chunk extension")),
                _ => ChunkState::Ext,
            },
            ChunkState::SizeLf => {
                if b != b'\n' {
                    return Err(BAD_LINE);
                }
                self.line_bytes = 0;
                let size = std::mem::take(&mut self.size);
                if size == 0 {
                    ChunkState::Trailer { line_empty: true }
                } else {
                    // Refuse before buffering a byte of a chunk that would pass the cap.
                    self.total = self
                        .total
                        .checked_add(size)
                        .filter(|&t| t <= self.max_body_bytes)
                        .ok_or(HttpError::BodyTooLarge)?;
                    ChunkState::Data { remaining: size }
                }
            }
            ChunkState::Data { .. } | ChunkState::Done => state,
            ChunkState::DataCr => {
                if b != b'\r' {
                    return Err(HttpError::Malformed("Missing CRLF after chunk data"));
                }
                ChunkState::DataLf
            }
            ChunkState::DataLf => {
                if b != b'\n' {
                    return Err(HttpError::Malformed("Missing CRLF after chunk data"));
                }
                ChunkState::Size { digits: 0 }
            }
            ChunkState::Trailer { line_empty } => match b {
                b'\r' => ChunkState::TrailerLf { line_empty },
                b'\n' => return Err(HttpError::Malformed("Bare LF in chunked trailer")),
                _ => ChunkState::Trailer { line_empty: false },
            },
            ChunkState::TrailerLf { line_empty } => {
                if b != b'\n' {
                    return Err(HttpError::Malformed("Bare CR in chunked trailer"));
                }
                if line_empty {
                    ChunkState::Done
                } else {
                    ChunkState::Trailer { line_empty: true }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_bytes: 512,
        max_headers: 8,
        max_body_bytes: 1000,
    };

    fn parse_all(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
        HeadParser::new().parse(buf, &LIMITS)
    }

    fn parse_ok(buf: &[u8]) -> (Head, usize) {
        match parse_all(buf) {
            Ok(Some(x)) => x,
            other => panic!(
                "expected a head for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    /// Feed `buf` in the given pieces (cumulative buffer) and return the first verdict.
    fn parse_split(
        buf: &[u8],
        cuts: &[usize],
        limits: &Limits,
    ) -> Result<Option<(Head, usize)>, HttpError> {
        let mut p = HeadParser::new();
        for &c in cuts.iter().chain(std::iter::once(&buf.len())) {
            match p.parse(&buf[..c], limits) {
                Ok(None) => continue,
                other => return other,
            }
        }
        Ok(None)
    }

    // One line per case: input, expected outcome (status for errors).
    #[derive(Debug)]
    enum Want {
        Ok(BodyKind),
        Partial,
        Err(HttpError),
    }

    macro_rules! cases {
        ($($name:ident: $input:expr => $want:expr;)*) => {
            #[test]
            fn head_table() {
                $(
                    let got = parse_all($input);
                    match (&$want, &got) {
                        (Want::Ok(kind), Ok(Some((h, n)))) => {
                            assert_eq!(&h.body, kind, "{}", stringify!($name));
                            assert_eq!(*n, $input.len(), "{}", stringify!($name));
                        }
                        (Want::Partial, Ok(None)) => {}
                        (Want::Err(e), Err(g)) => assert_eq!(e, g, "{}", stringify!($name)),
                        (w, g) => panic!("{}: wanted {w:?}, got {g:?}", stringify!($name)),
                    }
                )*
            }
        };
    }

    use HttpError::*;
    cases! {
        minimal_get: b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Ok(BodyKind::None);
        http10_no_host: b"GET / HTTP/1.0\r\n\r\n" => Want::Ok(BodyKind::None);
        leading_crlfs: b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Ok(BodyKind::None);
        post_length: b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n" => Want::Ok(BodyKind::Length(5));
        post_zero_length: b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" => Want::Ok(BodyKind::None);
        post_no_framing: b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Ok(BodyKind::None);
        chunked: b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" => Want::Ok(BodyKind::Chunked);
        chunked_upper: b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n" => Want::Ok(BodyKind::Chunked);
        cl_at_cap: b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" => Want::Ok(BodyKind::Length(1000));
        expect_ok: b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n" => Want::Ok(BodyKind::Length(3));
        absolute_form: b"GET http://a/p?q HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Ok(BodyKind::None);
        options_star: b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Ok(BodyKind::None);
        empty_value: b"GET / HTTP/1.1\r\nHost: a\r\nX-E:\r\n\r\n" => Want::Ok(BodyKind::None);

        empty: b"" => Want::Partial;
        only_crlf: b"\r\n" => Want::Partial;
        partial_line: b"GET / HTTP/1." => Want::Partial;
        partial_headers: b"GET / HTTP/1.1\r\nHost: a\r\n" => Want::Partial;
        partial_blank: b"GET / HTTP/1.1\r\nHost: a\r\n\r" => Want::Partial;

        bare_lf_line: b"GET / HTTP/1.1\nHost: a\r\n\r\n" => Want::Err(Malformed("Bare LF in request head"));
        bare_lf_end: b"GET / HTTP/1.1\r\nHost: a\n\n" => Want::Err(Malformed("Bare LF in request head"));
        bare_lf_leading: b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Bare LF in request head"));
        bare_cr: b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n" => Want::Err(Malformed("Bare CR in request head"));
        obs_fold: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n" => Want::Err(Malformed("Obsolete line folding in request head"));
        obs_fold_tab: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n" => Want::Err(Malformed("Obsolete line folding in request head"));
        space_before_first_field: b"GET / HTTP/1.1\r\n Host: a\r\n\r\n" => Want::Err(Malformed("Obsolete line folding in request head"));
        space_in_target: b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Malformed request line"));
        tab_in_target: b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Malformed request line"));
        ctl_in_target: b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Malformed request line"));
        del_in_target: b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Malformed request line"));
        relative_target: b"GET a HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Invalid request target"));
        star_not_options: b"GET * HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Invalid request target"));
        double_space: b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Malformed request line"));
        lowercase_version: b"GET / http/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Malformed request line"));
        http2: b"GET / HTTP/2.0\r\nHost: a\r\n\r\n" => Want::Err(VersionNotSupported);
        http09ish: b"GET / HTTP/0.9\r\nHost: a\r\n\r\n" => Want::Err(VersionNotSupported);
        http12: b"GET / HTTP/1.2\r\nHost: a\r\n\r\n" => Want::Err(VersionNotSupported);
        cl_and_te: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" => Want::Err(Malformed("Both Content-Length and Transfer-Encoding"));
        te_and_cl: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" => Want::Err(Malformed("Both Content-Length and Transfer-Encoding"));
        cl_plus: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n" => Want::Err(Malformed("Invalid Content-Length"));
        cl_minus: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n" => Want::Err(Malformed("Invalid Content-Length"));
        cl_list: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,2\r\n\r\n" => Want::Err(Malformed("Invalid Content-Length"));
        cl_same_list: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n" => Want::Err(Malformed("Invalid Content-Length"));
        cl_inner_space: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  1 2\r\n\r\n" => Want::Err(Malformed("Invalid Content-Length"));
        cl_empty: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n" => Want::Err(Malformed("Invalid Content-Length"));
        cl_hex: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n" => Want::Err(Malformed("Invalid Content-Length"));
        cl_overflow: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n" => Want::Err(Malformed("Invalid Content-Length"));
        cl_differ: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n" => Want::Err(Malformed("Multiple Content-Length headers"));
        cl_repeat: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n" => Want::Err(Malformed("Multiple Content-Length headers"));
        cl_over_cap: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n" => Want::Err(BodyTooLarge);
        cl_max_u64: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n" => Want::Err(BodyTooLarge);
        te_gzip: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n" => Want::Err(UnknownTransferCoding);
        te_gzip_chunked: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" => Want::Err(UnknownTransferCoding);
        te_chunked_gzip: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" => Want::Err(UnknownTransferCoding);
        te_twice: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" => Want::Err(UnknownTransferCoding);
        te_chunked_junk: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n" => Want::Err(UnknownTransferCoding);
        te_empty: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n" => Want::Err(UnknownTransferCoding);
        te_http10: b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" => Want::Err(Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        bad_name_space: b"GET / HTTP/1.1\r\nHost: a\r\nA B: c\r\n\r\n" => Want::Err(Malformed("Invalid header name"));
        bad_name_space_colon: b"GET / HTTP/1.1\r\nHost: a\r\nA : c\r\n\r\n" => Want::Err(Malformed("Invalid header name"));
        bad_name_char: b"GET / HTTP/1.1\r\nHost: a\r\nA(b): c\r\n\r\n" => Want::Err(Malformed("Invalid header name"));
        no_colon: b"GET / HTTP/1.1\r\nHost: a\r\nAbc\r\n\r\n" => Want::Err(Malformed("Invalid header name"));
        nul_in_value: b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n" => Want::Err(Malformed("Invalid header value"));
        missing_host: b"GET / HTTP/1.1\r\n\r\n" => Want::Err(Malformed("Missing Host header"));
        two_hosts: b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" => Want::Err(Malformed("Multiple Host headers"));
        expect_other: b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n" => Want::Err(ExpectationFailed);
        too_many_headers: b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n\r\n" => Want::Err(TooManyHeaders);
        bad_method: b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Malformed request line"));
        non_utf8_target: b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n" => Want::Err(Malformed("Malformed request line"));
    }

    #[test]
    fn statuses_of_rejections() {
        let table: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n", 417),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n",
                413,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
        ];
        for (input, status) in table {
            let err = parse_all(input).expect_err("must be refused");
            assert_eq!(
                err.status(),
                *status,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn head_fields() {
        let buf: &[u8] = b"PATCH /api/x%20y?a=1&b=%2F HTTP/1.1\r\nHost: example\r\nX-Multi: a\r\n\
              CONNECTION: Upgrade, Keep-Alive\r\nUpgrade: WebSocket\r\nx-multi: b\r\n\
              X-Trim:   v  \r\n\r\nBODY";
        let (h, n) = parse_ok(buf);
        assert_eq!(&buf[n..], b"BODY");
        assert_eq!(h.method, Method::Patch);
        assert_eq!(h.method_raw, "PATCH");
        assert_eq!(h.target, "/api/x%20y?a=1&b=%2F");
        assert_eq!(h.path, "/api/x%20y");
        assert_eq!(h.query, "a=1&b=%2F");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.header("host"), Some("example"));
        assert_eq!(h.header("x-multi"), Some("a"));
        assert_eq!(h.header("x-trim"), Some("v"));
        assert_eq!(h.header_bytes("x-none"), None);
        assert!(h.has_token("connection", "upgrade"));
        assert!(h.has_token("connection", "keep-alive"));
        assert!(!h.has_token("connection", "close"));
        assert!(h.wants_upgrade);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert_eq!(h.headers.len(), 6);
        assert!(h
            .headers
            .iter()
            .all(|x| x.name == x.name.to_ascii_lowercase()));
    }

    #[test]
    fn head_length_excludes_body() {
        let req = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd";
        let (h, n) = parse_ok(req);
        assert_eq!(&req[n..], b"abcd");
        assert_eq!(h.body, BodyKind::Length(4));
    }

    #[test]
    fn methods_and_targets() {
        let table: &[(&[u8], Method, &str, &str, &str)] = &[
            (
                b"GET /a?b HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Get,
                "GET",
                "/a",
                "b",
            ),
            (
                b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Head,
                "HEAD",
                "/",
                "",
            ),
            (
                b"PUT /p? HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Put,
                "PUT",
                "/p",
                "",
            ),
            (
                b"DELETE /d?x?y HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Delete,
                "DELETE",
                "/d",
                "x?y",
            ),
            (
                b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Options,
                "OPTIONS",
                "*",
                "",
            ),
            (
                b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Other,
                "get",
                "/",
                "",
            ),
            (
                b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Other,
                "BREW",
                "/pot",
                "",
            ),
            (
                b"GET http://h:80/x/y?z=1 HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Get,
                "GET",
                "/x/y",
                "z=1",
            ),
            (
                b"GET HTTP://h HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Get,
                "GET",
                "/",
                "",
            ),
            (
                b"GET https://h?q HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Get,
                "GET",
                "/",
                "q",
            ),
            (
                b"GET /f#frag HTTP/1.1\r\nHost: h\r\n\r\n",
                Method::Get,
                "GET",
                "/f",
                "",
            ),
        ];
        for (input, method, raw, path, query) in table {
            let (h, _) = parse_ok(input);
            assert_eq!((h.method, h.method_raw.as_str()), (*method, *raw));
            assert_eq!((h.path.as_str(), h.query.as_str()), (*path, *query));
        }
        assert_eq!(Method::Other.as_str(), "OTHER");
        assert_eq!(Method::Options.as_str(), "OPTIONS");
    }

    #[test]
    fn keep_alive_and_expect() {
        // (request, keep_alive, expect_continue)
        let table: &[(&[u8], bool, bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true, false),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                false,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n",
                false,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x\r\nConnection: close\r\n\r\n",
                false,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n",
                true,
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false, false),
            (
                b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                true,
                false,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
                false,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                true,
                true,
            ),
            (
                b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                false,
                false,
            ),
        ];
        for (input, ka, ec) in table {
            let (h, _) = parse_ok(input);
            assert_eq!(
                (h.keep_alive, h.expect_continue),
                (*ka, *ec),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let (h, _) = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, websocket\r\n\r\n");
        assert!(h.wants_upgrade);
        let (h, _) = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websockets\r\n\r\n");
        assert!(!h.wants_upgrade);
    }

    #[test]
    fn head_cap_same_for_any_split() {
        // A head of exactly the cap passes; one byte more is 431, whatever the TCP split;
        // body bytes behind a head under the cap never count.
        let limits = Limits {
            max_head_bytes: 64,
            max_headers: 8,
            max_body_bytes: 1000,
        };
        let base = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        let fill = 64 - base.len() - 4;
        let mut at_cap = base.clone();
        at_cap.extend(std::iter::repeat_n(b'v', fill));
        at_cap.extend_from_slice(b"\r\n\r\n");
        assert_eq!(at_cap.len(), 64);
        let mut over = base.clone();
        over.extend(std::iter::repeat_n(b'v', fill + 1));
        over.extend_from_slice(b"\r\n\r\n");
        let mut with_body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n".to_vec();
        with_body.extend(std::iter::repeat_n(b'b', 100));
        let bare_lf_after_cap = {
            let mut v = over.clone();
            v.extend_from_slice(b"\n");
            v
        };

        let cases: Vec<(&[u8], Result<usize, HttpError>)> = vec![
            (&at_cap, Ok(64)),
            (&over, Err(HttpError::HeadTooLarge)),
            (&with_body, Ok(with_body.len() - 100)),
            (&bare_lf_after_cap, Err(HttpError::HeadTooLarge)),
            (
                b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
                Err(HttpError::Malformed("Bare LF in request head")),
            ),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(27)),
        ];
        for (input, want) in cases {
            let verdict =
                |r: Result<Option<(Head, usize)>, HttpError>| r.map(|o| o.map(|(_, n)| n));
            let whole = verdict(parse_split(input, &[], &limits));
            assert_eq!(
                whole,
                want.clone().map(Some),
                "whole {:?}",
                String::from_utf8_lossy(input)
            );
            // Every single split point.
            for cut in 0..=input.len() {
                assert_eq!(
                    verdict(parse_split(input, &[cut], &limits)),
                    whole,
                    "cut {cut}"
                );
            }
            // Every byte separately.
            let all: Vec<usize> = (0..input.len()).collect();
            assert_eq!(
                verdict(parse_split(input, &all, &limits)),
                whole,
                "byte by byte"
            );
        }
    }

    #[test]
    fn incremental_scan_resumes() {
        // The parser resumes where it left off, and a reset parser rescans from scratch.
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut p = HeadParser::new();
        assert_eq!(p.parse(&req[..10], &LIMITS), Ok(None));
        assert_eq!(p.pos, 10);
        assert_eq!(p.parse(&req[..20], &LIMITS), Ok(None));
        assert_eq!(p.pos, 20);
        assert!(matches!(p.parse(req, &LIMITS), Ok(Some((_, 27)))));
        assert_eq!(p.pos, 0, "reset after a complete head");
        // A shorter buffer than before (the caller compacted) restarts the scan.
        assert_eq!(p.parse(&req[..20], &LIMITS), Ok(None));
        assert_eq!(p.parse(&req[..5], &LIMITS), Ok(None));
        assert_eq!(p.pos, 5);
        assert!(matches!(p.parse(req, &LIMITS), Ok(Some((_, 27)))));
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let buf: &[u8] = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
GET /b HTTP/1.1\r\nHost: h\r\n\r\n\
POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n\
GET /d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        let mut at = 0;
        let mut seen = Vec::new();
        let mut p = HeadParser::new();
        while at < buf.len() {
            let (head, n) = match p.parse(&buf[at..], &LIMITS) {
                Ok(Some(x)) => x,
                other => panic!("at {at}: {other:?}"),
            };
            at += n;
            let mut dec = BodyDecoder::new(&head.body, LIMITS.max_body_bytes);
            let mut body = Vec::new();
            let (used, done) = dec.decode(&buf[at..], &mut body).expect("body");
            assert!(done);
            at += used;
            seen.push((
                head.path.clone(),
                String::from_utf8(body).expect("utf8"),
                head.keep_alive,
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("/a".to_owned(), "abc".to_owned(), true),
                ("/b".to_owned(), String::new(), true),
                ("/c".to_owned(), "xy".to_owned(), true),
                ("/d".to_owned(), String::new(), false),
            ]
        );
    }

    fn decode_all(
        kind: BodyKind,
        cap: u64,
        input: &[u8],
    ) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut d = BodyDecoder::new(&kind, cap);
        let mut out = Vec::new();
        let (n, done) = d.decode(input, &mut out)?;
        Ok((out, n, done))
    }

    /// Byte-by-byte feeding must give the same body, length and verdict as one call.
    fn decode_dribble(
        kind: BodyKind,
        cap: u64,
        input: &[u8],
    ) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut d = BodyDecoder::new(&kind, cap);
        let mut out = Vec::new();
        let mut used = 0;
        for i in 0..input.len() {
            let (n, done) = d.decode(&input[i..=i], &mut out)?;
            used += n;
            if done {
                return Ok((out, used, true));
            }
            assert_eq!(n, 1, "a byte before the end is always consumed");
        }
        Ok((out, used, false))
    }

    #[test]
    fn chunked_table() {
        // (input, Ok((body, consumed, done)) or Err)
        type Case = (
            &'static [u8],
            Result<(&'static [u8], usize, bool), HttpError>,
        );
        let cases: &[Case] = &[
            (b"0\r\n\r\n", Ok((b"", 5, true))),
            (b"3\r\nabc\r\n0\r\n\r\n", Ok((b"abc", 13, true))),
            (b"3\r\nabc\r\n0\r\n\r\nGET", Ok((b"abc", 13, true))),
            (
                b"9\r\n012345678\r\n1\r\nx\r\n0\r\n\r\n",
                Ok((b"012345678x", 25, true)),
            ),
            (
                b"A\r\n0123456789\r\n0\r\n\r\n",
                Ok((b"0123456789", 20, true)),
            ),
            (b"003\r\nabc\r\n0\r\n\r\n", Ok((b"abc", 15, true))),
            (
                b"3;ext=1;q=\"a b\"\r\nabc\r\n0;last\r\n\r\n",
                Ok((b"abc", 32, true)),
            ),
            (b"3 ;e\r\nabc\r\n0\r\n\r\n", Ok((b"abc", 16, true))),
            (
                b"3\r\nabc\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n",
                Ok((b"abc", 27, true)),
            ),
            (b"3\r\nab", Ok((b"ab", 5, false))),
            (b"3\r\nabc\r\n0\r\n\r", Ok((b"abc", 12, false))),
            (b"", Ok((b"", 0, false))),
            (b"x\r\n", Err(HttpError::Malformed("Invalid chunk size"))),
            (b"\r\n", Err(HttpError::Malformed("Invalid chunk size"))),
            (b"-1\r\n", Err(HttpError::Malformed("Invalid chunk size"))),
            (b"+1\r\n", Err(HttpError::Malformed("Invalid chunk size"))),
            (
                b"0x3\r\nabc\r\n",
                Err(HttpError::Malformed("Invalid chunk size")),
            ),
            (
                b"3 \r\nabc\r\n",
                Err(HttpError::Malformed("Invalid chunk size")),
            ),
            (b"1 2\r\n", Err(HttpError::Malformed("Invalid chunk size"))),
            (
                b"10000000000000000\r\n",
                Err(HttpError::Malformed("Invalid chunk size")),
            ),
            (
                b"3\nabc\r\n0\r\n\r\n",
                Err(HttpError::Malformed("Invalid chunk size")),
            ),
            (
                b"3\r\rabc",
                Err(HttpError::Malformed("Invalid chunked framing")),
            ),
            (
                b"3\r\nabcd\r\n",
                Err(HttpError::Malformed("Missing CRLF after chunk data")),
            ),
            (
                b"3\r\nabc\n0\r\n\r\n",
                Err(HttpError::Malformed("Missing CRLF after chunk data")),
            ),
            (
                b"3\r\nabc\rX",
                Err(HttpError::Malformed("Missing CRLF after chunk data")),
            ),
            (
                b"3;a\x01\r\nabc",
                Err(HttpError::Malformed("Invalid chunk extension")),
            ),
            (
                b"0\r\nX: 1\n\r\n",
                Err(HttpError::Malformed("Bare LF in chunked trailer")),
            ),
            (
                b"0\r\n\n",
                Err(HttpError::Malformed("Bare LF in chunked trailer")),
            ),
            (
                b"0\r\nX: 1\rZ",
                Err(HttpError::Malformed("Bare CR in chunked trailer")),
            ),
            // Cap 10: exactly 10 passes, 11 across chunks fails before any data is read.
            (
                b"a\r\n0123456789\r\n0\r\n\r\n",
                Ok((b"0123456789", 20, true)),
            ),
            (b"6\r\n012345\r\n5\r\n", Err(HttpError::BodyTooLarge)),
            (b"b\r\n", Err(HttpError::BodyTooLarge)),
            (b"ffffffffffffffff\r\n", Err(HttpError::BodyTooLarge)),
        ];
        for (input, want) in cases {
            let want = want.clone().map(|(b, n, d)| (b.to_vec(), n, d));
            let got = decode_all(BodyKind::Chunked, 10, input);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            let dribbled = decode_dribble(BodyKind::Chunked, 10, input);
            assert_eq!(
                dribbled,
                want,
                "dribbled {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn chunk_limits_are_configurable() {
        let run = |input: &[u8]| {
            let mut d = BodyDecoder::new(&BodyKind::Chunked, 100).chunk_limits(8, 12);
            let mut out = Vec::new();
            d.decode(input, &mut out).map(|(_, done)| (out, done))
        };
        assert_eq!(run(b"1;abc\r\nz\r\n0\r\n\r\n"), Ok((b"z".to_vec(), true)));
        assert_eq!(
            run(b"1;abcdefghij\r\nz\r\n"),
            Err(HttpError::Malformed("Chunk size line too long"))
        );
        assert_eq!(
            run(b"0\r\nX-A: 1\r\nX-B: 2\r\n\r\n"),
            Err(HttpError::HeadTooLarge)
        );
    }

    #[test]
    fn chunked_bounds() {
        // A size line of endless extensions and an endless trailer are both refused.
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'e', MAX_CHUNK_LINE));
        assert_eq!(
            decode_all(BodyKind::Chunked, 10, &line),
            Err(HttpError::Malformed("Chunk size line too long"))
        );
        let mut ok_line = b"1;".to_vec();
        ok_line.extend(std::iter::repeat_n(b'e', MAX_CHUNK_LINE - 4));
        ok_line.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert_eq!(
            decode_all(BodyKind::Chunked, 10, &ok_line).map(|r| r.0),
            Ok(b"z".to_vec())
        );
        let mut trailer = b"0\r\n".to_vec();
        while trailer.len() < MAX_TRAILER_BYTES + 10 {
            trailer.extend_from_slice(b"X-A: 1\r\n");
        }
        assert_eq!(
            decode_all(BodyKind::Chunked, 10, &trailer),
            Err(HttpError::HeadTooLarge)
        );
        // Once done, the decoder consumes nothing more.
        let mut d = BodyDecoder::new(&BodyKind::Chunked, 10);
        let mut out = Vec::new();
        assert_eq!(d.decode(b"0\r\n\r\n", &mut out), Ok((5, true)));
        assert_eq!(d.decode(b"1\r\nx", &mut out), Ok((0, true)));
    }

    #[test]
    fn fixed_length_bodies() {
        type Case = (
            BodyKind,
            &'static [u8],
            Result<(&'static [u8], usize, bool), HttpError>,
        );
        let cases: &[Case] = &[
            (BodyKind::None, b"GET", Ok((b"", 0, true))),
            (BodyKind::Length(3), b"abcdef", Ok((b"abc", 3, true))),
            (BodyKind::Length(3), b"ab", Ok((b"ab", 2, false))),
            (
                BodyKind::Length(10),
                b"0123456789",
                Ok((b"0123456789", 10, true)),
            ),
            (BodyKind::Length(11), b"0", Err(HttpError::BodyTooLarge)),
        ];
        for (kind, input, want) in cases {
            let want = want.clone().map(|(b, n, d)| (b.to_vec(), n, d));
            assert_eq!(decode_all(*kind, 10, input), want, "{kind:?}");
            if !matches!(kind, BodyKind::None) {
                assert_eq!(decode_dribble(*kind, 10, input), want, "dribbled {kind:?}");
            }
        }
        // Fed in two parts, the second call finishes the body.
        let mut d = BodyDecoder::new(&BodyKind::Length(4), 10);
        let mut out = Vec::new();
        assert_eq!(d.decode(b"ab", &mut out), Ok((2, false)));
        assert_eq!(d.decode(b"cdXY", &mut out), Ok((2, true)));
        assert_eq!(out, b"abcd");
    }
}
