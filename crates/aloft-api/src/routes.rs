//! Paths of the agent's routes, for client and server alike: the Machines API routes the
//! client calls and Aloft's own routes below, with the error statuses they answer with.
//! (The agent registers its handlers under the matching `{app}`/`{id}` templates.)
//!
//! Aloft's extensions to the Machines API; errors use the API's usual `{"error", "status"}` body
//! ([`crate::ErrorResponse`]). Bodies are in [`crate::images`], [`crate::groups`],
//! [`crate::logs`] and [`crate::proxy`]; those made of a deploy's own types (release spec,
//! events, plans) are in `aloft_deploy::messages`, next to those types.
//!
//! | route | body | response |
//! |---|---|---|
//! | `GET /v1/apps/{app}/releases` | – | `200 [Release]`, newest first |
//! | `GET /v1/apps/{app}/releases/{version}` | – | `200 Release`, `404` |
//! | `POST /v1/apps/{app}/releases` | `CreateReleaseRequest` | `201 Release` (the deploy runs in the agent, also if the client goes away, and resumes after an agent restart); `409` with status [`STATUS_CONFIRMATION_REQUIRED`] and a `ConfirmationRequired` body when machines would be destroyed that the request did not confirm; `422` bad spec (unknown `--process-groups` name…); `404` unknown image digest |
//! | `POST /v1/apps/{app}/releases?dry_run=true` | `CreateReleaseRequest` | `200 DeployPlan` as the agent would freeze it; nothing recorded |
//! | `POST /v1/apps/{app}/releases/rollback` | `RollbackRequest` | `201 Release` with `rollback_of` set: an earlier complete deploy's spec (every group's config), image and per-group counts deployed as a new release, as a deploy is (strategy, checks, resumable); `200 DeployPlan` with `?dry_run=true`; `409` [`STATUS_CONFIRMATION_REQUIRED`] when surplus machines would be destroyed unconfirmed; `404` no such release; `422` the release did not complete, is live already, or its image is no longer kept |
//! | `GET /v1/apps/{app}/releases/{version}/events?follow=true&after=N` | – | `200` NDJSON of `ReleaseEventRecord` with `seq > N`; with `follow` the stream stays open until the release reaches a terminal status (the last line is a `finished` event) |
//! | `PUT /v1/apps/{app}/images/{sha256hex}` | the tar bytes (`application/x-tar`) | `201` [`crate::images::ImageInfo`] stored; `200` already present; `400` digest mismatch |
//! | `GET`/`HEAD /v1/apps/{app}/images/{sha256hex}` | – | `200` [`crate::images::ImageInfo`] / `404` |
//! | `HEAD /v1/apps/{app}/blobs/{digest}` | – | `200` with `Content-Length` when the OCI blob (`sha256:<hex>`) is stored, `404` when it must be uploaded |
//! | `GET /v1/apps/{app}/blobs/{digest}/upload` | – | `200` [`crate::images::UploadOffset`]: how many bytes of an interrupted upload the agent has (0 when none) |
//! | `PATCH /v1/apps/{app}/blobs/{digest}?offset=N` | bytes (`application/octet-stream`) | `202` [`crate::images::UploadOffset`] after appending at `N`; `409` (status `wrong_offset`) when `N` is not where the upload is (`GET …/upload` tells); `413` past the size limit; a cut-off body keeps what arrived |
//! | `PUT /v1/apps/{app}/blobs/{digest}?size=S` | optional last bytes | `201` [`crate::images::BlobInfo`] committed (sha256 and size verified), `200` already present; `400` digest or size mismatch (nothing stored, upload again) |
//! | `PUT /v1/apps/{app}/manifests/{digest}` | the manifest JSON | `201` [`crate::images::OciImageInfo`]: verified, every layer unpacked, recorded for the app; `400` digest mismatch, bad manifest, or blobs missing (named) |
//! | `GET /v1/apps/{app}/oci-images` | – | `200` [`crate::images::OciImageList`], newest first |
//! | `GET /v1/apps/{app}/oci-images/{digest}` | – | `200` [`crate::images::OciImageInfo`] / `404` |
//! | `GET /v1/images/stats` | – | `200` [`crate::images::BlobStats`] since the agent started |
//! | `POST /v1/images/gc` | – | `200` [`crate::images::ImageGcReport`]: removes OCI images, blobs and layers that no live machine and none of each app's last `--keep-releases` (default 5) deploys use (also done after each release) |
//! | `POST /v1/apps/{app}/scale` | [`crate::groups::ScaleCountRequest`] | `201 Release` with `scale` set: the agent records the counts and the frozen machine changes in one transaction and carries them out like a deploy (resumable, events as a release's); `200 ScalePreview` with `dry_run` or when nothing is to change (the counts are still recorded then); `409` while a release of the app runs; `422` unknown group, bad count, over the agent's limit, no complete release |
//! | `POST /v1/apps/{app}/scale/guest` | [`crate::groups::ScaleGuestRequest`] | `201 Release` with `scale.guest` set: the frozen list of machines and their new guests (machines already at it left out), carried out by the agent one machine at a time, each started one waited on until healthy (resumable, events as a release's); `200 GuestPlan` with `dry_run` or when no machine is to change; `409` while a release of the app runs; `422` unknown or missing group, no machine in it, bad size, memory not valid for the size, memory over what this host can give |
//! | `GET /v1/apps/{app}/process_groups` | – | `200` [`crate::groups::GroupCounts`] (remembered desired counts) |
//! | `PUT /v1/apps/{app}/process_groups/{group}/count` | [`crate::groups::SetCount`] | `200` [`crate::groups::GroupCounts`] |
//! | `GET /v1/apps/{app}/logs?group=G&machine=ID&region=R&follow=true&limit=N` | – | `200` NDJSON of [`crate::LogLine`] (the last `limit` lines, then new ones while `follow`) |
//! | `GET /v1/apps/{app}/certificates` | – | `200 [`[`crate::certs::Certificate`]`]` by hostname; `404` unknown app |
//! | `POST /v1/apps/{app}/certificates` | [`crate::certs::AddCertificate`] | `201` [`crate::certs::Certificate`] added (or `200` replaced, same app): served from the next TLS handshake on; `400` invalid hostname (syntax, length, IP address) or PEM (bad, key not the certificate's, only one of the two); `404` unknown app; `409` (status `hostname_taken`) the hostname is another app's, named |
//! | `GET /v1/apps/{app}/certificates/{hostname}` | – | `200` [`crate::certs::Certificate`]; `404` |
//! | `DELETE /v1/apps/{app}/certificates/{hostname}` | – | `200` [`crate::certs::Certificate`] removed (the app no longer answers at the hostname); `404` |
//! | `GET /v1/proxy` | – | `200 [`[`crate::ProxyPort`]`]`; `404` when the agent runs without a proxy |
//! | `GET /v1/regions` | – | `200 [`[`crate::regions::RegionInfo`]`]` |
//! | `GET /v1/apps/{app}/ips` | – | `200 [`[`crate::network::IpAddress`]`]`, oldest first |
//! | `POST /v1/apps/{app}/ips` | [`crate::network::AllocateIpRequest`] | `201` [`crate::network::IpAddress`]; `422` a kind this agent cannot give (dedicated IPv4; a public address the host lacks; a private one without the container network; a region other than `global`) |
//! | `DELETE /v1/apps/{app}/ips/{address}` | – | `200` the released [`crate::network::IpAddress`]; `404` not the app's |
//! | `GET /v1/apps/{app}/dns?name=N&type=T` | – | `200` [`crate::network::DnsAnswer`] as a machine of the app sees it; `422` bad name or type |
//! | `POST /v1/tokens` | [`crate::tokens::CreateTokenRequest`] | `201` [`crate::tokens::CreatedToken`], the only answer that holds the token; `400` a bad name, an expiry of 0 or over 100 years, a deploy token without an app, an org token with one; `422` an unknown kind or an expiry that is no Go duration; `404` unknown app. Org tokens only (`403` for others) |
//! | `GET /v1/tokens` | – | `200 [`[`crate::tokens::TokenInfo`]`]`, oldest first, revoked ones included, never a secret. Org tokens only |
//! | `DELETE /v1/tokens/{id}` | – | `200` [`crate::tokens::TokenInfo`] revoked (its next use gets `401`); `404` unknown id; `400` the data-dir token (rotate it by replacing `<data-dir>/token` and restarting the agent). Org tokens only |
//! | `GET /v1/apps/{app}/events?limit=N` | – | `200 [`[`crate::tokens::AppEvent`]`]`, newest first: every request that changed (or tried to change) the app, with the token's name, method, path and status. Reads are not recorded (they only update the token's `last_used_at`) |
//! | `GET /v1/apps/{app}/secrets` | – | `200 [`[`crate::secrets::AppSecret`]`]` by name: names, digests, status, dates — never values |
//! | `POST /v1/apps/{app}/secrets` | [`crate::secrets::UpdateSecrets`] | `200` [`crate::secrets::SecretsUpdated`]: every value set (or unset, `null`) in one transaction, then, unless `stage`, the app's started machines restarted one at a time (a release with `scale.secrets`); `400` a bad or reserved name, a NUL in a value; `413` a value or the app's secrets too large, too many; `409` while a release of the app runs (nothing changed) |
//! | `POST /v1/apps/{app}/secrets/deploy` | – | `200` [`crate::secrets::SecretsUpdated`]: staged secrets marked deployed and the started machines restarted; `409` while a release runs |
//! | `GET /v1/apps/{app}/machines/{id}/files?path=P` | – | `200` a tar of `P` ([`crate::copy`]); `400` a path with `..`, not a file or directory; `404` no such path; `412` the machine does not run; `413` over [`crate::copy::MAX_COPY_BYTES`] |
//! | `PUT /v1/apps/{app}/machines/{id}/files?path=P` | a tar | `200` [`crate::copy::CopiedIn`]; `400` a bad path or tar entry (`..`, devices, several top-level entries for a new name); `404` the parent of `P` does not exist; `412`; `413` |
//! | `GET /v1/apps/{app}/machines/{id}/console?cmd=C&cols=N&rows=N&term=T` | – (a WebSocket upgrade) | `101` then a terminal session ([`crate::console`]); `400` bad query or not an upgrade; `412` the machine does not run; `429` too many sessions on the machine; `503` too many sessions on the agent |
//!
//! Every route needs a token (`401` when it is missing, unknown, expired or revoked, the message
//! says which); a token whose kind does not allow the route gets `403` naming the token and what
//! it may do ([`crate::tokens::TokenKind`]).

/// `status` of the 409 error body when a blob `PATCH` is not at the upload's offset.
pub const STATUS_WRONG_OFFSET: &str = "wrong_offset";

/// `status` of the 409 error body when a hostname is another app's.
pub const STATUS_HOSTNAME_TAKEN: &str = "hostname_taken";

/// `status` of the 409 error body when a deploy would destroy unconfirmed machines.
pub const STATUS_CONFIRMATION_REQUIRED: &str = "confirmation_required";

// ---- Machines API

pub fn apps() -> String {
    "/v1/apps".to_string()
}
pub fn app(app: &str) -> String {
    format!("/v1/apps/{app}")
}
pub fn machines(app: &str) -> String {
    format!("/v1/apps/{app}/machines")
}
pub fn machine(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}")
}
pub fn machine_start(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}/start")
}
pub fn machine_stop(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}/stop")
}
pub fn machine_wait(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}/wait")
}
pub fn machine_metadata(app: &str, id: &str, key: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}/metadata/{key}")
}
/// `GET` the app's volumes, `POST` a new one ([`crate::volumes`]).
pub fn volumes(app: &str) -> String {
    format!("/v1/apps/{app}/volumes")
}
/// `GET`, `POST` (update) or `DELETE` one volume.
pub fn volume(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/volumes/{id}")
}
/// `PUT`: grow a volume (online).
pub fn volume_extend(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/volumes/{id}/extend")
}
/// `GET` a volume's snapshots, `POST` a new one.
pub fn volume_snapshots(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/volumes/{id}/snapshots")
}

// ---- Aloft's own routes

pub fn certificates(app: &str) -> String {
    format!("/v1/apps/{app}/certificates")
}
pub fn certificate(app: &str, hostname: &str) -> String {
    format!("/v1/apps/{app}/certificates/{hostname}")
}
pub fn proxy() -> String {
    "/v1/proxy".to_string()
}
pub fn regions() -> String {
    "/v1/regions".to_string()
}
pub fn releases(app: &str) -> String {
    format!("/v1/apps/{app}/releases")
}
pub fn release(app: &str, version: u64) -> String {
    format!("/v1/apps/{app}/releases/{version}")
}
pub fn release_rollback(app: &str) -> String {
    format!("/v1/apps/{app}/releases/rollback")
}
pub fn release_events(app: &str, version: u64) -> String {
    format!("/v1/apps/{app}/releases/{version}/events")
}
/// `hex` is the sha256 hex without the `sha256:` prefix.
pub fn image(app: &str, hex: &str) -> String {
    format!("/v1/apps/{app}/images/{hex}")
}
/// An OCI blob; `digest` is `sha256:<hex>`.
pub fn blob(app: &str, digest: &str) -> String {
    format!("/v1/apps/{app}/blobs/{digest}")
}
pub fn blob_upload(app: &str, digest: &str) -> String {
    format!("/v1/apps/{app}/blobs/{digest}/upload")
}
pub fn manifest(app: &str, digest: &str) -> String {
    format!("/v1/apps/{app}/manifests/{digest}")
}
pub fn oci_images(app: &str) -> String {
    format!("/v1/apps/{app}/oci-images")
}
pub fn oci_image(app: &str, digest: &str) -> String {
    format!("/v1/apps/{app}/oci-images/{digest}")
}
pub fn image_stats() -> String {
    "/v1/images/stats".to_string()
}
pub fn image_gc() -> String {
    "/v1/images/gc".to_string()
}
pub fn process_groups(app: &str) -> String {
    format!("/v1/apps/{app}/process_groups")
}
pub fn group_count(app: &str, group: &str) -> String {
    format!("/v1/apps/{app}/process_groups/{group}/count")
}
pub fn scale(app: &str) -> String {
    format!("/v1/apps/{app}/scale")
}
pub fn scale_guest(app: &str) -> String {
    format!("/v1/apps/{app}/scale/guest")
}
pub fn logs(app: &str) -> String {
    format!("/v1/apps/{app}/logs")
}

// ---- API tokens and app events

pub fn tokens() -> String {
    "/v1/tokens".to_string()
}
pub fn token(id: &str) -> String {
    format!("/v1/tokens/{id}")
}
pub fn app_events(app: &str) -> String {
    format!("/v1/apps/{app}/events")
}

// ---- the private network

pub fn ips(app: &str) -> String {
    format!("/v1/apps/{app}/ips")
}
pub fn ip(app: &str, address: &str) -> String {
    format!("/v1/apps/{app}/ips/{address}")
}
pub fn dns(app: &str) -> String {
    format!("/v1/apps/{app}/dns")
}

// ---- secrets

pub fn secrets(app: &str) -> String {
    format!("/v1/apps/{app}/secrets")
}
pub fn secrets_deploy(app: &str) -> String {
    format!("/v1/apps/{app}/secrets/deploy")
}

// ---- exec and ps

pub fn machine_exec(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}/exec")
}
pub fn machine_ps(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}/ps")
}

// ---- console (a WebSocket: see `crate::console`)

pub fn machine_console(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}/console")
}

// ---- files (`aloft machine cp`: see `crate::copy`)

pub fn machine_files(app: &str, id: &str) -> String {
    format!("/v1/apps/{app}/machines/{id}/files")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_the_templates_the_agent_registers() {
        assert_eq!(
            group_count("a", "web"),
            "/v1/apps/a/process_groups/web/count"
        );
        assert_eq!(
            machine_metadata("a", "m1", "k"),
            "/v1/apps/a/machines/m1/metadata/k"
        );
        assert_eq!(release_events("a", 3), "/v1/apps/a/releases/3/events");
        assert_eq!(image("a", "ab12"), "/v1/apps/a/images/ab12");
        assert_eq!(
            volume_extend("a", "vol_1"),
            "/v1/apps/a/volumes/vol_1/extend"
        );
    }
}
