//! Wire helpers shared by the benches (`relay.rs`, `soak.rs`): incremental HTTP/1.1
//! response framing, masked client WebSocket frames, server frame parsing, byte search.
//! Included with `#[path = "common/wire.rs"] mod wire;`.

use super::Res;

/// Incremental HTTP/1.1 response framing (RFC 9112 §6): Content-Length or chunked bodies,
/// counted rather than kept so a 10 MiB download never sits in memory.
#[derive(Default)]
pub struct RespReader {
    buf: Vec<u8>,
    state: RState,
    status: u16,
    body: u64,
}

#[derive(Default, Clone, Copy)]
pub enum RState {
    #[default]
    Head,
    Len(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
}

impl RespReader {
    /// Feed bytes; every complete response is pushed to `done` as (status, body length).
    pub fn feed(&mut self, data: &[u8], done: &mut Vec<(u16, u64)>) -> Res<()> {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = self.buf.get(at..).unwrap_or(&[]);
            match self.state {
                RState::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut r = httparse::Response::new(&mut headers);
                    match r.parse(rest) {
                        Ok(httparse::Status::Complete(n)) => {
                            self.status = r.code.unwrap_or(0);
                            self.body = 0;
                            let mut len = 0u64;
                            let mut chunked = false;
                            for h in r.headers.iter() {
                                if h.name.eq_ignore_ascii_case("content-length") {
                                    len = std::str::from_utf8(h.value)
                                        .ok()
                                        .and_then(|v| v.trim().parse().ok())
                                        .ok_or("bad Content-Length")?;
                                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                    chunked = find(h.value, b"chunked").is_some();
                                }
                            }
                            at += n;
                            self.state = if chunked {
                                RState::ChunkSize
                            } else {
                                RState::Len(len)
                            };
                        }
                        Ok(httparse::Status::Partial) => break,
                        Err(e) => return Err(format!("bad response head: {e}")),
                    }
                }
                RState::Len(rem) | RState::ChunkData(rem) => {
                    let take = rem.min(rest.len() as u64);
                    at += take as usize;
                    self.body += take;
                    let left = rem - take;
                    let chunk = matches!(self.state, RState::ChunkData(_));
                    self.state = match (chunk, left) {
                        (false, 0) => {
                            done.push((self.status, self.body));
                            RState::Head
                        }
                        (false, n) => RState::Len(n),
                        (true, 0) => RState::ChunkEnd,
                        (true, n) => RState::ChunkData(n),
                    };
                    if left > 0 {
                        break;
                    }
                }
                RState::ChunkSize => {
                    let Some(eol) = find(rest, b"\r\n") else {
                        break;
                    };
                    let line = std::str::from_utf8(rest.get(..eol).unwrap_or(&[]))
                        .map_err(|_| "bad chunk size")?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(hex, 16).map_err(|_| "bad chunk size")?;
                    at += eol + 2;
                    self.state = if size == 0 {
                        RState::Trailer
                    } else {
                        RState::ChunkData(size)
                    };
                }
                RState::ChunkEnd => {
                    if rest.len() < 2 {
                        break;
                    }
                    at += 2;
                    self.state = RState::ChunkSize;
                }
                RState::Trailer => {
                    let Some(eol) = find(rest, b"\r\n") else {
                        break;
                    };
                    at += eol + 2;
                    if eol == 0 {
                        done.push((self.status, self.body));
                        self.state = RState::Head;
                    }
                }
            }
        }
        self.buf.drain(..at.min(self.buf.len()));
        Ok(())
    }
}

/// A masked client frame (RFC 6455 §5.2–5.3: every client-to-server frame is masked).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x17, 0xc3, 0x9e];
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    f
}

/// One server frame (unmasked, RFC 6455 §5.1) at the start of `buf`:
/// `(opcode, payload range, frame length)`, or `None` until the frame is complete.
pub fn server_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let b0 = *buf.first()?;
    let b1 = *buf.get(1)?;
    let (len, mut at): (usize, usize) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(buf.get(2..10)?);
            (usize::try_from(u64::from_be_bytes(b)).ok()?, 10)
        }
        n => (n as usize, 2),
    };
    if b1 & 0x80 != 0 {
        at += 4; // a masked server frame is a protocol error; skip the key and read on.
    }
    let end = at.checked_add(len)?;
    if buf.len() < end {
        return None;
    }
    Some((b0 & 0x0f, at..end, end))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay
            .get(i..)
            .and_then(|h| h.iter().position(|&b| b == first))
        {
            Some(off) => {
                i += off;
                if hay.get(i..i + needle.len()) == Some(needle) {
                    return Some(i);
                }
                i += 1;
            }
            None => return None,
        }
    }
    None
}
