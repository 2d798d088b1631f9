//! What worker-svc asks of ffprobe and ffmpeg: the argument lists (every input limited to the
//! `file` protocol and named `file:<path>`, so no content can pick another protocol or be read as
//! a URL) and the reading of ffprobe's JSON.
//!
//! Derivatives: a 320-pixel JPEG thumbnail for images and videos, a low-resolution MP4 preview
//! of a video's first seconds (libx264, or mpeg4 where this ffmpeg has no libx264), and a
//! waveform PNG for audio.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// Box the thumbnail fits in.
const THUMBNAIL_BOX: u32 = 320;
/// Width of the preview (height follows the aspect ratio, even).
const PREVIEW_WIDTH: u32 = 320;
/// Size of the waveform picture.
const WAVEFORM_SIZE: &str = "800x160";

/// An artifact this service makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Artifact {
    /// `thumbnail.jpg`.
    Thumbnail,
    /// `preview.mp4`.
    Preview,
    /// `waveform.png`.
    Waveform,
}

impl Artifact {
    /// Its name in storage (`files/<id>/artifacts/<name>`) and in results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Artifact::Thumbnail => "thumbnail.jpg",
            Artifact::Preview => "preview.mp4",
            Artifact::Waveform => "waveform.png",
        }
    }

    /// Its content type.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Artifact::Thumbnail => "image/jpeg",
            Artifact::Preview => "video/mp4",
            Artifact::Waveform => "image/png",
        }
    }
}

/// `file:<path>`: a path ffmpeg cannot mistake for a URL or an option.
fn file_url(path: &Path) -> OsString {
    let mut url = OsString::from("file:");
    url.push(path.as_os_str());
    url
}

fn args(items: &[&str]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

/// `ffprobe` for `input`: format and streams as JSON. (ffprobe has no `-nostdin`: it never
/// reads stdin, which is `/dev/null` anyway.)
pub(crate) fn probe_args(input: &Path, threads: u64) -> Vec<OsString> {
    let mut a = args(&["-v", "error", "-threads", &threads.to_string(), "-protocol_whitelist", "file"]);
    a.extend(args(&["-print_format", "json", "-show_format", "-show_streams"]));
    a.push(file_url(input));
    a
}

/// The start of every ffmpeg command: no stdin, errors only, thread caps, and the input
/// limited to the file protocol. `seek` (seconds) is applied before the input (fast seek).
fn ffmpeg_input(input: &Path, threads: u64, seek: Option<f64>) -> Vec<OsString> {
    let t = threads.to_string();
    let mut a = args(&["-nostdin", "-hide_banner", "-loglevel", "error", "-filter_threads", &t]);
    a.extend(args(&["-protocol_whitelist", "file", "-threads", &t]));
    if let Some(at) = seek {
        a.extend(args(&["-ss", &format!("{at:.3}")]));
    }
    a.push("-i".into());
    a.push(file_url(input));
    a.extend(args(&["-threads", &t]));
    a
}

/// A JPEG thumbnail of the first frame at `seek` seconds, fitting a 320-pixel box.
pub(crate) fn thumbnail_args(input: &Path, output: &Path, threads: u64, seek: Option<f64>) -> Vec<OsString> {
    let mut a = ffmpeg_input(input, threads, seek);
    // tidy: not a key (an ffmpeg filter)
    let fit = format!("scale={THUMBNAIL_BOX}:{THUMBNAIL_BOX}:force_original_aspect_ratio=decrease");
    a.extend(args(&["-map", "0:v:0", "-frames:v", "1", "-vf", &fit, "-q:v", "4", "-f", "image2", "-y"]));
    a.push(file_url(output));
    a
}

/// An MP4 preview of the first `length` of a video, 320 pixels wide, with its first audio track
/// if any, reporting progress on stdout.
pub(crate) fn preview_args(
    input: &Path,
    output: &Path,
    threads: u64,
    length: Duration,
    libx264: bool,
) -> Vec<OsString> {
    let mut a = ffmpeg_input(input, threads, None);
    // tidy: not a key (an ffmpeg filter)
    let scale = format!("scale={PREVIEW_WIDTH}:-2");
    a.extend(args(&["-t", &format!("{:.3}", length.as_secs_f64()), "-map", "0:v:0", "-map", "0:a:0?", "-vf", &scale]));
    if libx264 {
        a.extend(args(&["-c:v", "libx264", "-preset", "veryfast", "-crf", "28"]));
    } else {
        a.extend(args(&["-c:v", "mpeg4", "-q:v", "6"]));
    }
    a.extend(args(&["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-ac", "2", "-movflags", "+faststart"]));
    a.extend(args(&["-progress", "pipe:1", "-stats_period", "0.2", "-nostats", "-f", "mp4", "-y"]));
    a.push(file_url(output));
    a
}

/// A PNG of the whole audio's waveform.
pub(crate) fn waveform_args(input: &Path, output: &Path, threads: u64) -> Vec<OsString> {
    let mut a = ffmpeg_input(input, threads, None);
    // tidy: not a key (an ffmpeg filter graph)
    let filter = format!("[0:a:0]showwavespic=s={WAVEFORM_SIZE}:split_channels=0:colors=0x3b82f6[w]");
    a.extend(args(&["-filter_complex", &filter, "-map", "[w]", "-frames:v", "1", "-f", "image2", "-y"]));
    a.push(file_url(output));
    a
}

/// One stream, as the result reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Stream {
    /// `video`, `audio`, `subtitle`, `data`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// ffmpeg's codec name.
    pub codec: Option<String>,
    /// Pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    /// Pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Frames per second (`avg_frame_rate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Hz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u64>,
    /// Audio channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u64>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// A cover picture in an audio file, not a video.
    #[serde(skip)]
    pub attached_pic: bool,
}

/// What ffprobe found, as the result reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Probe {
    /// The demuxer's names (`mov,mp4,m4a,3gp,3g2,mj2`, `wav`, `png_pipe`, ...).
    pub format: Option<String>,
    /// Seconds; absent for still images.
    pub duration_s: Option<f64>,
    /// Bits per second.
    pub bit_rate: Option<u64>,
    /// Of the first video (or image) stream.
    pub width: Option<u64>,
    /// Of the first video (or image) stream.
    pub height: Option<u64>,
    /// Of the first video stream.
    pub video_codec: Option<String>,
    /// Of the first audio stream.
    pub audio_codec: Option<String>,
    /// Every stream.
    pub streams: Vec<Stream>,
}

/// A number that ffprobe writes as a JSON number or as a string (`"3.000000"`, `"N/A"`).
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn whole(v: Option<&Value>) -> Option<u64> {
    number(v).filter(|f| *f >= 0.0).map(|f| f as u64)
}

/// `"30000/1001"` as a number.
fn rate(v: Option<&Value>) -> Option<f64> {
    let (num, den) = v?.as_str()?.split_once('/')?;
    let (num, den) = (num.parse::<f64>().ok()?, den.parse::<f64>().ok()?);
    (den > 0.0 && num > 0.0).then(|| (num / den * 1000.0).round() / 1000.0)
}

impl Probe {
    /// Reads ffprobe's `-print_format json -show_format -show_streams` output.
    pub(crate) fn parse(json: &[u8]) -> Result<Self, String> {
        let root: Value = serde_json::from_slice(json).map_err(|e| format!("ffprobe printed no JSON: {e}"))?;
        let format = root.get("format");
        let streams: Vec<Stream> = root
            .get("streams")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|s| Stream {
                kind: s.get("codec_type").and_then(Value::as_str).unwrap_or("unknown").to_owned(),
                codec: s.get("codec_name").and_then(Value::as_str).map(str::to_owned),
                width: whole(s.get("width")),
                height: whole(s.get("height")),
                fps: rate(s.get("avg_frame_rate")),
                sample_rate: whole(s.get("sample_rate")),
                channels: whole(s.get("channels")),
                duration_s: number(s.get("duration")),
                attached_pic: s.pointer("/disposition/attached_pic").and_then(Value::as_i64) == Some(1),
            })
            .collect();
        let picture = streams.iter().find(|s| s.kind == "video");
        let audio = streams.iter().find(|s| s.kind == "audio");
        let duration = number(format.and_then(|f| f.get("duration")))
            .or_else(|| streams.iter().filter_map(|s| s.duration_s).reduce(f64::max));
        Ok(Probe {
            format: format.and_then(|f| f.get("format_name")).and_then(Value::as_str).map(str::to_owned),
            duration_s: duration.map(|d| (d * 1000.0).round() / 1000.0),
            bit_rate: whole(format.and_then(|f| f.get("bit_rate"))),
            width: picture.and_then(|s| s.width),
            height: picture.and_then(|s| s.height),
            video_codec: picture.and_then(|s| s.codec.clone()),
            audio_codec: audio.and_then(|s| s.codec.clone()),
            streams,
        })
    }

    /// A real video stream (not a cover picture).
    pub(crate) fn has_motion_video(&self) -> bool {
        self.streams.iter().any(|s| s.kind == "video" && !s.attached_pic)
    }

    /// A picture of any kind (for an image's thumbnail).
    pub(crate) fn has_picture(&self) -> bool {
        self.streams.iter().any(|s| s.kind == "video")
    }

    /// An audio stream.
    pub(crate) fn has_audio(&self) -> bool {
        self.streams.iter().any(|s| s.kind == "audio")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffprobe_json_is_read_leniently() {
        let json = br#"{"streams":[
            {"index":0,"codec_name":"h264","codec_type":"video","width":320,"height":240,"avg_frame_rate":"25/1","duration":"3.000000","disposition":{"attached_pic":0}},
            {"index":1,"codec_name":"aac","codec_type":"audio","sample_rate":"44100","channels":1,"duration":"3.018594","avg_frame_rate":"0/0"}],
            "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"3.018594","bit_rate":"111213"}}"#;
        let probe = Probe::parse(json).unwrap();
        assert_eq!(probe.duration_s, Some(3.019));
        assert_eq!((probe.width, probe.height), (Some(320), Some(240)));
        assert_eq!((probe.video_codec.as_deref(), probe.audio_codec.as_deref()), (Some("h264"), Some("aac")));
        assert_eq!(probe.streams[0].fps, Some(25.0));
        assert_eq!(probe.streams[1].fps, None);
        assert_eq!(probe.streams[1].sample_rate, Some(44100));
        assert!(probe.has_motion_video() && probe.has_audio());
        assert!(Probe::parse(b"not json").is_err());
        let image = Probe::parse(br#"{"streams":[{"codec_type":"video","codec_name":"png","width":64,"height":48}],"format":{"format_name":"png_pipe","duration":"N/A"}}"#).unwrap();
        assert_eq!((image.duration_s, image.width), (None, Some(64)));
    }

    #[test]
    fn every_input_is_a_file_url_behind_the_whitelist() {
        let input = Path::new("/scratch/x/original");
        for a in [
            probe_args(input, 1),
            thumbnail_args(input, Path::new("/s/t.jpg"), 1, Some(1.0)),
            preview_args(input, Path::new("/s/p.mp4"), 2, Duration::from_secs(3), true),
            waveform_args(input, Path::new("/s/w.png"), 1),
        ] {
            let text: Vec<String> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            let at = text.iter().position(|s| s == "file:/scratch/x/original").expect("the input as a file: URL");
            let whitelist = text.iter().position(|s| s == "-protocol_whitelist").expect("a protocol whitelist");
            assert!(whitelist < at && text[whitelist + 1] == "file", "{text:?}");
            assert!(text.iter().any(|s| s == "-threads"), "{text:?}");
            if text.contains(&"-i".to_owned()) {
                assert!(text.contains(&"-nostdin".to_owned()), "{text:?}");
            }
        }
    }
}
