//! Writes a response made by the hyper-side code (the proxy's own answers, and whatever
//! `http::forward` returns after a hand-over) to a fast-path client connection.

use std::io;
use std::time::SystemTime;

use http::{header, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::head::push_header;
use crate::http::RespBody;

/// `resp` as HTTP/1.1: `Content-Length` when the body's size is known, else chunked.
pub(crate) async fn response<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Vec<u8>,
    resp: Response<RespBody>,
    head_method: bool,
    close: bool,
) -> io::Result<()> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let no_body = head_method
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    let exact = hyper::body::Body::size_hint(&body).exact();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes())
        .or_else(|| status.canonical_reason().map(str::as_bytes))
        .unwrap_or(b"");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let framing = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        if (no_body || !framing) && name != header::CONNECTION {
            push_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let chunked = !no_body && exact.is_none();
    if !no_body {
        match exact {
            Some(n) => push_header(out, b"content-length", n.to_string().as_bytes()),
            None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
    }
    if !parts.headers.contains_key(header::DATE) {
        push_header(out, b"date", &http_date());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if no_body {
        io.write_all(out).await?;
        return io.flush().await;
    }
    // Small bodies (the proxy's own answers) go out with the head in one write.
    let mut head_pending = true;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not passed on
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if head_pending && data.len() <= 16 * 1024 {
            out.extend_from_slice(&data);
        } else {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        }
        head_pending = false;
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() > 16 * 1024 {
            io.write_all(out).await?;
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    io.write_all(out).await?;
    out.clear();
    io.flush().await
}

/// The current time as an HTTP date, formatted once per second per thread.
pub(crate) fn http_date() -> [u8; 29] {
    std::thread_local! {
        static CACHE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((0, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let (at, date) = c.get();
        if at == secs && secs != 0 {
            return date;
        }
        let mut date = [0u8; 29];
        let s = httpdate::fmt_http_date(now);
        let n = s.len().min(29);
        date[..n].copy_from_slice(&s.as_bytes()[..n]);
        c.set((secs, date));
        date
    })
}
