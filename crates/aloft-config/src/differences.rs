//! # Differences from flyctl
//!
//! The rule: a config that flyctl and Fly's API take, Aloft takes too. Where Aloft checks more
//! than flyctl, the check is a **warning** unless the config cannot run on Aloft; then it is an
//! **error** that says so. Nothing accepted is dropped silently: what Aloft (or flyctl) ignores
//! draws a warning. Checked against flyctl's `internal/appconfig` (validation, patches,
//! top-level checks, machine conversion) and `shared/spec/flyctl-behaviour.md`.
//!
//! This module holds only this page.
//!
//! ## Where Aloft differs
//!
//! | Rule | flyctl | Aloft | Why |
//! |---|---|---|---|
//! | Group names: 1–63 ASCII letters, digits, `-`, `_` | no check | error | The agent runs groups under this rule only (deploy and scale refuse others); the name is a DNS label in `<group>.process.<app>.internal` and a metadata value. |
//! | Group names with `_`, capitals, or `-` at an end | no check | warning | They resolve in Aloft's DNS (which takes `_` and ignores case), but some clients refuse them as hostnames. |
//! | Reserved group names (`fly_app_release_command`, `fly_app_console`, `fly_app_test_machine_command`, any `fly_app_*`) | no check | error | The platform's own machines use them; a user group by that name would be hidden from deploy, scale and status. |
//! | `processes` naming an undefined group in `[[vm]]`, `[[mounts]]`, `[checks]`, `[[files]]`, `[[metrics]]` | no check (the entry applies to nobody) | warning | A typo that makes a section apply to nobody is worth saying; the config still runs. (In services and `[[restart]]` both refuse it.) |
//! | More than one `[[mounts]]` for a group | taken, only the first is mounted (refused only by `deploy --process-groups`) | warning; the first is mounted | A machine takes one volume. |
//! | Legacy `[[processes]]` entries: other keys than `name`/`command`, no `name`, not a table | dropped silently | warning, dropped | Nothing accepted is silently ignored. |
//! | `[env]` values that are lists or tables | written as Go `%v` text | the same text, with a warning | Almost always a slip. |
//! | No `internal_port` in `[http_service]` / `[[services]]`; a port entry without `port` or `start_port`/`end_port`; `start_port` above `end_port`; ports outside 1–65535 | passed on; Fly's API refuses the machine at deploy | error | A service cannot forward to no port; Aloft says so before the deploy. |
//! | Service `protocol` other than `tcp`/`udp`; concurrency `type` other than `connections`/`requests` | passed on to Fly's API | error | The proxy knows only these. |
//! | `[[mounts]]` without `source` or `destination`, or a relative `destination` | passed on to Fly's API | error | A volume needs a name, and the runtime mounts at absolute paths only. |
//! | `[[files]]` with a relative `guest_path` or no content (`local_path`, `secret_name`, `raw_value`) | passed on | error | Nothing to write, or nowhere to write it. |
//! | `[[metrics]]` without `port`; `[[statics]]` without `guest_path` or `url_prefix` | passed on (`statics` fields are marked required but not checked) | error | Nothing to scrape or serve. |
//! | `[[vm]]` `cpu_kind` other than `shared`/`performance`, `persist_rootfs` other than `never`/`restart`/`always`, a guest outside the CPU/memory rules of its kind | passed on; Fly's API refuses the machine | error | The same rules as Fly's API (`aloft platform vm-sizes`), checked before the deploy. |
//! | `kill_signal` not one of the Machines API's signals | passed on; Fly's API refuses it | error | As Fly's API; Aloft also takes lower case and names without `SIG`. |
//! | Negative numbers and durations (`kill_timeout`, `swap_size_mb`, `min_machines_running`, concurrency limits, `max_unavailable`, check timings) | parsed (Go durations are signed) | error | Aloft's durations and counts are unsigned; none of these means anything below zero. |
//! | Files over 4 MiB, tables or lists nested over 64 levels, YAML aliases expanding past the value limit | no limit | error | A bad file must not stall or crash the reader (`limits`). |
//! | Unknown keys and sections | ignored | warning with a "did you mean" hint | A misspelt key is otherwise a setting silently lost. |
//! | `[build]` `builder`, `buildpacks`, `builtin`, `settings`, `compose` | builds with them | warning; deploy refuses | Aloft builds Dockerfiles (buildah) or deploys images only. |
//! | `machine_config`, `container(s)`, `machine_checks` | multi-container and test machines | warning, ignored | Not supported by Aloft yet. |
//!
//! ## Where Aloft takes more than flyctl
//!
//! - `[http_service]`/`[[services]]` without `processes` when `[processes]` defines a single
//!   group (flyctl wants `processes` as soon as `[processes]` exists).
//! - Numbers written as strings, `"true"`/`"false"` for booleans, bare-digit strings for
//!   durations (read in the field's unit), numbers and booleans where a string is expected.
//! - `auto_stop_machines = "true"`/`"false"`; concurrency strings with spaces (`"20, 25"`).
//!
//! ## Refused by both (not differences)
//!
//! Syntax errors (including duplicate keys); values of the wrong type; commands that do not
//! split into words (`[processes]`, `release_command`, `console_command`); an unknown deploy
//! strategy; canary with mounts; top-level checks without a valid `type`, with `interval` under
//! 2 s or `timeout` over 60 s, or (in the list form) without a `name`; mount sizes under 1 GB,
//! `snapshot_retention` outside 1–60, auto-extend settings out of range or incomplete; an unknown
//! VM `size`; `memory = 0`; an unknown or missing restart `policy`; an unknown
//! `auto_stop_machines` string; an unreadable legacy concurrency string; a build `compression`
//! other than `gzip`/`zstd`; undefined groups in services and `[[restart]]`; services without
//! `processes` when several groups exist.
//!
//! ## Same meaning, spelled as flyctl spells it
//!
//! - In `[[vm]]`, an empty string or a zero count (`size = ""`, `cpus = 0`, `memory = ""`,
//!   `memory_mb = 0`) is unset, as flyctl overlays only the fields that are set.
//! - Sizes take every spelling docker/go-units takes: a unit letter `k`/`m`/`g`/`t`/`p`, an
//!   optional `i`, an optional `b`, any case (`"2Gi"`, `"512MB"`, `"1 gb"`).
//! - Fractional durations drop the fraction before the unit applies, as Go converts them.
//! - Check `headers` may be a table or a list of `{ name, value }` tables.
