//! Snapshot trees as the layers above see them: the checked walk, and restic's mode bits.
//!
//! Owns the reading of the library's tree nodes into [`Entry`] values: every name is checked
//! before it is joined onto a path (a crafted tree must not make a restore write outside its
//! destination), and restic's Go file-mode bits are mapped to Unix ones and back. It does not
//! load snapshots or talk to storage beyond the trees it is handed the repository for.

use std::path::{Path, PathBuf};

use rustic_core::{
    IndexedFullStatus, Repository,
    repofile::{Node, SnapshotFile},
};

use super::{BlobRef, EngineError, EngineResult, Entry, EntryKind};

/// Lists the subtree at absolute `path` of snapshot `snap` (`id` as the caller spelled it,
/// for messages), root first, parents before children; see `Engine::walk`.
pub(super) fn walk(
    repo: &Repository<IndexedFullStatus>,
    snap: &SnapshotFile,
    id: &str,
    path: &Path,
) -> EngineResult<Vec<Entry>> {
    let root = repo
        .node_from_snapshot_and_path(snap, &path.display().to_string())
        .map_err(|e| {
            // "Not there" and "cannot be read" are different answers: a damaged tree blob
            // once showed as "not in snapshot".
            let full = e.to_string();
            if full.contains("not found in tree") || full.contains("is not a directory") {
                EngineError::NotInSnapshot(format!(
                    "{} is not in snapshot {}",
                    path.display(),
                    &id[..8.min(id.len())]
                ))
            } else {
                EngineError::library("reading the set's directory tree", &e)
            }
        })?;
    let mut out = vec![entry_of(PathBuf::new(), &root)];
    // Our own depth-first walk instead of the library's `ls`, which joins every name onto
    // the path unchecked: a name `../../x`, `/abs` or `a\x2fb` (unescaped to `a/b`) would
    // become a path outside the destination of whoever writes the entries. Each name is
    // checked here, before it is joined, so every consumer (restore, export, verify
    // --deep, the SSDB and MongoDB paths) gets only paths made of plain names.
    let load = |tree| {
        repo.get_tree(&tree)
            .map(|t| t.nodes.into_iter())
            .map_err(|e| EngineError::library("reading tree", &e))
    };
    let mut stack = Vec::new();
    if root.is_dir()
        && let Some(tree) = root.subtree
    {
        stack.push(Frame {
            dir: PathBuf::new(),
            nodes: load(tree)?,
            seen: std::collections::HashSet::new(),
        });
    }
    while let Some(frame) = stack.last_mut() {
        let Some(node) = frame.nodes.next() else {
            stack.pop();
            continue;
        };
        let name = node.name().into_owned();
        let refused = name_problem(&name)
            .or_else(|| (!frame.seen.insert(name.clone())).then_some("appears twice"));
        if let Some(reason) = refused {
            return Err(EngineError::DamagedTree {
                set: id[..8.min(id.len())].to_string(),
                entry: format!(
                    "{name:?} in {}",
                    path.join(&frame.dir).components().as_path().display()
                ),
                reason,
            });
        }
        let p = frame.dir.join(&name);
        let sub = node.subtree.filter(|_| node.is_dir());
        out.push(entry_of(p.clone(), &node));
        if let Some(tree) = sub {
            stack.push(Frame {
                dir: p,
                nodes: load(tree)?,
                seen: std::collections::HashSet::new(),
            });
        }
    }
    Ok(out)
}

// Go's os.FileMode bits used by restic for the special permission bits.
const GO_MODE_SETUID: u32 = 1 << 23;
const GO_MODE_SETGID: u32 = 1 << 22;
const GO_MODE_STICKY: u32 = 1 << 20;

/// A directory's Unix mode in restic's Go form, special bits included.
pub(super) fn go_dir_mode(mode: u32) -> u32 {
    let mut go = (mode & 0o777) | (1 << 31);
    if mode & 0o4000 != 0 {
        go |= GO_MODE_SETUID;
    }
    if mode & 0o2000 != 0 {
        go |= GO_MODE_SETGID;
    }
    if mode & 0o1000 != 0 {
        go |= GO_MODE_STICKY;
    }
    go
}

fn unix_mode_from_go(go: u32) -> u32 {
    let mut mode = go & 0o777;
    if go & GO_MODE_SETUID != 0 {
        mode |= 0o4000;
    }
    if go & GO_MODE_SETGID != 0 {
        mode |= 0o2000;
    }
    if go & GO_MODE_STICKY != 0 {
        mode |= 0o1000;
    }
    mode
}

/// One directory of [`walk`] in progress: its path, its entries still to visit and
/// the names seen so far.
struct Frame {
    dir: PathBuf,
    nodes: std::vec::IntoIter<Node>,
    seen: std::collections::HashSet<std::ffi::OsString>,
}

/// Why `name` (unescaped) cannot be the name of a directory entry, if it cannot: joined onto
/// a path it would name another place than an entry of that directory.
fn name_problem(name: &std::ffi::OsStr) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        Some("has an empty name")
    } else if bytes == b"." || bytes == b".." {
        Some("is named like a directory link")
    } else if bytes.contains(&b'/') {
        Some("has a name containing '/'")
    } else if bytes.contains(&0) {
        Some("has a name containing a NUL byte")
    } else {
        None
    }
}

pub(super) fn entry_of(path: PathBuf, node: &Node) -> Entry {
    use rustic_core::repofile::NodeType;
    let kind = match &node.node_type {
        NodeType::File => EntryKind::File,
        NodeType::Dir => EntryKind::Dir,
        NodeType::Symlink { .. } => EntryKind::Symlink(node.node_type.to_link().to_path_buf()),
        other => EntryKind::Other(other.to_string()),
    };
    Entry {
        path,
        kind,
        mode: node.meta.mode.map(unix_mode_from_go),
        uid: node.meta.uid,
        gid: node.meta.gid,
        mtime: node.meta.mtime,
        atime: node.meta.atime,
        size: node.meta.size,
        blobs: node
            .content
            .as_ref()
            .map(|c| {
                c.iter()
                    .map(|id| BlobRef(id.to_hex().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// restic's Go file-mode bits map back to Unix permission and special bits.
    fn go_mode_conversion() {
        assert_eq!(unix_mode_from_go(0o644), 0o644);
        assert_eq!(unix_mode_from_go((1 << 31) | (1 << 22) | 0o775), 0o2775);
        assert_eq!(unix_mode_from_go((1 << 31) | (1 << 20) | 0o777), 0o1777);
        assert_eq!(unix_mode_from_go((1 << 23) | 0o755), 0o4755);
        assert_eq!(unix_mode_from_go(go_dir_mode(0o2775)), 0o2775);
        assert_eq!(unix_mode_from_go(go_dir_mode(0o1777)), 0o1777);
    }

    /// Names that would step out of their directory once joined are refused, also when the
    /// tree spells them with restic's escapes (`\x2f` is `/`, `\x00` is NUL), which the
    /// library unescapes.
    #[test]
    fn crafted_names_are_refused_after_unescaping() {
        let named = |name: &str| -> Node {
            serde_json::from_value(serde_json::json!({"name": name, "type": "file"}))
                .expect("node json")
        };
        for bad in [
            "", ".", "..", "../../x", "/abs", "a/b", "a\\x2fb", "a\\x00b", "a\u{0}b",
        ] {
            let node = named(bad);
            assert!(
                name_problem(&node.name()).is_some(),
                "{bad:?} (unescaped {:?}) was accepted",
                node.name()
            );
        }
        for good in ["a", "...", "a b", "a\\nb", "x\\x2", ".hidden", "é"] {
            let node = named(good);
            assert_eq!(name_problem(&node.name()), None, "{good:?} was refused");
        }
    }
}
