//! Decodes a machine's chunked body (RFC 9112 §7.1) as it streams through: the chunk data is
//! handed on to be chunked again, so the client gets canonical framing (CRLF only, no chunk
//! extensions, no trailers), as from hyper. Line ends must be CRLF, as hyper requires.

/// Where a scan is inside a chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after a chunk size (before `;` or the line end).
    SizeSpace {
        size: u64,
    },
    /// Skipping a chunk extension up to the end of the size line.
    Extension {
        size: u64,
    },
    /// Seen CR at the end of a size line.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// After chunk data: CR LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Seen CR at the end of a trailer line.
    TrailerLf,
    /// Seen CR of the final empty line.
    EndLf,
    Done,
}

/// A malformed chunked body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

#[derive(Debug)]
pub(crate) struct ChunkedScan {
    state: State,
}

impl Default for ChunkedScan {
    fn default() -> Self {
        ChunkedScan {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

impl ChunkedScan {
    /// Decodes the next bytes of the body, handing each run of chunk data to `data`:
    /// `Some(n)` when the body ends after `n` of them.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data(left) = self.state {
                let take = (bytes.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                data(&bytes[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match self.state {
                State::Size { size, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // 16 hex digits fill a u64.
                        if digits >= 16 {
                            return Err(Malformed);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        State::Size {
                            size: size * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => return Err(Malformed),
                    b';' => State::Extension { size },
                    b' ' | b'\t' => State::SizeSpace { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(Malformed),
                },
                State::SizeSpace { size } => match b {
                    b' ' | b'\t' => State::SizeSpace { size },
                    b';' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(Malformed),
                },
                State::Extension { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(Malformed),
                    _ => State::Extension { size },
                },
                State::SizeLf { size } if b == b'\n' => after_size_line(size),
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(Malformed),
                    _ => State::Trailer,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(Malformed),
                    _ => State::Trailer,
                },
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                _ => return Err(Malformed),
            };
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

fn after_size_line(size: u64) -> State {
    if size == 0 {
        State::TrailerStart
    } else {
        State::Data(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; where it ends, and the data.
    fn decode(body: &[u8], step: usize) -> (Result<Option<usize>, Malformed>, Vec<u8>) {
        let mut scan = ChunkedScan::default();
        let mut out = Vec::new();
        let mut at = 0;
        for piece in body.chunks(step) {
            match scan.feed(piece, |d| out.extend_from_slice(d)) {
                Ok(Some(n)) => return (Ok(Some(at + n)), out),
                Ok(None) => {}
                Err(e) => return (Err(e), out),
            }
            at += piece.len();
        }
        (Ok(None), out)
    }

    fn end(body: &[u8], step: usize) -> Result<Option<usize>, Malformed> {
        decode(body, step).0
    }

    #[test]
    fn finds_the_end_and_the_data_whatever_the_pieces() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (end, data) = decode(body, step);
            assert_eq!(end, Ok(Some(body.len() - 4)), "step {step}");
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
        }
    }

    #[test]
    fn trailers_are_read_through_and_not_data() {
        let body = b"3\r\nabc\r\n0\r\nExpires: never\r\nX: y\r\n\r\n";
        assert_eq!(decode(body, 1), (Ok(Some(body.len())), b"abc".to_vec()));
        assert_eq!(decode(body, 100), (Ok(Some(body.len())), b"abc".to_vec()));
    }

    #[test]
    fn bare_line_feeds_are_refused_as_hyper_does() {
        for body in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"3\r\nabc\n0\r\n\r\n",
            b"3;x\nabc\r\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"5 garbage\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                end(body, 1),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_unfinished_body_is_not_ended() {
        assert_eq!(end(b"5\r\nhel", 2), Ok(None));
        assert_eq!(end(b"0\r\n", 1), Ok(None));
        assert_eq!(end(b"0\r\nX: y\r\n", 1), Ok(None));
    }

    #[test]
    fn malformed_sizes_and_missing_crlf_are_refused() {
        assert_eq!(end(b"zz\r\n", 1), Err(Malformed));
        assert_eq!(end(b"\r\n", 1), Err(Malformed));
        assert_eq!(end(b"3\r\nabcX", 1), Err(Malformed));
        assert_eq!(end(b"11111111111111111\r\n", 100), Err(Malformed));
    }
}
