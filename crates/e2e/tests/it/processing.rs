//! Files uploaded over HTTP to api-svc are processed by worker-svc and read back over HTTP:
//! metadata, derivatives, progress while ffmpeg runs, and corrupt media failed for good.

use std::time::Duration;

use e2e::{Stack, StackOptions, eventually};
use queue_core::JobState;
use reqwest::StatusCode;
use serde_json::Value;
use test_support::{Media, probe};

const LIMIT: Duration = Duration::from_secs(90);

fn close_to(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 0.25)
}

/// The artifact links api-svc gives for `file`, by name.
fn artifact_links(file: &Value) -> Vec<(String, String)> {
    let links = file["links"]["artifacts"].as_object().cloned().unwrap_or_default();
    links.into_iter().map(|(name, url)| (name, url.as_str().unwrap().to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_an_image_a_sound_and_a_text_go_through_both_binaries() {
    media_suite(&Stack::start(StackOptions::default()).await).await;
}

/// The media suite against `stack`, whatever its storage: the same in local and S3 mode.
pub(crate) async fn media_suite(stack: &Stack) {
    let media = Media::new();
    let probes = tempfile::tempdir().unwrap();

    // The video first, alone, so that its progress can be followed through the API.
    let clip = media.video("clip.mp4", 3, "320x240");
    let video = stack.accepted("clip.mov", "application/octet-stream", clip.clone()).await;
    let mut seen: Vec<f64> = Vec::new();
    let file = eventually(LIMIT, "the video to finish", async || {
        let file = stack.file(video).await;
        if let Some(progress) = file["progress"].as_f64() {
            seen.push(progress);
        }
        matches!(file["status"].as_str(), Some("done" | "failed")).then_some(file)
    })
    .await;
    assert!(seen.iter().any(|p| *p > 0.0 && *p < 100.0), "progress while processing: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only goes up: {seen:?}");
    assert_eq!((file["status"].as_str(), file["detected_type"].as_str()), (Some("done"), Some("video/mp4")), "{file}");
    assert!(file.get("progress").is_none(), "progress only while processing: {file}");
    let result = &file["result"];
    assert_eq!(result["kind"], "video");
    assert!(close_to(&result["media"]["duration_s"], 3.0), "{result}");
    assert_eq!((result["media"]["width"].as_u64(), result["media"]["height"].as_u64()), (Some(320), Some(240)));
    let links = artifact_links(&file);
    let names: Vec<&str> = links.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["preview.mp4", "thumbnail.jpg"], "{file}");
    let preview = probe(&stack.download(&links[0].1).await, probes.path());
    assert_eq!(preview["streams"][0]["width"], 320, "{preview}");
    let duration: f64 = preview["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 3.0).abs() < 0.25, "{preview}");
    let thumbnail = probe(&stack.download(&links[1].1).await, probes.path());
    assert_eq!(thumbnail["streams"][0]["codec_name"], "mjpeg");
    // The original comes back byte for byte, and in ranges.
    let content = file["links"]["content"].as_str().unwrap();
    assert!(stack.download(content).await == clip, "the content is the upload");
    let part = stack.client.get(format!("{}{content}", stack.api_base)).bearer_auth(e2e::TOKEN);
    let part = part.header("range", "bytes=4-11").send().await.unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &clip[4..12], "bytes 4 to 11 of the upload");

    // Names and declared types lie on purpose: the content decides.
    let image = stack.accepted("photo.txt", "text/plain", media.png()).await;
    let sound = stack.accepted("sound.mp3", "audio/mpeg", media.wav(2)).await;
    let text = stack.accepted("movie.mp4", "video/mp4", b"hello, worker\n".to_vec()).await;
    let truncated = stack.accepted("broken.mp4", "video/mp4", clip[..clip.len() / 2].to_vec()).await;

    let file = stack.finished(image, LIMIT).await;
    assert_eq!((file["status"].as_str(), file["detected_type"].as_str()), (Some("done"), Some("image/png")), "{file}");
    let media_info = &file["result"]["media"];
    assert_eq!((media_info["width"].as_u64(), media_info["height"].as_u64()), (Some(64), Some(48)), "{file}");
    let links = artifact_links(&file);
    assert_eq!(links.len(), 1, "{file}");
    let thumbnail = probe(&stack.download(&links[0].1).await, probes.path());
    assert_eq!(thumbnail["streams"][0]["codec_name"], "mjpeg", "{thumbnail}");

    let file = stack.finished(sound, LIMIT).await;
    assert_eq!(
        (file["status"].as_str(), file["detected_type"].as_str()),
        (Some("done"), Some("audio/x-wav")),
        "{file}"
    );
    assert!(close_to(&file["result"]["media"]["duration_s"], 2.0), "{file}");
    assert_eq!(file["result"]["media"]["audio_codec"], "pcm_s16le");
    let links = artifact_links(&file);
    assert_eq!(links.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["waveform.png"], "{file}");
    let waveform = probe(&stack.download(&links[0].1).await, probes.path());
    assert_eq!(waveform["streams"][0]["codec_name"], "png", "{waveform}");

    let file = stack.finished(text, LIMIT).await;
    assert_eq!((file["status"].as_str(), file["detected_type"].as_str()), (Some("done"), Some("text/plain")), "{file}");
    assert_eq!(file["result"]["kind"], "other");
    assert_eq!(file["result"]["sha256"], file["sha256"], "{file}");
    assert!(artifact_links(&file).is_empty(), "{file}");

    let file = stack.finished(truncated, LIMIT).await;
    assert_eq!(file["status"], "failed", "{file}");
    let reason = file["error"].as_str().unwrap();
    assert!(reason.contains("corrupt or unsupported"), "{file}");
    // Failed for good: one attempt, in the ledger and in Redis (the row is written first, the
    // job moves to `failed` a moment later).
    let files = stack.queue("files");
    eventually(LIMIT, "the job to be failed in Redis", async || {
        (files.get_job_state(&truncated.to_string()).await.unwrap() == Some(JobState::Failed)).then_some(())
    })
    .await;
    let job = files.get_job(&truncated.to_string()).await.unwrap().unwrap();
    assert_eq!((job.attempts_made, file["attempts"].as_i64()), (1, Some(1)), "{file}");
    assert_eq!(job.failed_reason.as_deref(), Some(reason));

    for id in [video, image, sound, text, truncated] {
        assert_eq!(stack.executions(id).await, 1, "file {id} ran once");
    }
    // Counted once the job is recorded in Redis, a moment after its row.
    let done = r#"worker_jobs_total{queue="files",outcome="done"} 4"#;
    eventually(LIMIT, done, async || {
        let metrics = stack.client.get(format!("{}/metrics", stack.metrics_base)).send().await.ok()?;
        metrics.text().await.ok()?.contains(done).then_some(())
    })
    .await;
}
