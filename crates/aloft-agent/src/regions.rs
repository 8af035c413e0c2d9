//! The regions an agent hosts (`--region`, repeatable; default every Fly region code).

use aloft_api::regions::{is_known_region, region_name, RegionInfo, REGIONS};

/// Hosted regions, validated.
#[derive(Clone, Debug)]
pub struct Regions {
    codes: Vec<String>,
    all: bool,
}

impl Regions {
    /// From `--region` values; empty = all. Unknown codes are an error naming the valid ones.
    pub fn new(codes: &[String]) -> Result<Regions, String> {
        if codes.is_empty() {
            return Ok(Regions {
                codes: REGIONS.iter().map(|(c, _)| c.to_string()).collect(),
                all: true,
            });
        }
        let mut out: Vec<String> = Vec::new();
        for c in codes {
            let c = c.trim().to_ascii_lowercase();
            if !is_known_region(&c) {
                return Err(format!(
                    "unknown region {c:?}; valid region codes: {}",
                    all_codes()
                ));
            }
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(Regions {
            codes: out,
            all: false,
        })
    }

    pub fn hosts(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c == code)
    }

    /// Where machines go when the request names no region: the first `--region`, else `PRIMARY_REGION`
    /// of the machine's env when hosted, else `iad`.
    pub fn default_for(&self, primary: Option<&str>) -> String {
        if !self.all {
            if let Some(p) = primary.filter(|p| self.hosts(p)) {
                return p.to_string();
            }
            return self.codes[0].clone();
        }
        primary
            .filter(|p| self.hosts(p))
            .unwrap_or("iad")
            .to_string()
    }

    pub fn list(&self) -> Vec<RegionInfo> {
        self.codes
            .iter()
            .map(|c| RegionInfo {
                code: c.clone(),
                name: region_name(c).unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// Why a requested region cannot be used, listing the hosted ones.
    pub fn refusal(&self, code: &str) -> String {
        if is_known_region(code) {
            format!(
                "region {code:?} is not hosted by this agent; hosted regions: {}",
                self.codes.join(", ")
            )
        } else {
            format!(
                "unknown region {code:?}; hosted regions: {}",
                self.codes.join(", ")
            )
        }
    }
}

fn all_codes() -> String {
    REGIONS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_regions() {
        let all = Regions::new(&[]).unwrap();
        assert!(all.hosts("gru") && all.hosts("bog"));
        assert_eq!(all.default_for(None), "iad");
        assert_eq!(all.default_for(Some("gru")), "gru");
        let two = Regions::new(&["gru".into(), "BOG".into()]).unwrap();
        assert!(!two.hosts("iad"));
        assert_eq!(two.default_for(Some("iad")), "gru");
        assert!(two.refusal("iad").contains("gru, bog"));
        assert!(Regions::new(&["xyz".into()])
            .unwrap_err()
            .contains("unknown region"));
    }
}
