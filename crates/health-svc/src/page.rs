//! `/ops`: the same facts as `/ops/queue`, as a page for a person. Server-rendered HTML with
//! inline CSS (no script), refreshing itself every few seconds; problems first, in words.

use std::fmt::Write;

use crate::ops::OpsReport;

/// Seconds between refreshes.
const REFRESH_S: u32 = 5;

/// `text` safe inside HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A bar of `value` against `limit`, red past it.
fn bar(value: usize, limit: Option<usize>) -> String {
    let Some(limit) = limit else {
        return format!(r#"<span class="n">{value} (no budget declared)</span>"#);
    };
    let pct = if limit == 0 { 100.0 } else { (100.0 * value as f64 / limit as f64).min(100.0) };
    let class = if value > limit { "over" } else { "ok" };
    // tidy: not a key (HTML: a CSS width)
    format!(
        r#"<span class="bar"><span class="fill {class}" style="width:{pct:.0}%"></span></span><span class="n {class}">{value} of {limit}</span>"#
    )
}

/// The page.
pub fn render(r: &OpsReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>ops: {status}</title><style>
body{{font:15px/1.4 system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;padding:0 1rem;color:#222}}
h1{{font-size:1.4rem}} h2{{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;width:100%}} td,th{{text-align:left;padding:.25rem .6rem .25rem 0;vertical-align:top}}
.banner{{padding:.7rem 1rem;border-radius:6px;font-weight:600}} .good{{background:#e5f6e8;color:#14532d}}
.bad{{background:#fde8e8;color:#7f1d1d}} .bad ul{{margin:.3rem 0 0;font-weight:500}}
.bar{{display:inline-block;width:10rem;height:.8rem;background:#eee;border-radius:3px;margin-right:.5rem;vertical-align:middle}}
.fill{{display:block;height:100%;border-radius:3px}} .fill.ok{{background:#3b82f6}} .fill.over{{background:#dc2626}}
.n.over{{color:#b91c1c;font-weight:700}} .probe{{display:inline-block;width:.6rem;height:1rem;margin-right:1px}}
.p-ok{{background:#22c55e}} .p-late{{background:#f59e0b}} .p-failed,.p-error{{background:#dc2626}} small{{color:#666}}
</style></head><body><h1>Operations: queues, workers, Redis connections</h1><p><small>Read at {at}; refreshes every {REFRESH_S} s. JSON: <a href="/ops/queue">/ops/queue</a>.</small></p>
"#,
        status = if r.problems.is_empty() { "ok" } else { "problems" },
        at = esc(&r.generated_at),
    );
    if r.problems.is_empty() {
        h.push_str(r#"<p class="banner good">Nothing is wrong: Redis and Postgres answer, the canary comes back, every service is within its connection budget.</p>"#);
    } else {
        let n = r.problems.len();
        let _ = write!(h, r#"<div class="banner bad">{n} {}:<ul>"#, if n == 1 { "problem" } else { "problems" });
        for p in &r.problems {
            let _ = write!(h, "<li>{}</li>", esc(p));
        }
        h.push_str("</ul></div>");
    }

    h.push_str("<h2>Readiness and canary</h2><table>");
    for (name, check) in &r.checks {
        let state = if check.ok {
            format!("answers ({:.1} ms)", check.took_ms)
        } else {
            format!(
                "<b>fails</b>: {} (for {:.0} s)",
                esc(check.error.as_deref().unwrap_or("")),
                check.failing_for_s.unwrap_or(0.0)
            )
        };
        let _ = write!(h, "<tr><th>{name}</th><td>{state}</td></tr>");
    }
    let _ = write!(h, "<tr><th>canary</th><td>{}<br>", esc(&r.canary.verdict.summary));
    for probe in &r.canary.state.history {
        let title = match probe.latency_ms {
            Some(ms) => format!("{}: {ms} ms", probe.outcome),
            None => format!("{}: {}", probe.outcome, probe.error.as_deref().unwrap_or("")),
        };
        let _ = write!(h, r#"<span class="probe p-{}" title="{}"></span>"#, probe.outcome, esc(&title));
    }
    h.push_str(
        "<br><small>one mark per probe, oldest first: green back, amber late, red failed</small></td></tr></table>",
    );

    h.push_str("<h2>Queues</h2><table><tr><th>queue</th><th>waiting</th><th>active</th><th>delayed</th><th>failed</th><th>completed</th><th>paused</th><th>next job waited</th></tr>");
    for q in &r.queues {
        match (&q.counts, &q.error) {
            (Some(c), _) => {
                let waited = q.oldest_waiting_age_s.map_or("-".to_owned(), |s| format!("{s:.1} s"));
                let paused = if q.paused == Some(true) { "<b>paused</b>".to_owned() } else { c.paused.to_string() };
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{paused}</td><td>{waited}</td></tr>",
                    esc(&q.name),
                    c.waiting,
                    c.active,
                    c.delayed,
                    c.failed,
                    c.completed
                );
            }
            (None, error) => {
                let _ = write!(
                    h,
                    r#"<tr><td>{}</td><td colspan="7">cannot be read: {}</td></tr>"#,
                    esc(&q.name),
                    esc(error.as_deref().unwrap_or(""))
                );
            }
        }
    }
    h.push_str("</table>");

    h.push_str("<h2>Redis connections by service and role, against budgets</h2>");
    if let Some(e) = &r.connections.error {
        let _ = write!(h, "<p>cannot be read: {}</p>", esc(e));
    }
    h.push_str("<table><tr><th>service</th><th>role</th><th>open against planned</th></tr>");
    for s in &r.connections.services {
        let _ = write!(
            h,
            r#"<tr><td rowspan="{rows}"><b>{name}</b><br><small>{inst} instance(s)</small></td><td>all</td><td>{bar}</td></tr>"#,
            rows = 1 + s.open.len().max(s.planned.values().filter(|n| **n > 0).count()),
            name = esc(&s.service),
            inst = s.instances,
            bar = bar(s.total, s.budget)
        );
        let mut roles: Vec<&String> =
            s.open.keys().chain(s.planned.iter().filter(|(_, n)| **n > 0).map(|(r, _)| r)).collect();
        roles.sort();
        roles.dedup();
        for role in roles {
            let open = s.open.get(role).copied().unwrap_or(0);
            let planned = s.planned.get(role).copied().filter(|_| s.instances > 0);
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(role), bar(open, planned));
        }
    }
    let clients = r.connections.total;
    let max = r.redis.maxclients.and_then(|m| usize::try_from(m).ok());
    let _ = write!(
        h,
        r#"<tr><td><b>server</b></td><td>all clients</td><td>{}</td></tr></table><p><small>{} unnamed client(s)</small></p>"#,
        bar(clients, max),
        r.connections.unnamed
    );

    h.push_str("<h2>Live processes (heartbeats)</h2><table><tr><th>instance</th><th>queues</th><th>open / budget</th><th>last beat</th></tr>");
    for w in &r.workers {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{:.1} s ago</td></tr>",
            esc(&w.instance),
            esc(&w.queues.join(", ")),
            w.open,
            w.budget,
            w.age_s
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>File store (by process, since it started)</h2><table><tr><th>instance</th><th>backend</th><th>operation</th><th>requests</th><th>errors</th><th>bytes</th><th>mean</th></tr>");
    for w in &r.workers {
        let Some(store) = &w.storage else { continue };
        let rows = store.ops.len().max(1) + usize::from(store.last_error.is_some());
        let _ = write!(
            h,
            r#"<tr><td rowspan="{rows}">{}<br><small>{}</small></td><td rowspan="{rows}">{}</td>"#,
            esc(&w.instance),
            esc(&w.service),
            esc(&store.backend)
        );
        if store.ops.is_empty() {
            h.push_str("<td colspan=\"5\">no request yet</td></tr>");
        }
        for (i, (op, o)) in store.ops.iter().enumerate() {
            if i > 0 {
                h.push_str("<tr>");
            }
            let errors = if o.errors > 0 { format!("<b>{}</b>", o.errors) } else { "0".to_owned() };
            let _ = write!(
                h,
                "<td>{}</td><td>{}</td><td>{errors}</td><td>{}</td><td>{:.1} ms</td></tr>",
                esc(op),
                o.requests,
                o.bytes,
                o.mean_ms
            );
        }
        if let Some(last) = &store.last_error {
            let _ = write!(h, r#"<tr><td colspan="5">last error ({}): {}</td></tr>"#, esc(&last.op), esc(&last.error));
        }
    }
    h.push_str("</table>");

    let redis = &r.redis;
    let opt = |v: &Option<String>| v.as_deref().map_or("?".to_owned(), esc);
    let _ = write!(
        h,
        "<h2>Redis</h2><table><tr><th>endpoint</th><td>{}</td></tr><tr><th>version</th><td>{}</td></tr>",
        esc(&redis.endpoint),
        opt(&redis.version)
    );
    if let Some(e) = &redis.error {
        let _ = write!(h, "<tr><th>error</th><td>{}</td></tr>", esc(e));
    }
    if let Some(l) = &redis.latency {
        let _ = write!(
            h,
            "<tr><th>latency</th><td>{} PINGs: min {:.2} ms, avg {:.2} ms, max {:.2} ms</td></tr>",
            l.pings, l.min_ms, l.avg_ms, l.max_ms
        );
    }
    let aof = match redis.aof_enabled {
        Some(true) => "AOF on",
        Some(false) => "<b>AOF off</b>",
        None => "AOF ?",
    };
    let _ = write!(
        h,
        "<tr><th>persistence</th><td>{aof}; last AOF write {}, last RDB save {}</td></tr>\
         <tr><th>memory</th><td>{} bytes used, maxmemory {} ({})</td></tr></table></body></html>",
        opt(&redis.aof_last_write_status),
        opt(&redis.rdb_last_bgsave_status),
        redis.used_memory.map_or("?".to_owned(), |v| v.to_string()),
        redis.maxmemory.map_or("?".to_owned(), |v| v.to_string()),
        opt(&redis.maxmemory_policy)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_escaping() {
        assert!(bar(3, Some(2)).contains("over") && bar(3, Some(2)).contains("3 of 2"));
        assert!(bar(1, Some(2)).contains("width:50%"));
        assert!(bar(1, None).contains("no budget"));
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
