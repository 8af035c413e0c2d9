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
