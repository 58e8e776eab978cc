//! The files component: a directory tree such as the control module `/opt/altcraft`.
//!
//! Backup reads the live directory (the control module is configuration and code, written
//! rarely), skipping the exclude globs; a file that changes while it is read is reported as
//! a warning in the manifest. In-place restore materializes the set into a hidden staging
//! directory next to the live one (same filesystem), swaps the two atomically, keeps the
//! previous tree under a printed name, then runs the restart command.

pub mod config;

pub use config::{FilesConfig, OnReadError};

use std::path::Path;

use super::{
    Component, ComponentError, ComponentRestore, Estimate, HealthError, InPlace, LiveDirectory,
    Prepared, RestoreRequest, RestoreStep, RestoreTarget, ServiceControl, StagedRestore,
    StoredIndex,
};
use crate::{
    backup_set::{ComponentRecord, Status},
    config::ComponentName,
    progress::ProgressRef,
    repository::{PartStats, SourcePart},
    service,
};

/// A directory tree component.
#[derive(Debug)]
pub struct FilesComponent {
    name: ComponentName,
    config: FilesConfig,
}

impl FilesComponent {
    /// Creates the component from its config section.
    #[must_use]
    pub const fn new(name: ComponentName, config: FilesConfig) -> Self {
        Self { name, config }
    }

    fn restart(&self) -> Option<Vec<String>> {
        self.config.restart_command(&self.name.name)
    }

    fn excludes(&self) -> globset::GlobSet {
        crate::fsutil::glob_set(&self.config.exclude)
    }
}

/// The control module: no service to stop; a restart command (default `akd restart`) after
/// the swap.
impl LiveDirectory for FilesComponent {
    fn component(&self) -> &ComponentName {
        &self.name
    }

    fn live(&self) -> &Path {
        &self.config.path
    }

    fn service_steps(&self, how: InPlace) -> (Vec<String>, Vec<String>) {
        let start = if how.no_restart || how.services_managed {
            Vec::new()
        } else {
            self.restart()
                .map(|a| shell_words::join(&a))
                .into_iter()
                .collect()
        };
        (Vec::new(), start)
    }

    fn swap_in(
        &self,
        staged: StagedRestore,
        how: InPlace,
        progress: &ProgressRef,
    ) -> Result<ComponentRestore, ComponentError> {
        let label = self.name.to_string();
        let live = &self.config.path;
        let previous = staged.swap(&self.name, live, progress)?;
        let mut warnings = Vec::new();
        let mut status = Status::Complete;
        let mut restarted = None;
        if !(how.no_restart || how.services_managed)
            && let Some(argv) = self.restart()
        {
            let shown = shell_words::join(&argv);
            progress.note(&format!("{label}: running {shown}"));
            if let Err(e) = service::run(&argv) {
                warnings.push(format!("data restored, but the restart failed: {e}"));
                status = Status::Failed;
            }
            restarted = Some(shown);
        }
        Ok(ComponentRestore {
            name: label,
            destination: live.clone(),
            previous,
            restarted,
            written: staged.written,
            status,
            warnings,
            details: serde_json::Value::Null,
        })
    }
}

impl Component for FilesComponent {
    fn name(&self) -> &ComponentName {
        &self.name
    }

    fn source(&self) -> String {
        self.config.path.display().to_string()
    }

    fn repo_path(&self) -> &Path {
        &self.config.path
    }

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let path = &self.config.path;
        match std::fs::metadata(path) {
            Ok(m) if !m.is_dir() => problems.push(format!(
                "{}: {} is not a directory",
                self.name,
                path.display()
            )),
            Ok(_) => {
                if let Err(e) = std::fs::read_dir(path) {
                    problems.push(format!(
                        "{}: cannot read {}: {e}",
                        self.name,
                        path.display()
                    ));
                }
            }
            Err(e) => problems.push(format!("{}: {}: {e}", self.name, path.display())),
        }
        if let Some(argv) = self.restart() {
            let program = Path::new(&argv[0]);
            if program.is_absolute() && !program.exists() {
                problems.push(format!(
                    "{}: restart command {} does not exist",
                    self.name,
                    program.display()
                ));
            }
        }
        problems
    }

    fn estimate(&self, stored: Option<&StoredIndex>) -> Result<Estimate, ComponentError> {
        let excludes = self.excludes();
        let mut est = Estimate::default();
        if !self.config.path.is_dir() {
            return Err(ComponentError::Source {
                name: self.name.clone(),
                path: self.config.path.clone(),
                message: "is not a readable directory: fix [files] path".to_string(),
            });
        }
        for entry in walkdir::WalkDir::new(&self.config.path)
            .into_iter()
            .filter_entry(|e| !excludes.is_match(e.file_name()))
        {
            let Ok(entry) = entry else { continue };
            if let Ok(m) = entry.metadata()
                && m.is_file()
            {
                let rel = entry
                    .path()
                    .strip_prefix(&self.config.path)
                    .unwrap_or(entry.path());
                est.count(rel, &m, stored);
            }
        }
        Ok(est)
    }

    fn prepare(
        &self,
        _staging: &Path,
        _progress: &ProgressRef,
    ) -> Result<Prepared, ComponentError> {
        let path = &self.config.path;
        std::fs::read_dir(path).map_err(|e| ComponentError::Source {
            name: self.name.clone(),
            path: path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Ok(Prepared {
            part: SourcePart {
                label: self.name.to_string(),
                read_root: path.clone(),
                repo_path: path.clone(),
                excludes: self.config.exclude.clone(),
                meta_root: path.clone(),
                ctime_from_mtime: false,
                expected_bytes: None,
            },
            details: serde_json::json!({ "exclude": self.config.exclude }),
            guard: None,
        })
    }

    fn finish(&self, prepared: Prepared, stats: PartStats) -> ComponentRecord {
        let mut warnings: Vec<String> = stats
            .changed
            .iter()
            .map(|p| format!("changed while being read: {p}"))
            .collect();
        let mut errors = Vec::new();
        match self.config.on_read_error {
            OnReadError::Fail => errors.extend(stats.errors.iter().cloned()),
            OnReadError::Skip => {
                warnings.extend(stats.errors.iter().map(|e| format!("skipped: {e}")))
            }
        }
        let status = if !errors.is_empty() {
            Status::Failed
        } else if warnings.is_empty() {
            Status::Complete
        } else {
            Status::Warning
        };
        ComponentRecord {
            name: self.name.to_string(),
            kind: self.name.kind.to_string(),
            source: self.source(),
            repo_path: prepared.part.repo_path.display().to_string(),
            files: stats.files,
            dirs: stats.dirs,
            bytes: stats.bytes,
            read_bytes: stats.read_bytes,
            status,
            warnings,
            errors,
            details: prepared.details,
            prepare_seconds: 0.0,
        }
    }

    fn plan_restore(&self, target: &RestoreTarget, record: &ComponentRecord) -> RestoreStep {
        self.plan_step(target, record)
    }

    fn restore(&self, req: &RestoreRequest<'_>) -> Result<ComponentRestore, ComponentError> {
        self.restore_live(req)
    }

    fn service_control(&self) -> Option<ServiceControl> {
        let (stop, start) = self.config.stop_start_commands(&self.name.name)?;
        Some(ServiceControl { stop, start })
    }

    fn health_check(&self) -> Result<String, HealthError> {
        match &self.config.health {
            Some(argv) if !argv.is_empty() => service::run(argv)
                .map(|()| format!("{} exited 0", shell_words::join(argv)))
                .map_err(|error| HealthError::Service { error }),
            _ => Ok("started (no health command configured)".to_string()),
        }
    }
}
