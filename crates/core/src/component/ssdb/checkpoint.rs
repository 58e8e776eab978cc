//! Online checkpoint of a live LevelDB database: a point-in-time, crash-consistent copy taken
//! while the server keeps writing, without a second full copy on disk.
//!
//! # Algorithm
//! 1. Read `CURRENT`, then the whole MANIFEST it names, as it is at this instant (time t1).
//!    Parse it up to its last complete record: that is version V, which lists the live table
//!    files and the log number L from which writes are not yet in tables.
//! 2. Hard-link every table file of V into the staging directory (same filesystem). Table
//!    files never change after LevelDB lists them, so a link is a frozen copy at no cost. If one
//!    is missing, compaction removed it after t1: start again.
//! 3. Copy (never link: they keep growing) every `*.log` numbered >= L, at time t2 > t1. If log
//!    L itself is missing, it was flushed into a table V does not list and deleted: start again.
//! 4. Write the MANIFEST prefix (cut at the last complete record) and a `CURRENT` naming it.
//! 5. Read `CURRENT` again: if it names another MANIFEST, the database was reopened meanwhile:
//!    start again. Read the MANIFEST again: if its log number is no longer L, a flush finished
//!    while the logs were copied and may have deleted one between two that were copied: start
//!    again.
//!
//! # Why it is consistent
//! A write acknowledged before the backup started (t0 <= t1) is, at t1, either in a table of
//! V or in a log numbered >= L (LevelDB advances L in the MANIFEST only after the tables
//! holding those writes are recorded). Step 2 keeps every table of V; step 3 keeps every log
//! numbered L or above, and their contents when copied include everything up to t1. LevelDB
//! deletes a log only after a MANIFEST record has moved the log number past it; step 5 sees
//! that record whenever it was written before the last log was copied, and a log that vanished
//! while being listed or read also starts the copy again, so no needed log is skipped. Opening the copy is LevelDB's normal
//! crash recovery: replay V, then the logs (a torn last log record is dropped, as after a
//! power cut). Writes after t1 may or may not be in the copy; writes before t0 always are.
//! Tables and logs that appeared after t1 but are not in V are ignored by recovery, and tables
//! of V that compaction obsoleted after t1 are kept alive by our links.
//! The retry count is bounded; when compaction or log rotation keeps winning the race the
//! caller fails with a message suggesting `mode = "stop"`.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use super::manifest;

/// What one database checkpoint did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckpointStats {
    /// Tries needed (1 = no race).
    pub attempts: u32,
    /// Table files hard-linked.
    pub tables: u64,
    /// Bytes of linked tables.
    pub table_bytes: u64,
    /// Bytes copied (MANIFEST and logs).
    pub copied_bytes: u64,
    /// Last sequence number recorded in the MANIFEST prefix.
    pub manifest_sequence: u64,
}

/// Why a checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O on the source or staging.
    #[error("{path}: {error}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// The MANIFEST could not be read as LevelDB writes it.
    #[error("{path}: {error}")]
    Manifest {
        /// Path.
        path: PathBuf,
        /// Cause (printed in the message, so not also the `source()`).
        error: manifest::ManifestError,
    },
    /// Races with compaction or log rotation kept winning.
    #[error(
        "{path}: the database changed under every one of {attempts} attempts ({last}); the store is too busy for an online copy: set mode = \"stop\" for it, or retry at a quieter time"
    )]
    TooBusy {
        /// The database.
        path: PathBuf,
        /// Tries made.
        attempts: u32,
        /// The last race seen.
        last: String,
    },
}

enum Attempt {
    Done(CheckpointStats),
    Race(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

fn file_number(name: &str, ext: &str) -> Option<u64> {
    name.strip_suffix(ext)?.parse().ok()
}

/// Copies the live database `src` into `dst` (created; must not exist) as described in the
/// module header, trying at most `max_attempts` times.
///
/// # Errors
/// [`CheckpointError::TooBusy`] after the last race, I/O and MANIFEST errors at once.
pub fn checkpoint(
    src: &Path,
    dst: &Path,
    max_attempts: u32,
) -> Result<CheckpointStats, CheckpointError> {
    let mut last = String::new();
    for attempt in 1..=max_attempts.max(1) {
        if dst.exists() {
            fs::remove_dir_all(dst).map_err(io(dst))?;
        }
        fs::create_dir_all(dst).map_err(io(dst))?;
        match try_once(src, dst)? {
            Attempt::Done(mut stats) => {
                stats.attempts = attempt;
                return Ok(stats);
            }
            Attempt::Race(why) => {
                tracing::debug!("checkpoint of {} raced: {why}", src.display());
                last = why;
                std::thread::sleep(std::time::Duration::from_millis(20 * u64::from(attempt)));
            }
        }
    }
    let _ = fs::remove_dir_all(dst);
    Err(CheckpointError::TooBusy {
        path: src.to_path_buf(),
        attempts: max_attempts,
        last,
    })
}

fn read_current(src: &Path) -> Result<String, CheckpointError> {
    let current = src.join("CURRENT");
    let text = fs::read_to_string(&current).map_err(io(&current))?;
    Ok(text.trim().to_string())
}

fn try_once(src: &Path, dst: &Path) -> Result<Attempt, CheckpointError> {
    let current = read_current(src)?;
    if current.contains('/') || !current.starts_with("MANIFEST-") {
        return Err(CheckpointError::Io {
            path: src.join("CURRENT"),
            error: std::io::Error::other(format!("names \"{current}\", not a MANIFEST")),
        });
    }
    let manifest_path = src.join(&current);
    let Some((data, version)) = read_manifest(&manifest_path)? else {
        return Ok(Attempt::Race(format!("{current} replaced")));
    };
    let mut stats = CheckpointStats {
        manifest_sequence: version.last_sequence,
        ..Default::default()
    };

    for &(_, number) in &version.tables {
        let mut linked = false;
        for ext in ["ldb", "sst"] {
            let name = format!("{number:06}.{ext}");
            let from = src.join(&name);
            match fs::hard_link(&from, dst.join(&name)) {
                Ok(()) => {
                    stats.tables += 1;
                    stats.table_bytes += fs::metadata(&from).map(|m| m.len()).unwrap_or(0);
                    linked = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    return Err(CheckpointError::Io {
                        path: from,
                        error: std::io::Error::other(format!(
                            "cannot hard-link it into {} (another filesystem: is the store or its data/ a mount point?); online mode needs the staging directory on the store's filesystem: use mode = \"stop\"",
                            dst.display()
                        )),
                    });
                }
                Err(e) => return Err(io(&from)(e)),
            }
        }
        if !linked {
            return Ok(Attempt::Race(format!(
                "table {number:06} listed in {current} was deleted by compaction"
            )));
        }
    }

    let mut logs: Vec<u64> = fs::read_dir(src)
        .map_err(io(src))?
        .filter_map(Result::ok)
        .filter_map(|e| file_number(&e.file_name().to_string_lossy(), ".log"))
        .filter(|n| {
            *n >= version.log_number
                || (version.prev_log_number != 0 && *n == version.prev_log_number)
        })
        .collect();
    logs.sort_unstable();
    if version.log_number != 0 && !logs.contains(&version.log_number) {
        return Ok(Attempt::Race(format!(
            "log {:06} was flushed and removed",
            version.log_number
        )));
    }
    for n in logs {
        let name = format!("{n:06}.log");
        let from = src.join(&name);
        match fs::read(&from) {
            Ok(bytes) => {
                write_file(&dst.join(&name), &bytes)?;
                clone_meta(&from, &dst.join(&name))?;
                stats.copied_bytes += bytes.len() as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Any log numbered L or above may hold writes acknowledged before t1.
                return Ok(Attempt::Race(format!(
                    "log {n:06} was flushed and removed while copying"
                )));
            }
            Err(e) => return Err(io(&from)(e)),
        }
    }

    write_file(&dst.join(&current), &data[..version.valid_len])?;
    clone_meta(&manifest_path, &dst.join(&current))?;
    stats.copied_bytes += version.valid_len as u64;
    write_file(&dst.join("CURRENT"), format!("{current}\n").as_bytes())?;
    clone_meta(&src.join("CURRENT"), &dst.join("CURRENT"))?;
    if read_current(src)? != current {
        return Ok(Attempt::Race(
            "CURRENT changed: the database was reopened".to_string(),
        ));
    }
    // A flush that completed while the logs were listed and copied may have deleted a log
    // between two that were copied; LevelDB records the new log number in the MANIFEST before
    // it deletes any log, so an unchanged log number proves no needed log went missing.
    let Some((_, after)) = read_manifest(&manifest_path)? else {
        return Ok(Attempt::Race(format!("{current} replaced")));
    };
    if after.log_number != version.log_number {
        return Ok(Attempt::Race(format!(
            "a flush moved the log number from {:06} to {:06} while logs were copied",
            version.log_number, after.log_number
        )));
    }
    clone_meta(src, dst)?;
    Ok(Attempt::Done(stats))
}

/// Gives a copied file or directory the owner, group, mode and mtime of its original, so a
/// restored store belongs to the SSDB service user again. A source that vanished in between
/// (a rotated log) keeps the copy's own metadata.
pub fn clone_meta(from: &Path, to: &Path) -> Result<(), CheckpointError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(m) = fs::metadata(from) else {
        return Ok(());
    };
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid())).map_err(io(to))?;
    }
    fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777)).map_err(io(to))?;
    let mtime = filetime::FileTime::from_last_modification_time(&m);
    filetime::set_file_mtime(to, mtime).map_err(io(to))
}

/// The MANIFEST's bytes and the version they describe; `None` when it vanished (replaced).
fn read_manifest(
    path: &Path,
) -> Result<Option<(Vec<u8>, manifest::VersionState)>, CheckpointError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let version = manifest::parse(&data).map_err(|source| CheckpointError::Manifest {
        path: path.to_path_buf(),
        error: source,
    })?;
    Ok(Some((data, version)))
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// A scratch copy of a staged database that LevelDB may write to (recovery writes new files)
/// without touching the staging directory: tables are linked again, the rest copied.
///
/// # Errors
/// I/O errors.
pub fn scratch_copy(staged: &Path, scratch: &Path) -> Result<(), CheckpointError> {
    fs::create_dir_all(scratch).map_err(io(scratch))?;
    for entry in fs::read_dir(staged).map_err(io(staged))? {
        let entry = entry.map_err(io(staged))?;
        let name = entry.file_name();
        let from = entry.path();
        let to = scratch.join(&name);
        let s = name.to_string_lossy();
        if s.ends_with(".ldb") || s.ends_with(".sst") {
            // Tables are only read. A hard link fails across filesystems and btrfs
            // subvolumes (a store read in a snapshot): a link to the table is as good, and
            // copying every table of a large store is not.
            fs::hard_link(&from, &to)
                .or_else(|_| std::os::unix::fs::symlink(&from, &to))
                .or_else(|_| fs::copy(&from, &to).map(|_| ()))
                .map_err(io(&from))?;
        } else if entry.file_type().map_err(io(&from))?.is_file() {
            fs::copy(&from, &to).map_err(io(&from))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::ssdb::{inspect, manifest::tests::encode};

    fn db_with_keys(dir: &Path, n: u32) {
        let opts = rusty_leveldb::Options {
            write_buffer_size: 16 * 1024,
            ..Default::default()
        };
        let mut db = rusty_leveldb::DB::open(dir, opts).unwrap();
        for i in 0..n {
            db.put(format!("k{i:06}").as_bytes(), &[b'v'; 100]).unwrap();
        }
        db.flush().unwrap();
        for i in 0..n / 10 {
            db.put(format!("h{i:06}").as_bytes(), b"after flush")
                .unwrap();
        }
        db.close().unwrap();
    }

    #[test]
    /// A checkpoint of a database opens and holds exactly what the original holds; its tables
    /// are links, not copies.
    fn checkpoint_holds_the_same_data() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("data");
        db_with_keys(&src, 3000);
        let dst = t.path().join("stage/data");
        let stats = checkpoint(&src, &dst, 3).unwrap();
        assert_eq!(stats.attempts, 1);
        assert!(stats.tables > 0);
        let table = fs::read_dir(&dst)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with(".ldb"))
            .unwrap();
        assert!(
            table.metadata().unwrap().nlink() >= 2,
            "tables must be hard links"
        );
        let scratch_a = t.path().join("a");
        let scratch_b = t.path().join("b");
        scratch_copy(&src, &scratch_a).unwrap();
        scratch_copy(&dst, &scratch_b).unwrap();
        assert_eq!(
            inspect::summarize(&scratch_a).unwrap(),
            inspect::summarize(&scratch_b).unwrap()
        );
    }

    #[test]
    /// When a table the MANIFEST lists is gone on every attempt, the checkpoint gives up after
    /// the bounded number of tries and suggests stop mode.
    fn vanished_table_on_every_attempt_fails_suggesting_stop_mode() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("data");
        fs::create_dir_all(&src).unwrap();
        // One edit: log 3, new file 5 at level 0 (field 7), which does not exist.
        let edit = vec![2, 3, 7, 0, 5, 100, 1, b'a', 1, b'z'];
        fs::write(src.join("MANIFEST-000002"), encode(&[edit])).unwrap();
        fs::write(src.join("CURRENT"), "MANIFEST-000002\n").unwrap();
        fs::write(src.join("000003.log"), b"").unwrap();
        let err = checkpoint(&src, &t.path().join("stage"), 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("3 attempts") && err.contains("mode = \"stop\""),
            "{err}"
        );
        assert!(
            !t.path().join("stage").exists(),
            "a failed checkpoint leaves no staging"
        );
    }
}
