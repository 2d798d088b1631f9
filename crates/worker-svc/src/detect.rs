//! What a file is, from its first bytes (magic numbers, with the `infer` crate), never from the
//! client's filename or content type.

use std::io::Read;
use std::path::Path;

/// How many leading bytes are read to decide.
const SNIFF_BYTES: usize = 8192;

/// What processing a file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// Probed, with a JPEG thumbnail.
    Image,
    /// Probed, with a waveform PNG.
    Audio,
    /// Probed, with a JPEG thumbnail and a short MP4 preview.
    Video,
    /// Checksum and type only.
    Other,
}

impl Kind {
    /// Whether ffprobe and ffmpeg look at it.
    pub(crate) fn is_media(self) -> bool {
        self != Kind::Other
    }
}

/// The type found in a file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Detected {
    /// A MIME type: what `infer` recognised, else `text/plain` for UTF-8 text without NULs, else
    /// `application/octet-stream`.
    pub mime: String,
    /// What processing it gets.
    pub kind: Kind,
}

/// Reads the start of `path` and says what it is.
pub(crate) fn detect(path: &Path) -> std::io::Result<Detected> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    std::fs::File::open(path)?.take(SNIFF_BYTES as u64).read_to_end(&mut head)?;
    Ok(detect_bytes(&head))
}

/// Says what a file starting with `head` is.
pub(crate) fn detect_bytes(head: &[u8]) -> Detected {
    if let Some(found) = infer::get(head) {
        let kind = match found.matcher_type() {
            infer::MatcherType::Image => Kind::Image,
            infer::MatcherType::Audio => Kind::Audio,
            infer::MatcherType::Video => Kind::Video,
            _ => Kind::Other,
        };
        return Detected { mime: found.mime_type().to_owned(), kind };
    }
    let mime = if looks_like_text(head) { "text/plain" } else { "application/octet-stream" };
    Detected { mime: mime.to_owned(), kind: Kind::Other }
}

/// UTF-8 without NUL bytes; a multi-byte character cut at the end of `head` still counts.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides_not_the_name() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(detect_bytes(png), Detected { mime: "image/png".into(), kind: Kind::Image });
        let wav = b"RIFF\x24\0\0\0WAVEfmt ";
        assert_eq!(detect_bytes(wav).kind, Kind::Audio);
        let mp4 = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41";
        assert_eq!(detect_bytes(mp4), Detected { mime: "video/mp4".into(), kind: Kind::Video });
        assert_eq!(detect_bytes("héllo\n".as_bytes()).mime, "text/plain");
        assert_eq!(detect_bytes(&"é".as_bytes()[..1]).mime, "text/plain", "a character cut by the sniff window");
        assert_eq!(detect_bytes(b"\0\x01\x02").mime, "application/octet-stream");
        assert_eq!(detect_bytes(b"").mime, "application/octet-stream");
        assert!(!detect_bytes(b"#EXTM3U\nfile:///etc/passwd\n").kind.is_media(), "a playlist is text, not media");
    }
}
