//! Heads on the fast path: which requests it takes, and the heads it writes. The headers
//! follow the proxy's header policy (`headers.rs`), as on the hyper path, written straight
//! from the parsed bytes instead of through header maps.

use std::sync::Arc;

use http::Version;

use crate::headers::{self, Action, ConnValues, Rule, Value, Values, REQUEST, RESPONSE};
use crate::lifecycle::Edit;
use crate::replay::MAX_REPLAY_BODY;
use crate::table::PortRoute;

/// Headers per message at most (as hyper's default); more goes to the hyper path (431).
pub(crate) const MAX_HEADERS: usize = 100;

/// A request the fast path takes, its head at the start of the buffer.
#[derive(Debug)]
pub(crate) struct RequestPlan {
    pub head_len: usize,
    /// The body (`Content-Length`) that follows the head.
    pub body_len: usize,
    /// The client asked to close the connection after this response.
    pub close: bool,
    /// A `HEAD` request: the response has no body whatever its headers say.
    pub head_method: bool,
    /// Where the `Host` value is in the buffer (start, end): routes the request on a
    /// listener apps share.
    pub host: (usize, usize),
}

#[derive(Debug)]
pub(crate) enum ParsedRequest {
    /// More bytes needed.
    Partial,
    /// Anything but a plain HTTP/1.1 request: upgrades, `Expect`, chunked or large bodies,
    /// routing hints, absolute-form targets, malformed heads. The hyper path serves it.
    NotFast,
    Fast(RequestPlan),
}

/// How a request header is treated.
enum ReqHeader {
    Copy,
    /// Removed or replaced by the policy.
    Drop,
    ContentLength,
    Connection,
    /// One of the policy's rules that keeps the client's value (by index in `REQUEST`).
    Rule(usize),
    /// Only the hyper path handles it.
    NotFast,
}

fn classify_request_header(name: &str) -> ReqHeader {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    // Framing, and what only the hyper path takes, before the policy.
    match name.len() {
        6 if is("expect") => ReqHeader::NotFast,
        7 if is("upgrade") => ReqHeader::NotFast,
        10 if is("connection") => ReqHeader::Connection,
        14 if is("content-length") => ReqHeader::ContentLength,
        17 if is("transfer-encoding") || is("fly-prefer-region") => ReqHeader::NotFast,
        21 if is("fly-force-instance-id") => ReqHeader::NotFast,
        22 if is("fly-prefer-instance-id") => ReqHeader::NotFast,
        _ => match headers::find(&REQUEST, name) {
            None => ReqHeader::Copy,
            Some((_, r)) if matches!(r.action, Action::Remove | Action::Set(_)) => ReqHeader::Drop,
            Some((i, _)) => ReqHeader::Rule(i),
        },
    }
}

/// Parses the request head at the start of `buf`. For a request the fast path takes, the head
/// to send upstream is written to `out` (cleared first). `own` keeps the proxy's own request
/// headers for a request that brings none of their list headers (`X-Forwarded-For`, `Via`),
/// made on first use: they do not change during the connection.
pub(crate) fn request(
    buf: &[u8],
    conn: &ConnValues,
    own: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> ParsedRequest {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return ParsedRequest::Partial,
        Err(_) => return ParsedRequest::NotFast,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return ParsedRequest::NotFast;
    };
    if method == "CONNECT" || !plain_origin_form(path) {
        return ParsedRequest::NotFast;
    }
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut content_length: Option<u64> = None;
    let mut close = false;
    let mut host: Option<(usize, usize)> = None;
    // The client's values of list headers (by rule), and which rules' headers it sent.
    let mut lists: Vec<(usize, &[u8])> = Vec::new();
    let mut present = 0u64;
    for h in req.headers.iter() {
        match classify_request_header(h.name) {
            ReqHeader::Copy => {
                if host.is_none() && h.name.eq_ignore_ascii_case("host") {
                    let start = h.value.as_ptr() as usize - buf.as_ptr() as usize;
                    host = Some((start, start + h.value.len()));
                }
                push_header(out, h.name.as_bytes(), h.value);
            }
            ReqHeader::Drop => {}
            ReqHeader::NotFast => return ParsedRequest::NotFast,
            ReqHeader::ContentLength => {
                let Some(n) = parse_length(h.value) else {
                    return ParsedRequest::NotFast;
                };
                if content_length.is_some_and(|c| c != n) || n > MAX_REPLAY_BODY {
                    return ParsedRequest::NotFast;
                }
                if content_length.replace(n).is_none() {
                    push_header(out, b"content-length", h.value);
                }
            }
            ReqHeader::Connection => {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        // `upgrade`, or headers named as hop-by-hop: the hyper path.
                        return ParsedRequest::NotFast;
                    }
                }
            }
            ReqHeader::Rule(i) => {
                if let Action::AppendToList(_) = REQUEST[i].action {
                    lists.extend(headers::list_item(h.value).map(|v| (i, v)));
                } else {
                    present |= 1 << i;
                    push_header(out, h.name.as_bytes(), h.value);
                }
            }
        }
    }
    let Some(host) = host else {
        return ParsedRequest::NotFast;
    };
    let values = Values {
        conn,
        version: Version::HTTP_11,
        request_id: None,
    };
    if lists.is_empty() && present == 0 {
        if own.is_empty() {
            write_own(own, &REQUEST, &values, false, &[], 0, &[], false);
        }
        out.extend_from_slice(own);
    } else {
        write_own(out, &REQUEST, &values, false, &lists, present, &[], false);
    }
    out.extend_from_slice(b"\r\n");
    ParsedRequest::Fast(RequestPlan {
        head_len,
        body_len: content_length.unwrap_or(0) as usize,
        close,
        head_method: method == "HEAD",
        host,
    })
}

/// The request head `base` (as [`request`] wrote it) with `edits` applied, into `out`: header
/// lines of an edited name left out, the set values added at the end.
pub(crate) fn edit(base: &[u8], edits: &[Edit], out: &mut Vec<u8>) {
    out.clear();
    let mut lines = base.split_inclusive(|b| *b == b'\n');
    // The request line.
    out.extend(lines.next().unwrap_or_default());
    for line in lines {
        if line == b"\r\n" {
            break;
        }
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        if !edits
            .iter()
            .any(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(name))
        {
            out.extend_from_slice(line);
        }
    }
    for (name, value) in edits {
        if let Some(v) = value {
            push_header(out, name.as_str().as_bytes(), v.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// An origin-form target (`/path?query`) whose every byte `http::uri::PathAndQuery` accepts
/// as it is, without a fragment: what hyper would pass on unchanged. Anything else (hyper
/// refuses it with 400, or drops a fragment) is left to the hyper path.
fn plain_origin_form(target: &str) -> bool {
    let bytes = target.as_bytes();
    // The http crate's length limit.
    if bytes.first() != Some(&b'/') || bytes.len() >= 65_534 {
        return false;
    }
    let mut in_query = false;
    bytes.iter().all(|&b| match b {
        b'?' => {
            in_query = true;
            true
        }
        0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E => true,
        // `<`, `>`, backtick, braces and `"` only in a query.
        0x3C | 0x3E | 0x60 | 0x7B | 0x7D | 0x22 => in_query,
        _ => false,
    })
}

/// Writes the proxy's own headers of `rules` (those active for `pristine`, and not overridden
/// by a `configured` response header): `lists` holds the peer's items of list headers by rule
/// index, `present` the rules whose header the peer sent (by bit); `skip_per_request` leaves
/// out the rules whose value changes from request to request.
#[allow(clippy::too_many_arguments)]
fn write_own(
    out: &mut Vec<u8>,
    rules: &'static [Rule],
    values: &Values<'_>,
    pristine: bool,
    lists: &[(usize, &[u8])],
    present: u64,
    configured: &[(String, String)],
    skip_per_request: bool,
) {
    for (i, r) in rules.iter().enumerate() {
        if matches!(r.action, Action::Remove)
            || (skip_per_request && per_request(r))
            || !headers::active(r, pristine)
            || (!configured.is_empty() && headers::configured_has(configured, r.name))
        {
            continue;
        }
        match r.action {
            Action::Remove => {}
            Action::Set(v) | Action::Add(v) => write_value(out, r, values, v),
            Action::Default(v) => {
                if present & (1 << i) == 0 {
                    write_value(out, r, values, v);
                }
            }
            Action::AppendToList(v) => {
                let theirs = lists.iter().filter(|(j, _)| *j == i).map(|(_, v)| *v);
                let mut first = true;
                for item in theirs.chain(values.bytes(v)) {
                    if first {
                        out.extend_from_slice(r.prefix.as_bytes());
                    } else {
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(item);
                    first = false;
                }
                if !first {
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
}

/// One header line of the proxy's own: the rule's fixed line, or its name and the value.
fn write_value(out: &mut Vec<u8>, r: &Rule, values: &Values<'_>, v: Value) {
    if !r.line.is_empty() {
        out.extend_from_slice(r.line.as_bytes());
    } else if let Some(value) = values.bytes(v) {
        out.reserve(r.prefix.len() + value.len() + 2);
        out.extend_from_slice(r.prefix.as_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    /// Chunked: passed through as it is.
    Chunked,
    /// Until the machine closes the connection: sent to the client chunked.
    Close,
}

/// A machine's response the fast path passes on.
#[derive(Debug)]
pub(crate) struct ResponsePlan {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The machine's connection can carry another request after this response.
    pub reusable: bool,
}

#[derive(Debug)]
pub(crate) enum ParsedResponse {
    Partial,
    /// An informational (1xx) response of this many bytes, not passed on (as hyper does).
    Informational(usize),
    /// Not a response the proxy can pass on.
    Bad(String),
    /// The machine asks for a `fly-replay` (header value; the response's status): nothing was
    /// written.
    Replay(http::HeaderValue, u16),
    Ready(ResponsePlan),
}

/// What the proxy adds to responses (the `RESPONSE` rules of `headers.rs`).
pub(crate) struct Decoration<'a> {
    /// The route the response is for (its options decide the rest).
    pub route: &'a Arc<PortRoute>,
    pub pristine: bool,
    /// The proxy's values (`Fly-Request-Id`).
    pub values: Values<'a>,
    /// Configured `http_options.response.headers` (an empty value removes the header), valid
    /// and one per name (see `options.rs`).
    pub response_headers: &'a [(String, String)],
    /// `Date` when the machine sends none (hyper's server adds one too).
    pub date: &'a [u8],
}

/// The proxy's own response headers that are the same for every response of a route (all
/// but the per-request `Fly-Request-Id`, configured ones included), for the `Default` rules'
/// headers the machine sent: made once per connection, route and such set.
#[derive(Default)]
pub(crate) struct OwnResponse {
    key: Option<(Arc<PortRoute>, u64)>,
    bytes: Vec<u8>,
    /// The active rules (by index in `RESPONSE`) whose value changes per request.
    per_request: Vec<usize>,
}

/// Whether a rule's value changes from request to request.
fn per_request(r: &Rule) -> bool {
    matches!(
        r.action,
        Action::Set(Value::RequestId) | Action::Add(Value::RequestId)
    )
}

/// How a response header is treated.
enum RespHeader {
    Copy,
    Drop,
    Connection,
    ContentLength,
    TransferEncoding,
    Date,
    FlyReplay,
    /// One of the policy's rules that may keep the machine's value (by index in `RESPONSE`).
    Rule(usize),
}

fn classify_response_header(name: &str) -> RespHeader {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    // Framing and `fly-replay` before the policy.
    match name.len() {
        4 if is("date") => RespHeader::Date,
        10 if is("connection") => RespHeader::Connection,
        10 if is("fly-replay") => RespHeader::FlyReplay,
        14 if is("content-length") => RespHeader::ContentLength,
        17 if is("transfer-encoding") => RespHeader::TransferEncoding,
        _ => match headers::find(&RESPONSE, name) {
            None => RespHeader::Copy,
            Some((_, r)) if r.action == Action::Remove => RespHeader::Drop,
            Some((i, _)) => RespHeader::Rule(i),
        },
    }
}

/// Parses a machine's response head at the start of `buf`. A response to pass on has its
/// head for the client written to `out` (appended). `honour_replay`: a `fly-replay` header
/// is reported rather than passed on.
pub(crate) fn response(
    buf: &[u8],
    head_method: bool,
    client_close: bool,
    honour_replay: bool,
    deco: &Decoration<'_>,
    own: &mut OwnResponse,
    out: &mut Vec<u8>,
) -> ParsedResponse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return ParsedResponse::Partial,
        Err(e) => return ParsedResponse::Bad(format!("malformed response head: {e}")),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return ParsedResponse::Bad("malformed response head".into());
    };
    if status < 100 {
        return ParsedResponse::Bad(format!("invalid status {status}"));
    }
    if status == 101 {
        return ParsedResponse::Bad("101 Switching Protocols without an upgrade request".into());
    }
    if (100..200).contains(&status) {
        return ParsedResponse::Informational(head_len);
    }
    // Headers the machine names in `Connection` are hop-by-hop too.
    let mut listed: Vec<&[u8]> = Vec::new();
    for h in resp.headers.iter() {
        if let RespHeader::Connection = classify_response_header(h.name) {
            listed.extend(
                h.value
                    .split(|b| *b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    let named_hop = |name: &str| {
        listed
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    };
    // First pass: framing, connection, replay.
    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None; // Some(chunked last)
    let mut reusable = version == 1;
    let mut present = 0u64;
    let mut has_date = false;
    for h in resp.headers.iter() {
        match classify_response_header(h.name) {
            RespHeader::FlyReplay if honour_replay => {
                return match http::HeaderValue::from_bytes(h.value) {
                    Ok(v) => ParsedResponse::Replay(v, status),
                    Err(_) => ParsedResponse::Bad("fly-replay header is not a valid value".into()),
                }
            }
            RespHeader::ContentLength => {
                // `5, 5` is one length, as hyper reads it.
                for part in h.value.split(|b| *b == b',') {
                    match parse_length(part) {
                        Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                        _ => {
                            return ParsedResponse::Bad(
                                "invalid or conflicting Content-Length".into(),
                            )
                        }
                    }
                }
            }
            RespHeader::TransferEncoding => {
                if version == 0 {
                    return ParsedResponse::Bad("Transfer-Encoding in an HTTP/1.0 response".into());
                }
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
                te = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            RespHeader::Connection => {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        reusable = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        reusable |= version == 0 && !client_close;
                    }
                }
            }
            RespHeader::Rule(i) if !named_hop(h.name) => present |= 1 << i,
            RespHeader::Date => has_date |= !named_hop(h.name),
            _ => {}
        }
    }
    let no_body = head_method || status == 204 || status == 304;
    let framing = match te {
        _ if no_body => Framing::Empty,
        Some(true) => Framing::Chunked,
        // A coding that does not end in chunked: the body runs until the machine closes.
        Some(false) => Framing::Close,
        None => match length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        },
    };
    if te.is_some() || framing == Framing::Close {
        // With Transfer-Encoding, Content-Length is ignored (RFC 9112 §6.3) and the connection
        // cannot be trusted after the message.
        reusable &= te.is_none() && framing != Framing::Close;
    }
    // Second pass: the head for the client.
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    match resp.reason {
        Some(r) => out.extend_from_slice(r.as_bytes()),
        None => out.extend_from_slice(
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let keep = match classify_response_header(h.name) {
            RespHeader::Copy | RespHeader::Date => true,
            RespHeader::FlyReplay => !honour_replay,
            // A value the proxy sets replaces the machine's.
            RespHeader::Rule(i) => {
                let r = &RESPONSE[i];
                !(matches!(r.action, Action::Set(_)) && headers::active(r, deco.pristine))
            }
            // Framing is written below from what was read.
            RespHeader::ContentLength
            | RespHeader::Drop
            | RespHeader::Connection
            | RespHeader::TransferEncoding => false,
        };
        if keep && !headers::configured_has(deco.response_headers, h.name) && !named_hop(h.name) {
            push_header(out, h.name.as_bytes(), h.value);
        }
    }
    match (framing, length) {
        (Framing::Chunked | Framing::Close, _) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        (Framing::Length(n), _) => push_header(out, b"content-length", n.to_string().as_bytes()),
        // HEAD keeps the length of the body it would have had (hyper drops it on 204/304).
        (Framing::Empty, Some(n)) if head_method && te.is_none() => {
            push_header(out, b"content-length", n.to_string().as_bytes())
        }
        (Framing::Empty, _) => {}
    }
    if client_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        push_header(out, b"date", deco.date);
    }
    // A configured header replaces (or, empty, removes) the proxy's own.
    let (values, configured) = (&deco.values, deco.response_headers);
    let same =
        |(route, bits): &(Arc<PortRoute>, u64)| Arc::ptr_eq(route, deco.route) && *bits == present;
    if !own.key.as_ref().is_some_and(same) {
        own.bytes.clear();
        write_own(
            &mut own.bytes,
            &RESPONSE,
            values,
            deco.pristine,
            &[],
            present,
            configured,
            true,
        );
        for (name, value) in configured {
            if !value.is_empty() {
                push_header(&mut own.bytes, name.as_bytes(), value.as_bytes());
            }
        }
        own.per_request.clear();
        own.per_request.extend((0..RESPONSE.len()).filter(|i| {
            let r = &RESPONSE[*i];
            per_request(r)
                && headers::active(r, deco.pristine)
                && !headers::configured_has(configured, r.name)
        }));
        own.key = Some((deco.route.clone(), present));
    }
    for &i in &own.per_request {
        if let Action::Set(v) | Action::Add(v) = RESPONSE[i].action {
            write_value(out, &RESPONSE[i], values, v);
        }
    }
    out.extend_from_slice(&own.bytes);
    out.extend_from_slice(b"\r\n");
    ParsedResponse::Ready(ResponsePlan {
        head_len,
        status,
        framing,
        reusable,
    })
}

pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: digits only.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A status code's three digits.
fn itoa3(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}
