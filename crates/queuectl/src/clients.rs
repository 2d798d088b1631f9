//! `queuectl connections`: `CLIENT LIST` grouped by service and role, against the budgets that
//! services declare in their heartbeats. Also used by `doctor`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use queue_core::tooling::Raw;
use queue_core::{Connections, HeartbeatRecord, Role};
use serde::Serialize;
use serde_json::json;

use crate::output::{Colour, Printer};

/// One line of `CLIENT LIST`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Client {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) addr: String,
    pub(crate) age: u64,
    pub(crate) idle: u64,
    pub(crate) flags: String,
    pub(crate) cmd: String,
    /// Output buffer memory (bytes): a slow subscriber shows here.
    pub(crate) omem: u64,
    /// From the name `<service>:<role>:<n>` (optionally behind a `<prefix>:<base64>:` label).
    pub(crate) service: Option<String>,
    pub(crate) role: Option<String>,
    /// This `queuectl` process's own connection: listed, but never counted against a budget.
    pub(crate) is_self: bool,
}

/// Parses `CLIENT LIST` text.
pub(crate) fn parse(list: &str) -> Vec<Client> {
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut c = Client::default();
            for kv in line.split(' ') {
                let Some((k, v)) = kv.split_once('=') else { continue };
                match k {
                    "id" => c.id = v.to_owned(),
                    "name" => c.name = v.to_owned(),
                    "addr" => c.addr = v.to_owned(),
                    "age" => c.age = v.parse().unwrap_or(0),
                    "idle" => c.idle = v.parse().unwrap_or(0),
                    "flags" => c.flags = v.to_owned(),
                    "cmd" => c.cmd = v.to_owned(),
                    "omem" => c.omem = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            (c.service, c.role) = service_and_role(&c.name);
            c
        })
        .collect()
}

/// `svc:command:0` → (svc, command); `bull:ZmlsZXM=:svc:blocking:1` → (svc, blocking).
pub(crate) fn service_and_role(name: &str) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = name.split(':').collect();
    if parts.len() >= 3 {
        let role = parts[parts.len() - 2];
        if Role::ALL.iter().any(|r| r.as_str() == role) && parts[parts.len() - 1].parse::<u64>().is_ok() {
            return (Some(parts[parts.len() - 3].to_owned()), Some(role.to_owned()));
        }
    }
    (None, None)
}

/// Per service: connections by role, and the budget its live instances declare.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ServiceUsage {
    pub(crate) service: String,
    pub(crate) by_role: BTreeMap<String, usize>,
    pub(crate) total: usize,
    /// Sum of the budgets in live heartbeats; `None` when the service sends none.
    pub(crate) declared_budget: Option<usize>,
    pub(crate) instances: usize,
}

pub(crate) fn usage(clients: &[Client], beats: &[HeartbeatRecord]) -> Vec<ServiceUsage> {
    let mut services: BTreeMap<String, ServiceUsage> = BTreeMap::new();
    for c in clients.iter().filter(|c| !c.is_self) {
        if let (Some(service), Some(role)) = (&c.service, &c.role) {
            let u = services
                .entry(service.clone())
                .or_insert_with(|| ServiceUsage { service: service.clone(), ..Default::default() });
            *u.by_role.entry(role.clone()).or_default() += 1;
            u.total += 1;
        }
    }
    for beat in beats {
        let u = services
            .entry(beat.service.clone())
            .or_insert_with(|| ServiceUsage { service: beat.service.clone(), ..Default::default() });
        u.declared_budget = Some(u.declared_budget.unwrap_or(0) + beat.budget);
        u.instances += 1;
    }
    services.into_values().collect()
}

pub(crate) async fn client_list(c: &Connections) -> anyhow::Result<Vec<Client>> {
    let (own, text): (u64, String) = Raw::new(c).query_many(&[&["CLIENT", "ID"], &["CLIENT", "LIST"]], false).await?;
    let mut clients = parse(&text);
    for client in &mut clients {
        client.is_self = client.id == own.to_string();
    }
    Ok(clients)
}

pub(crate) async fn run(c: &Connections, p: &Printer) -> anyhow::Result<ExitCode> {
    let clients = client_list(c).await?;
    let beats = c.live_heartbeats().await?;
    let usage = usage(&clients, &beats);
    let unnamed = clients.iter().filter(|c| c.name.is_empty()).count();
    if p.json {
        p.json(&json!({"total": clients.len(), "unnamed": unnamed, "services": usage, "clients": clients}));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = usage
        .iter()
        .map(|u| {
            let roles = u.by_role.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ");
            let budget = u.declared_budget.map_or("-".to_owned(), |b| b.to_string());
            vec![u.service.clone(), u.total.to_string(), budget, roles]
        })
        .collect();
    p.table(&["service", "connections", "budget", "roles"], &rows, |row, col, _| {
        (col == 1).then(|| match usage[row].declared_budget {
            Some(budget) if usage[row].total > budget => Colour::Red,
            _ => Colour::Green,
        })
    });
    p.line(&format!("{} clients in all, {unnamed} unnamed", clients.len()));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_service_and_role() {
        assert_eq!(service_and_role("api-svc:command:0"), (Some("api-svc".into()), Some("command".into())));
        assert_eq!(
            service_and_role("bull:ZmlsZXM=:worker-svc:blocking:3"),
            (Some("worker-svc".into()), Some("blocking".into()))
        );
        assert_eq!(service_and_role("bull:ZmlsZXM="), (None, None));
        assert_eq!(service_and_role(""), (None, None));
        assert_eq!(service_and_role("a:command:x"), (None, None));
    }

    #[test]
    fn client_list_lines_parse() {
        let text = "id=5 addr=127.0.0.1:1 laddr=x fd=8 name=svc:subscriber:0 age=3 idle=1 flags=P db=0 omem=20 cmd=psubscribe\n\
                    id=6 addr=127.0.0.1:2 name= age=1 idle=0 flags=b omem=0 cmd=blmove\n";
        let clients = parse(text);
        assert_eq!(clients.len(), 2);
        assert_eq!((clients[0].role.as_deref(), clients[0].omem), (Some("subscriber"), 20));
        assert!(clients[1].flags.contains('b') && clients[1].name.is_empty());
        let usage = usage(&clients, &[]);
        assert_eq!(usage.len(), 1);
        assert_eq!((usage[0].total, usage[0].declared_budget), (1, None));
    }
}
