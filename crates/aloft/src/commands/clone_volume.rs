//! The volume of a `machine clone` (flyctl-behaviour §5.2): a clone of a machine that mounts a
//! volume gets a new empty volume of the same name and size in the clone's region (never the
//! source's, which stays attached to the source), or, with `--attach-volume vol_id[:/path]`, an
//! existing unattached volume, whose region is then the clone's. A new volume whose machine
//! could not be created is destroyed again.

use aloft_api::volumes::{CreateVolumeRequest, Volume};
use aloft_api::{Machine, MachineConfig, MachineMount};
use aloft_client::Client;
use anyhow::{anyhow, bail, Context as _};

use crate::printer::Printer;

/// What the clone mounts was decided before it is created: the id of the volume created for it,
/// if any (destroyed again if the clone cannot be created).
pub struct CloneVolume {
    created: Option<String>,
}

impl CloneVolume {
    /// Destroys a volume created for a clone that was not created (best effort, said aloud).
    pub async fn undo(&self, client: &Client, app: &str, printer: &Printer) {
        let Some(id) = &self.created else {
            return;
        };
        match client.destroy_volume(app, id).await {
            Ok(_) => printer.note(format_args!("Destroyed volume {id} again")),
            Err(e) => printer.warn(format_args!(
                "volume {id} made for the clone is left unattached ({e:#}); \
                 `aloft volumes destroy {id}` removes it"
            )),
        }
    }
}

/// Splits `vol_id[:/path]`.
fn parse_attach(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once(':') {
        Some((id, path)) => (id, Some(path)),
        None => (arg, None),
    }
}

/// The region of the clone: `--region`, else the `--attach-volume` volume's, else the
/// source's; a `--region` other than the attached volume's is refused.
pub async fn clone_region(
    client: &Client,
    app: &str,
    src: &Machine,
    region: Option<String>,
    attach: Option<&str>,
) -> anyhow::Result<(String, Option<Volume>)> {
    let Some(arg) = attach else {
        return Ok((region.unwrap_or_else(|| src.region.clone()), None));
    };
    let (id, _) = parse_attach(arg);
    let v = client
        .get_volume(app, id)
        .await
        .with_context(|| format!("--attach-volume {id}"))?;
    match region {
        Some(r) if r != v.region => bail!(
            "--attach-volume {id} is in region {}, and --region asks for {r}: a machine mounts \
             volumes of its own region only; drop --region or pick a volume of {r}",
            v.region
        ),
        _ => Ok((v.region.clone(), Some(v))),
    }
}

/// Sets the clone's `config.mounts` (see the module docs) and says what it did.
pub async fn prepare(
    client: &Client,
    app: &str,
    src: &Machine,
    region: &str,
    attach: Option<(&str, Volume)>,
    config: &mut MachineConfig,
    printer: &Printer,
) -> anyhow::Result<CloneVolume> {
    if src.config.mounts.len() > 1 {
        bail!(
            "machine {} has {} mounts; a clone can be given one volume only",
            src.id,
            src.config.mounts.len()
        );
    }
    if let Some((arg, v)) = attach {
        let (_, path) = parse_attach(arg);
        let path = match (path, src.config.mounts.first()) {
            (Some(p), _) => p.to_string(),
            (None, Some(m)) => m.path.clone(),
            (None, None) => bail!(
                "machine {} mounts no volume, so --attach-volume needs a path: \
                 --attach-volume {}:/data",
                src.id,
                v.id
            ),
        };
        if let Some(holder) = &v.attached_machine_id {
            bail!(
                "volume {} is attached to machine {holder}; --attach-volume takes an unattached \
                 volume (`aloft volumes list`)",
                v.id
            );
        }
        config.mounts = vec![MachineMount {
            volume: v.id.clone(),
            name: v.name.clone(),
            path,
            ..mount_settings(src)
        }];
        return Ok(CloneVolume { created: None });
    }
    let Some(m) = src.config.mounts.first() else {
        return Ok(CloneVolume { created: None });
    };
    let source = client
        .get_volume(app, &m.volume)
        .await
        .with_context(|| format!("reading volume {} of machine {}", m.volume, src.id))?;
    let req = CreateVolumeRequest {
        name: source.name.clone(),
        region: region.to_string(),
        size_gb: Some(source.size_gb),
        encrypted: Some(source.encrypted),
        require_unique_zone: Some(true),
        compute: src.config.guest.clone(),
        ..CreateVolumeRequest::default()
    };
    let v = client
        .create_volume(app, &req)
        .await
        .map_err(|e| anyhow!("creating a volume {:?} for the clone: {e:#}", source.name))?;
    printer.line(format_args!(
        "Created volume {} '{}' ({} GB) in {} for the clone (empty: volumes are not copied)",
        v.id, v.name, v.size_gb, v.region
    ));
    config.mounts = vec![MachineMount {
        volume: v.id.clone(),
        name: v.name.clone(),
        ..m.clone()
    }];
    Ok(CloneVolume {
        created: Some(v.id),
    })
}

/// The source mount's auto-extend settings, for an attached volume.
fn mount_settings(src: &Machine) -> MachineMount {
    src.config.mounts.first().cloned().unwrap_or_default()
}
