//! The set manifest kept in each snapshot's description (read from the repository, which
//! anyone with write access to the storage can alter).
#![no_main]

use akbackup_core::backup_set::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(m) = Manifest::from_description(text)
    {
        // What we parse, we can write back and read again the same.
        let again = Manifest::from_description(&m.to_description());
        assert!(again.is_some(), "a parsed manifest did not survive a round trip");
    }
});
