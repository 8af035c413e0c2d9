//! `fly-replay` (machines-api §4.2): a machine answers with a `fly-replay` response header and
//! the proxy sends the same request again to the target it names, instead of returning that
//! response to the client.
//!
//! The header is `;`-separated `key=value` fields (keys case-insensitive):
//!
//! * `region=ord` or `region=ord,iad` — a machine of the same service in one of those regions
//!   (in that order, as `Fly-Prefer-Region` ranks them, but no other region);
//! * `instance=<id>` — exactly that machine (as `Fly-Force-Instance-Id`);
//! * `prefer_instance=<id>` — that machine if it can take the request, else as usual;
//! * `app=<name>` — a machine of another app (see below);
//! * `elsewhere=true` — any machine except the one that replied (combines with the others);
//! * `state=<text>` — passed to the target in the `fly-replay-src` request header;
//! * `timeout=2s` — how long to look for a machine of the target before giving up (503);
//! * `fallback=…` — accepted and ignored (see the crate docs).
//!
//! The target gets `fly-replay-src: instance=<id>;region=<r>;t=<unix µs>[;state=<state>]`
//! naming the machine that replied. At most [`MAX_REPLAYS`] replays per request.
//!
//! Only requests the proxy can send again are replayed: those without a body, and those whose
//! `Content-Length` is at most [`MAX_REPLAY_BODY`] (buffered before the first send). A body
//! streamed through (larger, or of unknown length) cannot be replayed: the `fly-replay`
//! response then reaches the client unchanged, as does one whose header cannot be parsed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};

/// The response header a machine asks for a replay with.
pub const FLY_REPLAY: HeaderName = HeaderName::from_static("fly-replay");
/// The request header that tells a replay target where the request was replayed from.
pub const FLY_REPLAY_SRC: HeaderName = HeaderName::from_static("fly-replay-src");

/// Replays of one request at most; a further `fly-replay` answer gets a 502.
pub const MAX_REPLAYS: usize = 10;

/// Request bodies up to this size (by `Content-Length`) are buffered so that they can be
/// replayed (and retried); larger bodies and bodies of unknown length are streamed. 1 MiB, as
/// Fly's current docs say (the spec's older figure is 10 MB): the buffer is held per
/// in-flight request, so 1000 concurrent uploads cost at most 1 GiB, not 10.
pub const MAX_REPLAY_BODY: u64 = 1024 * 1024;

/// A parsed `fly-replay` header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// `region`: comma-separated region codes, as sent.
    pub regions: Option<String>,
    /// `instance`: the only machine that may take the replay.
    pub instance: Option<String>,
    /// `prefer_instance`: the machine tried first.
    pub prefer_instance: Option<String>,
    /// `app`: the app to replay to.
    pub app: Option<String>,
    /// `elsewhere=true`: not the machine that replied.
    pub elsewhere: bool,
    /// `state`: passed on in `fly-replay-src`.
    pub state: Option<String>,
    /// `timeout`: bound on finding a machine of the target.
    pub timeout: Option<Duration>,
}

impl Replay {
    /// Parses a `fly-replay` value; `Err` says what is wrong with it. A value must name a
    /// target (`region`, `instance`, `prefer_instance`, `app` or `elsewhere=true`); unknown
    /// fields, repeated fields and empty values are errors.
    pub fn parse(value: &HeaderValue) -> Result<Replay, String> {
        let text = value
            .to_str()
            .map_err(|_| "the value is not visible ASCII".to_string())?;
        let mut r = Replay::default();
        let mut seen: Vec<String> = Vec::new();
        for field in text.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            let Some((key, val)) = field.split_once('=') else {
                return Err(format!("field `{field}` is not key=value"));
            };
            let (key, val) = (key.trim().to_ascii_lowercase(), val.trim());
            if val.is_empty() {
                return Err(format!("field `{key}` has no value"));
            }
            if seen.contains(&key) {
                return Err(format!("field `{key}` is repeated"));
            }
            let val = val.to_string();
            match key.as_str() {
                "region" => {
                    let codes: Vec<&str> = val
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .collect();
                    if codes.is_empty()
                        || codes
                            .iter()
                            .any(|c| !c.chars().all(|ch| ch.is_ascii_alphanumeric()))
                    {
                        return Err(format!("`region={val}` is not a list of region codes"));
                    }
                    r.regions = Some(codes.join(","));
                }
                "instance" => r.instance = Some(val),
                "prefer_instance" => r.prefer_instance = Some(val),
                "app" => r.app = Some(val),
                "state" => r.state = Some(val),
                "elsewhere" => {
                    r.elsewhere = match val.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("`elsewhere={val}` is neither true nor false")),
                    }
                }
                "timeout" => {
                    let d = aloft_api::duration::parse_go_duration(&val)
                        .map_err(|e| format!("`timeout={val}`: {e}"))?;
                    r.timeout = Some(d);
                }
                // Fly routes back to the replying machine when the target fails; Aloft
                // answers with the error instead (documented in the crate docs).
                "fallback" => {}
                _ => return Err(format!("unknown field `{key}`")),
            }
            seen.push(key);
        }
        let targeted = r.regions.is_some()
            || r.instance.is_some()
            || r.prefer_instance.is_some()
            || r.app.is_some()
            || r.elsewhere;
        if !targeted {
            return Err(
                "no target (region, instance, prefer_instance, app or elsewhere=true)".into(),
            );
        }
        Ok(r)
    }

    /// The `fly-replay-src` value for a replay from machine `instance` in `region`.
    pub fn source(&self, instance: &str, region: &str) -> Option<HeaderValue> {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let mut v = format!("instance={instance};region={region};t={t}");
        if let Some(state) = &self.state {
            v.push_str(";state=");
            v.push_str(state);
        }
        HeaderValue::from_str(&v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Replay, String> {
        Replay::parse(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn parses_the_documented_fields() {
        let r = parse("region=ord; state=abc=1 ;Elsewhere=true;timeout=2s").unwrap();
        assert_eq!(r.regions.as_deref(), Some("ord"));
        assert_eq!(r.state.as_deref(), Some("abc=1"));
        assert!(r.elsewhere);
        assert_eq!(r.timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            parse("region= iad , ord").unwrap().regions.as_deref(),
            Some("iad,ord")
        );
        let r = parse("instance=m1;app=web").unwrap();
        assert_eq!(r.instance.as_deref(), Some("m1"));
        assert_eq!(r.app.as_deref(), Some("web"));
        assert!(parse("prefer_instance=m2;fallback=prefer_self").is_ok());
    }

    #[test]
    fn rejects_what_it_cannot_act_on() {
        for bad in [
            "",
            "ord",
            "region=",
            "region=o rd",
            "state=x",
            "elsewhere=false",
            "elsewhere=yes",
            "region=ord;region=iad",
            "planet=mars",
            "instance=m;timeout=soon",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn source_names_the_replier_and_the_state() {
        let r = parse("region=ord;state=s1").unwrap();
        let v = r.source("m1", "ams").unwrap();
        let v = v.to_str().unwrap();
        assert!(v.starts_with("instance=m1;region=ams;t="), "{v}");
        assert!(v.ends_with(";state=s1"), "{v}");
        let none = parse("region=ord").unwrap().source("m1", "ams").unwrap();
        assert!(!none.to_str().unwrap().contains("state"));
    }
}
