//! Server-sent events framing (HTML Living Standard, "Server-sent events", §9.2.5/§9.2.6):
//! `id:`/`event:`/`data:` blocks, `retry:` hints and keepalive comments, as bytes.
//!
//! This module knows nothing about Foundry or the relay: it turns strings into wire bytes so
//! one event can be framed once and shared by every stream (ARCHITECTURE.md, "Path 2").

/// One event block: optional `id:` and `event:` lines, one `data:` line per line of `data`,
/// then the blank line that dispatches the event.
///
/// Line breaks inside `data` (CRLF, LF or lone CR, all of which end a line on the wire) become
/// separate `data:` lines; the client joins them back with LF. CR and LF are removed from
/// `id` and `name` because a line break there would end the field early and let the rest be
/// read as a new field. NUL is removed from `id` too: the standard ignores an `id` field that
/// contains NUL, which would silently keep the client's previous last-event-ID.
pub fn event(id: Option<&str>, name: Option<&str>, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(id) = id {
        field(&mut out, "id", id, |c| c == '\r' || c == '\n' || c == '\0');
    }
    if let Some(name) = name {
        field(&mut out, "event", name, |c| c == '\r' || c == '\n');
    }
    block_lines(&mut out, b"data: ", data);
    out
}

/// A comment block (`: text`), ignored by clients; used as a keepalive so proxies and the
/// client see traffic on an idle stream. A multi-line text becomes several comment lines.
pub fn comment(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4);
    block_lines(&mut out, b": ", text);
    out
}

/// A `retry:` block: the reconnection delay, in milliseconds, the client should use.
pub fn retry(ms: u64) -> Vec<u8> {
    format!("retry: {ms}\n\n").into_bytes()
}

/// Write `name: value` with the characters `drop` selects removed.
fn field(out: &mut Vec<u8>, name: &str, value: &str, drop: impl Fn(char) -> bool) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let mut buf = [0u8; 4];
    for c in value.chars().filter(|c| !drop(*c)) {
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    out.push(b'\n');
}

/// One `prefix` line per line of `text`, then the blank line that ends the block.
fn block_lines(out: &mut Vec<u8>, prefix: &[u8], text: &str) {
    for line in lines(text) {
        out.extend_from_slice(prefix);
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Split on CRLF, LF or CR, the three line ends of the event-stream grammar. An empty text
/// is one empty line, so `event(.., "")` still carries a (blank) `data:` line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn event_cases() {
        let cases: &[(Option<&str>, Option<&str>, &str, &str)] = &[
            (None, None, "x", "data: x\n\n"),
            (None, None, "", "data: \n\n"),
            (
                Some("e-1"),
                Some("roll"),
                "{}",
                "id: e-1\nevent: roll\ndata: {}\n\n",
            ),
            (None, Some("a"), "1\n2", "event: a\ndata: 1\ndata: 2\n\n"),
            (None, None, "1\r\n2\r3", "data: 1\ndata: 2\ndata: 3\n\n"),
            (None, None, "1\n", "data: 1\ndata: \n\n"),
            (None, None, "\n\n", "data: \ndata: \ndata: \n\n"),
            (None, None, " lead", "data:  lead\n\n"),
            (Some("a\r\nb\0"), None, "x", "id: ab\ndata: x\n\n"),
            (None, Some("ev\nid: 9"), "x", "event: evid: 9\ndata: x\n\n"),
            (None, Some("é\rü"), "ö", "event: éü\ndata: ö\n\n"),
        ];
        for (id, name, data, want) in cases {
            assert_eq!(
                s(event(*id, *name, data)),
                *want,
                "{id:?} {name:?} {data:?}"
            );
        }
    }

    #[test]
    fn comment_and_retry() {
        assert_eq!(s(comment("keepalive")), ": keepalive\n\n");
        assert_eq!(s(comment("a\nb")), ": a\n: b\n\n");
        assert_eq!(s(retry(3000)), "retry: 3000\n\n");
        assert_eq!(s(retry(0)), "retry: 0\n\n");
    }
}
