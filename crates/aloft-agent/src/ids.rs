//! Identifiers as Fly forms them: machine ids (14 lowercase hex), app ids (16 lowercase
//! alphanumerics), volume and snapshot ids (`vol_…`, `vs_…`), machine names (`adjective-noun-NNNN`), versions (ULIDs), lease nonces,
//! request ids (`<ULID>-<region>`), and the validation of user-chosen names.

use rand::Rng;

const ADJECTIVES: &[&str] = &[
    "aged",
    "ancient",
    "autumn",
    "billowing",
    "bitter",
    "black",
    "blue",
    "bold",
    "broken",
    "cold",
    "cool",
    "crimson",
    "damp",
    "dark",
    "dawn",
    "delicate",
    "divine",
    "dry",
    "empty",
    "falling",
    "floral",
    "fragrant",
    "frosty",
    "green",
    "hidden",
    "holy",
    "icy",
    "late",
    "lingering",
    "little",
    "lively",
    "long",
    "misty",
    "morning",
    "muddy",
    "nameless",
    "old",
    "patient",
    "polished",
    "proud",
    "purple",
    "quiet",
    "red",
    "restless",
    "rough",
    "shy",
    "silent",
    "small",
    "snowy",
    "solitary",
    "sparkling",
    "spring",
    "still",
    "summer",
    "throbbing",
    "twilight",
    "wandering",
    "weathered",
    "white",
    "wild",
    "winter",
    "wispy",
    "withered",
    "young",
];

const NOUNS: &[&str] = &[
    "bird",
    "breeze",
    "brook",
    "bush",
    "butterfly",
    "cherry",
    "cloud",
    "darkness",
    "dawn",
    "dew",
    "dream",
    "dust",
    "feather",
    "field",
    "fire",
    "firefly",
    "flower",
    "fog",
    "forest",
    "frog",
    "frost",
    "glade",
    "glitter",
    "grass",
    "haze",
    "hill",
    "lake",
    "leaf",
    "meadow",
    "moon",
    "morning",
    "mountain",
    "night",
    "paper",
    "pine",
    "pond",
    "rain",
    "resonance",
    "river",
    "sea",
    "shadow",
    "shape",
    "silence",
    "sky",
    "smoke",
    "snow",
    "snowflake",
    "sound",
    "star",
    "sun",
    "sunset",
    "surf",
    "thunder",
    "tree",
    "violet",
    "voice",
    "water",
    "waterfall",
    "wave",
    "wildflower",
    "wind",
    "wood",
];

/// A machine id: 14 lowercase hex characters.
pub fn machine_id() -> String {
    let bytes: [u8; 7] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A volume id, as Fly's: `vol_` and 16 lowercase alphanumerics.
pub fn volume_id() -> String {
    format!("vol_{}", random_alnum(16))
}

/// A volume snapshot id: `vs_` and 16 lowercase alphanumerics.
pub fn snapshot_id() -> String {
    format!("vs_{}", random_alnum(16))
}

/// An app id: 16 lowercase alphanumerics.
pub fn app_id() -> String {
    random_alnum(16)
}

/// A lease nonce: 12 lowercase hex characters.
pub fn lease_nonce() -> String {
    let bytes: [u8; 6] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A machine name such as `aged-thunder-7371`.
pub fn machine_name() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{}-{}-{:04}",
        ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())],
        NOUNS[rng.gen_range(0..NOUNS.len())],
        rng.gen_range(0..10000)
    )
}

/// A new machine version id (ULID, 26 characters).
pub fn version() -> String {
    ulid::Ulid::new().to_string()
}

/// The `fly-request-id` header value.
pub fn request_id(region: &str) -> String {
    format!("{}-{region}", ulid::Ulid::new())
}

fn random_alnum(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// Why an app name is refused, or `None` when it is fine: 1–63 of `a-z 0-9 -`, starting with
/// a letter or digit and not ending with `-` (it becomes a DNS label).
pub fn app_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some(format!("app name {name:?} must be 1 to 63 characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some(format!(
            "app name {name:?} may contain only lowercase letters, digits and dashes"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some(format!(
            "app name {name:?} may not start or end with a dash"
        ));
    }
    None
}

/// Why a machine name is refused, or `None`: 1–63 of `A-Z a-z 0-9 - _ .`.
pub fn machine_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some(format!(
            "machine name {name:?} must be 1 to 63 characters long"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some(format!(
            "machine name {name:?} may contain only letters, digits, '-', '_' and '.'"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let id = machine_id();
        assert_eq!(id.len(), 14);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let app = app_id();
        assert_eq!(app.len(), 16);
        assert!(app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let name = machine_name();
        let parts: Vec<&str> = name.split('-').collect();
        assert_eq!(parts.len(), 3, "{name}");
        assert_eq!(parts[2].len(), 4);
        assert_eq!(version().len(), 26);
        assert!(request_id("gru").ends_with("-gru"));
    }

    #[test]
    fn name_rules() {
        assert!(app_name_problem("my-app-1").is_none());
        assert!(app_name_problem("My_App").is_some());
        assert!(app_name_problem("-x").is_some());
        assert!(app_name_problem("").is_some());
        assert!(machine_name_problem("web.1_a-b").is_none());
        assert!(machine_name_problem("has space").is_some());
    }
}
