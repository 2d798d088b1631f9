//! Repeatable jobs: Bull's repeat keys, iteration ids and next-run arithmetic.
//!
//! A repeatable job is a config in the `repeat` zset (member = repeat key, score = next run) plus
//! one delayed job per iteration whose id is derived from the key and the run time, so the same
//! iteration can never be added twice.

use chrono::{DateTime, TimeZone, Utc};
use md5::{Digest, Md5};
use serde_json::Value;

use crate::bull::options::{JobOptions, RepeatOptions};
use crate::error::{Error, Result};

/// The first (or next) iteration of a repeatable job, ready to add.
#[derive(Debug)]
pub(crate) struct Iteration {
    pub(crate) opts: JobOptions,
    pub(crate) key: String,
    pub(crate) next_millis: u64,
}

fn md5_hex(text: &str) -> String {
    let digest = Md5::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A date option as Bull reads it with `new Date(x)`: ms since the epoch, or an ISO 8601 string
/// (with an offset, or without one and read as UTC, as containers run; or a bare date).
fn date_ms(value: &Value) -> Result<u64> {
    let parse = |s: &str| {
        let s = s.trim();
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .ok()
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|d| d.and_utc().timestamp_millis())
            })
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                    .ok()
                    .map(|d| d.and_utc().timestamp_millis())
            })
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|d| d.and_utc().timestamp_millis())
            })
            .map(|ms| ms.max(0) as u64)
    };
    match value {
        Value::Number(n) => n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64),
        Value::String(s) => parse(s),
        _ => None,
    }
    .ok_or_else(|| Error::InvalidOptions(format!("repeat date {value} is neither ms nor an ISO 8601 date")))
}

/// `jobIdPart` of Bull: `<repeat.jobId>:` or `:`.
fn job_id_part(repeat: &RepeatOptions) -> String {
    match &repeat.job_id {
        // tidy: not a key (part of a repeat key, a member of the repeat ZSET)
        Some(id) => format!("{id}:"),
        None => ":".to_owned(),
    }
}

/// The repeat key: `name:jobIdPart endDate: suffix`, e.g. `rep:::10000` or
/// `cronjob:myrep::Europe/Madrid:*/5 * * * *`.
pub fn repeat_key(name: &str, repeat: &RepeatOptions) -> Result<String> {
    let end = match &repeat.end_date {
        // tidy: not a key (part of a repeat key, a member of the repeat ZSET)
        Some(d) => format!("{}:", date_ms(d)?),
        None => ":".to_owned(),
    };
    let suffix = match (&repeat.cron, repeat.every) {
        (Some(cron), _) => {
            // tidy: not a key (part of a repeat key, a member of the repeat ZSET)
            format!("{}{cron}", repeat.tz.as_deref().map(|tz| format!("{tz}:")).unwrap_or_else(|| ":".into()))
        }
        (None, Some(every)) => every.to_string(),
        (None, None) => return Err(Error::InvalidOptions("repeat needs cron or every".into())),
    };
    // tidy: not a key (a repeat key is a member of the repeat ZSET, not a Redis key)
    Ok(format!("{name}:{}{end}{suffix}", job_id_part(repeat)))
}

/// The id of the iteration due at `millis`: `repeat:<md5(name + jobIdPart + md5(key))>:<millis>`.
pub fn iteration_id(name: &str, repeat: &RepeatOptions, key: &str, millis: u64) -> String {
    // tidy: not a key (a job id; its hash's key comes from QueueKeys::job)
    format!("repeat:{}:{millis}", md5_hex(&format!("{name}{}{}", job_id_part(repeat), md5_hex(key))))
}

/// The first run strictly after `after_ms`, `None` when there is none (past `endDate`).
pub fn next_millis(repeat: &RepeatOptions, after_ms: u64) -> Result<Option<u64>> {
    if let Some(every) = repeat.every.filter(|_| repeat.cron.is_none()) {
        if every == 0 {
            return Err(Error::InvalidOptions("repeat.every must be positive".into()));
        }
        return Ok(Some(after_ms / every * every + every));
    }
    let Some(pattern) = &repeat.cron else {
        return Err(Error::InvalidOptions("repeat needs cron or every".into()));
    };
    let start = match &repeat.start_date {
        Some(d) => date_ms(d)?.max(after_ms),
        None => after_ms,
    };
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| Error::InvalidOptions(format!("repeat.cron {pattern:?}: {e}")))?;
    let start_utc = Utc
        .timestamp_millis_opt(start as i64)
        .single()
        .ok_or_else(|| Error::InvalidOptions("repeat start is out of range".into()))?;
    let next = match &repeat.tz {
        Some(tz) => {
            let tz: chrono_tz::Tz =
                tz.parse().map_err(|_| Error::InvalidOptions(format!("repeat.tz {tz:?} is not an IANA time zone")))?;
            cron.find_next_occurrence(&start_utc.with_timezone(&tz), false).map(|d| d.timestamp_millis())
        }
        None => cron.find_next_occurrence(&start_utc, false).map(|d| d.timestamp_millis()),
    };
    let Ok(next) = next else { return Ok(None) };
    let next = next.max(0) as u64;
    if let Some(end) = &repeat.end_date
        && next > date_ms(end)?
    {
        return Ok(None);
    }
    Ok(Some(next))
}

/// The iteration after `prevMillis` of a repeatable job (the first one on `add`), with its
/// options merged the way Bull merges them; `None` when the limit or end date is reached.
pub(crate) fn next_iteration(name: &str, opts: &JobOptions, now: u64) -> Result<Option<Iteration>> {
    let mut repeat = opts.repeat.clone().ok_or_else(|| Error::InvalidOptions("not a repeatable job".into()))?;
    let prev = opts.prev_millis.unwrap_or(0);
    if prev == 0 && repeat.job_id.is_none() {
        repeat.job_id = opts.job_id.clone();
    }
    let count = repeat.count.map_or(1, |c| c + 1);
    if repeat.limit.is_some_and(|limit| count > limit) {
        return Ok(None);
    }
    if let Some(end) = &repeat.end_date
        && now > date_ms(end)?
    {
        return Ok(None);
    }
    let Some(next) = next_millis(&repeat, now.max(prev))? else { return Ok(None) };
    let key = repeat_key(name, &repeat)?;
    let id = iteration_id(name, &repeat, &key, next);
    repeat.count = Some(count);
    repeat.key = Some(key.clone());
    let mut merged = opts.clone();
    merged.repeat = Some(repeat);
    merged.job_id = Some(id);
    merged.delay = Some(next.saturating_sub(now));
    merged.timestamp = Some(now);
    merged.prev_millis = Some(next);
    merged.attempts.get_or_insert(1);
    Ok(Some(Iteration { opts: merged, key, next_millis: next }))
}

/// The first iteration for `Queue::add`: validated, and an error when there is none.
pub(crate) fn first_iteration(name: &str, opts: JobOptions, now: u64) -> Result<Iteration> {
    if let Some(id) = &opts.job_id {
        crate::bull::keys::validate_job_id(id)?;
    }
    // Validate the non-repeat options with the usual rules.
    let checked = opts.clone().normalize(now)?;
    let mut opts = opts;
    opts.attempts = checked.attempts;
    next_iteration(name, &opts, now)?
        .ok_or_else(|| Error::InvalidOptions("repeat has no run left (limit reached or endDate passed)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(ms: u64) -> RepeatOptions {
        RepeatOptions { every: Some(ms), ..Default::default() }
    }

    #[test]
    fn keys_and_ids_match_bulls() {
        // Observed against bull 4.16.5: md5("rep" + ":" + md5("rep:::10000")) = b3c93c17...
        let key = repeat_key("rep", &every(10_000)).unwrap();
        assert_eq!(key, "rep:::10000");
        assert_eq!(
            iteration_id("rep", &every(10_000), &key, 1_796_028_470_000),
            "repeat:b3c93c17351a4e8c1b42fdeb6cc66d00:1796028470000"
        );
        let cron = RepeatOptions {
            cron: Some("*/5 * * * *".into()),
            tz: Some("Europe/Madrid".into()),
            job_id: Some("myrep".into()),
            ..Default::default()
        };
        assert_eq!(repeat_key("cronjob", &cron).unwrap(), "cronjob:myrep::Europe/Madrid:*/5 * * * *");
        let ended = RepeatOptions { end_date: Some(Value::from(1_800_000_000_000u64)), ..every(5) };
        assert_eq!(repeat_key("n", &ended).unwrap(), "n::1800000000000:5");
    }

    #[test]
    fn dates_parse_like_javascript_dates() {
        let day = 1_803_859_200_000u64; // 2027-03-01T00:00:00Z
        for text in ["2027-03-01", "2027-03-01T00:00:00", "2027-03-01T00:00:00.000Z", "2027-03-01T01:00:00+01:00"] {
            assert_eq!(date_ms(&Value::from(text)).unwrap(), day, "{text}");
        }
        assert_eq!(date_ms(&Value::from(day)).unwrap(), day);
        assert!(date_ms(&Value::from("next tuesday")).is_err());
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        assert_eq!(next_millis(&every(10_000), 1_796_028_465_123).unwrap(), Some(1_796_028_470_000));
        assert_eq!(next_millis(&every(10_000), 1_796_028_470_000).unwrap(), Some(1_796_028_480_000));
    }

    #[test]
    fn cron_runs_strictly_after_in_its_time_zone() {
        let hourly = RepeatOptions { cron: Some("0 * * * *".into()), ..Default::default() };
        // 2026-11-29T09:10:00Z → 10:00Z.
        assert_eq!(next_millis(&hourly, 1_795_943_400_000).unwrap(), Some(1_795_946_400_000));
        assert_eq!(next_millis(&hourly, 1_795_946_400_000).unwrap(), Some(1_795_950_000_000));
        // 08:30 in Madrid (UTC+1 in winter) is 07:30Z.
        let madrid =
            RepeatOptions { cron: Some("30 8 * * *".into()), tz: Some("Europe/Madrid".into()), ..Default::default() };
        let next = next_millis(&madrid, 1_795_943_400_000).unwrap().unwrap();
        assert_eq!(Utc.timestamp_millis_opt(next as i64).unwrap().to_rfc3339(), "2026-11-30T07:30:00+00:00");
        assert!(next_millis(&RepeatOptions { cron: Some("not cron".into()), ..Default::default() }, 0).is_err());
    }

    #[test]
    fn limits_and_end_dates_stop_iterations() {
        let opts = JobOptions::default().repeat(RepeatOptions { limit: Some(2), count: Some(2), ..every(1000) });
        assert!(next_iteration("n", &opts, 5_000).unwrap().is_none());
        let ended = JobOptions::default().repeat(RepeatOptions { end_date: Some(Value::from(4_000)), ..every(1000) });
        assert!(next_iteration("n", &ended, 5_000).unwrap().is_none());
        let first =
            next_iteration("n", &JobOptions::default().job_id("r1").repeat(every(1000)), 5_500).unwrap().unwrap();
        assert_eq!(first.next_millis, 6_000);
        assert_eq!(first.opts.delay, Some(500));
        assert_eq!(first.opts.prev_millis, Some(6_000));
        let repeat = first.opts.repeat.unwrap();
        assert_eq!(
            (repeat.count, repeat.job_id.as_deref(), repeat.key.as_deref()),
            (Some(1), Some("r1"), Some("n:r1::1000"))
        );
        assert!(first.opts.job_id.unwrap().starts_with("repeat:"));
    }
}
