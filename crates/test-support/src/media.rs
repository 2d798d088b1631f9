//! Test media made by ffmpeg's `lavfi` sources (nothing committed), and ffprobe's view of a
//! derivative.

use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

/// Test media, made by ffmpeg's lavfi sources in a temporary directory.
#[derive(Debug)]
pub struct Media {
    dir: tempfile::TempDir,
}

impl Default for Media {
    fn default() -> Media {
        Media::new()
    }
}

impl Media {
    /// A temporary directory to make media in.
    ///
    /// # Panics
    ///
    /// If the directory cannot be made.
    pub fn new() -> Media {
        Media { dir: tempfile::tempdir().unwrap() }
    }

    fn make(&self, name: &str, args: &[&str]) -> PathBuf {
        let out = self.dir.path().join(name);
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
            .args(args)
            .arg("-y")
            .arg(&out)
            .status()
            .expect("ffmpeg runs (scripts/test installs it)");
        assert!(status.success(), "ffmpeg could not make {name}");
        out
    }

    /// An MP4 of `seconds` of `testsrc` at `size` with a sine tone (mpeg4 + aac: in every
    /// ffmpeg build).
    pub fn video(&self, name: &str, seconds: u32, size: &str) -> Vec<u8> {
        let video = format!("testsrc=size={size}:rate=25:duration={seconds}");
        let audio = format!("sine=frequency=440:duration={seconds}");
        let path = self.make(
            name,
            &[
                "-f",
                "lavfi",
                "-i",
                &video,
                "-f",
                "lavfi",
                "-i",
                &audio,
                "-c:v",
                "mpeg4",
                "-q:v",
                "5",
                "-c:a",
                "aac",
                "-shortest",
            ],
        );
        std::fs::read(path).unwrap()
    }

    /// A 64x48 PNG.
    pub fn png(&self) -> Vec<u8> {
        std::fs::read(self.make("image.png", &["-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1"])).unwrap()
    }

    /// A WAV of `seconds` of a sine tone.
    pub fn wav(&self, seconds: u32) -> Vec<u8> {
        let audio = format!("sine=frequency=440:duration={seconds}");
        std::fs::read(self.make("sound.wav", &["-f", "lavfi", "-i", &audio])).unwrap()
    }
}

/// ffprobe's JSON view (format and streams) of `bytes`, a derivative.
pub fn probe(bytes: &[u8], dir: &Path) -> serde_json::Value {
    let path = dir.join(format!("probe-{}", Uuid::new_v4()));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
