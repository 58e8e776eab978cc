//! The MongoDB facts a set's manifest and a restore report carry, typed. They are stored as
//! the same JSON as before (the manifest's `details`), so sets written by earlier releases
//! read unchanged: every field has a default, and an imported set (made from a mongodump
//! outside akbackup) has no server version.
//!
//! The lines `snapshots SET` and `restore` print for a MongoDB component are made here, so the
//! binary knows nothing of these fields.

use serde::{Deserialize, Serialize};

use super::dump::CollectionRecord;
use crate::units::human_bytes;

/// `details` of a MongoDB component in a set's manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetDetails {
    /// Server version (`buildInfo`); empty (and not written) for an imported dump.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_version: String,
    /// The replica set, when the server is a member. A dump writes `null` for none; an
    /// import writes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_set: Option<String>,
    /// `point-in-time`, `per-collection` or `unknown` (imported).
    #[serde(default)]
    pub consistency: String,
    /// The same in words for the operator.
    #[serde(default)]
    pub consistency_note: String,
    /// Oplog entries captured (replica sets only).
    #[serde(default)]
    pub oplog_entries: Option<u64>,
    /// Per namespace, sorted.
    #[serde(default)]
    pub collections: Vec<CollectionRecord>,
    /// The archive or directory an imported set came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
    /// A physical copy of the dbpath (`mode = "snapshot"`) instead of a dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<super::physical::PhysicalCopy>,
}

impl crate::component::Details for SetDetails {}

impl SetDetails {
    /// The lines `snapshots SET` prints under the component: consistency, then one line a
    /// namespace.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.physical {
            out.extend(p.lines());
        }
        if !self.consistency_note.is_empty() {
            out.push(format!("consistency: {}", self.consistency_note));
        }
        for c in &self.collections {
            out.push(format!(
                "{:<40} {:<10} {:>9} docs {:>10}",
                c.ns,
                c.kind,
                c.documents,
                human_bytes(c.bytes)
            ));
        }
        out
    }
}

/// One namespace of a restore report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadedNamespace {
    /// Namespace in the dump.
    #[serde(default)]
    pub ns: String,
    /// Namespace written.
    #[serde(default)]
    pub target: String,
    /// Documents inserted.
    #[serde(default)]
    pub documents: u64,
    /// Bytes of BSON inserted.
    #[serde(default)]
    pub bytes: u64,
    /// Documents the server refused.
    #[serde(default)]
    pub failed: u64,
    /// Seconds taken.
    #[serde(default)]
    pub seconds: f64,
}

/// `details` of a MongoDB component in a restore report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreDetails {
    /// Documents inserted in all.
    pub documents: u64,
    /// Bytes inserted in all.
    pub bytes: u64,
    /// Seconds the load took.
    pub seconds: f64,
    /// Documents a second.
    pub documents_per_second: f64,
    /// Per namespace (the load summary's full records).
    pub collections: serde_json::Value,
    /// Oplog entries replayed.
    pub oplog_applied: Option<u64>,
}

impl RestoreDetails {
    /// The lines `restore` prints under the component: one a namespace, then the totals.
    #[must_use]
    pub fn lines(details: &serde_json::Value) -> Vec<String> {
        let Ok(d) = serde_json::from_value::<Self>(details.clone()) else {
            return Vec::new();
        };
        let namespaces: Vec<LoadedNamespace> =
            serde_json::from_value(d.collections).unwrap_or_default();
        let mut out: Vec<String> = namespaces
            .iter()
            .map(|c| {
                format!(
                    "{:<40} {:>9} docs {:>10} {:>7.2}s{}",
                    format!("{} -> {}", c.ns, c.target),
                    c.documents,
                    human_bytes(c.bytes),
                    c.seconds,
                    match c.failed {
                        0 => String::new(),
                        n => format!(" ({n} refused)"),
                    }
                )
            })
            .collect();
        out.push(format!(
            "{} documents, {} in {:.1}s",
            d.documents,
            human_bytes(d.bytes),
            d.seconds
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::Details;

    /// A manifest record of an earlier release and an imported one both read, and write back
    /// the same fields.
    #[test]
    fn set_details_read_earlier_and_imported_records() {
        let earlier = serde_json::json!({
            "server_version": "7.0.2", "replica_set": null, "consistency": "per-collection",
            "consistency_note": "each collection as of its own dump", "oplog_entries": null,
            "collections": [{"ns": "control.campaigns", "type": "collection",
                             "documents": 25, "bytes": 1234}]
        });
        let d = SetDetails::of(&earlier);
        assert_eq!(d.collections.len(), 1);
        assert_eq!(d.server_version, "7.0.2");
        assert_eq!(SetDetails::of(&d.to_value()), d);
        let imported = serde_json::json!({
            "imported_from": "/b/mongodb-control-2024-01-02.tar.gz", "consistency": "unknown",
            "consistency_note": "imported", "oplog_entries": 3, "collections": []
        });
        let d = SetDetails::of(&imported);
        assert_eq!(d.server_version, "");
        // An import writes back the keys it had, and no server facts it does not know.
        assert_eq!(d.to_value(), imported);
        assert_eq!(d.oplog_entries, Some(3));
        assert_eq!(d.lines(), vec!["consistency: imported".to_string()]);
    }
}
