//! A backup set's manifest: what one `akbackup backup` run stored, component by component.
//!
//! A set is one restic snapshot holding every component under its original absolute path,
//! so the standard `restic` client restores the documented layout. The manifest is kept as
//! JSON in the snapshot's description field (restic ignores it, rustic shows it). A set is
//! written in two steps: the snapshot is first saved tagged [`PARTIAL_TAG`], then, when every
//! component succeeded and was verified, rewritten with [`SET_TAG`] and the final manifest.
//! A crash in between leaves only a partial snapshot, which is never listed as a set and is
//! removed by the next run that holds the lock.

use serde::{Deserialize, Serialize};

/// Tag of every complete akbackup set.
pub const SET_TAG: &str = "akbackup";
/// Tag of a snapshot whose set was not completed.
pub const PARTIAL_TAG: &str = "akbackup-partial";
/// Manifest format version.
pub const MANIFEST_FORMAT: u32 = 1;

/// State of a set or component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything stored and verified.
    Complete,
    /// Stored with warnings (skipped files, files changed while read).
    Warning,
    /// Not usable.
    Failed,
}

/// The manifest of one backup set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// akbackup version that wrote it.
    pub akbackup_version: String,
    /// Host name.
    pub host: String,
    /// Start of the run (RFC 3339).
    pub started: jiff::Timestamp,
    /// End of the run.
    pub finished: jiff::Timestamp,
    /// Overall status.
    pub status: Status,
    /// User tags given with `--tag`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// One record per component.
    pub components: Vec<ComponentRecord>,
}

/// What the manifest says about one component.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ComponentRecord {
    /// `kind.name`.
    pub name: String,
    /// `files`, `mongodb`, `ssdb`.
    pub kind: String,
    /// Where the data came from (path or redacted URI).
    pub source: String,
    /// Absolute path of the data inside the snapshot.
    pub repo_path: String,
    /// Regular files stored.
    pub files: u64,
    /// Directories stored.
    pub dirs: u64,
    /// Total bytes of the files.
    pub bytes: u64,
    /// Bytes read this time (unchanged files are not read again).
    pub read_bytes: u64,
    /// Component status.
    pub status: Status,
    /// Non-fatal problems.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Fatal problems.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Kind-specific facts (key counts, digests, consistency notes).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Seconds spent making the data readable before it was stored (the MongoDB dump, the
    /// SSDB checkpoint or stop); storing is one step for the whole set.
    #[serde(default)]
    pub prepare_seconds: f64,
}

impl Manifest {
    /// Parses a manifest from a snapshot description.
    #[must_use]
    pub fn from_description(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The JSON kept in the snapshot description.
    #[must_use]
    pub fn to_description(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The record of a component.
    #[must_use]
    pub fn component(&self, name: &str) -> Option<&ComponentRecord> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Total bytes of all components.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.components.iter().map(|c| c.bytes).sum()
    }
}

/// A set as listed: snapshot id, manifest and storage figures.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSet {
    /// Snapshot id (full hex); also usable with the `restic` client.
    pub id: String,
    /// The manifest.
    pub manifest: Manifest,
    /// Bytes this set added to the repository (after compression and dedup).
    pub added_bytes: Option<u64>,
}

impl BackupSet {
    /// The first 8 hex digits, as shown in tables.
    #[must_use]
    pub fn short_id(&self) -> &str {
        &self.id[..8.min(self.id.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A manifest survives the trip through the snapshot description.
    fn manifest_round_trip() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            akbackup_version: "0.1.0".into(),
            host: "h".into(),
            started: jiff::Timestamp::UNIX_EPOCH,
            finished: jiff::Timestamp::UNIX_EPOCH,
            status: Status::Complete,
            tags: vec![],
            components: vec![ComponentRecord {
                name: "files.control".into(),
                kind: "files".into(),
                source: "/opt/altcraft".into(),
                repo_path: "/opt/altcraft".into(),
                files: 3,
                dirs: 1,
                bytes: 10,
                read_bytes: 10,
                status: Status::Complete,
                warnings: vec![],
                errors: vec![],
                details: serde_json::Value::Null,
                prepare_seconds: 0.0,
            }],
        };
        let back = Manifest::from_description(&m.to_description()).unwrap();
        assert_eq!(back.component("files.control").unwrap().files, 3);
        assert_eq!(back.total_bytes(), 10);
        assert!(Manifest::from_description("not json").is_none());
    }
}
