//! Metadata keys with platform meaning (flyctl-behaviour §5.1).

pub const PLATFORM_VERSION: &str = "fly_platform_version";
/// Value of [`PLATFORM_VERSION`] on machines managed by deploy/scale.
pub const PLATFORM_VERSION_V2: &str = "v2";
pub const PROCESS_GROUP: &str = "fly_process_group";
pub const LEGACY_PROCESS_GROUP: &str = "process_group";
pub const RELEASE_ID: &str = "fly_release_id";
pub const RELEASE_VERSION: &str = "fly_release_version";
pub const FLYCTL_VERSION: &str = "fly_flyctl_version";
pub const ROLE: &str = "role";

/// Group names the platform uses for its own machines; user groups may not take them.
pub const RESERVED_GROUPS: &[&str] = &[
    "fly_app_release_command",
    "fly_app_console",
    "fly_app_test_machine_command",
];

/// The group of apps without `[processes]`.
pub const DEFAULT_GROUP: &str = "app";
