//! The REST route table: every (method, path pattern) the relay answers, with what a
//! forwarded call needs (module `type`, scope, kind, declared parameters, timeout).
//!
//! The rows are the spec's `routes.tsv` (spec/api-surface.md, "Where the routes.tsv columns
//! come from"), embedded verbatim from `src/relay/routes.tsv`; a unit test keeps that copy
//! byte-equal to the spec. Matching follows chi, the reference router: a literal segment beats
//! a `{param}` segment, which beats a trailing catch-all; a path that some route matches under
//! another method is a 405 carrying the allowed methods. This module only knows paths: it
//! never looks at keys, scopes or worlds.

/// What the relay does with a matched route (the `kind` column of routes.tsv).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// HTTP → module `type` → `<type>-result` → JSON passthrough.
    Forward,
    /// Forward, but the reply's base64 payload becomes the HTTP body (`/download`, `/sheet`,
    /// `/scene/image`; api-surface.md "Binary routes").
    Binary,
    /// Server-sent event stream fed by module pushes.
    Sse,
    /// Headless-browser sessions (hosted-only in the reference).
    Session,
    /// Answered by the relay itself (`/clients`, `/api/status`, the WebSocket upgrades, …).
    Local,
    /// Pairing and key-request routes.
    Auth,
    /// The reference's hosted dashboard and operator console.
    Admin,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "forward" => Kind::Forward,
            "binary" => Kind::Binary,
            "sse" => Kind::Sse,
            "session" => Kind::Session,
            "local" => Kind::Local,
            "auth" => Kind::Auth,
            "admin" => Kind::Admin,
            _ => return None,
        })
    }

    /// The spelling used in routes.tsv.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Forward => "forward",
            Kind::Binary => "binary",
            Kind::Sse => "sse",
            Kind::Session => "session",
            Kind::Local => "local",
            Kind::Auth => "auth",
            Kind::Admin => "admin",
        }
    }
}

/// Where a parameter is read from. A param lists its sources in lookup order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    Query,
    Body,
    Path,
    /// Only the session routes read headers (`x-foundry-url`, …); forwarding never does.
    Header,
}

impl Source {
    fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "query" => Source::Query,
            "body" => Source::Body,
            "path" => Source::Path,
            "header" => Source::Header,
            _ => return None,
        })
    }
}

/// The declared type a parameter is coerced to (relay-protocol.md §2.2 step 2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PType {
    String,
    Number,
    Boolean,
    Array,
    Object,
    /// `?` in routes.tsv (hosted-only rows whose type the spec could not settle): no coercion.
    Any,
}

impl PType {
    fn parse(s: &str) -> Option<PType> {
        Some(match s {
            "string" => PType::String,
            "number" => PType::Number,
            "boolean" => PType::Boolean,
            "array" => PType::Array,
            "object" => PType::Object,
            "?" => PType::Any,
            _ => return None,
        })
    }
}

/// One declared parameter: `name:source[|source]:required:type` in routes.tsv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    /// Lookup order; the first source holding a non-empty value wins.
    pub sources: Vec<Source>,
    /// `?` (unknown, hosted-only rows) counts as optional.
    pub required: bool,
    pub ptype: PType,
}

/// One segment of a route pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// Must equal the request segment byte for byte.
    Lit(String),
    /// `{name}`: one non-empty segment, captured percent-decoded under `name`.
    Param(String),
    /// Trailing catch-all (chi's `/*`): one or more remaining segments, captured joined by `/`.
    Rest(String),
}

/// One row of routes.tsv, parsed.
#[derive(Clone, Debug)]
pub struct Route {
    pub method: String,
    /// The path as written in the spec (`/macro/{uuid}/execute`).
    pub pattern: String,
    pub segments: Vec<Seg>,
    /// The module message `type`; "" for routes the relay answers itself.
    pub ws_type: String,
    /// The module message that answers (`<ws_type>-result`, or the pushed event type for SSE).
    pub reply_type: String,
    /// The scope a key needs; "" if none.
    pub scope: String,
    pub kind: Kind,
    pub params: Vec<Param>,
    /// How long the relay waits for the module's reply; 0 when no reply is awaited.
    pub timeout_ms: u64,
    pub notes: String,
}

/// The outcome of [`RouteTable::find`].
#[derive(Debug)]
pub enum Match<'a> {
    /// The route and its path parameters (name, percent-decoded value), in pattern order.
    Found(&'a Route, Vec<(String, String)>),
    /// Some route has this path, none with this method (405): the methods that do, in table order.
    MethodNotAllowed(Vec<&'a str>),
    NotFound,
}

/// All routes, matched by a linear scan: about a hundred rows of a few segments each cost less
/// than the JSON work that follows, and keep precedence rules in one readable function.
#[derive(Clone, Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// The spec's routes.tsv, embedded (kept equal to the spec by a unit test).
const EMBEDDED_TSV: &str = include_str!("../relay/routes.tsv");

/// Local rows that serve the reference's hosted web assets and docs. relay-protocol.md §7 lists
/// them as hosted-only ("Astro frontend/docs/proxy-asset routes"), so `builtin()` leaves them
/// out and they answer 404.
const HOSTED_LOCAL_PATHS: &[&str] = &[
    "/openapi.json",
    "/asyncapi.json",
    "/api/docs",
    "/docs",
    "/docs/*",
    "/sheet-test",
    "/proxy-asset/*",
];

impl RouteTable {
    /// Parse a routes.tsv text: a header line, then nine tab-separated columns per row
    /// (method, path, ws_type, reply_type, scope, kind, params, timeout_ms, notes).
    pub fn from_tsv(text: &str) -> Result<RouteTable, String> {
        let mut routes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            if line.is_empty() || (index == 0 && line.starts_with("method\t")) {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let [method, path, ws_type, reply_type, scope, kind, params, timeout, notes] =
                cols.as_slice()
            else {
                return Err(format!(
                    "routes.tsv line {line_no}: {} columns, expected 9",
                    cols.len()
                ));
            };
            let kind = Kind::parse(kind)
                .ok_or_else(|| format!("routes.tsv line {line_no}: unknown kind {kind:?}"))?;
            let params = if params.is_empty() {
                Vec::new()
            } else {
                params
                    .split(';')
                    .map(parse_param)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("routes.tsv line {line_no}: {e}"))?
            };
            let timeout_ms = if timeout.is_empty() {
                0
            } else {
                timeout
                    .parse()
                    .map_err(|_| format!("routes.tsv line {line_no}: bad timeout {timeout:?}"))?
            };
            let segments = parse_pattern(path, go_catch_all(notes))
                .map_err(|e| format!("routes.tsv line {line_no}: {e}"))?;
            routes.push(Route {
                method: method.to_string(),
                pattern: path.to_string(),
                segments,
                ws_type: ws_type.to_string(),
                reply_type: reply_type.to_string(),
                scope: scope.to_string(),
                kind,
                params,
                timeout_ms,
                notes: notes.to_string(),
            });
        }
        Ok(RouteTable { routes })
    }

    /// The public routes of the embedded table: forward, binary, sse, session and the local
    /// routes a self-hosted relay serves. Admin and auth rows stay out: the relay has its own
    /// pairing and admin API, routed before this table.
    pub fn builtin() -> RouteTable {
        // NOTE: the embedded text is ours, not a peer's; `builtin_table_parses` pins it, so a
        // failure here is a build defect caught by the tests, not a runtime condition.
        let all = RouteTable::from_tsv(EMBEDDED_TSV)
            .unwrap_or_else(|e| panic!("embedded routes.tsv is invalid: {e}"));
        let routes = all
            .routes
            .into_iter()
            .filter(|r| match r.kind {
                Kind::Forward | Kind::Binary | Kind::Sse | Kind::Session => true,
                Kind::Local => !HOSTED_LOCAL_PATHS.contains(&r.pattern.as_str()),
                Kind::Auth | Kind::Admin => false,
            })
            .collect();
        RouteTable { routes }
    }

    /// Match a request path (raw, without the query) and method.
    ///
    /// A run of leading slashes counts as one (module bug: its ready-time probe asks for
    /// `//api/clients/…`, module-protocol.md §2.2, api-surface.md discrepancy 22) and one
    /// trailing slash is ignored. Segments are compared raw and percent-decoded only when
    /// captured, so an encoded `/` (`%2F`) stays inside its parameter.
    pub fn find(&self, method: &str, path: &str) -> Match<'_> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let Some(rest) = path.strip_prefix('/') else {
            return Match::NotFound;
        };
        let rest = rest.trim_start_matches('/');
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };

        let mut best: Option<(&Route, Vec<u8>)> = None;
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(rank) = match_rank(&route.segments, &parts) else {
                continue;
            };
            if route.method != method {
                if !allowed.contains(&route.method.as_str()) {
                    allowed.push(&route.method);
                }
                continue;
            }
            // Ties keep the first row, so a duplicated row (`/relay`, `/relay/`) is harmless.
            if best.as_ref().is_none_or(|(_, b)| rank > *b) {
                best = Some((route, rank));
            }
        }
        match best {
            Some((route, _)) => Match::Found(route, capture(&route.segments, &parts)),
            None if !allowed.is_empty() => Match::MethodNotAllowed(allowed),
            None => Match::NotFound,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn parse_param(text: &str) -> Result<Param, String> {
    let mut fields = text.split(':');
    let (Some(name), Some(sources), Some(required), Some(ptype), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(format!("param {text:?} is not name:source:required:type"));
    };
    if name.is_empty() {
        return Err(format!("param {text:?} has no name"));
    }
    let sources = sources
        .split('|')
        .map(|s| Source::parse(s).ok_or_else(|| format!("param {name}: unknown source {s:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let required = match required {
        "required" => true,
        "optional" | "?" => false,
        other => return Err(format!("param {name}: bad required flag {other:?}")),
    };
    let ptype =
        PType::parse(ptype).ok_or_else(|| format!("param {name}: unknown type {ptype:?}"))?;
    Ok(Param {
        name: name.to_string(),
        sources,
        required,
        ptype,
    })
}

/// True when the notes say the reference registers this path as a chi catch-all: the spec
/// writes `/contents/*` as `/contents/{path}` and notes "Go pattern /contents/*"
/// (api-surface.md, first paragraph).
fn go_catch_all(notes: &str) -> bool {
    notes
        .split("Go pattern ")
        .nth(1)
        .and_then(|rest| rest.split([';', ' ', ',']).next())
        .is_some_and(|pattern| pattern.ends_with("/*"))
}

fn parse_pattern(pattern: &str, last_param_is_rest: bool) -> Result<Vec<Seg>, String> {
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(format!("path {pattern:?} does not start with '/'"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len() - 1;
    let mut segs = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let seg = if part.is_empty() {
            return Err(format!("path {pattern:?} has an empty segment"));
        } else if part == "*" {
            if i != last {
                return Err(format!("path {pattern:?}: '*' must be last"));
            }
            Seg::Rest("*".to_string())
        } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if name.is_empty() {
                return Err(format!("path {pattern:?} has an empty parameter name"));
            }
            if i == last && last_param_is_rest {
                Seg::Rest(name.to_string())
            } else {
                Seg::Param(name.to_string())
            }
        } else {
            Seg::Lit(part.to_string())
        };
        segs.push(seg);
    }
    Ok(segs)
}

/// Whether `segs` matches the request segments and, if so, its precedence: one entry per
/// request segment (literal 2, parameter 1, catch-all 0), compared lexicographically, which
/// is chi's order (static, then param, then catch-all, decided left to right).
fn match_rank(segs: &[Seg], parts: &[&str]) -> Option<Vec<u8>> {
    let mut rank = Vec::with_capacity(parts.len());
    for (i, seg) in segs.iter().enumerate() {
        match seg {
            Seg::Rest(_) => {
                if i >= parts.len() {
                    return None;
                }
                rank.resize(parts.len(), 0);
                return Some(rank);
            }
            Seg::Lit(lit) => {
                if parts.get(i)? != lit {
                    return None;
                }
                rank.push(2);
            }
            Seg::Param(_) => {
                if parts.get(i)?.is_empty() {
                    return None;
                }
                rank.push(1);
            }
        }
    }
    (segs.len() == parts.len()).then_some(rank)
}

fn capture(segs: &[Seg], parts: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        match seg {
            Seg::Lit(_) => {}
            Seg::Param(name) => {
                if let Some(part) = parts.get(i) {
                    out.push((name.clone(), percent_decode(part)));
                }
            }
            Seg::Rest(name) => {
                let tail = parts.get(i..).unwrap_or(&[]).join("/");
                out.push((name.clone(), percent_decode(&tail)));
            }
        }
    }
    out
}

/// RFC 3986 §2.1 percent-decoding of a path segment. `+` stays `+` (form decoding is for
/// queries only); a `%` not followed by two hex digits is kept as is; invalid UTF-8 after
/// decoding becomes U+FFFD rather than an error, since the value only names a document.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| hex_val(*c)),
                bytes.get(i + 2).and_then(|c| hex_val(*c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's routes.tsv from `../shared` beside the checkout (or one level further up,
    /// for a nested worktree); `None` when neither layout is present.
    fn spec_tsv() -> Option<String> {
        let candidates = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/routes.tsv"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/spec/routes.tsv"),
        ];
        candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
    }

    /// A concrete path for a pattern: every `{x}` or `*` becomes a sample value.
    fn sample_path(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|s| {
                if s == "*" || (s.starts_with('{') && s.ends_with('}')) {
                    "sample-1"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn found<'a>(
        t: &'a RouteTable,
        method: &str,
        path: &str,
    ) -> (&'a Route, Vec<(String, String)>) {
        match t.find(method, path) {
            Match::Found(r, p) => (r, p),
            other => panic!("{method} {path}: expected Found, got {other:?}"),
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn builtin_table_parses() {
        let all = RouteTable::from_tsv(EMBEDDED_TSV).expect("embedded tsv");
        assert_eq!(all.routes().len(), 234);
        let t = RouteTable::builtin();
        assert!(t
            .routes()
            .iter()
            .all(|r| !matches!(r.kind, Kind::Admin | Kind::Auth)));
        let count = |k: Kind| t.routes().iter().filter(|r| r.kind == k).count();
        assert_eq!(
            (
                count(Kind::Forward),
                count(Kind::Binary),
                count(Kind::Sse),
                count(Kind::Session)
            ),
            (88, 3, 6, 4)
        );
        assert_eq!(count(Kind::Local), 16 - HOSTED_LOCAL_PATHS.len());
    }

    #[test]
    fn embedded_copy_equals_spec_and_every_public_row_is_found() {
        let Some(spec) = spec_tsv() else {
            println!("skipped: shared/spec/routes.tsv not found next to the crate");
            return;
        };
        assert_eq!(
            spec, EMBEDDED_TSV,
            "src/relay/routes.tsv differs from the spec copy"
        );
        let spec = RouteTable::from_tsv(&spec).expect("spec tsv parses");
        let table = RouteTable::builtin();
        let mut checked = 0;
        for row in spec.routes() {
            if !matches!(
                row.kind,
                Kind::Forward | Kind::Binary | Kind::Sse | Kind::Session
            ) {
                continue;
            }
            let path = sample_path(&row.pattern);
            let (got, params) = found(&table, &row.method, &path);
            assert_eq!(
                (
                    &got.method,
                    &got.pattern,
                    &got.ws_type,
                    &got.scope,
                    got.kind,
                    got.timeout_ms
                ),
                (
                    &row.method,
                    &row.pattern,
                    &row.ws_type,
                    &row.scope,
                    row.kind,
                    row.timeout_ms
                ),
                "{} {}",
                row.method,
                row.pattern
            );
            assert_eq!(got.params, row.params);
            for (name, value) in &params {
                assert_eq!(value, "sample-1", "{} param {name}", row.pattern);
            }
            checked += 1;
        }
        assert_eq!(checked, 101);
    }

    /// (method, path, expected pattern, expected path params)
    type FindCase = (
        &'static str,
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
    );

    #[test]
    #[rustfmt::skip]
    fn find_cases() {
        let t = RouteTable::builtin();
        let cases: &[FindCase] = &[
            ("GET", "/get", "/get", &[]),
            ("GET", "/get/", "/get", &[]),
            ("GET", "//api/clients/abc/active", "/api/clients/{clientId}/active", &[("clientId", "abc")]),
            ("GET", "///api/health", "/api/health", &[]),
            ("GET", "/contents/a/b/c", "/contents/{path}", &[("path", "a/b/c")]),
            ("GET", "/contents/a%20b", "/contents/{path}", &[("path", "a b")]),
            ("POST", "/macro/Macro.x%2Fy/execute", "/macro/{uuid}/execute", &[("uuid", "Macro.x/y")]),
            ("POST", "/macro/a+b/execute", "/macro/{uuid}/execute", &[("uuid", "a+b")]),
            ("DELETE", "/chat/abc123", "/chat/{messageId}", &[("messageId", "abc123")]),
            // literal beats parameter…
            ("GET", "/chat/subscribe", "/chat/subscribe", &[]),
            // …but only among routes with the method (chi falls back to the param node)
            ("DELETE", "/chat/subscribe", "/chat/{messageId}", &[("messageId", "subscribe")]),
            ("GET", "/scene/image", "/scene/image", &[]),
            ("GET", "/scene/image/raw", "/scene/image/raw", &[]),
            ("GET", "/canvas/tokens", "/canvas/{documentType}", &[("documentType", "tokens")]),
            ("GET", "/dnd5e/get-actor-details", "/dnd5e/get-actor-details", &[]),
            ("GET", "/relay", "/relay", &[]),
            ("GET", "/", "/", &[]),
            ("GET", "/get?uuid=x", "/get", &[]),
        ];
        for (method, path, pattern, params) in cases {
            let (r, p) = found(&t, method, path);
            assert_eq!(&r.pattern, pattern, "{method} {path}");
            assert_eq!(p, pairs(params), "{method} {path}");
        }
    }

    #[test]
    fn find_misses() {
        let t = RouteTable::builtin();
        let cases: &[(&str, &str, Option<&[&str]>)] = &[
            ("GET", "/nope", None),
            ("GET", "/get//x", None),
            ("GET", "/contents", None),
            ("GET", "/contents/", None),
            ("GET", "/canvas/", None),
            ("GET", "get", None),
            ("GET", "/openapi.json", None),
            ("GET", "/auth/pair-request/abc/status", None),
            ("GET", "/GET", None),
            ("PATCH", "/user", Some(&["GET", "POST", "PUT", "DELETE"])),
            ("POST", "/get", Some(&["GET"])),
            ("get", "/get", Some(&["GET"])),
            ("PUT", "/chat/abc", Some(&["DELETE"])),
            ("POST", "/chat/subscribe", Some(&["DELETE", "GET"])),
        ];
        for (method, path, allowed) in cases {
            match (t.find(method, path), allowed) {
                (Match::NotFound, None) => {}
                (Match::MethodNotAllowed(got), Some(want)) => {
                    assert_eq!(got, *want, "{method} {path}")
                }
                (other, _) => panic!("{method} {path}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn precedence_is_literal_then_param_then_catch_all() {
        // Rows listed worst-first, so table order cannot be what picks the winner.
        let rows = [
            "GET\t/a/*\tt-rest\t\t\tforward\t\t\t",
            "GET\t/a/{id}/c\tt-param-c\t\t\tforward\t\t\t",
            "GET\t/a/{id}\tt-param\t\t\tforward\t\t\t",
            "GET\t/a/b/{x}\tt-lit-param\t\t\tforward\t\t\t",
            "GET\t/a/b\tt-lit\t\t\tforward\t\t\t",
        ];
        let t = RouteTable::from_tsv(&rows.join("\n")).expect("rows");
        let cases = [
            ("/a/b", "t-lit"),
            ("/a/z", "t-param"),
            ("/a/b/c", "t-lit-param"),
            ("/a/z/c", "t-param-c"),
            ("/a/z/d", "t-rest"),
            ("/a/b/c/d", "t-rest"),
        ];
        for (path, want) in cases {
            assert_eq!(found(&t, "GET", path).0.ws_type, want, "{path}");
        }
    }

    #[test]
    fn from_tsv_rejects_bad_rows() {
        let head = "method\tpath\tws_type\treply_type\tscope\tkind\tparams\ttimeout_ms\tnotes\n";
        let bad = [
            "GET\t/x\tx\tx-result\t\tforward\t\t10",
            "GET\t/x\tx\tx-result\t\tforwards\t\t10\t",
            "GET\tx\tx\tx-result\t\tforward\t\t10\t",
            "GET\t/x\tx\tx-result\t\tforward\ta:query:optional\t10\t",
            "GET\t/x\tx\tx-result\t\tforward\ta:cookie:optional:string\t10\t",
            "GET\t/x\tx\tx-result\t\tforward\ta:query:maybe:string\t10\t",
            "GET\t/x\tx\tx-result\t\tforward\ta:query:optional:date\t10\t",
            "GET\t/x\tx\tx-result\t\tforward\t\tten\t",
            "GET\t/a//b\tx\tx-result\t\tforward\t\t10\t",
            "GET\t/*/b\tx\tx-result\t\tforward\t\t10\t",
        ];
        for row in bad {
            assert!(
                RouteTable::from_tsv(&format!("{head}{row}\n")).is_err(),
                "{row:?}"
            );
        }
        let good = format!("{head}GET\t/x/{{id}}\tx\tx-result\ts\tforward\tid:path:required:string;q:query|body:?:?\t\tn\n");
        let t = RouteTable::from_tsv(&good).expect("good row");
        let r = &t.routes()[0];
        assert_eq!(
            r.segments,
            vec![Seg::Lit("x".into()), Seg::Param("id".into())]
        );
        assert_eq!(r.timeout_ms, 0);
        assert_eq!(r.params[1].sources, vec![Source::Query, Source::Body]);
        assert_eq!(
            (r.params[1].required, r.params[1].ptype),
            (false, PType::Any)
        );
    }

    #[test]
    fn catch_all_comes_from_the_go_pattern_note() {
        let cases = [
            ("relay-local; Go pattern /contents/*; always 400", true),
            ("Go pattern /x/{id}", false),
            ("no pattern here", false),
        ];
        for (notes, want) in cases {
            assert_eq!(go_catch_all(notes), want, "{notes}");
        }
    }

    #[test]
    fn percent_decode_cases() {
        let cases = [
            ("abc", "abc"),
            ("a%20b", "a b"),
            ("%2f%2F", "//"),
            ("100%", "100%"),
            ("%zz", "%zz"),
            ("%C3%A9", "é"),
            ("%FF", "\u{FFFD}"),
        ];
        for (input, want) in cases {
            assert_eq!(percent_decode(input), want, "{input}");
        }
    }
}
