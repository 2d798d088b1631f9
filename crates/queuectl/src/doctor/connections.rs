//! Connections: whether `CLIENT` is allowed, clients against `maxclients`, connections by service
//! and role against the budgets heartbeats declare, unnamed clients and subscribers' output
//! buffers. (Not `clients`: [`crate::clients`] reads `CLIENT LIST` and attributes it.)

use std::collections::HashMap;
use std::fmt::Write as _;

use queue_core::HeartbeatRecord;

use inspect::clients::{self, Client, ServiceUsage};

use super::snapshot::{Info, Source};
use super::{Finding, LISTED, Severity, bytes, plural};

/// Connected clients (of `maxclients`) that is a warning.
pub(super) const CLIENTS_WARN: f64 = 0.80;
/// Connected clients (of `maxclients`) that is critical: new connections are about to be refused.
pub(super) const CLIENTS_CRITICAL: f64 = 0.95;
/// A subscriber's output buffer at or above this is a warning: it does not keep up.
pub(super) const SUBSCRIBER_OMEM_WARN: u64 = 1 << 20;

pub(super) fn client_commands_finding(clients: &Result<Vec<Client>, String>) -> Finding {
    match clients {
        Ok(_) => Finding::ok("client-commands", "CLIENT LIST allowed: connections can be named and attributed"),
        Err(e) => Finding::new(
            "client-commands",
            Severity::Warn,
            format!(
                "CLIENT LIST refused ({e}): connections by role, budgets, unnamed clients and subscriber buffers not checked"
            ),
            "managed Redis may refuse CLIENT; connection names are best effort, so budgets cannot be checked here",
        ),
    }
}

/// Total against `maxclients`; blocked clients; the sum of declared budgets against `maxclients`.
pub(super) fn clients_finding(
    info: Source<Info>,
    config: Source<HashMap<String, String>>,
    beats: &[HeartbeatRecord],
) -> Finding {
    let info = match info {
        Ok(info) => info,
        Err(e) => return Finding::unavailable("clients", "INFO", e),
    };
    let connected = info.u64("connected_clients").unwrap_or(0);
    let blocked = info.u64("blocked_clients").unwrap_or(0);
    let max = info
        .u64("maxclients")
        .or_else(|| config.ok().and_then(|c| c.get("maxclients")).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let declared: usize = beats.iter().map(|b| b.budget).sum();
    let mut measured = format!("{connected} connected of maxclients {max}, {blocked} blocked");
    if !beats.is_empty() {
        let _ = write!(measured, "; heartbeats declare budgets summing to {declared}");
    }
    let share = if max == 0 { 0.0 } else { connected as f64 / max as f64 };
    if share >= CLIENTS_CRITICAL {
        return Finding::new(
            "clients",
            Severity::Critical,
            measured,
            "new connections are about to be refused: find who opens them (queuectl connections), raise maxclients",
        );
    }
    if share >= CLIENTS_WARN || (max > 0 && declared as u64 > max) {
        return Finding::new(
            "clients",
            Severity::Warn,
            measured,
            "the sum of every process's budget must stay under maxclients: lower budgets or raise maxclients",
        );
    }
    Finding::ok("clients", measured)
}

/// `blocking 1, command 1`, or `none open`.
fn roles_text(u: &ServiceUsage) -> String {
    if u.by_role.is_empty() {
        return "none open".to_owned();
    }
    u.by_role.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
}

/// Connections grouped by service and role, with the budgets heartbeats declare.
pub(super) fn connections_finding(list: &[Client], beats: &[HeartbeatRecord]) -> Finding {
    let mut parts: Vec<String> = clients::usage(list, beats)
        .iter()
        .map(|u| {
            let roles = roles_text(u);
            match u.declared_budget {
                Some(budget) => {
                    format!("{}: {roles} (budget {budget}, {})", u.service, plural(u.instances as u64, "instance"))
                }
                None => format!("{}: {roles} (no heartbeat)", u.service),
            }
        })
        .collect();
    let other = list.iter().filter(|c| c.service.is_none() && !c.name.is_empty()).count();
    if other > 0 {
        parts.push(format!("other named: {other}"));
    }
    if parts.is_empty() {
        parts.push("no named connections".to_owned());
    }
    Finding::ok("connections", format!("{}; {}", plural(list.len() as u64, "client"), parts.join("; ")))
}

/// Any unnamed client → warn (it fits no service or budget). Replication links are not counted.
pub(super) fn unnamed_finding(list: &[Client]) -> Finding {
    let unnamed: Vec<&Client> =
        list.iter().filter(|c| c.name.is_empty() && !c.flags.contains('S') && !c.flags.contains('M')).collect();
    if unnamed.is_empty() {
        return Finding::ok("unnamed-clients", "none");
    }
    let listed = unnamed
        .iter()
        .take(LISTED)
        .map(|c| format!("{} (cmd={}, age {} s)", c.addr, c.cmd, c.age))
        .collect::<Vec<_>>()
        .join(", ");
    Finding::new(
        "unnamed-clients",
        Severity::Warn,
        format!("{} unnamed: {listed}", unnamed.len()),
        "name every connection (CLIENT SETNAME <service>:<role>:<n>) so it can be attributed; find these by addr",
    )
}

/// Per service with heartbeats: more connections than the budget it declares → critical.
pub(super) fn budget_findings(list: &[Client], beats: &[HeartbeatRecord]) -> Vec<Finding> {
    clients::usage(list, beats)
        .into_iter()
        .filter_map(|u| {
            let budget = u.declared_budget?;
            let roles = roles_text(&u);
            let measured = format!(
                "{}: {} ({roles}) for a declared budget of {budget} ({})",
                u.service,
                plural(u.total as u64, "connection"),
                plural(u.instances as u64, "instance")
            );
            Some(if u.total > budget {
                Finding::new(
                    "budget",
                    Severity::Critical,
                    measured,
                    "more connections than declared: look for leftovers of dead or hung instances (CLIENT LIST, \
                     old age, long idle) and CLIENT KILL them; every process of the service must send heartbeats",
                )
            } else {
                Finding::ok("budget", measured)
            })
        })
        .collect()
}

/// A subscriber whose output buffer reaches [`SUBSCRIBER_OMEM_WARN`] does not keep up.
pub(super) fn subscriber_buffers_finding(list: &[Client]) -> Finding {
    let subscribers: Vec<&Client> = list
        .iter()
        .filter(|c| c.flags.contains('P') || matches!(c.cmd.as_str(), "subscribe" | "psubscribe" | "ssubscribe"))
        .collect();
    let largest = subscribers.iter().map(|c| c.omem).max().unwrap_or(0);
    let measured = format!("{} subscribers, largest output buffer {}", subscribers.len(), bytes(largest));
    let slow: Vec<String> = subscribers
        .iter()
        .filter(|c| c.omem >= SUBSCRIBER_OMEM_WARN)
        .take(LISTED)
        .map(|c| format!("{} {}", if c.name.is_empty() { &c.addr } else { &c.name }, bytes(c.omem)))
        .collect();
    if slow.is_empty() {
        return Finding::ok("subscriber-buffers", measured);
    }
    Finding::new(
        "subscriber-buffers",
        Severity::Warn,
        format!("{measured}; slow: {}", slow.join(", ")),
        "a subscriber does not read its messages fast enough: Redis buffers them and disconnects it at \
         client-output-buffer-limit pubsub",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn info(text: &str) -> Info {
        Info::parse(&text.replace(' ', "\r\n"))
    }

    #[test]
    fn clients_by_role_and_budget() {
        let list = clients::parse(
            "id=1 addr=a:1 name=svc:command:0 age=1 flags=N omem=0 cmd=ping\n\
             id=2 addr=a:2 name=svc:blocking:0 age=1 flags=b omem=0 cmd=blmove\n\
             id=3 addr=a:3 name= age=9 flags=N omem=0 cmd=get\n\
             id=4 addr=a:4 name=svc:subscriber:0 age=1 flags=P omem=2097152 cmd=psubscribe\n",
        );
        let beat: HeartbeatRecord = serde_json::from_value(json!({
            "service": "svc", "instance": "h-1", "queues": ["files"], "budget": 2,
            "planned": {"command": 1, "subscriber": 0, "blocking": 1}, "open": 2, "at_ms": 0, "interval_ms": 5000
        }))
        .unwrap();
        let budgets = budget_findings(&list, std::slice::from_ref(&beat));
        assert_eq!(budgets.len(), 1);
        assert_eq!(budgets[0].severity, Severity::Critical, "{budgets:?}");
        assert_eq!(unnamed_finding(&list).severity, Severity::Warn);
        assert_eq!(subscriber_buffers_finding(&list).severity, Severity::Warn);
        let ok = clients_finding(Ok(&info("connected_clients:4 maxclients:10000")), Err("refused"), &[beat]);
        assert_eq!(ok.severity, Severity::Ok);
        let full = clients_finding(Ok(&info("connected_clients:9600 maxclients:10000")), Err("refused"), &[]);
        assert_eq!(full.severity, Severity::Critical);
    }
}
