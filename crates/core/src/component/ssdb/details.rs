//! The SSDB facts a set's manifest carries, typed. They are stored as the same JSON as
//! before (the manifest's `details`), so sets written by earlier releases read unchanged:
//! every field is optional, and a set of the format before incremental inspection (counts
//! and digest, no `last_full_read`) reads as read in full at its start.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::inspect::{DbSummary, KeyCounts, TableCheck};

/// `details` of an SSDB component in a set's manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SsdbDetails {
    /// `online`, `stop`, `snapshot` or `import`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The most checkpoint attempts any database needed (online mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The checkpoint's facts by database (`data`, `meta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<BTreeMap<String, serde_json::Value>>,
    /// How each database was checked, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<BTreeMap<String, String>>,
    /// What was checked of each database's table files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<BTreeMap<String, TableCheck>>,
    /// When every key of the store was last read (this set or an earlier one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_read: Option<jiff::Timestamp>,
    /// What the copy is consistent to, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// Key counts of the `data` database, when they were read or carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyCounts>,
    /// Digest of the `data` database, with `keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Counts and digest of the `meta` database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<DbSummary>,
    /// The filesystem snapshot the set was read from (snapshot mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The archive an imported set came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

impl crate::component::Details for SsdbDetails {}

impl SsdbDetails {
    /// The counts and digest recorded for database `db`, when that set read (or carried)
    /// them.
    #[must_use]
    pub fn summary(&self, db: &str) -> Option<DbSummary> {
        if db == "data" {
            Some(DbSummary {
                keys: self.keys.clone()?,
                digest: self.digest.clone()?,
            })
        } else if db == "meta" {
            self.meta.clone()
        } else {
            None
        }
    }

    /// Records the counts and digest of database `db` (`data` at the top, `meta` under
    /// `meta`, as the manifest has always held them).
    pub fn set_summary(&mut self, db: &str, summary: DbSummary) {
        if db == "data" {
            self.keys = Some(summary.keys);
            self.digest = Some(summary.digest);
        } else if db == "meta" {
            self.meta = Some(summary);
        }
    }

    /// When every key was last read: `last_full_read`, or for a set of the earlier format
    /// that recorded a digest (every set then read every key), `started`.
    #[must_use]
    pub fn last_full_read(&self, started: jiff::Timestamp) -> Option<jiff::Timestamp> {
        self.last_full_read
            .or_else(|| self.digest.as_ref().map(|_| started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::Details;

    /// A record of the earlier format (counts and digest, no tables, no last full read) and
    /// one of today's read back, and write back the same JSON.
    #[test]
    fn earlier_and_current_records_round_trip() {
        let earlier = serde_json::json!({
            "attempts": 1, "mode": "online",
            "inspection": {"data": "every key read"},
            "databases": {"data": {"attempts": 1}},
            "consistency": "point in time",
            "keys": {"kv": 1, "hash": 0, "zset": 0, "queue": 0, "binlog": 0, "other": 0,
                     "total": 1},
            "digest": "ab"
        });
        let d = SsdbDetails::of(&earlier);
        assert_eq!(d.to_value(), earlier);
        let started: jiff::Timestamp = "2026-01-02T03:04:05Z".parse().expect("time");
        assert_eq!(d.last_full_read(started), Some(started));
        assert_eq!(d.summary("data").map(|s| s.digest), Some("ab".to_string()));
        assert!(d.summary("meta").is_none());

        let mut now = SsdbDetails {
            tables: Some(BTreeMap::from([(
                "data".to_string(),
                TableCheck::default(),
            )])),
            ..SsdbDetails::default()
        };
        assert_eq!(now.last_full_read(started), None);
        now.last_full_read = Some(started);
        let back = SsdbDetails::of(&now.to_value());
        assert_eq!(back, now);
        assert_eq!(
            now.to_value()["last_full_read"],
            serde_json::json!("2026-01-02T03:04:05Z")
        );
    }
}
