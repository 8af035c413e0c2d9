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
/// Stamped by the agent on a machine created by a `scale count` operation: `<operation>:<n>`,
/// so an interrupted operation run again never creates the same machine twice.
pub const SCALE_SLOT: &str = "aloft_scale_slot";
/// Stamped by the agent when it starts a machine: the names (comma-separated, sorted) of the
/// app secrets in its environment. Values never appear in a machine's config.
pub const SECRETS: &str = "aloft_secrets";
/// Stamped on a machine restarted by a secrets operation: the operation's release id, so an
/// interrupted operation run again never restarts the same machine twice.
pub const SECRETS_RELEASE: &str = "aloft_secrets_release";

/// Stamped on a canary machine (flyctl's key): a temporary machine of the new release that
/// must become healthy before any machine of its group is updated; destroyed afterwards.
pub const CANARY: &str = "fly_canary";
/// Stamped on a blue-green deploy's green machines (flyctl's key): the release id here.
pub const BLUEGREEN_TAG: &str = "fly_bluegreen_deployment_tag";
/// Stamped by the agent on a green machine: the id of the blue machine it replaces, so an
/// interrupted blue-green deploy run again creates each green once.
pub const GREEN_FOR: &str = "aloft_green_for";
/// The group of a release command's temporary machine (one of [`RESERVED_GROUPS`]).
pub const RELEASE_COMMAND_GROUP: &str = "fly_app_release_command";

/// Scale operations are kept with an app's releases (they share events, `follow` and resumption
/// after a restart) under versions above this, so deploys keep their own 1, 2, 3… as on Fly;
/// scale operation `n` is version `SCALE_VERSION_BASE + n`.
pub const SCALE_VERSION_BASE: u64 = 1 << 40;

/// The group of an `aloft console` machine (one of [`RESERVED_GROUPS`]): destroyed by the agent
/// when its console session ends, and at start-up when an agent finds one left.
pub const CONSOLE_GROUP: &str = "fly_app_console";

/// Group names the platform uses for its own machines; user groups may not take them.
pub const RESERVED_GROUPS: &[&str] = &[
    "fly_app_release_command",
    "fly_app_console",
    "fly_app_test_machine_command",
];

/// The group of apps without `[processes]`.
pub const DEFAULT_GROUP: &str = "app";
