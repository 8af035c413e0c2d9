//! [`OciError`]: everything that can go wrong reading, storing or unpacking an image, each
//! message naming the digest, file or entry concerned and, where there is one, what to do.

use std::path::PathBuf;

use crate::digest::{BadDigest, Digest};

pub type OciResult<T> = Result<T, OciError>;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    BadDigest(#[from] BadDigest),
    #[error(
        "digest mismatch: expected {expected}, the bytes received hash to {actual}; nothing was stored, upload the blob again"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: declared {declared} bytes, received {actual}; nothing was stored, upload the blob again")]
    SizeMismatch {
        digest: Digest,
        declared: u64,
        actual: u64,
    },
    #[error("upload of {digest} is at offset {current}, not {requested}: resume from {current}")]
    WrongOffset {
        digest: Digest,
        current: u64,
        requested: u64,
    },
    #[error("another upload of {0} is in progress; retry when it has finished")]
    UploadBusy(Digest),
    #[error("{what} is not valid JSON of the expected form: {source}")]
    BadJson {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("image layout {dir}: {why}")]
    Layout { dir: PathBuf, why: String },
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
    #[error("blobs missing from the store: {}; upload them first", list(.0))]
    MissingBlobs(Vec<Digest>),
    #[error("{0} is not in the store")]
    NotFound(Digest),
    #[error("layer {layer}: entry {entry:?} {why}")]
    Unpack {
        layer: Digest,
        entry: String,
        why: String,
    },
    #[error("layer {layer}: its uncompressed content hashes to {actual}, but the image config says {expected}; the image is corrupt, build and push it again")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
}

fn list(ds: &[Digest]) -> String {
    ds.iter().map(Digest::as_str).collect::<Vec<_>>().join(", ")
}

impl OciError {
    /// An IO error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io { path, source }
    }

    /// True when the disk is full (the agent answers "insufficient storage" then).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, OciError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
    }

    /// True when the error is the client's (bad input), not the agent's.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            OciError::Io { .. } | OciError::NotFound(_) | OciError::UploadBusy(_)
        )
    }
}
