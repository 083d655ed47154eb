//! One server-role WebSocket connection after the handshake (RFC 6455 §5–§7), over our own
//! byte buffers: tungstenite's `WebSocketContext` does the framing, masking, fragmentation,
//! UTF-8 and close-code rules; this module owns the adapter that feeds it, the mapping of its
//! errors to close codes, and the pre-encoded server frames used for fan-out.
//!
//! The socket belongs to the mio loop. `Link::read` is handed the connection's input buffer
//! and an output buffer; tungstenite reads through a `Read` that drains the input (and says
//! `WouldBlock` when it is empty) and writes through a `Write` that appends to the output and
//! always accepts.
//!
//! NOTE: `write_buffer_size` is 0 and our writer never refuses, so every frame tungstenite
//! produces lands in `out` whole, during the call that produced it, and tungstenite keeps no
//! bytes of its own. We also flush its automatic replies (pong, close reply) right after the
//! message that caused them. Hence between two calls nothing is half-written, and a shared frame
//! from [`frame_text`] can be queued between them (ARCHITECTURE.md, Path 2).
//!
//! States: `Open` → (we send a close) `Closing` → `Done`; `Open` → (peer's close, or a
//! protocol error) `Done`. In `Done` the caller flushes `out` and closes TCP itself
//! (RFC 6455 §7.1.1: the server closes the TCP connection first).

use std::io::{self, Read, Write};

use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message, Utf8Bytes};

use crate::error::WsClose;

/// tungstenite's read chunk (`read_buffer_size`) for tests: allocated once per connection and
/// the most it pulls from our input per read call. Its default of 128 KiB per connection is too
/// much for a small board; bigger frames grow the buffer only while they are being read. Each
/// endpoint picks its own (`WsLimits::read_chunk`): small for many idle subscribers, large for
/// the few world links that carry multi-MB messages.
#[cfg(test)]
const READ_CHUNK: usize = 4096;

/// RFC 6455 §5.5: a control frame payload is at most 125 bytes; a close reason is that minus
/// the two-byte code.
const MAX_CONTROL_PAYLOAD: usize = 125;
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// What tungstenite sends back when a peer's close carries a code that must not be sent
/// (`do_close` in tungstenite 0.30): 1002 with this reason.
const BAD_CLOSE_CODE_REASON: &str = "Protocol violation";

/// Per-connection limits on what a peer may send.
#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    /// Largest message (all fragments together) in bytes; beyond it the link fails with 1009.
    pub max_message: usize,
    /// Largest single frame payload in bytes; checked from the header, before the payload is
    /// buffered. Beyond it the link fails with 1009.
    pub max_frame: usize,
    /// tungstenite's read chunk: its per-connection buffer and the most one internal read
    /// takes. Memory per idle connection against read calls per large message.
    pub read_chunk: usize,
}

/// What one `Link::read` call found, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    Text(String),
    Binary(Vec<u8>),
    /// A ping; its pong is already in `out`.
    Ping,
    Pong,
    /// The peer's close; the close reply (if any) is already in `out`. The caller flushes `out`
    /// and closes TCP.
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; its data still arrives, nothing is sent.
    Closing,
    /// The peer's close arrived or the link failed: input is discarded from now on.
    Done,
}

/// `Read + Write` over the caller's buffers for the length of one call.
struct Io<'a> {
    input: &'a [u8],
    /// Bytes of `input` handed to tungstenite so far; drained from the input vec afterwards.
    consumed: usize,
    out: &'a mut Vec<u8>,
}

impl<'a> Io<'a> {
    fn new(input: &'a [u8], out: &'a mut Vec<u8>) -> Self {
        Io {
            input,
            consumed: 0,
            out,
        }
    }
}

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.input.get(self.consumed..).unwrap_or_default();
        if rest.is_empty() {
            // Never Ok(0): tungstenite would read that as the peer closing TCP.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consumed += n;
        Ok(n)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &WsError) -> bool {
    matches!(e, WsError::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// The one mapping from a tungstenite read error to the close we send (RFC 6455 §7.4.1).
fn close_for(err: &WsError) -> WsClose {
    match err {
        // §5.4/§10.4: too large for us.
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => WsClose::TOO_BIG,
        WsError::Capacity(_) => WsClose::TOO_BIG,
        // §8.1: invalid UTF-8 in a text message or a close reason.
        WsError::Utf8(_) => WsClose::INVALID_DATA,
        WsError::Protocol(p) => WsClose::new(
            1002,
            match p {
                // §5.2: RSV1-3 must be 0 without a negotiated extension.
                ProtocolError::NonZeroReservedBits => "Reserved bits set",
                // §5.1: a client must mask every frame.
                ProtocolError::UnmaskedFrameFromClient => "Unmasked client frame",
                // §5.5: control frames are final and at most 125 bytes.
                ProtocolError::FragmentedControlFrame => "Fragmented control frame",
                ProtocolError::ControlFrameTooBig => "Control frame too big",
                // §5.2: opcodes 3-7 and 0xB-0xF are reserved.
                ProtocolError::InvalidOpcode(_)
                | ProtocolError::UnknownControlFrameType(_)
                | ProtocolError::UnknownDataFrameType(_) => "Reserved opcode",
                // §5.4: fragments must follow a non-final data frame, and only fragments may.
                ProtocolError::UnexpectedContinueFrame => "Unexpected continuation frame",
                ProtocolError::ExpectedFragment(_) => "Expected continuation frame",
                // §5.5.1: a close body is empty or at least a two-byte code.
                ProtocolError::InvalidCloseSequence => "Invalid close frame",
                ProtocolError::ReceivedAfterClosing => "Frame after close",
                _ => "Protocol error",
            },
        ),
        // Our adapter never fails and we stop after the close: reaching here is our bug.
        _ => WsClose::INTERNAL,
    }
}

/// `reason` cut to at most `max` bytes on a character boundary.
fn truncate_utf8(reason: &str, max: usize) -> &str {
    let mut end = reason.len().min(max);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.get(..end).unwrap_or_default()
}

/// A server-role WebSocket connection on our own buffers.
#[derive(Debug)]
pub struct Link {
    ctx: WebSocketContext,
    state: State,
}

impl Link {
    pub fn new(limits: WsLimits) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(limits.read_chunk.max(256))
            // Frames go straight to our writer (see the module note). The write buffer limit
            // stays at its default (unbounded): with size 0 and a writer that always accepts,
            // tungstenite's own buffer is empty after every frame.
            .write_buffer_size(0)
            .max_message_size(Some(limits.max_message))
            .max_frame_size(Some(limits.max_frame))
            // RFC 6455 §5.1: the server MUST close on an unmasked client frame.
            .accept_unmasked_frames(false);
        Link {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            state: State::Open,
        }
    }

    /// Change the message and frame limits from the next frame on (a world link gets its
    /// full limits once its auth message succeeded).
    pub fn set_limits(&mut self, max_message: usize, max_frame: usize) {
        self.ctx.set_config(|c| {
            c.max_message_size = Some(max_message);
            c.max_frame_size = Some(max_frame);
        });
    }

    /// True once a close frame was sent or received, or the link failed: no more sends.
    pub fn is_closing(&self) -> bool {
        self.state != State::Open
    }

    /// Parse as many complete messages as `input` holds, draining consumed bytes from `input`,
    /// pushing events into `events` and writing automatic replies (pong for ping, close reply)
    /// into `out`. At most `max_messages` messages (control ones included, at least one) per
    /// call: returns `Ok(true)` if it stopped because of that budget, and the caller must call
    /// again even if `input` is empty, since tungstenite may hold a whole frame already.
    ///
    /// On a protocol error it writes the close frame into `out` (unless we had sent one
    /// already: RFC 6455 §5.5.1 allows one) and returns `Err` with that close: 1002 protocol,
    /// 1007 invalid UTF-8, 1009 too big. After `Err` or `WsEvent::Closed` the caller flushes
    /// `out` and closes TCP; later calls discard their input.
    pub fn read(
        &mut self,
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
        events: &mut Vec<WsEvent>,
        max_messages: usize,
    ) -> Result<bool, WsClose> {
        if self.state == State::Done {
            input.clear();
            return Ok(false);
        }
        let mut io = Io::new(input, out);
        let result = self.read_with(&mut io, events, max_messages.max(1));
        let consumed = io.consumed;
        input.drain(..consumed.min(input.len()));
        result
    }

    fn read_with(
        &mut self,
        io: &mut Io<'_>,
        events: &mut Vec<WsEvent>,
        budget: usize,
    ) -> Result<bool, WsClose> {
        for _ in 0..budget {
            let message = match self.ctx.read(io) {
                Ok(message) => message,
                Err(e) if would_block(&e) => return Ok(false),
                // Only after the close handshake completed, which we never read past.
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.state = State::Done;
                    return Ok(false);
                }
                Err(e) => return Err(self.fail(io, close_for(&e))),
            };
            match message {
                Message::Text(text) => events.push(WsEvent::Text(utf8_into_string(text))),
                Message::Binary(data) => events.push(WsEvent::Binary(Vec::from(data))),
                Message::Ping(_) => {
                    // tungstenite queued the pong (unless we are closing); write it now so
                    // nothing is pending between calls (pitfall 9 in STYLE.md).
                    self.flush(io);
                    events.push(WsEvent::Ping);
                }
                Message::Pong(_) => events.push(WsEvent::Pong),
                Message::Close(frame) => return self.peer_closed(io, frame, events),
                // Never produced by reading.
                Message::Frame(_) => {}
            }
        }
        Ok(true)
    }

    /// The peer's close arrived: write tungstenite's reply (RFC 6455 §5.5.1) and finish.
    fn peer_closed(
        &mut self,
        io: &mut Io<'_>,
        frame: Option<CloseFrame>,
        events: &mut Vec<WsEvent>,
    ) -> Result<bool, WsClose> {
        let was_open = self.state == State::Open;
        // For the server, flushing after a close exchange ends in `ConnectionClosed`.
        self.flush(io);
        self.state = State::Done;
        let (code, reason) = match frame {
            Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
            None => (None, String::new()),
        };
        // RFC 6455 §7.4.1: codes such as 0-999, 1004-1006, 1015 and 2000 must not be sent, and
        // a peer sending one fails the connection. tungstenite has already answered with 1002
        // and hands us that reply in place of the peer's code; report it as the error it is.
        // (A peer that itself sends exactly 1002 "Protocol violation" gets the same answer.)
        if was_open && code == Some(1002) && reason == BAD_CLOSE_CODE_REASON {
            return Err(WsClose::new(1002, BAD_CLOSE_CODE_REASON));
        }
        events.push(WsEvent::Closed { code, reason });
        Ok(false)
    }

    /// Writes the close for a failed read, unless we already sent one, and ends the link.
    fn fail(&mut self, io: &mut Io<'_>, close: WsClose) -> WsClose {
        if self.state == State::Open {
            self.send_close(io, &close);
        }
        self.state = State::Done;
        close
    }

    fn send_close(&mut self, io: &mut Io<'_>, close: &WsClose) {
        let code = if CloseCode::from(close.code).is_allowed() {
            close.code
        } else {
            // RFC 6455 §7.4.1: 1005, 1006, 1015 and unassigned codes must not go on the wire.
            log::warn!("refusing to send close code {}; sending 1011", close.code);
            WsClose::INTERNAL.code
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(truncate_utf8(&close.reason, MAX_CLOSE_REASON)),
        };
        // With our writer this only fails with `ConnectionClosed` once both closes have been
        // exchanged, which is the end we want anyway.
        let _ = self.ctx.close(io, Some(frame));
    }

    /// Pushes out anything tungstenite queued (automatic pong or close reply). With our
    /// writer it cannot fail except with `ConnectionClosed` after a finished close exchange.
    fn flush(&mut self, io: &mut Io<'_>) {
        let _ = self.ctx.flush(io);
    }

    /// Start a close handshake (RFC 6455 §7.1.2): writes the close frame to `out`; further
    /// sends are refused. The caller closes TCP when the peer's close arrives or a deadline
    /// passes. Does nothing if a close was already sent or received.
    pub fn close(&mut self, close: &WsClose, out: &mut Vec<u8>) {
        if self.state != State::Open {
            return;
        }
        let mut io = Io::new(&[], out);
        self.send_close(&mut io, close);
        self.state = State::Closing;
    }

    /// Sends a ping (RFC 6455 §5.5.2); the payload is cut to 125 bytes. Ignored once closing.
    pub fn ping(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        if self.state != State::Open {
            return;
        }
        let payload = payload.get(..MAX_CONTROL_PAYLOAD).unwrap_or(payload);
        let mut io = Io::new(&[], out);
        let _ = self
            .ctx
            .write(&mut io, Message::Ping(Bytes::copy_from_slice(payload)));
        self.flush(&mut io);
    }

    /// Sends one text message as a single frame. Ignored once closing (RFC 6455 §5.5.1: no
    /// data after a close frame). Bypasses tungstenite, which holds nothing between calls.
    pub fn send_text(&mut self, text: &str, out: &mut Vec<u8>) {
        if self.state != State::Open {
            return;
        }
        frame_text_into(text.len(), out);
        out.extend_from_slice(text.as_bytes());
    }

    /// Sends one binary message as a single frame (the test echo route must answer binary
    /// with binary). Ignored once closing, like `send_text`.
    pub fn send_binary(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.state != State::Open {
            return;
        }
        frame_header_into(0x82, data.len(), out);
        out.extend_from_slice(data);
    }
}

/// Takes a text message's bytes without a copy when tungstenite built it from a `String`
/// (fragmented messages); `from_utf8` cannot fail as tungstenite validated it.
fn utf8_into_string(text: Utf8Bytes) -> String {
    let bytes = Vec::from(Bytes::from(text));
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// One unmasked server→client text frame, FIN set (RFC 6455 §5.2), byte-identical to what
/// tungstenite writes for `Message::Text`. Encode once, share across sockets.
pub fn frame_text(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    frame_text_into(payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// Only the header of [`frame_text`], so a caller can append a big payload without a second
/// copy. RFC 6455 §5.2: 7-bit length up to 125, else 126 + 16-bit, else 127 + 64-bit, network
/// byte order, minimal form; a server sets no mask bit.
pub fn frame_text_into(payload_len: usize, out: &mut Vec<u8>) {
    frame_header_into(0x81, payload_len, out);
}

fn frame_header_into(first: u8, len: usize, out: &mut Vec<u8>) {
    out.push(first);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// One server close frame (RFC 6455 §5.5.1): the code, then the reason cut to 123 bytes on a
/// character boundary so the payload stays within the 125-byte control-frame limit.
pub fn frame_close(code: u16, reason: &str) -> Vec<u8> {
    let reason = truncate_utf8(reason, MAX_CLOSE_REASON);
    let mut out = Vec::with_capacity(4 + reason.len());
    frame_header_into(0x88, 2 + reason.len(), &mut out);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WsLimits = WsLimits {
        max_message: 1 << 20,
        max_frame: 1 << 20,
        read_chunk: READ_CHUNK,
    };
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame (RFC 6455 §5.2/§5.3): `first` is FIN/RSV/opcode.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header_into(first, payload.len(), &mut out);
        if let Some(second) = out.get_mut(1) {
            *second |= 0x80;
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    fn text(s: &str) -> Vec<u8> {
        client_frame(0x81, s.as_bytes())
    }

    fn close_body(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    }

    /// Feeds `wire` in one call, with a large budget.
    fn run(limits: WsLimits, wire: &[u8]) -> (Result<bool, WsClose>, Vec<WsEvent>, Vec<u8>) {
        let mut link = Link::new(limits);
        let mut input = wire.to_vec();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let r = link.read(&mut input, &mut out, &mut events, 1000);
        assert!(input.is_empty(), "input must be drained");
        (r, events, out)
    }

    fn txt(s: &str) -> WsEvent {
        WsEvent::Text(s.to_string())
    }

    fn closed(code: Option<u16>, reason: &str) -> WsEvent {
        WsEvent::Closed {
            code,
            reason: reason.to_string(),
        }
    }

    fn pong(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header_into(0x8a, payload.len(), &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// (name, client bytes, expected events, expected `out`).
    type OkCase = (&'static str, Vec<u8>, Vec<WsEvent>, Vec<u8>);
    /// (name, limits, client bytes, events before the failure, close code).
    type ErrCase = (&'static str, WsLimits, Vec<u8>, Vec<WsEvent>, u16);

    #[test]
    fn successful_exchanges() {
        let frag_ping = [
            client_frame(0x01, b"Hel"),
            client_frame(0x89, b"hi"),
            client_frame(0x00, b"lo, "),
            client_frame(0x80, b"World"),
        ]
        .concat();
        let cases: Vec<OkCase> = vec![
            ("text", text("hello"), vec![txt("hello")], vec![]),
            ("empty text", text(""), vec![txt("")], vec![]),
            (
                "utf-8 text",
                text("h\u{e9}llo \u{1f600}"),
                vec![txt("h\u{e9}llo \u{1f600}")],
                vec![],
            ),
            (
                "binary",
                client_frame(0x82, &[0, 1, 0xff]),
                vec![WsEvent::Binary(vec![0, 1, 0xff])],
                vec![],
            ),
            (
                "fragmented with interleaved ping",
                frag_ping,
                vec![WsEvent::Ping, txt("Hello, World")],
                pong(b"hi"),
            ),
            (
                "fragmented with empty final fragment",
                [client_frame(0x02, b"ab"), client_frame(0x80, b"")].concat(),
                vec![WsEvent::Binary(b"ab".to_vec())],
                vec![],
            ),
            (
                "utf-8 split across fragments",
                [client_frame(0x01, &[0xc3]), client_frame(0x80, &[0xa9])].concat(),
                vec![txt("\u{e9}")],
                vec![],
            ),
            (
                "ping",
                client_frame(0x89, b"abc"),
                vec![WsEvent::Ping],
                pong(b"abc"),
            ),
            (
                "two pings, two pongs",
                [client_frame(0x89, b"1"), client_frame(0x89, b"2")].concat(),
                vec![WsEvent::Ping, WsEvent::Ping],
                [pong(b"1"), pong(b"2")].concat(),
            ),
            (
                "pong",
                client_frame(0x8a, b"x"),
                vec![WsEvent::Pong],
                vec![],
            ),
            (
                "close with code is echoed",
                client_frame(0x88, &close_body(1000, b"bye")),
                vec![closed(Some(1000), "bye")],
                frame_close(1000, "bye"),
            ),
            (
                "close with application code",
                client_frame(0x88, &close_body(4001, b"")),
                vec![closed(Some(4001), "")],
                frame_close(4001, ""),
            ),
            (
                "empty close gets an empty close",
                client_frame(0x88, b""),
                vec![closed(None, "")],
                vec![0x88, 0x00],
            ),
            (
                "data after close is ignored",
                [client_frame(0x88, &close_body(1001, b"")), text("late")].concat(),
                vec![closed(Some(1001), "")],
                frame_close(1001, ""),
            ),
        ];
        for (name, wire, want_events, want_out) in cases {
            let (r, events, out) = run(LIMITS, &wire);
            assert_eq!(r, Ok(false), "{name}");
            assert_eq!(events, want_events, "{name}");
            assert_eq!(out, want_out, "{name}");
        }
    }

    #[test]
    fn failures_write_the_close_frame() {
        let small = WsLimits {
            max_message: 10,
            max_frame: 8,
            read_chunk: READ_CHUNK,
        };
        let big_ping = vec![b'p'; 126];
        // A frame header announcing more than max_frame: the payload never needs to arrive.
        let huge_header = {
            let mut f = Vec::new();
            frame_header_into(0x82, 1 << 30, &mut f);
            if let Some(b) = f.get_mut(1) {
                *b |= 0x80;
            }
            f.extend_from_slice(&MASK);
            f
        };
        #[rustfmt::skip]
        let cases: Vec<ErrCase> = vec![
            ("unmasked client frame", LIMITS, vec![0x81, 0x02, b'h', b'i'], vec![], 1002),
            ("reserved bit", LIMITS, client_frame(0xc1, b"x"), vec![], 1002),
            ("reserved data opcode", LIMITS, client_frame(0x83, b""), vec![], 1002),
            ("reserved control opcode", LIMITS, client_frame(0x8b, b""), vec![], 1002),
            ("control frame over 125", LIMITS, client_frame(0x89, &big_ping), vec![], 1002),
            ("fragmented ping", LIMITS, client_frame(0x09, b""), vec![], 1002),
            ("continuation without start", LIMITS, client_frame(0x80, b"x"), vec![], 1002),
            ("new message inside fragments", LIMITS,
                [client_frame(0x01, b"a"), text("b")].concat(), vec![], 1002),
            ("close with one-byte body", LIMITS, client_frame(0x88, &[0x03]), vec![], 1002),
            ("close with code 999", LIMITS, client_frame(0x88, &close_body(999, b"")), vec![], 1002),
            ("close with code 1005", LIMITS, client_frame(0x88, &close_body(1005, b"")), vec![], 1002),
            ("close with code 2000", LIMITS, client_frame(0x88, &close_body(2000, b"")), vec![], 1002),
            ("close with code 5000", LIMITS, client_frame(0x88, &close_body(5000, b"")), vec![], 1002),
            ("invalid utf-8 text", LIMITS, client_frame(0x81, &[b'a', 0xff]), vec![], 1007),
            ("truncated utf-8 text", LIMITS, client_frame(0x81, &[0xc3]), vec![], 1007),
            ("invalid utf-8 close reason", LIMITS,
                client_frame(0x88, &close_body(1000, &[0xce, 0xba, 0xff])), vec![], 1007),
            ("messages before the error are kept", LIMITS,
                [text("ok"), client_frame(0x81, &[0xff])].concat(), vec![txt("ok")], 1007),
            ("frame over the limit", small, client_frame(0x82, &[0; 9]), vec![], 1009),
            ("frame header over the limit", small, huge_header, vec![], 1009),
            ("message over the limit", small,
                [client_frame(0x02, &[0; 6]), client_frame(0x80, &[0; 6])].concat(), vec![], 1009),
        ];
        for (name, limits, wire, want_events, code) in cases {
            let (r, events, out) = run(limits, &wire);
            let err = match r {
                Err(e) => e,
                Ok(b) => panic!("{name}: expected an error, got Ok({b})"),
            };
            assert_eq!(err.code, code, "{name}");
            assert_eq!(events, want_events, "{name}");
            assert_eq!(out, frame_close(err.code, &err.reason), "{name}");
        }
    }

    #[test]
    fn invalid_utf8_fails_before_the_final_fragment() {
        // Fail fast (Autobahn 6.*): the first fragment alone is already invalid.
        let (r, _, out) = run(LIMITS, &client_frame(0x01, &[b'a', 0xc0, 0x80]));
        assert_eq!(r.map_err(|e| e.code), Err(1007));
        assert_eq!(out.get(2..4), Some(&1007u16.to_be_bytes()[..]));
    }

    #[test]
    fn partial_input_waits_and_keeps_state() {
        let wire = [text("one"), client_frame(0x89, b"p"), text("two")].concat();
        let mut link = Link::new(LIMITS);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let mut input = Vec::new();
        let mut calls = 0;
        for &b in &wire {
            input.push(b);
            assert_eq!(
                link.read(&mut input, &mut out, &mut events, 1000),
                Ok(false)
            );
            assert!(input.is_empty());
            calls += 1;
        }
        assert_eq!(calls, wire.len());
        let (r, whole_events, whole_out) = run(LIMITS, &wire);
        assert_eq!(r, Ok(false));
        assert_eq!(events, whole_events);
        assert_eq!(out, whole_out);
        assert_eq!(events, vec![txt("one"), WsEvent::Ping, txt("two")]);
    }

    #[test]
    fn byte_by_byte_error_matches_whole() {
        let wire = [
            text("a"),
            client_frame(0x01, b"b"),
            client_frame(0x81, b"c"),
        ]
        .concat();
        let mut link = Link::new(LIMITS);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let mut result = Ok(false);
        for &b in &wire {
            let mut input = vec![b];
            result = link.read(&mut input, &mut out, &mut events, 1000);
            if result.is_err() {
                break;
            }
        }
        let (whole_r, whole_events, whole_out) = run(LIMITS, &wire);
        assert_eq!(result, whole_r);
        assert_eq!(result.map_err(|e| e.code), Err(1002));
        assert_eq!(events, whole_events);
        assert_eq!(out, whole_out);
    }

    #[test]
    fn budget_stops_and_resumes() {
        let wire = [text("1"), text("2"), text("3")].concat();
        let mut link = Link::new(LIMITS);
        let mut input = wire.clone();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        assert_eq!(link.read(&mut input, &mut out, &mut events, 2), Ok(true));
        assert_eq!(events, vec![txt("1"), txt("2")]);
        assert_eq!(link.read(&mut input, &mut out, &mut events, 2), Ok(false));
        assert_eq!(events, vec![txt("1"), txt("2"), txt("3")]);
        assert!(input.is_empty());
        // The budget stops right after a ping: its pong is already out, not left pending.
        let mut input = [client_frame(0x89, b"q"), text("x")].concat();
        assert_eq!(link.read(&mut input, &mut out, &mut events, 1), Ok(true));
        assert_eq!(out, pong(b"q"));
        assert_eq!(events.last(), Some(&WsEvent::Ping));
        assert_eq!(link.read(&mut input, &mut out, &mut events, 1), Ok(true));
        assert_eq!(link.read(&mut input, &mut out, &mut events, 1), Ok(false));
        assert_eq!(out, pong(b"q"));
        // A zero budget still makes progress.
        let mut input = text("4");
        assert_eq!(link.read(&mut input, &mut out, &mut events, 0), Ok(true));
        assert_eq!(events.last(), Some(&txt("4")));
    }

    #[test]
    fn input_is_consumed_in_bounded_chunks() {
        // A large frame is pulled in READ_CHUNK-sized pieces; nothing is lost across calls.
        let payload = vec![b'z'; 3 * READ_CHUNK + 17];
        let wire = client_frame(0x82, &payload);
        let mut link = Link::new(LIMITS);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let mut input = Vec::new();
        for chunk in wire.chunks(1000) {
            input.extend_from_slice(chunk);
            assert_eq!(link.read(&mut input, &mut out, &mut events, 10), Ok(false));
            assert!(input.is_empty());
        }
        assert_eq!(events, vec![WsEvent::Binary(payload)]);
    }

    #[test]
    fn our_close_then_peer_reply() {
        let mut link = Link::new(LIMITS);
        let mut out = Vec::new();
        assert!(!link.is_closing());
        link.close(&WsClose::GOING_AWAY, &mut out);
        assert!(link.is_closing());
        assert_eq!(out, frame_close(1001, "Server shutting down"));
        // Sends and a second close are refused.
        out.clear();
        link.send_text("nope", &mut out);
        link.send_binary(b"nope", &mut out);
        link.ping(b"nope", &mut out);
        link.close(&WsClose::NORMAL, &mut out);
        assert!(out.is_empty());
        // The peer may still send data, then its close reply; no second close frame goes out,
        // and a ping is no longer answered.
        let mut input = [
            text("in flight"),
            client_frame(0x89, b""),
            client_frame(0x88, &close_body(1001, b"")),
        ]
        .concat();
        let mut events = Vec::new();
        assert_eq!(link.read(&mut input, &mut out, &mut events, 100), Ok(false));
        assert_eq!(
            events,
            vec![txt("in flight"), WsEvent::Ping, closed(Some(1001), "")]
        );
        assert!(out.is_empty());
        // After the end, input is discarded.
        let mut input = text("after");
        events.clear();
        assert_eq!(link.read(&mut input, &mut out, &mut events, 100), Ok(false));
        assert!(events.is_empty() && input.is_empty() && out.is_empty());
    }

    #[test]
    fn error_after_our_close_sends_no_second_close() {
        let mut link = Link::new(LIMITS);
        let mut out = Vec::new();
        link.close(&WsClose::NORMAL, &mut out);
        out.clear();
        let mut input = client_frame(0x81, &[0xff]);
        let r = link.read(&mut input, &mut out, &mut Vec::new(), 10);
        assert_eq!(r.map_err(|e| e.code), Err(1007));
        assert!(out.is_empty());
    }

    #[test]
    fn close_sanitizes_code_and_reason() {
        let long = "\u{e9}".repeat(100); // 200 bytes
        let mut out = Vec::new();
        Link::new(LIMITS).close(&WsClose::new(1005, "x"), &mut out);
        assert_eq!(out, frame_close(1011, "x"));
        let mut out = Vec::new();
        let close = WsClose {
            code: 4002,
            reason: long.clone().into(),
        };
        Link::new(LIMITS).close(&close, &mut out);
        assert_eq!(out.len(), 2 + 2 + 122); // 61 whole two-byte characters
        assert_eq!(out, frame_close(4002, &long));
        assert!(std::str::from_utf8(out.get(4..).unwrap_or_default()).is_ok());
    }

    #[test]
    fn ping_and_send_text() {
        let mut link = Link::new(LIMITS);
        let mut out = Vec::new();
        link.ping(b"hb", &mut out);
        assert_eq!(out, vec![0x89, 0x02, b'h', b'b']);
        out.clear();
        link.ping(&[7; 200], &mut out);
        assert_eq!(out.len(), 2 + 125);
        out.clear();
        link.send_text("hi", &mut out);
        assert_eq!(out, frame_text(b"hi"));
        // A shared frame between calls does not disturb the link.
        out.extend_from_slice(&frame_text(b"shared"));
        let mut input = client_frame(0x89, b"x");
        let mut events = Vec::new();
        assert_eq!(link.read(&mut input, &mut out, &mut events, 10), Ok(false));
        assert_eq!(
            out,
            [frame_text(b"hi"), frame_text(b"shared"), pong(b"x")].concat()
        );
    }

    /// A tungstenite client (random masks) against `Link`, in memory: echo, ping, close.
    #[test]
    fn tungstenite_client_round_trip() {
        let mut client = WebSocketContext::new(Role::Client, None);
        let mut link = Link::new(LIMITS);
        let (mut c2s, mut s2c, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let big = "\u{e9}".repeat(40_000);
        for m in [
            Message::text("hi"),
            Message::text(big.clone()),
            Message::binary(vec![9; 300]),
        ] {
            let mut io = Io::new(&[], &mut c2s);
            assert!(client.write(&mut io, m).is_ok());
            assert!(client.flush(&mut io).is_ok());
        }
        // The client's own write buffer holds the ping until it flushes.
        let mut io = Io::new(&[], &mut c2s);
        assert!(client
            .write(&mut io, Message::Ping(Bytes::from_static(b"p")))
            .is_ok());
        assert!(client.flush(&mut io).is_ok());
        assert_eq!(link.read(&mut c2s, &mut s2c, &mut events, 100), Ok(false));
        assert_eq!(
            events,
            vec![
                txt("hi"),
                WsEvent::Text(big.clone()),
                WsEvent::Binary(vec![9; 300]),
                WsEvent::Ping
            ]
        );
        link.send_text(&big, &mut s2c);
        link.send_binary(&[1, 2], &mut s2c);
        let mut io = Io::new(&s2c, &mut c2s);
        let pong = client.read(&mut io).ok();
        assert_eq!(pong, Some(Message::Pong(Bytes::from_static(b"p"))));
        assert_eq!(client.read(&mut io).ok(), Some(Message::text(big)));
        assert_eq!(client.read(&mut io).ok(), Some(Message::binary(vec![1, 2])));
        // The client closes; the link answers and reports it.
        assert!(client.close(&mut io, None).is_ok());
        let mut reply = Vec::new();
        events.clear();
        assert_eq!(link.read(&mut c2s, &mut reply, &mut events, 100), Ok(false));
        assert_eq!(events, vec![closed(None, "")]);
        assert_eq!(reply, vec![0x88, 0x00]);
        assert!(link.is_closing());
    }

    /// What tungstenite itself writes for `Message::Text` from a server context.
    fn tungstenite_text(payload: &str) -> Vec<u8> {
        let mut ctx = WebSocketContext::new(
            Role::Server,
            Some(WebSocketConfig::default().write_buffer_size(0)),
        );
        let mut out = Vec::new();
        let mut io = Io::new(&[], &mut out);
        assert!(ctx.write(&mut io, Message::text(payload)).is_ok());
        assert!(ctx.flush(&mut io).is_ok());
        out
    }

    #[test]
    fn send_binary_matches_tungstenite() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![0xa5u8; len];
            let mut ctx = WebSocketContext::new(
                Role::Server,
                Some(WebSocketConfig::default().write_buffer_size(0)),
            );
            let mut theirs = Vec::new();
            let mut io = Io::new(&[], &mut theirs);
            assert!(ctx.write(&mut io, Message::binary(payload.clone())).is_ok());
            let mut ours = Vec::new();
            Link::new(LIMITS).send_binary(&payload, &mut ours);
            assert_eq!(ours, theirs, "len {len}");
        }
    }

    #[test]
    fn frame_text_matches_tungstenite() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = "a".repeat(len);
            let ours = frame_text(payload.as_bytes());
            assert_eq!(ours, tungstenite_text(&payload), "len {len}");
            let header_len = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(ours.len(), header_len + len, "len {len}");
            let mut head = Vec::new();
            frame_text_into(len, &mut head);
            assert_eq!(Some(&head[..]), ours.get(..header_len), "len {len}");
        }
    }

    #[test]
    fn frame_close_bytes() {
        assert_eq!(frame_close(1000, ""), vec![0x88, 0x02, 0x03, 0xe8]);
        assert_eq!(
            frame_close(1008, "Slow consumer"),
            [&[0x88, 15, 0x03, 0xf0][..], b"Slow consumer"].concat()
        );
        assert_eq!(frame_close(1000, &"r".repeat(200)).len(), 2 + 125);
    }

    #[test]
    fn close_for_maps_every_kind() {
        let cases: Vec<(WsError, u16)> = vec![
            (
                WsError::Capacity(CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1,
                }),
                1009,
            ),
            (WsError::Utf8("bad".into()), 1007),
            (WsError::Protocol(ProtocolError::NonZeroReservedBits), 1002),
            (WsError::AttackAttempt, 1011),
        ];
        for (err, code) in cases {
            assert_eq!(close_for(&err).code, code, "{err}");
        }
    }
}
