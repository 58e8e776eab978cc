//! The mongodump archive reader (plain or gzip), as `import` and restore use it: any input
//! must end in `Ok` or a `FormatError`, never a panic, and never write outside `dest`.
#![no_main]

use akbackup_core::component::mongodb::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let dest = dir.path().join("out");
    let _ = format::unpack_archive(data, "fuzz.archive", &dest);
    // Nothing may appear beside `dest` (a name escaping it would land there).
    let beside = std::fs::read_dir(dir.path()).map(Iterator::count).unwrap_or(0);
    assert!(beside <= 1, "the archive wrote outside its destination");
});
