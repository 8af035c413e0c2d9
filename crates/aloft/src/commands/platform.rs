//! `aloft platform vm-sizes` (the preset table of flyctl-behaviour §6.2) and
//! `aloft platform regions` (the regions the agent hosts).

use std::collections::BTreeMap;
use std::process::ExitCode;

use aloft_api::{Guest, VM_PRESETS};

use crate::cli::PlatformCommand;
use crate::commands::Context;
use crate::printer::render_table;
use aloft_client::block_on;

pub fn run(cmd: PlatformCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let printer = ctx.printer;
    match cmd {
        PlatformCommand::VmSizes => {
            if printer.json() {
                let sizes: BTreeMap<&str, Guest> = VM_PRESETS
                    .iter()
                    .filter(|p| !p.hidden)
                    .map(|p| (p.name, p.guest()))
                    .collect();
                printer.json_value(&sizes)?;
            } else {
                printer.text(&vm_sizes_text());
            }
        }
        PlatformCommand::Regions => {
            let regions = block_on(ctx.client()?.regions())?;
            if printer.json() {
                printer.json_value(&regions)?;
            } else {
                let rows: Vec<Vec<String>> =
                    regions.into_iter().map(|r| vec![r.name, r.code]).collect();
                printer.table(Some("Regions"), &["NAME", "CODE"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The two tables flyctl prints: shared sizes titled "Machines platform", then performance sizes.
fn vm_sizes_text() -> String {
    let table = |kind: &str| {
        let mut presets: Vec<_> = VM_PRESETS
            .iter()
            .filter(|p| !p.hidden && p.cpu_kind == kind)
            .collect();
        presets.sort_by_key(|p| (p.cpus, p.memory_mb));
        presets
            .iter()
            .map(|p| {
                vec![
                    p.name.to_string(),
                    p.cpus.to_string(),
                    format!("{} MB", p.memory_mb),
                ]
            })
            .collect::<Vec<_>>()
    };
    let header = ["NAME", "CPU CORES", "MEMORY"];
    let mut out = render_table(Some("Machines platform"), &header, &table("shared"));
    out.push('\n');
    out.push_str(&render_table(None, &header, &table("performance")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_sizes_lists_the_fourteen_presets_in_order() {
        let text = vm_sizes_text();
        let names: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("shared-") || l.starts_with("performance-"))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(names.len(), 14);
        assert_eq!(names[0], "shared-cpu-1x");
        assert_eq!(names[5], "performance-1x");
        assert_eq!(names[13], "performance-16x");
        let row = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
        };
        assert_eq!(
            row("performance-2x").unwrap(),
            ["performance-2x", "2", "4096", "MB"]
        );
        assert_eq!(
            row("shared-cpu-8x").unwrap(),
            ["shared-cpu-8x", "8", "2048", "MB"]
        );
        assert!(!text.contains("a100"));
    }
}
