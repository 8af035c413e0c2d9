//! Writes the proxy's own answers (`lifecycle::Answer`, decorated by the header policy) to a
//! fast-path client connection.

use std::io;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Response};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::head::push_header;

/// `resp` as HTTP/1.1, with its `Content-Length`, in one write.
pub(crate) async fn response<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Vec<u8>,
    resp: Response<Bytes>,
    head_method: bool,
    close: bool,
) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let no_body = head_method
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let framing = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        if (no_body || !framing) && name != header::CONNECTION {
            push_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !no_body {
        push_header(out, b"content-length", body.len().to_string().as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        push_header(out, b"date", &http_date());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !no_body {
        out.extend_from_slice(&body);
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
