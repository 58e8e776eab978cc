//! The source of a backup set: what the archiver reads, with our own counts and error capture.
//!
//! Owns [`SetSource`], which hands the library's archiver every part of a set in one tree, each
//! read from its own root and stored under its `repo_path`. The library only logs per-file read
//! errors, so this records them itself, with the bytes read and the files that changed while
//! they were read. It does not write anything: `RusticEngine::backup` runs the archiver.

use std::{
    fs::File,
    io::Read,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use rustic_core::{
    ErrorKind, Excludes, LocalSource, LocalSourceFilterOptions, LocalSourceSaveOptions, ReadSource,
    ReadSourceEntry, ReadSourceOpen, RusticError, RusticResult, repofile::Node,
};

use super::{
    EngineError, EngineResult, PartStats, SourcePart, error::first_line, tree::go_dir_mode,
};
use crate::progress::ProgressRef;

/// The [`ReadSource`] of a backup set: every part in snapshot-path order, each read from its
/// own root and renamed to its `repo_path`, with our own counting and error capture.
pub(super) struct SetSource {
    parts: Vec<(SourcePart, LocalSource)>,
    shared: Arc<Shared>,
}

struct Shared {
    stats: Vec<Mutex<PartStats>>,
    labels: Vec<String>,
    progress: ProgressRef,
}

impl Shared {
    fn with<F: FnOnce(&mut PartStats)>(&self, part: usize, f: F) {
        if let Some(m) = self.stats.get(part)
            && let Ok(mut s) = m.lock()
        {
            f(&mut s);
        }
    }
}

impl SetSource {
    pub(super) fn new(parts: &[SourcePart], progress: ProgressRef) -> EngineResult<Self> {
        let mut sorted = parts.to_vec();
        sorted.sort_by(|a, b| a.repo_path.cmp(&b.repo_path));
        let mut built = Vec::new();
        for part in sorted {
            let globs = part
                .excludes
                .iter()
                .map(|g| format!("!{g}"))
                .collect::<Vec<_>>();
            let excludes = Excludes::default().globs(globs);
            let local = LocalSource::new(
                LocalSourceSaveOptions::default(),
                &excludes,
                &LocalSourceFilterOptions::default(),
                &[&part.read_root],
            )
            .map_err(|e| EngineError::library("reading source", &e))?;
            built.push((part, local));
        }
        let shared = Arc::new(Shared {
            stats: built
                .iter()
                .map(|_| Mutex::new(PartStats::default()))
                .collect(),
            labels: built.iter().map(|(p, _)| p.label.clone()).collect(),
            progress,
        });
        Ok(Self {
            parts: built,
            shared,
        })
    }

    /// The stats of each part, in the order of `parts` as the caller gave them.
    pub(super) fn finish(&self, parts: &[SourcePart]) -> Vec<PartStats> {
        parts
            .iter()
            .map(|p| {
                self.shared
                    .labels
                    .iter()
                    .position(|l| *l == p.label)
                    .and_then(|i| self.shared.stats.get(i))
                    .and_then(|m| m.lock().ok().map(|s| s.clone()))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Opens a file for the archiver, counting bytes and noticing changes during the read.
pub(super) struct TrackedOpen {
    path: PathBuf,
    shown: String,
    part: usize,
    size: u64,
    mtime: Option<SystemTime>,
    shared: Arc<Shared>,
}

impl ReadSourceOpen for TrackedOpen {
    type Reader = TrackedReader;
    fn open(self) -> RusticResult<Self::Reader> {
        match File::open(&self.path) {
            Ok(file) => Ok(TrackedReader {
                file,
                open: self,
                done: false,
            }),
            Err(err) => {
                let message = format!("{}: {err}", self.shown);
                let size = self.size;
                // The archiver leaves the file out: so must the counts.
                self.shared.with(self.part, |s| {
                    s.errors.push(message.clone());
                    s.files = s.files.saturating_sub(1);
                    s.bytes = s.bytes.saturating_sub(size);
                });
                Err(
                    RusticError::with_source(ErrorKind::InputOutput, "cannot open {path}", err)
                        .attach_context("path", self.shown),
                )
            }
        }
    }
}

pub(super) struct TrackedReader {
    file: File,
    open: TrackedOpen,
    done: bool,
}

impl Read for TrackedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.file.read(buf) {
            Ok(0) => {
                if !self.done {
                    self.done = true;
                    let changed = match std::fs::symlink_metadata(&self.open.path) {
                        Ok(m) => m.len() != self.open.size || m.modified().ok() != self.open.mtime,
                        Err(_) => true,
                    };
                    if changed {
                        let shown = self.open.shown.clone();
                        self.open
                            .shared
                            .with(self.open.part, |s| s.changed.push(shown));
                    }
                }
                Ok(0)
            }
            Ok(n) => {
                self.open
                    .shared
                    .with(self.open.part, |s| s.read_bytes += n as u64);
                Ok(n)
            }
            Err(err) => {
                let message = format!("{}: {err}", self.open.shown);
                self.open
                    .shared
                    .with(self.open.part, |s| s.errors.push(message));
                Err(err)
            }
        }
    }
}

impl ReadSource for SetSource {
    type Open = TrackedOpen;
    type Iter = Box<dyn Iterator<Item = RusticResult<ReadSourceEntry<TrackedOpen>>> + Send>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let mut all: Box<dyn Iterator<Item = RusticResult<ReadSourceEntry<TrackedOpen>>> + Send> =
            Box::new(std::iter::empty());
        for (index, (part, local)) in self.parts.iter().enumerate() {
            let shared = self.shared.clone();
            let part = part.clone();
            let label = part.label.clone();
            let expected = part.expected_bytes;
            let begin_shared = self.shared.clone();
            let end_shared = self.shared.clone();
            let end_label = label.clone();
            let root_entry = root_entry(&part, index, &self.shared);
            let walker = local.entries().filter_map(move |item| match item {
                Ok(entry) => Some(Ok(map_entry(entry, &part, index, &shared))),
                Err(err) => {
                    let message = first_line(&err);
                    shared.with(index, |s| {
                        s.errors
                            .push(format!("{}: {message}", part.read_root.display()))
                    });
                    None
                }
            });
            let begin = std::iter::once(()).filter_map(move |()| {
                begin_shared.progress.begin(&label, expected);
                None
            });
            let end = std::iter::once(()).filter_map(move |()| {
                end_shared.progress.end(&end_label);
                None
            });
            all = Box::new(all.chain(begin).chain(root_entry).chain(walker).chain(end));
        }
        all
    }
}

/// The component's root directory itself, with its own metadata (the library's walker skips
/// it, which would lose the root's mode and owner).
fn root_entry(
    part: &SourcePart,
    index: usize,
    shared: &Arc<Shared>,
) -> Option<RusticResult<ReadSourceEntry<TrackedOpen>>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(&part.meta_root) {
        Ok(m) => {
            let name = part.repo_path.file_name()?;
            let mut meta = rustic_core::repofile::Metadata {
                mode: Some(go_dir_mode(m.mode())),
                uid: Some(m.uid()),
                gid: Some(m.gid()),
                size: 0,
                ..Default::default()
            };
            meta.mtime =
                jiff::Timestamp::new(m.mtime(), i32::try_from(m.mtime_nsec()).unwrap_or(0)).ok();
            meta.user = nix::unistd::User::from_uid(m.uid().into())
                .ok()
                .flatten()
                .map(|u| u.name);
            meta.group = nix::unistd::Group::from_gid(m.gid().into())
                .ok()
                .flatten()
                .map(|g| g.name);
            shared.with(index, |s| s.dirs += 1);
            let node = Node::new_node(name, rustic_core::repofile::NodeType::Dir, meta);
            Some(Ok(ReadSourceEntry {
                path: part.repo_path.clone(),
                node,
                open: None,
            }))
        }
        Err(err) => {
            shared.with(index, |s| {
                s.errors
                    .push(format!("{}: {err}", part.read_root.display()))
            });
            None
        }
    }
}

fn map_entry<O>(
    entry: ReadSourceEntry<O>,
    part: &SourcePart,
    index: usize,
    shared: &Arc<Shared>,
) -> ReadSourceEntry<TrackedOpen> {
    let ReadSourceEntry {
        path,
        mut node,
        open,
    } = entry;
    if part.ctime_from_mtime {
        node.meta.ctime = node.meta.mtime;
    }
    let rel = path
        .strip_prefix(&part.read_root)
        .unwrap_or(&path)
        .to_path_buf();
    let repo_path = part.repo_path.join(&rel);
    if node.is_dir() {
        shared.with(index, |s| s.dirs += 1);
    } else if node.is_file() {
        let size = node.meta.size;
        shared.with(index, |s| {
            s.files += 1;
            s.bytes += size;
        });
        shared.progress.advance(&part.label, size);
    } else {
        shared.with(index, |s| s.others += 1);
    }
    let open = open.map(|_| TrackedOpen {
        shown: repo_path.display().to_string(),
        path: path.clone(),
        part: index,
        size: node.meta.size,
        mtime: node.meta.mtime.as_ref().map(|t| SystemTime::from(*t)),
        shared: shared.clone(),
    });
    ReadSourceEntry {
        path: repo_path,
        node,
        open,
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, path::Path};

    use super::*;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            stats: vec![Mutex::new(PartStats::default())],
            labels: vec!["files.test".to_string()],
            progress: crate::progress::none(),
        })
    }

    fn tracked(path: &Path, shared: &Arc<Shared>) -> TrackedOpen {
        let m = std::fs::metadata(path).unwrap();
        TrackedOpen {
            path: path.to_path_buf(),
            shown: path.display().to_string(),
            part: 0,
            size: m.len(),
            mtime: m.modified().ok(),
            shared: shared.clone(),
        }
    }

    #[test]
    /// A file that grows between the start and the end of its read is reported as changed;
    /// one left alone is not.
    fn file_changed_while_read_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grows.dat");
        std::fs::write(&path, vec![7u8; 64 * 1024]).unwrap();
        let s = shared();
        let mut reader = tracked(&path, &s).open().unwrap();
        let mut buf = vec![0u8; 1024];
        assert_eq!(reader.read(&mut buf).unwrap(), 1024);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more")
            .unwrap();
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        let stats = s.stats[0].lock().unwrap().clone();
        assert_eq!(stats.changed, vec![path.display().to_string()]);

        let still = dir.path().join("still.dat");
        std::fs::write(&still, b"quiet").unwrap();
        let s = shared();
        std::io::copy(
            &mut tracked(&still, &s).open().unwrap(),
            &mut std::io::sink(),
        )
        .unwrap();
        let stats = s.stats[0].lock().unwrap().clone();
        assert!(stats.changed.is_empty());
        assert_eq!(stats.read_bytes, 5);
    }

    #[test]
    /// A file that cannot be opened is recorded as an error and taken out of the counts.
    fn unopenable_file_is_an_error_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.dat");
        std::fs::write(&path, b"12345").unwrap();
        let s = shared();
        {
            let mut st = s.stats[0].lock().unwrap();
            st.files = 1;
            st.bytes = 5;
        }
        let open = tracked(&path, &s);
        std::fs::remove_file(&path).unwrap();
        assert!(open.open().is_err());
        let stats = s.stats[0].lock().unwrap().clone();
        assert_eq!((stats.files, stats.bytes), (0, 0));
        assert_eq!(stats.errors.len(), 1);
        assert!(stats.errors[0].contains("gone.dat"));
    }
}
