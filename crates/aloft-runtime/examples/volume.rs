//! Volumes by hand, through the same code as the agent (`aloft_runtime::volumes`), for
//! `bench/volumes.sh`: `volume ROOT create ID GB`, `volume ROOT mount ID` (prints the mount
//! directory), `volume ROOT destroy ID`. Root only.

use std::path::PathBuf;

use aloft_runtime::volumes::{Source, VolumeHost};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (root, op, id) = match &args[..] {
        [root, op, id, ..] => (PathBuf::from(root), op.as_str(), id.as_str()),
        _ => return Err("usage: volume ROOT create ID GB | mount ID | destroy ID".into()),
    };
    let host = VolumeHost::new(root)?;
    match op {
        "create" => {
            let gb = args
                .get(3)
                .and_then(|g| g.parse().ok())
                .ok_or("create needs a size in GB")?;
            host.create(id, gb, &Source::Empty)
                .map_err(|e| e.to_string())
        }
        "mount" => {
            let dir = host.mount(id).map_err(|e| e.to_string())?;
            println!("{}", dir.display());
            Ok(())
        }
        "destroy" => host.destroy(id).map_err(|e| e.to_string()),
        other => Err(format!("unknown operation {other:?}")),
    }
}
