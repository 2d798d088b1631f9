//! What api-svc parses of an upload or download request itself (compiled here from its
//! source): the filename, the `Range` header and the list cursor. Never a panic, and each
//! keeps its promise: a stored name has no control or bidi characters and no surrounding
//! whitespace; a range served lies within the content; a cursor that decodes encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/api-svc/src/cursor.rs"]
mod cursor;
#[allow(dead_code)]
#[path = "../../crates/api-svc/src/filename.rs"]
mod filename;
#[allow(dead_code)]
#[path = "../../crates/api-svc/src/range.rs"]
mod range;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(name) = filename::sanitize(&text) {
        assert!(!name.is_empty() && name.chars().count() <= filename::MAX_FILENAME_CHARS);
        assert!(!name.chars().any(char::is_control), "{name:?}");
        assert_eq!(name.trim(), name, "no surrounding whitespace");
        let _ = filename::download_name(&name);
    }
    let size = data.len() as u64 * 7919;
    match range::requested(Some(&text), size) {
        range::Requested::Partial(r) => assert!(r.start < r.end && r.end <= size, "{r:?} of {size}"),
        range::Requested::Full | range::Requested::Unsatisfiable => {}
    }
    if let Some(position) = cursor::decode(&text) {
        assert_eq!(cursor::decode(&cursor::encode(position)), Some(position));
    }
});
