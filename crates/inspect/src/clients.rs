//! `CLIENT LIST` parsed, and grouped by service and role against the budgets that services
//! declare in their heartbeats.

use std::collections::BTreeMap;

use queue_core::tooling::Raw;
use queue_core::{Connections, HeartbeatRecord, Role};
use serde::Serialize;

/// One line of `CLIENT LIST`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Client {
    /// The server's client id.
    pub id: String,
    /// Its `CLIENT SETNAME` name, empty when unnamed.
    pub name: String,
    /// The peer address.
    pub addr: String,
    /// Seconds since it connected.
    pub age: u64,
    /// Seconds since its last command.
    pub idle: u64,
    /// Redis's client flags (`b` blocked, `P` pub/sub, ...).
    pub flags: String,
    /// Its last command.
    pub cmd: String,
    /// Output buffer memory (bytes): a slow subscriber shows here.
    pub omem: u64,
    /// From the name `<service>:<role>:<n>` (optionally behind a `<prefix>:<base64>:` label).
    pub service: Option<String>,
    /// From the name too: `command`, `subscriber` or `blocking`.
    pub role: Option<String>,
    /// The asking process's own connection: listed, but never counted against a budget.
    pub is_self: bool,
}

/// Parses `CLIENT LIST` text.
pub fn parse(list: &str) -> Vec<Client> {
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
pub fn service_and_role(name: &str) -> (Option<String>, Option<String>) {
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
pub struct ServiceUsage {
    /// The service name connections carry.
    pub service: String,
    /// Open connections per role.
    pub by_role: BTreeMap<String, usize>,
    /// Open connections in all.
    pub total: usize,
    /// Sum of the budgets in live heartbeats; `None` when the service sends none.
    pub declared_budget: Option<usize>,
    /// Live instances (heartbeats).
    pub instances: usize,
}

/// Connections per service and role (the asking connection left out), with each service's
/// declared budget.
pub fn usage(clients: &[Client], beats: &[HeartbeatRecord]) -> Vec<ServiceUsage> {
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

/// `CLIENT LIST` of the server, the asking connection marked [`Client::is_self`].
///
/// # Errors
///
/// When the server cannot be asked.
pub async fn client_list(c: &Connections) -> queue_core::Result<Vec<Client>> {
    let (own, text): (u64, String) = Raw::new(c).query_many(&[&["CLIENT", "ID"], &["CLIENT", "LIST"]], false).await?;
    let mut clients = parse(&text);
    for client in &mut clients {
        client.is_self = client.id == own.to_string();
    }
    Ok(clients)
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
