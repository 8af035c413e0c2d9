//! `GET`/`PUT …/machines/{id}/files?path=P`: copying a file or directory out of or into a
//! running machine as a tar stream (`aloft machine cp`).
//!
//! `GET` answers a tar of `P`: its last component at the top, what is below it under that
//! (links as links). `PUT` takes such a tar and unpacks it into `P` when `P` is a directory in
//! the machine, else as `P` itself (the tar's one top-level entry takes `P`'s name; its parent
//! must exist). Paths are the machine's: in a container from its root filesystem, on the
//! process runtime from the machine's working directory. `..` is refused; no link leads out
//! of the machine.

use serde::{Deserialize, Serialize};

/// Bytes of file contents one copy carries at most; more is a 413.
pub const MAX_COPY_BYTES: u64 = 1 << 30;

/// The answer of a `PUT`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedIn {
    /// Bytes of file contents written.
    pub bytes: u64,
}
