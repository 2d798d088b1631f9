//! Files through the `files` queue: media get metadata and derivatives, other files a type and
//! a checksum, corrupt media fail for good, and progress is reported while ffmpeg runs.

use std::time::Duration;

use queue_core::{JobState, QueueEvent, QueueEvents};
use serde_json::Value;

use test_support::{Media, probe};

use crate::support::TestApp;

const LIMIT: Duration = Duration::from_secs(60);

fn close_to(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 0.25)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_an_image_a_sound_and_a_text_reach_done_with_metadata_and_artifacts() {
    let app = TestApp::spawn(&[]).await;
    let media = Media::new();
    let mut events = QueueEvents::new(&app.connections, &[&app.files]).await.unwrap();

    // Names and extensions lie on purpose: the content decides.
    let video = app.upload(&media.video("clip.mp4", 3, "320x240"), "clip.mov", None).await;
    let image = app.upload(&media.png(), "photo.txt", None).await;
    let sound = app.upload(&media.wav(2), "sound.mp3", None).await;
    let text = app.upload(b"hello, worker\n", "movie.mp4", None).await;

    // The video's progress is seen strictly between 0 and 100 while it runs, and ends at 100.
    let video_id = video.to_string();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next()).await.expect("the video's job finishes");
        match event.expect("events keep coming") {
            QueueEvent::Progress { job_id, progress, .. } if job_id == video_id => {
                seen.push(progress.as_f64().unwrap())
            }
            QueueEvent::Completed { job_id, .. } | QueueEvent::Failed { job_id, .. } if job_id == video_id => break,
            _ => {}
        }
    }
    assert!(seen.iter().any(|p| *p > 0.0 && *p < 100.0), "progress while running: {seen:?}");
    assert_eq!(seen.last(), Some(&100.0), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "progress only goes up: {seen:?}");

    let row = app.finished(video, LIMIT).await;
    assert_eq!((row.status.as_str(), row.detected_type.as_deref()), ("done", Some("video/mp4")), "{row:?}");
    let result = row.result.unwrap();
    assert_eq!(result["kind"], "video");
    assert!(close_to(&result["media"]["duration_s"], 3.0), "{result}");
    assert_eq!((result["media"]["width"].as_u64(), result["media"]["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(result["media"]["video_codec"], "mpeg4");
    assert_eq!(result["media"]["audio_codec"], "aac");
    let names: Vec<&str> =
        result["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["thumbnail.jpg", "preview.mp4"]);
    let dir = tempfile::tempdir().unwrap();
    let preview = probe(&app.artifact(video, "preview.mp4").await, dir.path());
    assert_eq!(preview["streams"][0]["width"], 320, "{preview}");
    assert!(close_to(&Value::from(preview["format"]["duration"].as_str().unwrap().parse::<f64>().unwrap()), 3.0));
    let thumbnail = probe(&app.artifact(video, "thumbnail.jpg").await, dir.path());
    assert_eq!(thumbnail["streams"][0]["codec_name"], "mjpeg");
    assert_eq!(app.files.get_job(&video_id).await.unwrap().unwrap().progress, 100);

    let row = app.finished(image, LIMIT).await;
    assert_eq!((row.status.as_str(), row.detected_type.as_deref()), ("done", Some("image/png")), "{row:?}");
    let result = row.result.unwrap();
    assert_eq!((result["kind"].as_str(), result["media"]["width"].as_u64()), (Some("image"), Some(64)));
    assert_eq!(result["media"]["height"], 48);
    assert_eq!(result["artifacts"][0]["name"], "thumbnail.jpg");
    assert!(!app.artifact(image, "thumbnail.jpg").await.is_empty());

    let row = app.finished(sound, LIMIT).await;
    assert_eq!((row.status.as_str(), row.detected_type.as_deref()), ("done", Some("audio/x-wav")), "{row:?}");
    let result = row.result.unwrap();
    assert_eq!(result["kind"], "audio");
    assert!(close_to(&result["media"]["duration_s"], 2.0), "{result}");
    assert_eq!(result["media"]["audio_codec"], "pcm_s16le");
    let waveform = probe(&app.artifact(sound, "waveform.png").await, dir.path());
    assert_eq!(waveform["streams"][0]["codec_name"], "png");

    let row = app.finished(text, LIMIT).await;
    assert_eq!((row.status.as_str(), row.detected_type.as_deref()), ("done", Some("text/plain")), "{row:?}");
    let result = row.result.unwrap();
    assert_eq!(result["kind"], "other");
    assert_eq!(result["sha256"], row.sha256);
    assert_eq!(result["artifacts"], serde_json::json!([]));

    // One execution each: nothing ran twice.
    for id in [video, image, sound, text] {
        assert_eq!(app.executions(id).await.len(), 1, "file {id}");
    }
    let (status, metrics) = app.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains(r#"worker_jobs_total{queue="files",outcome="done"} 4"#), "{metrics}");
    assert!(metrics.contains("worker_job_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains(r#"worker_job_wait_seconds_count{queue="files"} 4"#), "{metrics}");
    let ffmpeg_seconds = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"worker_ffmpeg_seconds_total{tool="ffmpeg"} "#))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(ffmpeg_seconds.is_some_and(|s| s > 0.0), "ffmpeg's time is counted: {metrics}");
    assert!(metrics.contains("worker_lock_renewals_total "), "{metrics}");
    assert!(metrics.contains(r#"worker_locks_lost_total{when="renewal"} 0"#), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_mp4_fails_for_good_with_a_reason() {
    let app = TestApp::spawn(&[]).await;
    let video = Media::new().video("clip.mp4", 3, "320x240");
    // Without its end the file has no `moov` index: ffprobe cannot read it.
    let id = app.upload(&video[..video.len() / 2], "clip.mp4", None).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row.status, "failed", "{row:?}");
    assert_eq!(row.detected_type.as_deref(), Some("video/mp4"));
    let reason = row.error.unwrap();
    assert!(reason.contains("corrupt or unsupported"), "{reason}");
    // The row is written first, then the job fails in Redis.
    let job = app.job_in_state(&app.files, &id.to_string(), JobState::Failed, LIMIT).await;
    assert_eq!(job.attempts_made, 1, "not retried");
    assert_eq!(job.failed_reason.as_deref(), Some(reason.as_str()));
    assert_eq!(row.attempts, 1);
    // Nothing left in scratch.
    let leftovers: Vec<_> = test_support::files_under(app.place.scratch_dir.path());
    assert!(leftovers.is_empty(), "{leftovers:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_that_does_not_match_its_checksum_fails_for_good() {
    let app = TestApp::spawn(&[]).await;
    let id = app.store(b"the original", "a.txt", None).await;
    // Storage changed behind the row's back.
    let path = app.place.storage_dir.path().join("files").join(id.to_string()).join("original");
    std::fs::write(path, b"the 0riginal").unwrap();
    app.enqueue(id).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row.status, "failed");
    assert!(row.error.as_deref().unwrap().starts_with("checksum mismatch"), "{row:?}");
    let job = app.job_in_state(&app.files, &id.to_string(), JobState::Failed, LIMIT).await;
    assert_eq!(job.attempts_made, 1);
    app.stop().await;
}
