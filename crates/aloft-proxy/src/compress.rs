//! `http_options.compress`: gzip for responses of text-like types when the client accepts it
//! and the app did not encode them itself. Knows responses only as `http` types and bodies
//! as `hyper::body::Body`: the back-end that uses it (the hyper path) wraps its own body.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};

/// Bodies known to be smaller than this are sent as they are (gzip would barely help).
const MIN_LENGTH: u64 = 1024;

/// Whether the request's `Accept-Encoding` allows gzip (`gzip` or `*`, not with `q=0`).
pub(crate) fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Types worth compressing: text (except event streams, which must not be held back),
/// JSON, JavaScript, XML, SVG.
fn compressible(content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (t.starts_with("text/") && t != "text/event-stream")
        || t.ends_with("+json")
        || t.ends_with("+xml")
        || matches!(
            t.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
        )
}

/// Prepares `resp` (to a request other than HEAD) for gzip when it is worth it and allowed: a
/// body of a compressible type, not already encoded, not `no-transform`, not a range, and not
/// known to be tiny. `true` when its headers now say gzip: the caller wraps the body in a
/// [`GzipBody`].
pub(crate) fn gzip_headers<B: Body>(resp: &mut Response<B>) -> bool {
    let status = resp.status();
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT
    {
        return false;
    }
    let h = resp.headers();
    let typed = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(compressible);
    let no_transform = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-transform"));
    let small = resp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n < MIN_LENGTH);
    if !typed || no_transform || small || h.contains_key(header::CONTENT_ENCODING) {
        return false;
    }
    let h = resp.headers_mut();
    h.remove(header::CONTENT_LENGTH);
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    // A validator of the identity body does not describe the gzipped one.
    if let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        if !etag.starts_with("W/") {
            if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
                h.insert(header::ETAG, weak);
            }
        }
    }
    true
}

/// A body gzipped as it streams.
pub(crate) struct GzipBody<B> {
    inner: B,
    /// `None` once finished.
    encoder: Option<GzEncoder<Vec<u8>>>,
    /// Trailers of the inner body, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
}

impl<B> GzipBody<B> {
    pub fn new(inner: B) -> GzipBody<B> {
        GzipBody {
            inner,
            encoder: Some(GzEncoder::new(Vec::new(), Compression::fast())),
            trailers: None,
        }
    }

    fn take_output(&mut self) -> Option<Bytes> {
        let out = std::mem::take(self.encoder.as_mut()?.get_mut());
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn finish(&mut self) -> Option<Bytes> {
        let out = self.encoder.take()?.finish().ok()?;
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for GzipBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if this.encoder.is_none() {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(enc) = this.encoder.as_mut() {
                            // Writing to a Vec cannot fail.
                            let _ = enc.write_all(&data);
                        }
                        if let Some(out) = this.take_output() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    if let Some(out) = this.finish() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&m)
        };
        assert!(h("gzip, deflate, br"));
        assert!(h("br;q=1.0, GZIP;q=0.5"));
        assert!(h("*"));
        assert!(!h("gzip;q=0"));
        assert!(!h("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn only_text_like_types_are_compressed() {
        for t in [
            "text/html; charset=utf-8",
            "application/json",
            "application/vnd.api+json",
            "image/svg+xml",
        ] {
            assert!(compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "text/event-stream",
            "application/octet-stream",
            "video/mp4",
        ] {
            assert!(!compressible(t), "{t}");
        }
    }
}
