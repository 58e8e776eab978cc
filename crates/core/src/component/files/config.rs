//! `[files.NAME]`: the config of a directory tree, its defaults, validation and redaction.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::component::kind::Section;

/// What to do when a file cannot be read during a backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReadError {
    /// The component fails and the set is not completed (default: nothing is silently missing).
    #[default]
    Fail,
    /// The file is skipped with a warning in the manifest.
    Skip,
}

/// `[files.<name>]`: a directory tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FilesConfig {
    /// The directory to back up; it appears under this absolute path in the repository.
    pub path: PathBuf,
    /// Glob patterns of files to leave out (default `*.pid`, `*.log`).
    #[serde(default = "default_excludes")]
    pub exclude: Vec<String>,
    /// Command (argv, no shell) run after an in-place restore. Default for `control`:
    /// `<path>/akd restart`; `[]` disables it.
    pub restart: Option<Vec<String>>,
    /// Command (argv, no shell) whose exit 0 means the service is up, checked after
    /// `restore --all` starts it; without it, a start command that exits 0 counts as up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<String>>,
    /// `fail` (default) or `skip` for files that cannot be read.
    #[serde(default)]
    pub on_read_error: OnReadError,
}

fn default_excludes() -> Vec<String> {
    vec!["*.pid".to_string(), "*.log".to_string()]
}

impl FilesConfig {
    /// The stop and start commands of `restore --all`: a restart command ending in
    /// `restart` (`akd restart`, `systemctl restart UNIT`) gives `... stop` and `... start`;
    /// any other one has no stop, and runs as the start.
    #[must_use]
    pub fn stop_start_commands(&self, name: &str) -> Option<(Option<Vec<String>>, Vec<String>)> {
        let restart = self.restart_command(name)?;
        let verb = restart.iter().rposition(|a| a == "restart");
        Some(match verb {
            Some(i) => {
                let with = |v: &str| {
                    let mut argv = restart.clone();
                    argv[i] = v.to_string();
                    argv
                };
                (Some(with("stop")), with("start"))
            }
            None => (None, restart),
        })
    }

    /// The restart command after defaults are applied, or `None`.
    #[must_use]
    pub fn restart_command(&self, name: &str) -> Option<Vec<String>> {
        match &self.restart {
            Some(argv) if argv.is_empty() => None,
            Some(argv) => Some(argv.clone()),
            None if name == "control" => Some(vec![
                self.path.join("akd").display().to_string(),
                "restart".to_string(),
            ]),
            None => None,
        }
    }
}

impl FilesConfig {
    /// The control module of a standard install: `/opt/altcraft` without `*.pid` and
    /// `*.log`, restarted with `akd restart`.
    #[must_use]
    pub fn standard() -> Vec<(String, Self)> {
        vec![(
            "control".to_string(),
            Self {
                path: PathBuf::from("/opt/altcraft"),
                exclude: default_excludes(),
                restart: None,
                health: None,
                on_read_error: OnReadError::Fail,
            },
        )]
    }
}

impl Section for FilesConfig {
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
        for glob in &self.exclude {
            globset::Glob::new(glob)
                .map_err(|err| format!("exclude \"{glob}\" is not a valid glob: {err}"))?;
        }
        if matches!(&self.restart, Some(argv) if argv.first().is_some_and(String::is_empty)) {
            return Err("restart has an empty program name".to_string());
        }
        Ok(())
    }

    fn inline_secrets(&self) -> Vec<(&'static str, &str)> {
        Vec::new()
    }

    fn redact(&mut self) {}
}
