//! The mount table (`/proc/self/mountinfo`): which mount holds a path, from which device, with
//! which filesystem. LVM snapshots need the device and the mount point; both backends name
//! them in `doctor` and `--dry-run`.

use std::path::{Path, PathBuf};

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the filesystem shown at the mount point (`/` but for bind mounts and
    /// btrfs `subvol=` mounts).
    pub root: PathBuf,
    /// Where it is mounted.
    pub point: PathBuf,
    /// The filesystem type (`btrfs`, `xfs`, `ext4`).
    pub fstype: String,
    /// The device or source (`/dev/mapper/vg0-data`).
    pub source: String,
}

/// Undoes the kernel's octal escapes of spaces, tabs, newlines and backslashes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(digits), 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of `/proc/self/mountinfo`; lines that do not parse are skipped.
#[must_use]
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ').skip(3);
            let root = left.next()?;
            let point = left.next()?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let source = right.next()?;
            Some(Mount {
                root: PathBuf::from(unescape(root)),
                point: PathBuf::from(unescape(point)),
                fstype: fstype.to_string(),
                source: unescape(source),
            })
        })
        .collect()
}

/// The mount holding `path` (made absolute and resolved): the one with the longest mount
/// point above it; the last one mounted wins a tie, as in the kernel.
///
/// # Errors
/// When the path or the mount table cannot be read.
pub fn holding(path: &Path) -> std::io::Result<Mount> {
    let real = std::fs::canonicalize(path)?;
    let table = parse(&std::fs::read_to_string("/proc/self/mountinfo")?);
    table
        .into_iter()
        .filter(|m| real.starts_with(&m.point))
        .fold(None::<Mount>, |best, m| match best {
            Some(b) if b.point.components().count() > m.point.components().count() => Some(b),
            _ => Some(m),
        })
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "no mount holds {} in the mount table",
                real.display()
            ))
        })
}

/// Whether `dir` is a mount point now.
#[must_use]
pub fn is_mount_point(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t).iter().any(|m| m.point == dir))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel escapes spaces in paths; lines may carry optional fields before ` - `.
    #[test]
    fn parses_points_with_spaces_and_optional_fields() {
        let text = "36 35 98:0 / /mnt/my\\040data rw,noatime master:1 - btrfs /dev/loop0 rw,space_cache\n\
                    37 35 253:1 / /var/lib/mongodb rw shared:2 - xfs /dev/mapper/vg0-mongo rw\n\
                    garbage\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].point, PathBuf::from("/mnt/my data"));
        assert_eq!(
            (m[0].fstype.as_str(), m[0].source.as_str()),
            ("btrfs", "/dev/loop0")
        );
        assert_eq!(m[1].source, "/dev/mapper/vg0-mongo");
        assert_eq!(m[0].root, PathBuf::from("/"));
    }

    /// The longest mount point above a path holds it.
    #[test]
    fn the_root_holds_everything_else() {
        let m = holding(Path::new("/proc/self")).unwrap();
        assert_eq!(m.point, PathBuf::from("/proc"));
        assert!(holding(Path::new("/")).unwrap().point == Path::new("/"));
    }
}
