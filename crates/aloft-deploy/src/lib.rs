//! Deploy and scale for Aloft: planning (pure), the release executor, and app images.
//!
//! * [`spec`] — what a release is ([`ReleaseSpec`]: one flattened machine config per process
//!   group) and the [`Release`] record with its frozen decisions; [`stored`] — its persisted
//!   form, a storage format kept apart from the wire.
//! * [`plan`] — deploy planning (flyctl-behaviour §3, §2.4) and the convergent step the engine
//!   runs; [`scale`] — `scale count|vm|memory|show` planning (§4).
//! * [`engine`] — carries out a release over the narrow [`DeployTarget`] trait the agent
//!   implements; resumable after a crash; reports typed [`DeployEvent`]s.
//! * [`image`] — content-addressed tarballs of an app directory (the process runtime's image).
//! * [`messages`] — what clients and the agent exchange about releases and scale (deploy
//!   request, scale preview, destroys to confirm, release event records): data only, the routes
//!   are `aloft_api::routes`.
//!
//! Invariant: knows nothing of HTTP or SQLite (see ARCHITECTURE.md).

pub mod engine;
pub mod events;
pub mod image;
pub mod messages;
pub mod plan;
pub mod scale;
pub mod spec;
pub mod stored;

pub use engine::{run_release, DeployTarget, EngineError, TargetError};
pub use events::DeployEvent;
pub use spec::{
    DeployOptions, FrozenPlan, GuestSet, Release, ReleaseSpec, ReleaseStatus, ScaleWork,
    SecretsRestart, SlotCreate, Strategy,
};
