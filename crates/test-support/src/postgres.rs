//! A fresh Postgres database per test, so tests never see each other's rows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};

/// Test databases older than this are dropped when a new one is made (left by killed runs).
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// The Postgres tests use: `TEST_DATABASE_URL`, else `DATABASE_URL`, else the role
/// `scripts/test` prepares, `postgres://app:app@127.0.0.1:5432/app`. Its user needs `CREATEDB`.
pub fn database_url() -> String {
    ["TEST_DATABASE_URL", "DATABASE_URL"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.is_empty())
        .unwrap_or_else(|| "postgres://app:app@127.0.0.1:5432/app".to_owned())
}

/// Creates an empty database `t_<unix seconds>_<random>` on the test server and returns its URL.
/// Databases of earlier runs older than two hours are dropped on the way.
pub async fn fresh_database() -> String {
    let admin = database_url();
    let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!("cannot reach the test Postgres at {}: {e} (scripts/test prepares it)", redact(&admin))
    });
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'")
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    for name in names {
        let created = name.split('_').nth(1).and_then(|s| s.parse::<u64>().ok()).unwrap_or(now);
        if now.saturating_sub(created) > STALE_AFTER.as_secs() {
            let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).await;
        }
    }
    let name = format!("t_{now}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await.expect("CREATE DATABASE");
    with_database(&admin, &name)
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(with_database("postgres://a:b@h:5432/app", "t_1"), "postgres://a:b@h:5432/t_1");
        assert_eq!(with_database("postgres://h/app?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(redact("postgres://a:b@h/app"), "postgres://***@h/app");
    }
}
