//! `queuectl connections`: `CLIENT LIST` grouped by service and role (`inspect::clients`),
//! against the budgets that services declare in their heartbeats.

use std::process::ExitCode;

use inspect::clients::{client_list, usage};
use queue_core::Connections;
use serde_json::json;

use crate::output::{Colour, Printer};

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
