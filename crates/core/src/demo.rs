//! `akbackup demo`: the main job end to end on a generated sandbox platform.
//!
//! Runs the same library calls as the commands: init, backup, a day of changes, backup again,
//! verify with all data read, restore to a target, compare with the source, and the documented
//! `tar -czf` of the same tree for scale. Everything lives under one directory.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::Serialize;

use crate::{
    backup, component,
    component::RestoreTarget,
    config::{ComponentName, Config, FilesConfig, Kind, OnReadError, SsdbConfig},
    fsutil, plan,
    progress::ProgressRef,
    repository::{self, Repository},
    restore, sandbox, tree, verify,
};

/// Errors of the demo (each step names itself).
#[derive(Debug, thiserror::Error)]
#[error("demo step `{step}` failed: {message}")]
pub struct DemoError {
    /// The step.
    pub step: &'static str,
    /// What happened.
    pub message: String,
}

fn step_err<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> DemoError {
    move |e| DemoError {
        step,
        message: e.to_string(),
    }
}

/// One timed step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What ran.
    pub name: String,
    /// Seconds.
    pub secs: f64,
    /// What it produced.
    pub detail: String,
}

/// Everything the demo measured.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Sandbox directory.
    pub dir: PathBuf,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Bytes of the generated tree (including excluded pid/log files).
    pub tree_bytes: u64,
    /// Bytes the backup covers (pid/log excluded).
    pub backed_up_bytes: u64,
    /// Bytes of the generated SSDB store.
    pub store_bytes: u64,
    /// Bytes of files changed for day two.
    pub changed_bytes: u64,
    /// SSDB keys added for day two.
    pub new_keys: u64,
    /// Repository size after the first set.
    pub repo_after_first: u64,
    /// Repository size after the second set.
    pub repo_after_second: u64,
    /// Size of the `tar -czf` archive of the same tree, when tar ran.
    pub tar_bytes: Option<u64>,
    /// Verify found no problems.
    pub verify_ok: bool,
    /// Differences between source and restored tree (should be none).
    pub differences: Vec<String>,
    /// The restart stand-in was called by the in-place restore.
    pub restart_calls: Vec<String>,
}

impl DemoSummary {
    /// True when every check of the demo passed.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.verify_ok && self.differences.is_empty() && !self.restart_calls.is_empty()
    }
}

/// Runs the demo in `dir` with a control module of `size` bytes.
///
/// # Errors
/// [`DemoError`] naming the step that failed.
#[allow(clippy::too_many_lines)]
pub fn run(dir: &Path, size: u64, progress: &ProgressRef) -> Result<DemoSummary, DemoError> {
    let platform = dir.join("platform/opt/altcraft");
    let store = dir.join("platform/var/lib/ssdb/actions");
    let repo_path = dir.join("repository");
    let password = dir.join("password");
    let mut steps = Vec::new();
    let mut timed = |name: &str, start: Instant, detail: String| {
        progress.note(&format!("demo: {name}: {detail}"));
        steps.push(Step {
            name: name.to_string(),
            secs: start.elapsed().as_secs_f64(),
            detail,
        });
    };

    let t = Instant::now();
    let generated =
        sandbox::generate_control_module(&platform, size, 42).map_err(step_err("generate"))?;
    let keys_day1 =
        sandbox::write_ssdb_store(&store, size / 2, 0, 7).map_err(step_err("generate"))?;
    let store_bytes = fsutil::tree_size(&store);
    std::fs::write(&password, "demo-password-change-me\n").map_err(step_err("generate"))?;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600))
        .map_err(step_err("generate"))?;
    let mut config = Config::default();
    config.repository.path = Some(repo_path.clone());
    config.repository.password_file = Some(password.clone());
    config.files.insert(
        "control".to_string(),
        FilesConfig {
            path: platform.clone(),
            exclude: vec!["*.pid".to_string(), "*.log".to_string()],
            restart: None,
            health: None,
            on_read_error: OnReadError::Fail,
        },
    );
    config
        .ssdb
        .insert("actions".to_string(), SsdbConfig::online(store.clone()));
    let toml = format!(
        "# config used by the demo; try: akbackup --config {0} snapshots\n[repository]\npath = \"{1}\"\npassword-file = \"{2}\"\n\n[files.control]\npath = \"{3}\"\nexclude = [\"*.pid\", \"*.log\"]\n\n[ssdb.actions]\npath = \"{4}\"\nmode = \"online\"\n",
        dir.join("akbackup.toml").display(),
        repo_path.display(),
        password.display(),
        platform.display(),
        store.display()
    );
    std::fs::write(dir.join("akbackup.toml"), toml).map_err(step_err("generate"))?;
    timed(
        "generate sandbox platform",
        t,
        format!(
            "control module: {} files, {} ({} in *.pid/*.log); SSDB store actions: {} keys, {}",
            generated.files,
            crate::units::human_bytes(generated.bytes),
            crate::units::human_bytes(generated.excluded_bytes),
            keys_day1,
            crate::units::human_bytes(store_bytes)
        ),
    );

    let t = Instant::now();
    repository::init(&config).map_err(step_err("init"))?;
    let repo = Repository::open(&config).map_err(step_err("init"))?;
    timed("init repository", t, repo_path.display().to_string());

    let components = component::build(&config, &[]).map_err(step_err("backup"))?;
    let backup_once = |name: &'static str| -> Result<backup::BackupSummary, DemoError> {
        let p = plan::backup_plan(&repo, &components, &[]).map_err(step_err(name))?;
        let s =
            backup::run(&repo, &components, &p, false, progress, None).map_err(step_err(name))?;
        if s.set.is_none() {
            return Err(DemoError {
                step: name,
                message: format!("the set failed: {:?}", s.components),
            });
        }
        Ok(s)
    };
    let t = Instant::now();
    let first = backup_once("first backup")?;
    let repo_after_first = fsutil::tree_size(&repo_path);
    timed(
        "first backup",
        t,
        format!(
            "{} files, {} read, repository {}",
            first.components.iter().map(|c| c.files).sum::<u64>(),
            crate::units::human_bytes(first.total_bytes),
            crate::units::human_bytes(repo_after_first)
        ),
    );

    let tar_bytes = if crate::process::child_command("tar")
        .arg("--version")
        .output()
        .is_ok()
    {
        let t = Instant::now();
        // The documented procedure: one archive per directory. Its command puts --exclude
        // after the path, where GNU tar ignores it; here the excludes come first, as they must.
        let root = dir.join("platform");
        let mut ok = true;
        let mut size = 0;
        for (archive, inside, excludes) in [
            ("altcraft-documented.tar.gz", "opt/altcraft", true),
            (
                "ssdb-actions-documented.tar.gz",
                "var/lib/ssdb/actions",
                false,
            ),
        ] {
            let mut cmd = crate::process::child_command("tar");
            if excludes {
                cmd.arg("--exclude=*.pid").arg("--exclude=*.log");
            }
            ok &= cmd
                .arg("-czf")
                .arg(dir.join(archive))
                .arg("-C")
                .arg(&root)
                .arg(inside)
                .status()
                .map_err(step_err("tar"))?
                .success();
            size += std::fs::metadata(dir.join(archive))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        timed(
            "tar -czf of the same directories (documented)",
            t,
            format!("{} (exit ok: {ok})", crate::units::human_bytes(size)),
        );
        Some(size)
    } else {
        None
    };

    let t = Instant::now();
    let changed =
        sandbox::change_some_files(&platform, 1.0, 43).map_err(step_err("change files"))?;
    let new_keys = sandbox::write_ssdb_store(&store, size / 200, keys_day1, 8)
        .map_err(step_err("change files"))?;
    timed(
        "change ~1%: files, and new SSDB keys",
        t,
        format!(
            "{} written to files, {new_keys} keys added to the store",
            crate::units::human_bytes(changed)
        ),
    );

    let t = Instant::now();
    let second = backup_once("second backup")?;
    let repo_after_second = fsutil::tree_size(&repo_path);
    timed(
        "second backup",
        t,
        format!(
            "read {} of {}, repository grew by {}",
            crate::units::human_bytes(second.components.iter().map(|c| c.read_bytes).sum()),
            crate::units::human_bytes(second.total_bytes),
            crate::units::human_bytes(repo_after_second.saturating_sub(repo_after_first))
        ),
    );

    let t = Instant::now();
    let sets = repo.sets().map_err(step_err("verify"))?;
    let v = verify::run(&repo, &sets, true, None, true, progress).map_err(step_err("verify"))?;
    timed(
        "verify --read-data --deep",
        t,
        format!("{} set(s), {} finding(s)", sets.len(), v.findings.len()),
    );

    let t = Instant::now();
    let target = RestoreTarget::Directory(dir.join("restored"));
    let latest = repo.find_set("latest").map_err(step_err("restore"))?;
    let rplan = plan::restore_plan(&latest, &components, &target).map_err(step_err("restore"))?;
    let r =
        restore::run(&repo, &components, &rplan, &target, progress).map_err(step_err("restore"))?;
    if let Some(e) = r.error {
        return Err(DemoError {
            step: "restore",
            message: e,
        });
    }
    timed(
        "restore --target",
        t,
        dir.join("restored").display().to_string(),
    );

    let t = Instant::now();
    let mut differences = tree::compare(
        &platform,
        &dir.join("restored/files/control"),
        &["*.pid".to_string(), "*.log".to_string()],
    );
    // The store is quiet since the second backup: the restored copy must hold exactly its
    // keys and values (the backup itself read only the new tables, not every key).
    let source = component::ssdb::describe_store(&store);
    match component::ssdb::describe_store(&dir.join("restored/ssdb/actions")) {
        Ok(d)
            if source.as_ref().is_ok_and(|s| {
                s.get("data").map(|x| &x.digest) == d.get("data").map(|x| &x.digest)
            }) => {}
        Ok(_) => differences.push(
            "ssdb.actions: the restored store's keys and values differ from the source's"
                .to_string(),
        ),
        Err((db, e)) => {
            differences.push(format!("ssdb.actions: restored {db}/ does not open: {e}"))
        }
    }
    timed(
        "compare source and restore",
        t,
        format!(
            "{} difference(s) (files byte for byte, SSDB store by digest)",
            differences.len()
        ),
    );

    // In place, as an administrator would: damage the live tree, restore, restart.
    let t = Instant::now();
    std::fs::remove_dir_all(platform.join("conf")).map_err(step_err("in-place restore"))?;
    let inplace = RestoreTarget::in_place();
    // Only the control module: in place, an SSDB store is stopped and started through systemd.
    let control = component::build(
        &config,
        &[ComponentName {
            kind: Kind::Files,
            name: "control".to_string(),
        }],
    )
    .map_err(step_err("in-place restore"))?;
    let iplan =
        plan::restore_plan(&latest, &control, &inplace).map_err(step_err("in-place restore"))?;
    let r = restore::run(&repo, &control, &iplan, &inplace, progress)
        .map_err(step_err("in-place restore"))?;
    if let Some(e) = r.error {
        return Err(DemoError {
            step: "in-place restore",
            message: e,
        });
    }
    let kept = r
        .components
        .first()
        .and_then(|c| c.previous.clone())
        .unwrap_or_default();
    let restart_calls: Vec<String> =
        std::fs::read_to_string(platform.parent().unwrap_or(dir).join("akd.calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
    timed(
        "delete conf/, restore in place",
        t,
        format!(
            "previous tree kept at {}, restart ran: {}",
            kept.display(),
            restart_calls.join("; ")
        ),
    );

    Ok(DemoSummary {
        dir: dir.to_path_buf(),
        steps,
        tree_bytes: generated.bytes,
        store_bytes,
        backed_up_bytes: first.total_bytes,
        changed_bytes: changed,
        new_keys,
        repo_after_first,
        repo_after_second,
        tar_bytes,
        verify_ok: v.ok,
        differences,
        restart_calls,
    })
}
