//! The registry of component kinds: the only place that matches on [`Kind`].
//!
//! Each kind owns its folder under `component/` (its config section, defaults, validation,
//! redaction, backup, restore, deep check and archive form). What the rest of akbackup needs
//! to know per kind is asked here: which config section and keys it has, how a component is
//! built from the config, the order `restore --all` stops and restores kinds in, the
//! documented archive names, and which deep check, import and export a kind has. A new kind is
//! a new folder plus one arm in each match below; the compiler lists every arm to write.
//!
//! Deliberately not here: anything a component instance can answer itself (its unit, its
//! service commands, its health check), which is on the [`Component`] trait.

use crate::component::Details;
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    archive::{ArchiveError, MongoExport},
    backup_set::ComponentRecord,
    component::{Component, files, mongodb, ssdb},
    config::Config,
    progress::ProgressRef,
    repository::Repository,
};

/// The kinds of component akbackup knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A directory tree (the control module).
    Files,
    /// A MongoDB instance.
    Mongodb,
    /// An SSDB store.
    Ssdb,
}

/// What the registry needs of each kind's config section, `[KIND.NAME]`: implemented by the
/// section's struct in the kind's folder (`component/<kind>/config.rs`).
pub trait Section {
    /// Where the component's data sits inside a set: its live directory, or a fixed path for
    /// data that is not one (a dump).
    fn repo_path(&self, name: &str) -> PathBuf;
    /// The live directory the data is read from and restored into, if the kind has one: a
    /// repository must not lie inside it, nor contain it.
    fn live_dir(&self) -> Option<&Path>;
    /// Every path key with its value, each of which must be absolute and printable.
    fn path_keys(&self) -> Vec<(&'static str, &Path)>;
    /// Checks of values beyond their types, e.g. globs that must compile.
    ///
    /// # Errors
    /// What is wrong and how to fix it, without the section (the caller prefixes it).
    fn validate(&self) -> Result<(), String>;
    /// The secrets written in the section itself, each as `(what, secret)`; `what` reads
    /// "auth in" or "a password in the uri of" and is followed by the section in messages.
    fn inline_secrets(&self) -> Vec<(&'static str, &str)>;
    /// Replaces every inline secret with `***`, for display.
    fn redact(&mut self);
}

/// `[KIND.NAME]` sections of one kind as `(name, section)`.
fn entries<T: Section>(map: &BTreeMap<String, T>) -> Vec<(&str, &dyn Section)> {
    map.iter()
        .map(|(n, c)| (n.as_str(), c as &dyn Section))
        .collect()
}

/// As [`entries`], writable.
fn entries_mut<T: Section>(map: &mut BTreeMap<String, T>) -> Vec<(&str, &mut dyn Section)> {
    map.iter_mut()
        .map(|(n, c)| (n.as_str(), c as &mut dyn Section))
        .collect()
}

impl Kind {
    /// Every kind, in the order config checks and messages take them (the control module,
    /// the stores, the databases).
    pub const ALL: [Self; 3] = [Self::Files, Self::Ssdb, Self::Mongodb];

    /// The config section and name prefix of this kind.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Mongodb => "mongodb",
            Self::Ssdb => "ssdb",
        }
    }

    /// The kind named `s` (`files`, `mongodb`, `ssdb`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The keys a `[KIND.NAME]` section accepts, read from its serde struct, so a new field
    /// is a valid key without a list to keep in step.
    #[must_use]
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Files => serde_aux::serde_introspection::serde_introspect::<files::FilesConfig>(),
            Self::Mongodb => {
                serde_aux::serde_introspection::serde_introspect::<mongodb::MongodbConfig>()
            }
            Self::Ssdb => serde_aux::serde_introspection::serde_introspect::<ssdb::SsdbConfig>(),
        }
    }

    /// The configured `[KIND.NAME]` sections of this kind, by name.
    #[must_use]
    pub fn sections(self, config: &Config) -> Vec<(&str, &dyn Section)> {
        match self {
            Self::Files => entries(&config.files),
            Self::Mongodb => entries(&config.mongodb),
            Self::Ssdb => entries(&config.ssdb),
        }
    }

    /// As [`Kind::sections`], writable (redaction).
    pub fn sections_mut(self, config: &mut Config) -> Vec<(&str, &mut dyn Section)> {
        match self {
            Self::Files => entries_mut(&mut config.files),
            Self::Mongodb => entries_mut(&mut config.mongodb),
            Self::Ssdb => entries_mut(&mut config.ssdb),
        }
    }

    /// Adds this kind's components of a standard Altcraft install to `config`.
    pub fn add_standard(self, config: &mut Config) {
        match self {
            Self::Files => config.files.extend(files::FilesConfig::standard()),
            Self::Mongodb => config.mongodb.extend(mongodb::MongodbConfig::standard()),
            Self::Ssdb => config.ssdb.extend(ssdb::SsdbConfig::standard()),
        }
    }

    /// Builds the component `name` of this kind from its section, or `None` when the config
    /// has no such section.
    #[must_use]
    pub fn build(self, name: ComponentName, config: &Config) -> Option<Box<dyn Component>> {
        match self {
            Self::Files => config
                .files
                .get(&name.name)
                .cloned()
                .map(|c| Box::new(files::FilesComponent::new(name, c)) as Box<dyn Component>),
            Self::Mongodb => {
                config.mongodb.get(&name.name).cloned().map(|c| {
                    Box::new(mongodb::MongodbComponent::new(name, c)) as Box<dyn Component>
                })
            }
            Self::Ssdb => config
                .ssdb
                .get(&name.name)
                .cloned()
                .map(|c| Box::new(ssdb::SsdbComponent::new(name, c)) as Box<dyn Component>),
        }
    }

    /// The order of kinds when `restore --all` stops services: the control module first, as
    /// it writes to the rest.
    #[must_use]
    pub const fn stop_rank(self) -> u8 {
        match self {
            Self::Files => 0,
            Self::Ssdb => 1,
            Self::Mongodb => 2,
        }
    }

    /// The order of kinds when `restore --all` restores: databases first (see
    /// [`crate::platform`]).
    #[must_use]
    pub const fn restore_rank(self) -> u8 {
        match self {
            Self::Mongodb => 0,
            Self::Ssdb => 1,
            Self::Files => 2,
        }
    }

    /// Whether a restore loads the data through the kind's running server (MongoDB) rather
    /// than writing files to the disk, which then needs room for them.
    #[must_use]
    pub const fn loads_through_server(self) -> bool {
        match self {
            Self::Mongodb => true,
            Self::Files | Self::Ssdb => false,
        }
    }

    /// Whether `verify --deep` has a check of its own for this kind (beyond the data read
    /// every verify does).
    #[must_use]
    pub const fn has_deep_check(self) -> bool {
        match self {
            Self::Files => false,
            Self::Mongodb | Self::Ssdb => true,
        }
    }

    /// The deep check of `verify --deep` on a stored component (SSDB: every key and block;
    /// MongoDB: every dump read back); problems, one line each. Files have none beyond the
    /// data read every verify does.
    #[must_use]
    pub fn deep_check(
        self,
        repo: &Repository,
        set_id: &str,
        record: &ComponentRecord,
        progress: &ProgressRef,
    ) -> Vec<String> {
        match self {
            Self::Files => Vec::new(),
            Self::Mongodb => mongodb::deep_check(repo, set_id, record, progress),
            Self::Ssdb => ssdb::deep_check(repo, set_id, record, progress),
        }
    }

    /// The lines `snapshots SET` prints under a component of this kind, from its manifest
    /// `details` (MongoDB: the consistency and one line a namespace).
    #[must_use]
    pub fn set_lines(self, details: &serde_json::Value) -> Vec<String> {
        match self {
            Self::Files | Self::Ssdb => Vec::new(),
            Self::Mongodb => mongodb::details::SetDetails::of(details).lines(),
        }
    }

    /// The lines `restore` prints under a component of this kind, from its restore report's
    /// `details` (MongoDB: one line a namespace loaded, then the totals).
    #[must_use]
    pub fn restore_lines(self, details: &serde_json::Value) -> Vec<String> {
        match self {
            Self::Files | Self::Ssdb => Vec::new(),
            Self::Mongodb => mongodb::details::RestoreDetails::lines(details),
        }
    }

    /// The stem of the documented archive name of `name` (`altcraft` for the control module,
    /// `ssdb-actions`, `mongodb-control`), without date and suffix.
    #[must_use]
    pub fn archive_stem(name: &ComponentName) -> String {
        match (name.kind, name.name.as_str()) {
            (Self::Files, "control") => "altcraft".to_string(),
            (kind, n) => format!("{kind}-{n}"),
        }
    }

    /// The component a documented archive stem names (see [`Kind::archive_stem`]).
    #[must_use]
    pub fn from_archive_stem(stem: &str) -> Option<ComponentName> {
        if stem == "altcraft" {
            return Some(ComponentName {
                kind: Self::Files,
                name: "control".to_string(),
            });
        }
        Self::ALL.into_iter().find_map(|kind| {
            let name = stem.strip_prefix(kind.as_str())?.strip_prefix('-')?;
            (!name.is_empty()).then(|| ComponentName {
                kind,
                name: name.to_string(),
            })
        })
    }

    /// Unpacks an archive of this kind for `import` into `staging`: the directory to store
    /// and the manifest details. Files and SSDB stores come as the documented `tar.gz` (an
    /// SSDB store must open); MongoDB as a mongodump archive or directory.
    ///
    /// # Errors
    /// [`ArchiveError`] naming the archive and what is wrong with it.
    pub(crate) fn unpack_import(
        self,
        path: &Path,
        inner: &dyn Component,
        staging: &Path,
    ) -> Result<(PathBuf, serde_json::Value), ArchiveError> {
        match self {
            Self::Files => crate::archive::unpack_tar(path, inner, staging),
            Self::Ssdb => {
                let (staged, mut details) = crate::archive::unpack_tar(path, inner, staging)?;
                ssdb::describe_import(path, &staged, &mut details)?;
                Ok((staged, details))
            }
            Self::Mongodb => mongodb::archive::unpack(path, staging),
        }
    }

    /// The file or directory name `export` writes for `name` taken on `date`.
    #[must_use]
    pub fn export_name(
        name: &ComponentName,
        date: jiff::civil::Date,
        mongo: MongoExport,
    ) -> String {
        let stem = Self::archive_stem(name);
        match (name.kind, mongo) {
            (Self::Mongodb, MongoExport::Directory { .. }) => format!("{stem}-{date}"),
            _ => format!("{stem}-{date}.tar.gz"),
        }
    }

    /// Writes the restored `tree` of a component of this kind to `partial` in its documented
    /// form; the caller renames it into place.
    ///
    /// # Errors
    /// [`ArchiveError`] naming the file being written.
    pub(crate) fn write_export(
        self,
        tree: &Path,
        partial: &Path,
        mongo: MongoExport,
        record: &ComponentRecord,
    ) -> Result<(), ArchiveError> {
        match self {
            Self::Files | Self::Ssdb => {
                crate::archive::write_tar(tree, partial, Path::new(&record.repo_path))
            }
            Self::Mongodb => mongodb::archive::write(tree, partial, mongo, record),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kind.name`, the name of a component everywhere (`--only files.control`, manifests).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentName {
    /// The kind.
    pub kind: Kind,
    /// The instance name from the config section.
    pub name: String,
}

impl fmt::Display for ComponentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.name)
    }
}

impl std::str::FromStr for ComponentName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s.split_once('.').ok_or_else(|| {
            format!("\"{s}\" is not a component name: use KIND.NAME, e.g. files.control")
        })?;
        let kind = Kind::parse(kind).ok_or_else(|| {
            format!(
                "unknown component kind \"{kind}\" in \"{s}\": use {}",
                Kind::ALL.map(Kind::as_str).join(", ")
            )
        })?;
        if name.is_empty() {
            return Err(format!(
                "\"{s}\" has no instance name: use KIND.NAME, e.g. files.control"
            ));
        }
        Ok(Self {
            kind,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind's name parses back to it, and archive stems round-trip for each kind.
    #[test]
    fn names_and_archive_stems_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            let name = ComponentName {
                kind,
                name: "x-1".to_string(),
            };
            assert_eq!(
                Kind::from_archive_stem(&Kind::archive_stem(&name)),
                Some(name)
            );
        }
        let control: ComponentName = "files.control".parse().expect("name");
        assert_eq!(Kind::archive_stem(&control), "altcraft");
        assert_eq!(Kind::from_archive_stem("altcraft"), Some(control));
        assert_eq!(Kind::from_archive_stem("ssdb-"), None);
        assert_eq!(Kind::from_archive_stem("other-x"), None);
    }

    /// The key lists read from the serde structs hold every field under its config name.
    #[test]
    fn keys_come_from_the_structs() {
        assert!(Kind::Files.keys().contains(&"on-read-error"));
        assert!(Kind::Mongodb.keys().contains(&"insert-batch"));
        assert!(Kind::Ssdb.keys().contains(&"deep-check-every"));
        for kind in Kind::ALL {
            assert!(!kind.keys().is_empty(), "{kind}");
            assert!(kind.keys().iter().all(|k| !k.contains('_')), "{kind}");
        }
    }
}
