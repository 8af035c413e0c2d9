//! OCI images on disk, for the agent (which stores and unpacks them) and the client (which reads
//! a builder's image layout and ships it).
//!
//! - [`digest`]: `sha256:<hex>` digests, hashing bytes and readers.
//! - [`manifest`]: the JSON documents (index, manifest, image config) in their OCI and Docker v2
//!   schema2 forms, parsed into small typed structs.
//! - [`layout`]: an OCI image layout directory (what `buildah push … oci:DIR` writes) → [`Image`].
//! - [`store`]: [`ContentStore`], the agent's content-addressed blob store with resumable uploads
//!   and counters; [`unpack`] turns its layer blobs into overlayfs lower directories,
//!   [`prepared`] records a ready image ([`PreparedImage`]), [`gc`] removes what no kept image
//!   needs, [`usage`] adds up sizes.
//!
//! We use our own serde structs rather than the `oci-spec` crate: we read about a dozen fields,
//! must accept Docker's schema2 media types next to OCI's, and `oci-spec` brings builder/getter
//! derive machinery (`derive_builder`, `getset`, `strum`) whose compile time buys us nothing here.
//!
//! **Invariant:** no HTTP, no SQLite, no async: synchronous file IO only, called by the agent
//! from blocking threads.

pub mod digest;
pub mod error;
pub mod gc;
pub mod layout;
pub mod manifest;
pub mod prepared;
pub mod store;
pub mod unpack;
pub mod usage;

pub use digest::Digest;
pub use error::{OciError, OciResult};
pub use gc::GcReport;
pub use layout::Image;
pub use manifest::{ImageConfig, LayerDescriptor};
pub use prepared::{ImageProcessConfig, PreparedImage};
pub use store::{ContentStore, StoreCounters};
