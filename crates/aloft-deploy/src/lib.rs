//! Deploy and scale for Aloft: planning (pure), the release executor, and app images.
//!
//! * [`spec`] — what a release is ([`ReleaseSpec`]: one flattened machine config per process
//!   group) and the persisted [`Release`] record with its frozen decisions.
//! * [`plan`] — deploy planning (flyctl-behaviour §3, §2.4) and the convergent step the engine
//!   runs; [`scale`] — `scale count|vm|memory|show` planning (§4).
//! * [`engine`] — carries out a release over the narrow [`DeployTarget`] trait the agent
//!   implements; resumable after a crash; reports typed [`DeployEvent`]s.
//! * [`image`] / [`dockerfile`] — content-addressed tarballs of an app directory.
//! * [`wire`] — the agent routes and JSON bodies for releases, images and group counts.
//!
//! Invariant: knows nothing of HTTP or SQLite (see ARCHITECTURE.md).

pub mod dockerfile;
pub mod engine;
pub mod events;
pub mod image;
pub mod plan;
pub mod scale;
pub mod spec;
pub mod wire;

pub use engine::{run_release, DeployTarget, EngineError, TargetError};
pub use events::DeployEvent;
pub use spec::{
    DeployOptions, FrozenPlan, GuestSet, Release, ReleaseSpec, ReleaseStatus, ScaleWork,
    SlotCreate, Strategy,
};
