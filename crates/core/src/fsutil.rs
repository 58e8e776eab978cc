//! Filesystem helpers: free space, atomic writes and the directory swap used by restore.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// Free bytes available to this user on the filesystem holding `path` (or its nearest
/// existing ancestor, since the repository may not exist yet).
///
/// # Errors
/// When no ancestor can be examined.
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let mut probe = path.to_path_buf();
    loop {
        if probe.exists() {
            let st = nix::sys::statvfs::statvfs(&probe).map_err(std::io::Error::from)?;
            return Ok(st.blocks_available() * st.fragment_size());
        }
        if !probe.pop() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no existing ancestor of {}", path.display()),
            ));
        }
    }
}

/// Writes `data` to `path` atomically: temp file in the same directory, fsync, rename.
///
/// # Errors
/// I/O errors; on failure the old file (if any) is untouched.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The first existing directory from `path` up to `/` that a user other than this one (or
/// root) could change: owned by another user, or group- or world-writable without the sticky
/// bit. Such a user could swap a directory on the way to `path` for a symlink while a restore
/// writes there, and send root's writes anywhere. Returns it and why.
#[must_use]
pub fn writable_by_others(path: &Path) -> Option<(PathBuf, String)> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    for dir in path.ancestors() {
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            // A link's own mode bits mean nothing (always rwxrwxrwx): its owner counts, and
            // where it leads (resolved, so no links are left there).
            if meta.uid() != 0 && meta.uid() != me {
                return Some((dir.to_path_buf(), format!("belongs to uid {}", meta.uid())));
            }
            if let Ok(real) = std::fs::canonicalize(dir)
                && let Some(found) = writable_by_others(&real)
            {
                return Some(found);
            }
            continue;
        }
        let mode = meta.mode();
        let sticky = mode & 0o1000 != 0;
        let why = if meta.uid() != 0 && meta.uid() != me {
            format!("belongs to uid {}", meta.uid())
        } else if mode & 0o002 != 0 && !sticky {
            "anyone can write (mode o+w, no sticky bit)".to_string()
        } else if mode & 0o020 != 0 && !sticky {
            format!("group {} can write (mode g+w)", meta.gid())
        } else {
            continue;
        };
        return Some((dir.to_path_buf(), why));
    }
    None
}

/// A sibling path of `path` with a suffix: `/opt/altcraft` + `restore-x` ->
/// `/opt/.altcraft.akbackup-restore-x` (hidden) or `/opt/altcraft.akbackup-prev-x` (visible).
#[must_use]
pub fn sibling(path: &Path, suffix: &str, hidden: bool) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "root".into(), |n| n.to_string_lossy().into_owned());
    let new = if hidden {
        format!(".{name}.akbackup-{suffix}")
    } else {
        format!("{name}.akbackup-{suffix}")
    };
    path.with_file_name(new)
}

/// Puts `staged` in place of `live` and returns where the previous contents went.
///
/// When `live` exists the two are exchanged atomically (`renameat2(RENAME_EXCHANGE)`), so at
/// every instant `live` holds either the old or the new tree, then the old tree is renamed to
/// `keep` (or `keep-2`, `keep-3`, ... when that name is taken). If that last rename fails, the
/// old tree stays where the exchange put it and that path is returned: it is never deleted.
/// Where the filesystem cannot exchange, two renames are used; between them `live` is briefly
/// absent, and both trees still exist under printed names.
///
/// Crash safety: before the exchange the staged tree is renamed to a hidden
/// `.<keep name>.<inode of the staged tree>` next to `live`. A `kill -9` at any point leaves
/// that name telling what it holds: the staged tree (same inode: not swapped in yet) or the
/// previous tree (another inode: swapped out, not yet renamed to `keep`).
/// [`recover_interrupted_restore`] finishes the job on the next run.
///
/// # Errors
/// I/O errors, only when nothing was changed: `live` still holds the old tree and `staged`
/// the new one. A `live` that is a symlink is refused (the swap would replace the link).
pub fn swap_into_place(
    staged: &Path,
    live: &Path,
    keep: &Path,
) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(live) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::rename(staged, live)?;
            return Ok(None);
        }
        Err(e) => return Err(e),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(std::io::Error::other(format!(
                "{} is a symlink: configure the real directory it points to",
                live.display()
            )));
        }
        Ok(_) => {}
    }
    let keep = unused_name(keep);
    let ino = std::fs::symlink_metadata(staged)?.ino();
    let keep_name = keep
        .file_name()
        .map_or_else(|| "previous".into(), |n| n.to_string_lossy().into_owned());
    let swapping = live.with_file_name(format!(".{keep_name}.{ino}"));
    std::fs::rename(staged, &swapping)?;
    let undo = || {
        let _ = std::fs::rename(&swapping, staged);
    };
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &swapping,
        nix::fcntl::AT_FDCWD,
        live,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => match std::fs::rename(&swapping, &keep) {
            Ok(()) => Ok(Some(keep)),
            // The new tree is live; the old one stays where the exchange put it.
            Err(_) => Ok(Some(swapping)),
        },
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            if let Err(err) = std::fs::rename(live, &keep) {
                undo();
                return Err(err);
            }
            if let Err(err) = std::fs::rename(&swapping, live) {
                // Put the old tree back so the service keeps its data.
                std::fs::rename(&keep, live)?;
                undo();
                return Err(err);
            }
            Ok(Some(keep))
        }
        Err(errno) => {
            undo();
            Err(std::io::Error::from(errno))
        }
    }
}

/// Cleans up after a restore of `live` that was killed (`kill -9`, power loss): removes
/// staging directories `.<name>.akbackup-restore-*` whose owner died ([`crate::stage::sweep`]),
/// and settles every hidden `.<keep name>.<inode>` left by [`swap_into_place`]: still the
/// staged tree (same inode) -> removed, or moved into `live` if `live` is gone; the previous
/// tree (another inode) -> renamed to its keep name, so it is where the interrupted run said
/// it would be. While another run restores the same directory (a live owner of a staging
/// directory there, for instance a restore from a second repository) the swap names are left
/// alone: one may be that run's swap in progress. Returns one line per action, for the
/// operator.
#[must_use]
pub fn recover_interrupted_restore(live: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let (Some(parent), Some(name)) = (live.parent(), live.file_name()) else {
        return Vec::new();
    };
    let staging = crate::stage::restore_prefix(live);
    let mut notes: Vec<String> = crate::stage::sweep(parent, &staging)
        .into_iter()
        .map(|n| format!("{n} (the staging directory of an interrupted restore)"))
        .collect();
    if crate::stage::any_alive(parent, &staging) {
        return notes;
    }
    let name = name.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return notes;
    };
    let hidden = format!(".{name}.akbackup-");
    for entry in entries.filter_map(Result::ok) {
        let fname = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = fname.strip_prefix(&hidden) else {
            continue;
        };
        let path = entry.path();
        if rest.starts_with("restore-") || rest.starts_with("stage-") {
            continue;
        }
        let Some((keep_name, ino)) = fname[1..].rsplit_once('.') else {
            continue;
        };
        let Ok(ino) = ino.parse::<u64>() else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.ino() == ino {
            // The restored tree, never swapped in.
            if std::fs::symlink_metadata(live).is_err() {
                if std::fs::rename(&path, live).is_ok() {
                    notes.push(format!(
                        "an interrupted restore had moved {} away: its restored tree is now in place",
                        live.display()
                    ));
                }
            } else if std::fs::remove_dir_all(&path).is_ok() {
                notes.push(format!(
                    "removed {}, restored data an interrupted restore never swapped in",
                    path.display()
                ));
            }
        } else {
            let keep = unused_name(&parent.join(keep_name));
            if std::fs::rename(&path, &keep).is_ok() {
                notes.push(format!(
                    "an interrupted restore swapped {} in place: the previous contents are at {}",
                    live.display(),
                    keep.display()
                ));
            }
        }
    }
    notes
}

/// `path`, or `path-2`, `path-3`, ... : the first that does not exist.
pub fn unused_name(path: &Path) -> PathBuf {
    if std::fs::symlink_metadata(path).is_err() {
        return path.to_path_buf();
    }
    (2..)
        .map(|n| PathBuf::from(format!("{}-{n}", path.display())))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| path.to_path_buf())
}

/// A glob set matching any of `patterns` (matched on file names). Invalid patterns are
/// rejected when the config is loaded, so here they are skipped.
#[must_use]
pub fn glob_set(patterns: &[String]) -> globset::GlobSet {
    let mut builder = globset::GlobSetBuilder::new();
    for g in patterns {
        if let Ok(glob) = globset::Glob::new(g) {
            builder.add(glob);
        }
    }
    builder
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty())
}

/// Sum of the sizes of all regular files under `path` (0 when it does not exist).
#[must_use]
pub fn tree_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// The swap leaves the new tree live and the old one at the kept path.
    fn swap_keeps_previous() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        let staged = t.path().join("staged");
        let keep = t.path().join("keep");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("f"), "old").unwrap();
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("f"), "new").unwrap();
        let kept = swap_into_place(&staged, &live, &keep).unwrap();
        assert_eq!(kept.as_deref(), Some(keep.as_path()));
        assert_eq!(std::fs::read_to_string(live.join("f")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(keep.join("f")).unwrap(), "old");
        assert!(!staged.exists());
    }

    #[test]
    /// A taken keep name gets a suffix instead of failing after the exchange (which once
    /// deleted the old tree), and a symlinked live path is refused.
    fn keep_name_taken_and_symlink_refused() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        let staged = t.path().join("staged");
        let keep = t.path().join("keep");
        for d in [&live, &staged, &keep] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(live.join("f"), "old").unwrap();
        std::fs::write(keep.join("f"), "someone else's").unwrap();
        let kept = swap_into_place(&staged, &live, &keep).unwrap().unwrap();
        assert_eq!(kept, t.path().join("keep-2"));
        assert_eq!(std::fs::read_to_string(kept.join("f")).unwrap(), "old");
        assert_eq!(
            std::fs::read_to_string(keep.join("f")).unwrap(),
            "someone else's"
        );

        let link = t.path().join("link");
        std::os::unix::fs::symlink(&live, &link).unwrap();
        std::fs::create_dir(&staged).unwrap();
        assert!(swap_into_place(&staged, &link, &t.path().join("k")).is_err());
        assert!(staged.exists() && live.exists());
    }

    #[test]
    /// A restore killed between the steps of the swap is settled by the next run: the
    /// previous tree ends under its keep name, the never-swapped staged tree is removed, a
    /// partial staging directory too, and live data is never touched.
    fn interrupted_swaps_are_recovered() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("f"), "new").unwrap();
        // Killed after the exchange: the old tree sits at the hidden swapping name.
        let old = t.path().join("elsewhere");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("f"), "old").unwrap();
        let staged_ino = std::fs::metadata(&live).unwrap().ino();
        let swapping = t.path().join(format!(".live.akbackup-prev-X.{staged_ino}"));
        std::fs::rename(&old, &swapping).unwrap();
        // Killed before the exchange of another run: staged tree under its own inode.
        let unswapped = t.path().join("u");
        std::fs::create_dir(&unswapped).unwrap();
        let u_ino = std::fs::metadata(&unswapped).unwrap().ino();
        let unswapped_named = t.path().join(format!(".live.akbackup-prev-Y.{u_ino}"));
        std::fs::rename(&unswapped, &unswapped_named).unwrap();
        // Killed while writing: partial staging, its owner file's lock free (owner dead).
        let partial = t.path().join(".live.akbackup-restore-1-Z");
        std::fs::create_dir(&partial).unwrap();
        std::fs::write(t.path().join(".live.akbackup-restore-1-Z.owner"), "").unwrap();

        let notes = recover_interrupted_restore(&live);
        assert_eq!(notes.len(), 3, "{notes:?}");
        let kept = t.path().join("live.akbackup-prev-X");
        assert_eq!(std::fs::read_to_string(kept.join("f")).unwrap(), "old");
        assert!(!swapping.exists() && !unswapped_named.exists() && !partial.exists());
        assert!(!t.path().join(".live.akbackup-restore-1-Z.owner").exists());
        assert_eq!(std::fs::read_to_string(live.join("f")).unwrap(), "new");
        assert!(!t.path().join("live.akbackup-prev-Y").exists());
    }

    #[test]
    /// Sibling names stay in the same directory.
    fn sibling_names() {
        assert_eq!(
            sibling(Path::new("/opt/altcraft"), "prev-1", false),
            PathBuf::from("/opt/altcraft.akbackup-prev-1")
        );
        assert_eq!(
            sibling(Path::new("/opt/altcraft"), "restore-1", true),
            PathBuf::from("/opt/.altcraft.akbackup-restore-1")
        );
    }
}
