//! Fly.io region codes. An agent hosts a subset of them (by default all): a single agent can
//! stand for `gru` and `bog` at once.

/// `(code, name)` of every region code Aloft accepts.
pub const REGIONS: &[(&str, &str)] = &[
    ("ams", "Amsterdam, Netherlands"),
    ("arn", "Stockholm, Sweden"),
    ("atl", "Atlanta, Georgia (US)"),
    ("bog", "Bogotá, Colombia"),
    ("bom", "Mumbai, India"),
    ("bos", "Boston, Massachusetts (US)"),
    ("cdg", "Paris, France"),
    ("den", "Denver, Colorado (US)"),
    ("dfw", "Dallas, Texas (US)"),
    ("ewr", "Secaucus, NJ (US)"),
    ("eze", "Ezeiza, Argentina"),
    ("fra", "Frankfurt, Germany"),
    ("gdl", "Guadalajara, Mexico"),
    ("gig", "Rio de Janeiro, Brazil"),
    ("gru", "Sao Paulo, Brazil"),
    ("hkg", "Hong Kong, Hong Kong"),
    ("iad", "Ashburn, Virginia (US)"),
    ("jnb", "Johannesburg, South Africa"),
    ("lax", "Los Angeles, California (US)"),
    ("lhr", "London, United Kingdom"),
    ("mad", "Madrid, Spain"),
    ("mia", "Miami, Florida (US)"),
    ("nrt", "Tokyo, Japan"),
    ("ord", "Chicago, Illinois (US)"),
    ("otp", "Bucharest, Romania"),
    ("phx", "Phoenix, Arizona (US)"),
    ("qro", "Querétaro, Mexico"),
    ("scl", "Santiago, Chile"),
    ("sea", "Seattle, Washington (US)"),
    ("sin", "Singapore, Singapore"),
    ("sjc", "San Jose, California (US)"),
    ("syd", "Sydney, Australia"),
    ("waw", "Warsaw, Poland"),
    ("yul", "Montreal, Canada"),
    ("yyz", "Toronto, Canada"),
];

/// Region groups that stand for several codes in region preference lists
/// (`Fly-Prefer-Region: us`, `fly-replay: region=eu`), by the regions' locations: `us` (the
/// United States), `na` (North America), `sa` (South America), `eu` (Europe), `ap` (Asia
/// Pacific), `af` (Africa).
pub const REGION_ALIASES: &[(&str, &[&str])] = &[
    (
        "us",
        &[
            "atl", "bos", "den", "dfw", "ewr", "iad", "lax", "mia", "ord", "phx", "sea", "sjc",
        ],
    ),
    (
        "na",
        &[
            "atl", "bos", "den", "dfw", "ewr", "iad", "lax", "mia", "ord", "phx", "sea", "sjc",
            "yul", "yyz", "gdl", "qro",
        ],
    ),
    ("sa", &["bog", "eze", "gig", "gru", "scl"]),
    (
        "eu",
        &["ams", "arn", "cdg", "fra", "lhr", "mad", "otp", "waw"],
    ),
    ("ap", &["bom", "hkg", "nrt", "sin", "syd"]),
    ("af", &["jnb"]),
];

/// Whether `token` of a preference list (a region code or an alias, any case) names `region`.
pub fn region_matches(token: &str, region: &str) -> bool {
    token.eq_ignore_ascii_case(region)
        || REGION_ALIASES
            .iter()
            .find(|(alias, _)| token.eq_ignore_ascii_case(alias))
            .is_some_and(|(_, codes)| codes.contains(&region))
}

pub fn is_known_region(code: &str) -> bool {
    REGIONS.iter().any(|(c, _)| *c == code)
}

pub fn region_name(code: &str) -> Option<&'static str> {
    REGIONS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// `GET /v1/regions` response item (Aloft extension).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegionInfo {
    pub code: String,
    pub name: String,
}

#[cfg(test)]
mod alias_tests {
    use super::*;

    #[test]
    fn aliases_name_only_known_regions_and_match_by_group() {
        for (alias, codes) in REGION_ALIASES {
            assert!(!is_known_region(alias), "{alias} is also a region code");
            for c in *codes {
                assert!(is_known_region(c), "{alias}: unknown region {c}");
            }
        }
        assert!(region_matches("EU", "fra") && region_matches("us", "iad"));
        assert!(region_matches("na", "yyz") && !region_matches("us", "yyz"));
        assert!(region_matches("gru", "gru") && !region_matches("eu", "gru"));
    }
}
