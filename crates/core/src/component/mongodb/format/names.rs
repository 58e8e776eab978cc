//! File names and kinds of namespaces: the escaping of collection names as mongodump does it,
//! which database names may be directories, where timeseries data lives, and the order of
//! results.
//!
//! Pure functions on names; nothing here touches a file.

use super::{NsSummary, OPLOG_COLLECTION};

/// File name stem of a collection in a dump directory, escaped as mongodump does (Go's
/// `url.QueryEscape`): letters, digits and `-_.~` stay, a space becomes `+`, every other byte
/// becomes `%XX`. So `/` can never make a path.
///
/// Left out: mongodump shortens stems longer than 238 bytes with a SHA-1 suffix; the real
/// name is then only in the metadata's `collectionName`, which the readers here prefer.
#[must_use]
pub fn collection_file_stem(collection: &str) -> String {
    let mut out = String::with_capacity(collection.len());
    for b in collection.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The collection name of a file name stem (Go's `url.QueryUnescape`); `None` for a broken
/// `%` escape or a name that is not UTF-8.
#[must_use]
pub fn collection_from_file_stem(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Whether a database name can be a directory name. MongoDB itself forbids `/\. "$` and NUL
/// in database names; refusing them here also keeps a hostile archive from writing outside
/// the destination.
pub(super) fn db_name_ok(db: &str) -> bool {
    !db.is_empty() && !db.contains(['/', '\\', '.', '"', '$', '\0', ' '])
}

/// Whether a timeseries collection keeps its data in `system.buckets.<name>` in an archive
/// written for (or by) this server version: before 8.3, as in mongo-tools' prelude explorer.
/// A version that does not parse is taken as older.
pub(super) fn uses_buckets(server_version: &str) -> bool {
    let mut parts = server_version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (8, 3),
        (Some(major), None) => major < 8,
        _ => true,
    }
}

/// The kind reported for a namespace: the metadata's type, `oplog` for the oplog, and
/// `collection` when nothing says otherwise.
pub(super) fn kind_of(db: &str, collection: &str, type_field: &str) -> String {
    if db.is_empty() && collection == OPLOG_COLLECTION {
        "oplog".to_string()
    } else if type_field.is_empty() {
        "collection".to_string()
    } else {
        type_field.to_string()
    }
}

/// Sort order of results: by db and collection, the oplog (empty db) last, as mongodump
/// writes it last.
pub(super) fn sort_summaries(list: &mut [NsSummary]) {
    list.sort_by(|a, b| {
        (a.db.is_empty(), &a.db, &a.collection).cmp(&(b.db.is_empty(), &b.db, &b.collection))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collection names escape as Go's `url.QueryEscape` does, and unescape back.
    #[test]
    fn collection_names_escape_like_mongodump() {
        for (name, stem) in [
            ("users", "users"),
            ("a.b-c_d~e", "a.b-c_d~e"),
            ("a b", "a+b"),
            ("a/b", "a%2Fb"),
            ("$admin.system.users", "%24admin.system.users"),
            ("ключ", "%D0%BA%D0%BB%D1%8E%D1%87"),
            ("a+b%", "a%2Bb%25"),
        ] {
            assert_eq!(collection_file_stem(name), stem);
            assert_eq!(collection_from_file_stem(stem).as_deref(), Some(name));
        }
        assert_eq!(collection_from_file_stem("bad%zz"), None);
        assert_eq!(collection_from_file_stem("bad%2"), None);
        assert_eq!(collection_from_file_stem("%FF"), None);
    }
}
