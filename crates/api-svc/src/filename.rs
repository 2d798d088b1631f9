//! A client's filename is metadata: kept as given, minus what would make it lie or break a log
//! line or a header, and never part of a path (files are stored by id).

/// Longest filename kept, in characters.
pub(crate) const MAX_FILENAME_CHARS: usize = 255;

/// The filename as stored: control characters and bidirectional overrides (which can make
/// `gpj.exe` display as `exe.jpg`) removed, surrounding whitespace trimmed, at most
/// [`MAX_FILENAME_CHARS`] characters. Slashes and dots stay: `../../etc/passwd` is a fine name
/// for metadata. `None` when nothing is left.
pub(crate) fn sanitize(raw: &str) -> Option<String> {
    let kept: String = raw.chars().filter(|c| !c.is_control() && !is_bidi_control(*c)).collect();
    let cut: String = kept.trim().chars().take(MAX_FILENAME_CHARS).collect();
    // The cut may end on a space: trim again (found by the upload_request fuzz target).
    let trimmed = cut.trim_end();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The name a download suggests: the last segment of the stored name, so a browser saving
/// `../../etc/passwd` saves `passwd` in its download folder.
pub(crate) fn download_name(stored: &str) -> String {
    let base = stored.rsplit(['/', '\\']).next().unwrap_or("").trim();
    match base {
        "" | "." | ".." => "download".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_as_metadata_without_control_characters() {
        assert_eq!(sanitize("../../etc/passwd").as_deref(), Some("../../etc/passwd"));
        assert_eq!(sanitize(" a\r\nb\u{0}.txt ").as_deref(), Some("ab.txt"));
        assert_eq!(sanitize("photo\u{202E}gpj.exe").as_deref(), Some("photogpj.exe"));
        assert_eq!(sanitize("\u{7}\t "), None);
        assert_eq!(sanitize(&"é".repeat(300)).unwrap().chars().count(), MAX_FILENAME_CHARS);
        // Regression (fuzz/artifacts): a cut at the limit that ends on a space keeps no space.
        let long = format!("{} tail", "a".repeat(MAX_FILENAME_CHARS - 1));
        assert_eq!(sanitize(&long).as_deref(), Some("a".repeat(MAX_FILENAME_CHARS - 1).as_str()));
        assert_eq!(download_name("../../etc/passwd"), "passwd");
        assert_eq!(download_name("C:\\x\\y.png"), "y.png");
        assert_eq!(download_name("a/.."), "download");
    }
}
