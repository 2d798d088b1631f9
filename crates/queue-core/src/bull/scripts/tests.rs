use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::producer::*;
use super::worker::*;
use super::*;
use crate::bull::job::JobState;
use crate::bull::keys::QueueKeys;
use crate::bull::options::KeepJobs;

/// Every typed call, filled with sample values, and how many times its repeated ARGV group
/// (a job of `addJobs`, a lock of `extendLocks`) occurs in it.
fn every_call(keys: &QueueKeys) -> Vec<(Invocation, usize)> {
    let job = |repeat| JobToAdd {
        custom_id: None,
        name: "n".into(),
        data: "{}".into(),
        opts: "{}".into(),
        timestamp: 1,
        delay: 0,
        priority: 0,
        lifo: false,
        repeat,
    };
    let repeat = Repeat { key: "r".into(), next_millis: 2, mode: RepeatMode::Next };
    let held = [("1".to_owned(), "t:1".to_owned()), ("2".to_owned(), "t:2".to_owned())];
    let keep = KeepJobs::Count(3);
    let limiter = Limiter { max: 1, duration: Duration::from_secs(1), per_group: true };
    let second = Duration::from_secs(1);
    let cursor = CleanCursor::default();
    vec![
        (AddJobs { keys, token: "t", jobs: vec![job(None), job(Some(repeat))] }.invocation(), 2),
        (GetState { keys, job_id: "1" }.invocation(), 0),
        (Pause { keys, event: PauseEvent::Paused }.invocation(), 0),
        (Pause { keys, event: PauseEvent::Resumed }.invocation(), 0),
        (RemoveJob { keys, job_id: "1" }.invocation(), 0),
        (RetryJob { keys, job_id: "1", now: 5, token: "t" }.invocation(), 0),
        (RetryJobs { keys, slice: 10, token: "t" }.invocation(), 0),
        (Promote { keys, job_id: "1", token: "t" }.invocation(), 0),
        (
            CleanJobs { keys, state: JobState::Failed, cutoff: 5, limit: 3, slice: 10, cursor: &cursor }
                .invocation()
                .unwrap(),
            0,
        ),
        (Obliterate { keys, slice: 10, force: true }.invocation(), 0),
        (AddLog { keys, job_id: "1", line: "l" }.invocation(), 0),
        (UpdateProgress { keys, job_id: "1", progress: &json!(50) }.invocation(), 0),
        (UpdateData { keys, job_id: "1", data: "{}" }.invocation(), 0),
        (
            MoveToActive {
                keys,
                lock: "t:1",
                lock_duration: second,
                now: 5,
                popped: "",
                limiter: Some(limiter),
                worker_token: "t",
                publish_drained: true,
            }
            .invocation(),
            0,
        ),
        (
            CompleteJob {
                keys,
                job_id: "1",
                lock: "t:1",
                now: 5,
                returnvalue: &json!(null),
                keep: Some(&keep),
                fetch_next: true,
                lock_duration: second,
                debounced: false,
                next_lock: "t:2",
                worker_token: "t",
                keep_slice: 10,
            }
            .invocation(),
            0,
        ),
        (
            FailJob {
                keys,
                job_id: "1",
                lock: "t:1",
                now: 5,
                reason: "boom".into(),
                stacktrace: vec!["boom".into()],
                attempts_made: 1,
                action: FailAction::Delay(9),
                keep: None,
                keep_slice: 10,
            }
            .invocation(),
            0,
        ),
        (ExtendLocks { keys, lock_duration: second, held: &held }.invocation(), 2),
        (PromoteDelayed { keys, due_by: Some(5), token: "t", slice: 10 }.invocation(), 0),
        (
            MoveStalledJobsToWait {
                keys,
                max_stalled_count: 1,
                now: 5,
                stalled_interval: second,
                step: &StalledStep::start(),
                slice: 10,
                keep_slice: 10,
            }
            .invocation(),
            0,
        ),
    ]
}

/// The script's own file, which its embedded source ends with (after its includes).
fn own_file(script: &Script) -> String {
    let path = format!("{}/scripts/{}-{}.lua", env!("CARGO_MANIFEST_DIR"), script.name, script.num_keys);
    let file = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(script.source.ends_with(&file), "{} does not embed {path}", script.name);
    file
}

/// Splits a script file into its `--[[ ... ]]` header and the code after it.
fn header_and_code(file: &str) -> (&str, &str) {
    let start = file.find("--[[").expect("a header");
    let end = start + file[start..].find("]]").expect("the end of the header");
    (&file[start..end], &file[end..])
}

/// The `NAME[...]` references in `lua`: the highest literal index, and the size of a repeated
/// group (`ARGV[at + 10]` makes 11), 0 when there is none.
fn references(lua: &str, name: &str) -> (usize, usize) {
    let open = format!("{name}[");
    let (mut highest, mut group) = (0, 0);
    for (at, _) in lua.match_indices(&open) {
        let rest = &lua[at + open.len()..];
        let inner = &rest[..rest.find(']').expect("a closing bracket")];
        if let Ok(n) = inner.parse::<usize>() {
            highest = highest.max(n);
        } else if let Some((_, offset)) = inner.split_once('+') {
            group = group.max(offset.trim().parse::<usize>().expect("a numeric offset") + 1);
        }
    }
    (highest, group)
}

#[test]
fn every_script_has_a_typed_call_that_fills_its_header() {
    let keys = QueueKeys::new("bull", "q").unwrap();
    let calls = every_call(&keys);
    for (call, repeats) in &calls {
        let script = call.script;
        let name = script.name;
        let file = own_file(script);
        let (header, code) = header_and_code(&file);

        let n = script.num_keys;
        assert!(header.contains(&format!("KEYS[{n}]")), "{name}: header lacks KEYS[{n}]");
        assert!(!header.contains(&format!("KEYS[{}]", n + 1)), "{name}: header lists more than {n} keys");
        let (used, group) = references(code, "KEYS");
        assert!(used <= n && group == 0, "{name}: the code uses keys beyond KEYS[{n}]");
        assert_eq!(call.keys.len(), n, "{name}: the typed call fills another number of keys");

        let (fixed, group) = references(code, "ARGV");
        for k in 1..=fixed {
            assert!(header.contains(&format!("ARGV[{k}]")), "{name}: header lacks ARGV[{k}]");
        }
        assert!(!header.contains(&format!("ARGV[{}]", fixed + 1)), "{name}: header lists ARGV the code ignores");
        if group > 0 {
            let listed =
                header.contains(&format!("ARGV[{}..]", fixed + 1)) || header.contains(&format!("{group} ARGV per"));
            assert!(listed, "{name}: header does not list the repeated ARGV");
            assert!(*repeats > 0, "{name}: the sample call should repeat its group");
        }
        assert_eq!(call.args.len(), fixed + group * repeats, "{name}: the typed call fills another number of ARGV");
    }

    let covered: BTreeSet<_> = calls.iter().map(|(call, _)| call.script.name).collect();
    let on_disk: BTreeSet<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".lua")?;
            Some(stem.rsplit_once('-').expect("<name>-<keys>.lua").0.to_owned())
        })
        .collect();
    assert_eq!(covered.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>(), on_disk);
    assert_eq!(covered.len(), 18);

    let shas: BTreeSet<_> = calls.iter().map(|(call, _)| &call.script.sha).collect();
    assert_eq!(shas.len(), covered.len(), "two scripts share a SHA");
    let listed: BTreeSet<_> = every_script().iter().map(|s| s.name).collect();
    assert_eq!(listed, covered, "every_script lists every script once");
}

#[test]
fn calls_are_named_from_what_the_slow_log_shows() {
    for script in every_script() {
        assert_eq!(script_of_call("evalsha", &script.sha.to_uppercase()), Some(script.name));
        // The slow log keeps 128 bytes of an argument and says how many it dropped.
        let shown = format!("{}... ({} more bytes)", &script.source[..128], script.source.len() - 128);
        assert_eq!(script_of_call("EVAL", &shown), Some(script.name), "{shown}");
    }
    assert_eq!(script_of_call("EVALSHA", "0123456789abcdef0123456789abcdef01234567"), None);
    assert_eq!(script_of_call("EVAL", "-- Bull's own script"), None);
    assert_eq!(script_of_call("GET", &ADD_JOBS.sha), None);
}

#[test]
fn clean_refuses_stuck_jobs() {
    let keys = QueueKeys::new("bull", "q").unwrap();
    let cursor = CleanCursor::default();
    let call = CleanJobs { keys: &keys, state: JobState::Stuck, cutoff: 0, limit: 1, slice: 1, cursor: &cursor };
    assert!(matches!(call.invocation(), Err(Error::InvalidOptions(_))));
}

#[test]
fn return_codes_map_to_errors() {
    let c = |s: &Script, code| check_code(s, code, "7", "q");
    assert_eq!(c(&REMOVE_JOB, 1).unwrap(), 1);
    assert!(matches!(c(&REMOVE_JOB, 0), Err(Error::JobLocked(id)) if id == "7"));
    assert!(matches!(c(&REMOVE_JOB, -1), Err(Error::JobNotFound(_))));
    assert_eq!(c(&RETRY_JOB, 1).unwrap(), 1);
    assert!(matches!(c(&RETRY_JOB, 0), Err(Error::JobNotFound(_))));
    assert!(matches!(c(&RETRY_JOB, -1), Err(Error::JobLocked(_))));
    assert!(matches!(c(&RETRY_JOB, -2), Err(Error::WrongState { expected: "failed", .. })));
    assert!(matches!(c(&PROMOTE, -1), Err(Error::WrongState { expected: "delayed", .. })));
    assert_eq!(c(&PROMOTE, 1).unwrap(), 1);
    assert!(matches!(c(&OBLITERATE, -1), Err(Error::WrongState { expected: "paused", .. })));
    assert!(matches!(c(&OBLITERATE, -2), Err(Error::ActiveJobs(q)) if q == "q"));
    assert_eq!(c(&OBLITERATE, 1).unwrap(), 1);
    assert!(matches!(c(&ADD_LOG, -1), Err(Error::JobNotFound(_))));
    assert_eq!(c(&ADD_LOG, 3).unwrap(), 3);
    assert!(matches!(c(&UPDATE_DATA, -9), Err(Error::Protocol { .. })));
    for script in [&*COMPLETE_JOB, &*FAIL_JOB] {
        assert_eq!(c(script, 0).unwrap(), 0);
        assert!(matches!(c(script, -1), Err(Error::JobNotFound(_))));
        assert!(matches!(c(script, -2), Err(Error::LockLost { reason: "missing", .. })));
        assert!(matches!(c(script, -6), Err(Error::LockLost { reason: "taken", .. })));
        assert!(matches!(c(script, -3), Err(Error::WrongState { expected: "active", .. })));
    }
}
