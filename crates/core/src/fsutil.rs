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
/// every instant `live` holds either the old or the new tree, then the old tree (now at
/// `staged`) is renamed to `keep` (or `keep-2`, `keep-3`, ... when that name is taken). If
/// that last rename fails, the old tree stays at `staged` and that path is returned: it is
/// never deleted. Where the filesystem cannot exchange, two renames are used; between them
/// `live` is briefly absent, and both trees still exist under printed names.
///
/// # Errors
/// I/O errors, only when nothing was changed: `live` still holds the old tree and `staged`
/// the new one. A `live` that is a symlink is refused (the swap would replace the link).
pub fn swap_into_place(
    staged: &Path,
    live: &Path,
    keep: &Path,
) -> std::io::Result<Option<PathBuf>> {
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
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        staged,
        nix::fcntl::AT_FDCWD,
        live,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => match std::fs::rename(staged, &keep) {
            Ok(()) => Ok(Some(keep)),
            // The new tree is live; the old one stays where the exchange put it.
            Err(_) => Ok(Some(staged.to_path_buf())),
        },
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            std::fs::rename(live, &keep)?;
            if let Err(err) = std::fs::rename(staged, live) {
                // Put the old tree back so the service keeps its data.
                std::fs::rename(&keep, live)?;
                return Err(err);
            }
            Ok(Some(keep))
        }
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}

/// `path`, or `path-2`, `path-3`, ... : the first that does not exist.
fn unused_name(path: &Path) -> PathBuf {
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
