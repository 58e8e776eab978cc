//! `[ssdb.NAME]`: the config of an SSDB store, its defaults, validation and redaction.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::component::kind::Section;

/// How an SSDB store is copied for a backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SsdbMode {
    /// Point-in-time copy while the server keeps writing (hard-linked tables, copied logs).
    #[default]
    Online,
    /// Stop the unit, copy, start it again.
    Stop,
    /// Read from a read-only filesystem snapshot of the store's volume (`snapshot = "btrfs"`
    /// or `"lvm"`): one instant for both databases, nothing copied first.
    Snapshot,
}

/// `[ssdb.<name>]`: an SSDB store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SsdbConfig {
    /// The store's work directory holding `data/` and `meta/`.
    pub path: PathBuf,
    /// systemd unit (default `ssdb-<name>`).
    pub service: Option<String>,
    /// `online` (default), `stop` or `snapshot`.
    #[serde(default)]
    pub mode: SsdbMode,
    /// `mode = "snapshot"`: `btrfs` or `lvm`.
    pub snapshot: Option<crate::snapshot::Backend>,
    /// `snapshot = "lvm"`, classic volumes: room for changes (`20G`, default `10%` of the LV).
    pub snapshot_size: Option<String>,
    /// `snapshot = "lvm"`: the logical volume (`vg0/ssdb`) when the mount table does not say.
    pub snapshot_volume: Option<String>,
    /// Host for health checks (default: from ssdb.conf when present).
    pub host: Option<String>,
    /// Port for health checks.
    pub port: Option<u16>,
    /// Password for the `auth` command of health checks.
    pub auth: Option<String>,
    /// How often a backup also reads every key (`7d`, `12h`; `0h`: every backup), recording
    /// key counts and a digest that `verify --deep` compares. Unset (the default): never; a
    /// backup checks only the table files new since the parent set and that the copy opens,
    /// so its cost follows what changed, not the store's size.
    pub deep_check_every: Option<String>,
}

impl SsdbConfig {
    /// The store at `path` with every default: copied online, its unit `ssdb-NAME`, the
    /// health-check endpoint from its `ssdb.conf`, no periodic full read.
    #[must_use]
    pub const fn online(path: PathBuf) -> Self {
        Self {
            path,
            service: None,
            mode: SsdbMode::Online,
            snapshot: None,
            snapshot_size: None,
            snapshot_volume: None,
            host: None,
            port: None,
            auth: None,
            deep_check_every: None,
        }
    }

    /// The snapshot settings when the store is backed up from a snapshot.
    #[must_use]
    pub fn snapshot_settings(&self) -> Option<crate::snapshot::Settings> {
        crate::snapshot::Settings::of(
            self.mode == SsdbMode::Snapshot,
            self.snapshot,
            &self.snapshot_size,
            &self.snapshot_volume,
        )
    }

    /// The systemd unit after defaults.
    #[must_use]
    pub fn unit(&self, name: &str) -> String {
        self.service
            .clone()
            .unwrap_or_else(|| format!("ssdb-{name}"))
    }

    /// The four stores of a standard install, `/var/lib/ssdb/{actions,hb,notify,stat}`,
    /// copied online.
    #[must_use]
    pub fn standard() -> Vec<(String, Self)> {
        ["actions", "hb", "notify", "stat"]
            .into_iter()
            .map(|name| {
                (
                    name.to_string(),
                    Self::online(PathBuf::from(format!("/var/lib/ssdb/{name}"))),
                )
            })
            .collect()
    }
}

impl Section for SsdbConfig {
    fn repo_path(&self, _name: &str) -> PathBuf {
        self.path.clone()
    }

    fn live_dir(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn path_keys(&self) -> Vec<(&'static str, &Path)> {
        vec![("path", &self.path)]
    }

    fn validate(&self) -> Result<(), String> {
        crate::snapshot::Settings::check_keys(
            self.mode == SsdbMode::Snapshot,
            self.snapshot,
            &self.snapshot_size,
            &self.snapshot_volume,
        )?;
        if let Some(d) = &self.deep_check_every {
            crate::units::parse_duration(d).map_err(|e| format!("deep-check-every: {e}"))?;
        }
        Ok(())
    }

    fn inline_secrets(&self) -> Vec<(&'static str, &str)> {
        self.auth
            .as_deref()
            .map(|a| ("auth in", a))
            .into_iter()
            .collect()
    }

    fn redact(&mut self) {
        if self.auth.is_some() {
            self.auth = Some("***".to_string());
        }
    }
}
