//! Records the store tests share.

use aloft_store::AppRecord;

/// An app record named `name` in the personal org with the given `status`.
pub fn app_with_status(name: &str, status: &str) -> AppRecord {
    AppRecord {
        id: format!("{name:0<16}"),
        name: name.into(),
        org_slug: "personal".into(),
        network: "default".into(),
        status: status.into(),
        created_at: "2024-01-01T00:00:00Z".into(),
    }
}
