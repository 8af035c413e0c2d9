//! Finds where a chunked message body ends (RFC 9112 §7.1) in bytes passed through as they
//! are: the fast path forwards a machine's chunked body without re-encoding it.

/// Where a scan is inside a chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size {
        size: u64,
        digits: u8,
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
    /// Scans the next bytes of the body: `Some(n)` when the body ends after `n` of them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data(left) = self.state {
                let take = (bytes.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
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
                    b';' | b' ' | b'\t' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    b'\n' => after_size_line(size),
                    _ => return Err(Malformed),
                },
                State::Extension { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => after_size_line(size),
                    _ => State::Extension { size },
                },
                State::SizeLf { size } if b == b'\n' => after_size_line(size),
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataCr | State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => State::Done,
                    _ => State::Trailer,
                },
                State::Trailer if b == b'\n' => State::TrailerStart,
                State::Trailer => State::Trailer,
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

    /// Feeds `body` in pieces of `step` bytes; where it ends.
    fn end(body: &[u8], step: usize) -> Result<Option<usize>, Malformed> {
        let mut scan = ChunkedScan::default();
        let mut at = 0;
        for piece in body.chunks(step) {
            if let Some(n) = scan.feed(piece)? {
                return Ok(Some(at + n));
            }
            at += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        for step in 1..body.len() {
            assert_eq!(end(body, step), Ok(Some(body.len() - 4)), "step {step}");
        }
    }

    #[test]
    fn trailers_and_bare_line_feeds_are_read_through() {
        let body = b"3\nabc\n0\nExpires: never\r\nX: y\n\r\n";
        assert_eq!(end(body, 1), Ok(Some(body.len())));
        assert_eq!(end(body, 100), Ok(Some(body.len())));
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
