//! Helpers shared by the app commands: loading fly.toml with its diagnostics shown. (Which app,
//! and flags over fly.toml, are resolved in `settings`; prompts are the printer's.)

use std::path::Path;

use aloft_config::Loaded;
use anyhow::bail;

use crate::printer::Printer;

/// Loads the config and prints its diagnostics to stderr; an invalid config is an error.
pub fn load_config(path: &Path, printer: &Printer) -> anyhow::Result<Loaded> {
    let loaded = aloft_config::load(path)?;
    if !loaded.diagnostics.is_empty() {
        printer.note_text(&loaded.diagnostics.to_string());
    }
    if loaded.diagnostics.has_errors() {
        bail!(
            "{} is not valid; fix the errors above (check with `aloft config validate -c {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(loaded)
}
