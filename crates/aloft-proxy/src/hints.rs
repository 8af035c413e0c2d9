//! Client routing hints (machines-api §4.2): `Fly-Prefer-Region`, `Fly-Prefer-Instance-Id` and
//! `Fly-Force-Instance-Id` request headers.
//!
//! They are read once per request ([`Hints::from_headers`]: one pass over the header names, no
//! allocation) and acted on when a machine is picked (`Selector::acquire_from` in
//! `select.rs`). The headers themselves are forwarded to the app unchanged, as Fly does. The
//! same pass notes a client's `fly-replay-src`, which the header policy removes (only the
//! proxy may say where a request was replayed from). A `fly-replay` target is expressed as
//! hints too ([`Hints::from_replay`]): its regions are then the only ones allowed, not just
//! ranked first.
//!
//! Region aliases (`us`, `na`, `sa`, `eu`, `ap`, `af`: `aloft_api::regions::REGION_ALIASES`)
//! stand for all their regions at one rank; an unknown code or alias matches nothing.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const FLY_PREFER_REGION: HeaderName = HeaderName::from_static("fly-prefer-region");
pub const FLY_PREFER_INSTANCE_ID: HeaderName = HeaderName::from_static("fly-prefer-instance-id");
pub const FLY_FORCE_INSTANCE_ID: HeaderName = HeaderName::from_static("fly-force-instance-id");
/// Added to the upstream request when the machine of `Fly-Prefer-Instance-Id` was not used.
pub const FLY_PREFERRED_INSTANCE_UNAVAILABLE: HeaderName =
    HeaderName::from_static("fly-preferred-instance-unavailable");

/// The routing hints of one request. Empty (and free) for a request without hint headers,
/// which is also what raw TCP connections use.
#[derive(Clone, Debug, Default)]
pub struct Hints {
    /// `Fly-Prefer-Region`: region codes, comma-separated, most preferred first.
    regions: Option<HeaderValue>,
    /// `Fly-Prefer-Instance-Id`.
    prefer_instance: Option<HeaderValue>,
    /// `Fly-Force-Instance-Id`.
    force_instance: Option<HeaderValue>,
    /// The request came with a `fly-replay-src` header (only the proxy may set it).
    replay_src: bool,
    /// Set for a `fly-replay` target: `regions` are the only regions allowed, and the
    /// instance fields come from the replay header rather than the client.
    replay: bool,
}

impl Hints {
    /// No hints (what the h1 fast path's requests and raw TCP carry).
    pub(crate) const NONE: Hints = Hints {
        regions: None,
        prefer_instance: None,
        force_instance: None,
        replay_src: false,
        replay: false,
    };

    /// Reads the hint headers (the first non-empty value of each). Values that are not
    /// visible ASCII are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Hints {
        let mut hints = Hints::default();
        for (name, value) in headers {
            // Every hint starts with `fly-`: most headers are passed over on their first bytes.
            if !name.as_str().starts_with("fly-") {
                continue;
            }
            if name == crate::replay::FLY_REPLAY_SRC {
                hints.replay_src = true;
                continue;
            }
            let slot = if name == FLY_PREFER_REGION {
                &mut hints.regions
            } else if name == FLY_PREFER_INSTANCE_ID {
                &mut hints.prefer_instance
            } else if name == FLY_FORCE_INSTANCE_ID {
                &mut hints.force_instance
            } else {
                continue;
            };
            let usable = value.to_str().is_ok_and(|v| !v.trim().is_empty());
            if slot.is_none() && usable {
                *slot = Some(value.clone());
            }
        }
        hints
    }

    /// The routing of a `fly-replay` target: its regions (the only ones allowed), its
    /// instance (forced) and preferred instance. Client hints do not apply to a replay.
    pub fn from_replay(r: &crate::replay::Replay) -> Hints {
        let value = |s: &Option<String>| s.as_deref().and_then(|s| HeaderValue::from_str(s).ok());
        Hints {
            regions: value(&r.regions),
            prefer_instance: value(&r.prefer_instance),
            force_instance: value(&r.instance),
            replay_src: false,
            replay: true,
        }
    }

    /// Whether the client sent a `fly-replay-src` header (to be removed before forwarding).
    pub fn has_replay_src(&self) -> bool {
        self.replay_src
    }

    /// Whether only the regions of [`Hints::regions`] may take the request (a `fly-replay`
    /// with `region=`), rather than being ranked first.
    pub fn only_regions(&self) -> bool {
        self.replay && self.regions.is_some()
    }

    /// How the forced instance was named, for error messages.
    pub fn force_source(&self) -> &'static str {
        if self.replay {
            "fly-replay"
        } else {
            "Fly-Force-Instance-Id"
        }
    }

    /// The `Fly-Prefer-Region` list as sent (`""` without one); see [`crate::balance::Proximity`].
    pub fn regions(&self) -> &str {
        text(&self.regions).unwrap_or("")
    }

    /// The machine id of `Fly-Prefer-Instance-Id`.
    pub fn prefer_instance(&self) -> Option<&str> {
        text(&self.prefer_instance)
    }

    /// The `Fly-Prefer-Instance-Id` value, to name it in `Fly-Preferred-Instance-Unavailable`.
    pub fn prefer_instance_value(&self) -> Option<&HeaderValue> {
        self.prefer_instance.as_ref()
    }

    /// The machine id of `Fly-Force-Instance-Id`.
    pub fn force_instance(&self) -> Option<&str> {
        text(&self.force_instance)
    }

    /// Whether machine `id` satisfies the instance hints, so a client connection already on
    /// it may stay there. Region hints do not move a connection that has a machine.
    pub fn allows(&self, machine_id: &str) -> bool {
        self.force_instance().is_none_or(|f| f == machine_id)
            && self.prefer_instance().is_none_or(|p| p == machine_id)
    }
}

fn text(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref()
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hints_and_ignores_empty_values() {
        let mut h = HeaderMap::new();
        h.insert("fly-prefer-region", HeaderValue::from_static("iad, ord"));
        h.insert("fly-force-instance-id", HeaderValue::from_static(" "));
        h.insert("Fly-Prefer-Instance-Id", HeaderValue::from_static("m1"));
        h.insert("fly-region", HeaderValue::from_static("ams"));
        let hints = Hints::from_headers(&h);
        assert_eq!(hints.regions(), "iad, ord");
        assert_eq!(hints.prefer_instance(), Some("m1"));
        assert_eq!(hints.force_instance(), None);
        assert!(hints.allows("m1") && !hints.allows("m2"));
        let none = Hints::from_headers(&HeaderMap::new());
        assert_eq!(none.regions(), "");
        assert!(none.allows("anything"));
    }
}
