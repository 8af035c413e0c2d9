//! Bounds on what the reader accepts, so a malformed or hostile file gets a clear error instead
//! of stalling `aloft config validate` or overflowing the stack. Real fly.toml files are a few
//! KB, nest at most about six levels (`services` → ports → `tls_options` → `alpn`) and hold a
//! few hundred values; the limits leave orders of magnitude of headroom.

use crate::diag::{Sink, Span};

/// Largest config file read, in bytes.
pub(crate) const MAX_BYTES: usize = 4 * 1024 * 1024;

/// Deepest nesting of tables and lists; the top-level table is level 1.
pub(crate) const MAX_DEPTH: usize = 64;

/// Most values (scalars, tables and lists) one YAML document may expand to. Only YAML needs it:
/// an alias (`*name`) repeats everything its anchor holds, so a small file can stand for a huge
/// tree. JSON and TOML hold at most one value per byte or two.
pub(crate) const MAX_YAML_VALUES: usize = 1_000_000;

/// Reports a file over [`MAX_BYTES`] (it is not parsed).
pub(crate) fn too_large(sink: &mut Sink) {
    sink.error(
        &None,
        format!(
            "the config file is larger than {} MiB, the most an app config may be",
            MAX_BYTES / (1024 * 1024)
        ),
        Some(
            "an app config is normally a few KB: check that this is the right file \
             (embed big payloads with [[files]] local_path instead of inline)"
                .into(),
        ),
    );
}

/// Reports a table or list that opens nesting level `MAX_DEPTH + 1`, at `span`.
pub(crate) fn too_deep(sink: &mut Sink, span: &Span) {
    sink.error(
        span,
        format!("tables and lists are nested more than {MAX_DEPTH} levels deep here"),
        Some(
            "an app config needs only a few levels: flatten or remove this value \
             (deeper nesting is refused so that a bad file cannot stall or crash the reader)"
                .into(),
        ),
    );
}

/// Reports a YAML document that expands to more than [`MAX_YAML_VALUES`] values, at `span`.
pub(crate) fn too_many_values(sink: &mut Sink, span: &Span) {
    sink.error(
        span,
        format!(
            "the YAML document expands to more than {MAX_YAML_VALUES} values \
             (each use of an alias `*name` counts everything its anchor holds)"
        ),
        Some("write the values out, or use fewer aliases of large anchors".into()),
    );
}
