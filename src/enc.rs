//! Byte encodings written by hand: base64 (RFC 4648 §4, standard alphabet), hex (RFC 4648 §8),
//! percent-decoding (RFC 3986 §2.1) and `application/x-www-form-urlencoded` query decoding
//! (WHATWG URL §5.1), plus percent-encoding of one URI component.
//!
//! Everything here is pure and total: decoders return `None` (or keep bad input literally, for
//! the form decoder, which must never fail) instead of panicking on anything a peer sends.

/// RFC 4648 §4, Table 1.
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        // Each index is masked to 6 bits, so it is always inside the 64-entry table.
        let sextet = |shift: u32| char::from(B64[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

fn b64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Base64 decoding (RFC 4648 §4, standard alphabet).
///
/// ASCII whitespace anywhere is ignored (MIME-style line breaks, RFC 4648 §3.3 allows a
/// specification to say so). Padding may be absent (§3.2 allows that too), but when present it
/// must be correct: at most two `=`, only at the end, and the padded length a multiple of 4.
/// Any other character, or a dangling single character in the last quantum, gives `None`.
/// Non-zero bits left over in the last quantum are ignored (§3.5 lets decoders accept them).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let body_len = clean.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let pad = clean.len() - body_len;
    if pad > 2 || (pad > 0 && !clean.len().is_multiple_of(4)) {
        return None;
    }
    let body = clean.get(..body_len)?;
    if body.len() % 4 == 1 {
        // One leftover character carries only 6 bits: not even one byte.
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for quad in body.chunks(4) {
        let mut n: u32 = 0;
        for &c in quad {
            // A '=' inside the body (not trailing) is rejected here as a bad character.
            n = (n << 6) | b64_value(c)?;
        }
        // Left-align a short final quantum to 24 bits, then keep only its whole bytes.
        n <<= 6 * (4 - quad.len() as u32);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(bytes.get(..quad.len() - 1)?);
    }
    Some(out)
}

/// Lower-case hex (RFC 4648 §8 uses upper case; lower case is what tokens and digests use here).
pub fn hex_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 2);
    for &b in data {
        out.push(char::from(HEX_LOWER[usize::from(b >> 4)]));
        out.push(char::from(HEX_LOWER[usize::from(b & 0x0f)]));
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex decoding, either case. Odd length or a non-hex digit gives `None`.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
            _ => None,
        })
        .collect()
}

/// The byte that a `%XX` escape starting at `bytes[i]` stands for, if it is one.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    match bytes.get(i..i + 3)? {
        [b'%', hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

/// Strict percent-decoding (RFC 3986 §2.1), e.g. of a path segment. `+` stays `+`. A `%` not
/// followed by two hex digits, or a result that is not UTF-8, gives `None`: a path must not
/// change meaning by being decoded lossily.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            out.push(escape_at(bytes, i)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes one `application/x-www-form-urlencoded` name or value (WHATWG URL §5.1): `+` is a
/// space, `%XX` a byte; an invalid escape is kept literally and bad UTF-8 becomes U+FFFD, as
/// browsers and Go's `url.ParseQuery` callers see it. Never fails.
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match escape_at(bytes, i) {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Splits a query string (without the `?`) into form-decoded pairs, in order, duplicates kept.
/// Empty segments (`a=1&&b=2`) are skipped; `a` without `=` is `("a", "")` (WHATWG URL §5.1).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(seg), String::new()),
        })
        .collect()
}

/// Percent-encodes everything except RFC 3986 §2.3 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), so the result is safe as a path segment or a query name or value.
pub fn percent_encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10 test vectors.
    const RFC4648_B64: &[(&str, &str)] = &[
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    /// RFC 4648 §10, base16 (we encode lower case; decoding accepts both).
    const RFC4648_HEX: &[(&str, &str)] = &[
        ("", ""),
        ("f", "66"),
        ("fo", "666F"),
        ("foo", "666F6F"),
        ("foob", "666F6F62"),
        ("fooba", "666F6F6261"),
        ("foobar", "666F6F626172"),
    ];

    #[test]
    fn base64_rfc4648_vectors() {
        for &(plain, encoded) in RFC4648_B64 {
            assert_eq!(base64_encode(plain.as_bytes()), encoded, "encode {plain:?}");
            assert_eq!(
                base64_decode(encoded).as_deref(),
                Some(plain.as_bytes()),
                "decode {encoded:?}"
            );
        }
    }

    #[test]
    fn base64_decode_table() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            // Missing padding is accepted.
            ("Zg", Some(b"f")),
            ("Zm8", Some(b"fo")),
            ("Zm9vYg", Some(b"foob")),
            // Whitespace anywhere is ignored.
            (" Zm9v\r\nYmFy\t", Some(b"foobar")),
            ("Zm 8=", Some(b"fo")),
            // Both alphabet ends.
            ("+/+/", Some(&[0xfb, 0xff, 0xbf])),
            // The RFC 6455 §1.3 sample key is 16 bytes.
            ("dGhlIHNhbXBsZSBub25jZQ==", Some(b"the sample nonce")),
            // Non-zero leftover bits are tolerated (RFC 4648 §3.5).
            ("Zh==", Some(b"f")),
            // Rejections.
            ("Z", None),              // a single dangling character
            ("Zm9vY", None),          // 5 characters: the last quantum has one
            ("Zg=", None),            // padded but not a multiple of 4
            ("Zg===", None),          // three pad characters
            ("Z===", None),           // three pad characters
            ("Zg==Zg==", None),       // padding in the middle
            ("Zm9v!", None),          // bad character
            ("Zm9v-_", None),         // URL-safe alphabet is not standard
            ("Zm9vYmFy\u{e9}", None), // non-ASCII
            ("=", None),              // padding only, wrong length
            ("====", None),           // more than two pad characters
        ];
        for &(input, want) in cases {
            assert_eq!(base64_decode(input).as_deref(), want, "input {input:?}");
        }
    }

    #[test]
    fn base64_round_trip_all_lengths_and_bytes() {
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..data.len() {
            let slice = data.get(..len).unwrap_or_default();
            let enc = base64_encode(slice);
            assert_eq!(enc.len() % 4, 0);
            assert_eq!(base64_decode(&enc).as_deref(), Some(slice), "len {len}");
            // Without its padding it decodes the same.
            assert_eq!(
                base64_decode(enc.trim_end_matches('=')).as_deref(),
                Some(slice),
                "unpadded len {len}"
            );
        }
    }

    #[test]
    fn hex_rfc4648_vectors() {
        for &(plain, encoded) in RFC4648_HEX {
            assert_eq!(hex_encode(plain.as_bytes()), encoded.to_ascii_lowercase());
            assert_eq!(hex_decode(encoded).as_deref(), Some(plain.as_bytes()));
            assert_eq!(
                hex_decode(&encoded.to_ascii_lowercase()).as_deref(),
                Some(plain.as_bytes())
            );
        }
    }

    #[test]
    fn hex_decode_table() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("00ff7F", Some(&[0x00, 0xff, 0x7f])),
            ("0", None),
            ("0g", None),
            ("+1", None),
            (" 00", None),
            ("\u{e9}0", None),
        ];
        for &(input, want) in cases {
            assert_eq!(hex_decode(input).as_deref(), want, "input {input:?}");
        }
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(hex_decode(&hex_encode(&all)), Some(all));
    }

    #[test]
    fn percent_decode_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("abc", Some("abc")),
            ("a%20b", Some("a b")),
            ("a+b", Some("a+b")),
            ("%2Fx%2f", Some("/x/")),
            ("%C3%A9", Some("\u{e9}")),
            ("%", None),
            ("%2", None),
            ("%zz", None),
            ("abc%", None),
            ("%C3", None),    // truncated UTF-8
            ("%FF%FE", None), // not UTF-8
        ];
        for &(input, want) in cases {
            assert_eq!(percent_decode(input).as_deref(), want, "input {input:?}");
        }
    }

    #[test]
    fn form_decode_table() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("a+b", "a b"),
            ("a%2Bb", "a+b"),
            ("%41%62", "Ab"),
            ("100%", "100%"),
            ("%zz%4", "%zz%4"),
            ("%%41", "%A"),
            ("%C3%A9t%C3%A9", "\u{e9}t\u{e9}"),
            ("%FFx", "\u{fffd}x"),
        ];
        for &(input, want) in cases {
            assert_eq!(form_decode(input), want, "input {input:?}");
        }
    }

    #[test]
    fn parse_query_table() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("a=1", &[("a", "1")]),
            ("a", &[("a", "")]),
            ("a=", &[("a", "")]),
            ("=v", &[("", "v")]),
            ("a=1&&b=2&", &[("a", "1"), ("b", "2")]),
            ("a=1&a=2", &[("a", "1"), ("a", "2")]),
            ("k=a=b", &[("k", "a=b")]),
            (
                "q=hello+world&x%20y=%26",
                &[("q", "hello world"), ("x y", "&")],
            ),
        ];
        for &(input, want) in cases {
            let got = parse_query(input);
            let got: Vec<(&str, &str)> =
                got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn percent_encode_component_table() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("AZaz09-._~", "AZaz09-._~"),
            ("a b", "a%20b"),
            ("a+b/c?d&e=f#", "a%2Bb%2Fc%3Fd%26e%3Df%23"),
            ("\u{e9}", "%C3%A9"),
            ("%", "%25"),
        ];
        for &(input, want) in cases {
            assert_eq!(percent_encode_component(input), want, "input {input:?}");
            // Strict decoding undoes it.
            assert_eq!(percent_decode(want).as_deref(), Some(input));
        }
    }
}
