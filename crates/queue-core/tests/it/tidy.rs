//! The invariants of `ARCHITECTURE.md`, checked by reading the workspace's source, as
//! rust-analyzer's `xtask/src/tidy.rs` does: written rules drift, tested ones do not.
//!
//! Each rule is a checker over text and a `#[test]` that runs it on the real tree. Each checker also
//! has a `*_self_check` test that plants a violation in a fixture and asserts the checker reports
//! it, so a rule cannot rot into one that passes everything.
//!
//! The checkers see Rust through [`Lexed`]: comments are blanked, string literals are kept apart,
//! and `#[cfg(test)]` items count as tests. Rules are written against folders and roles, not against
//! today's list of files, so a new file falls under them without an edit here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Rule a: every key is built by `QueueKeys`.

/// The one file that may build keys with `format!`.
const KEYS_FILE: &str = "crates/queue-core/src/bull/keys.rs";

/// The opt-out for a `format!` that looks like a key and is not, with the reason in brackets:
/// `// tidy: not a key (connection name)`, on the line of `format!` or the line above it.
const NOT_A_KEY: &str = "// tidy: not a key (";

#[test]
fn keys_are_built_only_in_keys_rs() {
    let violations = product_sources().iter().filter(|f| f.path != KEYS_FILE).flat_map(check_format_keys).collect();
    assert_clean(
        violations,
        "Keys are built by `QueueKeys` in crates/queue-core/src/bull/keys.rs, never by `format!` at a \
         call site (ARCHITECTURE.md, Invariants). Add a method there, or, if the string is not a key, \
         say so on the line: `// tidy: not a key (<why>)`.",
    );
}

#[test]
fn keys_are_built_only_in_keys_rs_self_check() {
    let planted = r#"
fn wait(prefix: &str, name: &str) -> String {
    format!("{prefix}:{name}:wait")
}
fn positional(a: &str, b: &str) -> String {
    format!("{}:{}", a, b)
}
fn glued(&self) -> String {
    format!(
        "{base}wait",
        base = self.base,
    )
}
fn through_an_argument(&self) -> String {
    format!("{}paused", self.base)
}
fn pattern(prefix: &str) -> String {
    format!("{}:*", escape_glob(prefix))
}
"#;
    assert_lines(check_format_keys(&file("crates/x/src/a.rs", planted)), &[3, 6, 10, 15, 18]);

    let innocent = r#"
fn messages(prefix: &str, e: &str, n: u32, url: &str) {
    let _ = format!("{prefix:?} must not contain whitespace");
    let _ = format!("invalid {}: {e}", prefix);
    let _ = format!("{scheme}://{user}@{}", url);
    let _ = format!("{b:02x}");
    let _ = format!("{{prefix}}:{{name}}");
    // format!("{prefix}:{name}") in a comment is not code.
    let _ = "format!(\"{prefix}:{name}\") in a string is not code";
    let _ = format!("{}:{}", a, n); // tidy: not a key (a lock value)
    // tidy: not a key (a connection name)
    let _ = format!("{}:{}:{}", service, role, n);
}
#[cfg(test)]
mod tests {
    fn t() -> String { format!("{prefix}:{name}") }
}
"#;
    assert_lines(check_format_keys(&file("crates/x/src/b.rs", innocent)), &[]);
}

/// `format!` calls whose format string has the shape of a key: a placeholder joined to other text
/// by `:` with no space (`{prefix}:{name}`, `{}:*`, `repeat:{}`), or the prefix or base of a key
/// (an argument named `prefix`/`base`, not `Debug`-formatted) glued to other text (`{base}wait`).
fn check_format_keys(f: &SourceFile) -> Vec<Violation> {
    let lexed = Lexed::new(&f.text, Tests::Skip);
    let lines: Vec<&str> = f.text.lines().collect();
    let mut out = Vec::new();
    for call in macro_calls(&lexed, "format") {
        let Some(literal) = call.format_string else { continue };
        let Some(shape) = key_shape(&literal.value, &call.args) else { continue };
        let first = lexed.line_of(call.start);
        let last = lexed.line_of(literal.start);
        let opts_out = |n: usize| {
            let why = lines.get(n - 1).and_then(|line| line.split_once(NOT_A_KEY)).map(|(_, why)| why);
            why.is_some_and(|why| why.find(')').is_some_and(|end| end > 0))
        };
        let comment_above = first > 1 && lines[first - 2].trim_start().starts_with("//");
        let opted_out = (first..=last).any(opts_out) || (comment_above && opts_out(first - 1));
        if !opted_out {
            out.push(f.violation(
                last,
                "key-format",
                format!("`format!` builds a key: \"{}\" ({shape})", literal.value),
            ));
        }
    }
    out
}

/// Why the format string `template`, with arguments `args`, looks like a key, or `None`.
fn key_shape(template: &str, args: &[String]) -> Option<&'static str> {
    // The template with each placeholder as one PLACEHOLDER, to look at what surrounds it.
    const PLACEHOLDER: char = '\u{0}';
    let mut flat: Vec<char> = Vec::new();
    let mut placeholders = Vec::new();
    for piece in parse_format(template) {
        match piece {
            Piece::Text(text) => flat.extend(text.chars()),
            Piece::Arg { name, spec } => {
                placeholders.push((flat.len(), name, spec));
                flat.push(PLACEHOLDER);
            }
        }
    }
    let at = |i: Option<usize>| i.and_then(|i| flat.get(i)).copied();
    let is_space = |c: Option<char>| c.is_none_or(char::is_whitespace);
    for (i, c) in flat.iter().enumerate() {
        let (before, after) = (at(i.checked_sub(1)), at(Some(i + 1)));
        // `{a}:{b}`, `{a}:*`, `{a}:` at the end (but not `{a}: text` or `{scheme}://`).
        let joins_after = before == Some(PLACEHOLDER) && after.is_none_or(|a| !a.is_whitespace() && a != '/');
        // `name:{a}` (but not `text :{a}` or `:{a}` at the start).
        let joins_before = after == Some(PLACEHOLDER) && !is_space(before);
        if *c == ':' && (joins_after || joins_before) {
            return Some("placeholders joined by ':'");
        }
    }
    let positional: Vec<&str> = args.iter().filter(|a| named_arg(a).is_none()).map(String::as_str).collect();
    let named: BTreeMap<&str, &str> = args.iter().filter_map(|a| named_arg(a)).collect();
    let key_text = |c: Option<char>| c.is_some_and(|c| c == PLACEHOLDER || c.is_alphanumeric() || "_-*".contains(c));
    let mut next_positional = 0;
    for (i, name, spec) in placeholders {
        let expression = match name.as_str() {
            "" => {
                next_positional += 1;
                positional.get(next_positional - 1).copied().unwrap_or("")
            }
            index if index.chars().all(|c| c.is_ascii_digit()) => {
                positional.get(index.parse::<usize>().unwrap()).copied().unwrap_or("")
            }
            name => named.get(name).copied().unwrap_or(name),
        };
        let glued = key_text(at(i.checked_sub(1))) || key_text(at(Some(i + 1)));
        let names_a_key = identifiers(expression).any(|id| id == "prefix" || id == "base");
        if glued && names_a_key && !spec.contains('?') {
            return Some("a key's prefix or base glued to other text");
        }
    }
    None
}

/// A piece of a format string.
#[derive(Debug)]
enum Piece {
    Text(String),
    /// `{name:spec}`; `name` is empty for `{}`.
    Arg {
        name: String,
        spec: String,
    },
}

/// Splits a format string into text and placeholders (`{{` and `}}` are text).
fn parse_format(template: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let inner: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let (name, spec) = inner.split_once(':').unwrap_or((&inner, ""));
                pieces.push(Piece::Text(std::mem::take(&mut text)));
                pieces.push(Piece::Arg { name: name.trim().to_owned(), spec: spec.to_owned() });
            }
            c => text.push(c),
        }
    }
    pieces.push(Piece::Text(text));
    pieces
}

/// `("name", "expression")` for a named argument `name = expression`.
fn named_arg(arg: &str) -> Option<(&str, &str)> {
    let (name, expression) = arg.split_once('=')?;
    let name = name.trim();
    let is_ident = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    (is_ident && !expression.starts_with('=')).then(|| (name, expression.trim()))
}

// ---------------------------------------------------------------------------------------------
// Rule b: only the connector opens connections.

/// The one file that may open a Redis connection (after taking a budget permit).
const CONNECTOR_FILE: &str = "crates/queue-core/src/connection/connector.rs";

#[test]
fn connections_are_opened_only_by_the_connector() {
    let violations =
        product_sources().iter().filter(|f| f.path != CONNECTOR_FILE).flat_map(check_connection_opening).collect();
    assert_clean(
        violations,
        "Only `Connector::open` (crates/queue-core/src/connection/connector.rs) opens Redis connections, \
         after taking a budget permit (ARCHITECTURE.md, Invariants). Get a handle from `Connections`.",
    );
}

#[test]
fn connections_are_opened_only_by_the_connector_self_check() {
    let planted = r#"
async fn sneak(url: &str) {
    let client = redis::Client::open(url).unwrap();
    let a = client.get_multiplexed_async_connection().await;
    let b = client.get_connection();
    let c = redis::aio::ConnectionManager::new(client).await;
    let d = open_cluster(nodes);
}
"#;
    assert_lines(check_connection_opening(&file("crates/x/src/a.rs", planted)), &[3, 4, 5, 6, 7]);

    let innocent = r#"
//! Uses `redis::Client::open` only through the connector.
fn f(client: &Client) {
    let _ = client.get_connection_info();
    let _ = "Client::open(";
}
#[cfg(test)]
mod tests {
    fn t() { redis::Client::open("redis://x").unwrap(); }
}
"#;
    assert_lines(check_connection_opening(&file("crates/x/src/b.rs", innocent)), &[]);
}

/// Calls that open a connection: `Client::open`, the client's `get_*connection*` family, the
/// connection manager and cluster clients.
fn check_connection_opening(f: &SourceFile) -> Vec<Violation> {
    let lexed = Lexed::new(&f.text, Tests::Skip);
    let tokens = lexed.tokens();
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let after_client_open =
            || token.text == "open" && i >= 2 && tokens[i - 1].text == "::" && tokens[i - 2].text == "Client";
        let id = token.text;
        let opens = after_client_open()
            || id.starts_with("get_multiplexed")
            || id == "get_connection"
            || id.starts_with("get_connection_with")
            || id.starts_with("get_async_connection")
            || id == "get_async_pubsub"
            || id.contains("ConnectionManager")
            || id.starts_with("open_cluster")
            || id == "ClusterClient";
        if opens {
            let what = if after_client_open() { "Client::open" } else { id };
            out.push(f.violation(
                lexed.line_of(token.offset),
                "connection-open",
                format!("`{what}` opens a Redis connection"),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rule c: blocking commands run only on the blocking role.

/// The one file that may issue a blocking command, on a blocking connection under a watchdog.
const BLOCKING_FILE: &str = "crates/queue-core/src/connection/blocking.rs";

/// Redis commands that block the connection they run on.
const BLOCKING_COMMANDS: &[&str] =
    &["BLMOVE", "BRPOPLPUSH", "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP"];

#[test]
fn blocking_commands_only_in_blocking_rs() {
    let violations = product_sources().iter().filter(|f| f.path != BLOCKING_FILE).flat_map(check_blocking).collect();
    assert_clean(
        violations,
        "Blocking commands run only in crates/queue-core/src/connection/blocking.rs, on a blocking \
         connection under its watchdog, never on the command connection (ARCHITECTURE.md, Invariants). \
         Use `BlockingPool`.",
    );
}

#[test]
fn blocking_commands_only_in_blocking_rs_self_check() {
    let planted = r#"
async fn pop(conn: &mut C) {
    let _: Option<String> = redis::cmd("BLMOVE").arg("a").query_async(conn).await.unwrap();
    let _ = redis::cmd("brpoplpush");
    const POP: &str = "BzPopMin";
}
"#;
    assert_lines(check_blocking(&file("crates/x/src/a.rs", planted)), &[3, 4, 5]);

    let innocent = r#"
/// Waits in `BLMOVE` on the blocking pool.
async fn pop(pool: &BlockingPool) {
    pool.blmove("a", "b", block).await;
    let _ = "upgrade Redis: BLMOVE and LPOS are missing";
    let _ = redis::cmd("LMOVE");
}
#[cfg(test)]
mod tests {
    const LIST: &str = "BLPOP";
}
"#;
    assert_lines(check_blocking(&file("crates/x/src/b.rs", innocent)), &[]);
}

/// String literals that name a blocking command (the whole literal or its first word, any case):
/// `cmd("BLMOVE")`, `.arg("blpop")`, a `const`.
fn check_blocking(f: &SourceFile) -> Vec<Violation> {
    let lexed = Lexed::new(&f.text, Tests::Skip);
    lexed
        .strings
        .iter()
        .filter_map(|literal| {
            let word = literal.value.split_whitespace().next()?;
            let command = BLOCKING_COMMANDS.iter().find(|c| c.eq_ignore_ascii_case(word))?;
            Some(f.violation(
                lexed.line_of(literal.start),
                "blocking-command",
                format!("blocking command {command} outside the blocking pool"),
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rule d: only queue-core depends on the driver.

/// The crate that talks to Redis.
const REDIS_CRATE: &str = "queue-core";

#[test]
fn only_queue_core_depends_on_redis() {
    let violations = crate_dirs()
        .iter()
        .filter(|name| *name != REDIS_CRATE)
        .flat_map(|name| {
            let path = format!("crates/{name}/Cargo.toml");
            check_redis_dependency(&SourceFile { text: read(&path), path })
        })
        .collect();
    assert_clean(
        violations,
        "Only queue-core lists `redis` in [dependencies] (ARCHITECTURE.md, Invariants: only queue-core \
         opens Redis connections). Raw Redis access for operator tools goes through `queue_core::tooling`; \
         dev-dependencies are fine.",
    );
}

#[test]
fn only_queue_core_depends_on_redis_self_check() {
    let planted = r#"
[package]
name = "x"

[dependencies]
anyhow.workspace = true
redis.workspace = true

[target.'cfg(unix)'.dependencies]
driver = { package = "redis", version = "1" }

[dependencies.redis]
version = "1"
"#;
    assert_lines(check_redis_dependency(&file("crates/x/Cargo.toml", planted)), &[7, 10, 12]);

    let innocent = r#"
[dependencies]
redis-test-helpers = "1"
queue-core.workspace = true # wraps redis

[dev-dependencies]
redis.workspace = true

[features]
redis = []
"#;
    assert_lines(check_redis_dependency(&file("crates/x/Cargo.toml", innocent)), &[]);
}

/// `redis` (by name or as `package = "redis"`) in a normal or build dependency table, target-specific
/// ones included. A small line parser: Cargo.toml files here are flat, and TOML inline tables are
/// single-line.
fn check_redis_dependency(f: &SourceFile) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut in_dependencies = false;
    for (n, line) in f.text.lines().enumerate() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            let table = line.trim_matches(['[', ']']).trim();
            let last = table.rsplit('.').next().unwrap_or("");
            if ["dependencies.redis", "build-dependencies.redis"].iter().any(|t| table.ends_with(t)) {
                out.push(f.violation(n + 1, "redis-dependency", format!("[{table}]")));
            }
            in_dependencies = last == "dependencies" || last == "build-dependencies";
            continue;
        }
        if !in_dependencies {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let name = key.split('.').next().unwrap_or("").trim().trim_matches('"');
        let renamed = value.replace(' ', "").contains("package=\"redis\"");
        if name == "redis" || renamed {
            out.push(f.violation(n + 1, "redis-dependency", format!("`{line}` in dependencies")));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rule e: the code map names files that exist.

/// File endings of the tokens the code map check resolves.
const PATH_ENDINGS: &[&str] = &[".rs", ".lua", ".js", ".toml", ".sh", ".yml", "/"];

#[test]
fn code_map_names_existing_files() {
    let architecture = SourceFile { path: "ARCHITECTURE.md".to_owned(), text: read("ARCHITECTURE.md") };
    let violations = check_code_map(&architecture, &workspace_files());
    assert_clean(
        violations,
        "Every file the code map of ARCHITECTURE.md names must exist. A name resolves against the \
         repository root, the `src/` and root of the crate whose `### crates/<name>` section it is in, \
         and the folders named by the bullets it is nested in. Fix the map, not this test.",
    );
}

#[test]
fn code_map_names_existing_files_self_check() {
    let map = "\
# Architecture

Mentions `gone.rs` before the code map, which is not checked.

## Code map

### `crates/core`

- `lib.rs::run` and `scripts/*.lua`, `README.toml`.
- `worker/`: `Worker` in `mod.rs`.
  - `fetch.rs`: fetching.
    - In blocking mode it uses `BLMOVE`.
  - `attempt.rs`: one attempt.

  `close()` is in `mod.rs`.
- `gone.rs`: moved away.
- `tests/node/peer.js` and `missing/` and `scripts/*.sh`.

`fetch.rs` outside the worker bullet.

## Invariants

- `other.rs` is not in the code map.
";
    let files: BTreeSet<String> = [
        "crates/core/src/lib.rs",
        "crates/core/scripts/a-1.lua",
        "crates/core/README.toml",
        "crates/core/src/worker/mod.rs",
        "crates/core/src/worker/fetch.rs",
        "crates/core/src/worker/attempt.rs",
        "tests/node/peer.js",
    ]
    .map(str::to_owned)
    .into();
    let found = check_code_map(&file("ARCHITECTURE.md", map), &files);
    assert_lines(found.clone(), &[16, 17, 17, 19]);
    assert!(found[0].message.contains("`gone.rs`"), "{}", found[0]);
    assert!(found[3].message.contains("`fetch.rs`"), "{}", found[3]);
}

/// Backticked path-like tokens under `## Code map` that name nothing in `files` (paths relative to
/// the repository root, `/`-separated).
fn check_code_map(architecture: &SourceFile, files: &BTreeSet<String>) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut in_map = false;
    let mut crate_dir: Option<String> = None;
    // Enclosing bullets: (indent of the `-`, the folder its leading token names).
    let mut bullets: Vec<(usize, Option<String>)> = Vec::new();
    for (n, line) in architecture.text.lines().enumerate() {
        if let Some(heading) = line.strip_prefix("## ") {
            in_map = heading.trim() == "Code map";
            crate_dir = None;
            bullets.clear();
            continue;
        }
        if !in_map {
            continue;
        }
        if let Some(heading) = line.strip_prefix("### ") {
            crate_dir = backticked(heading).into_iter().find(|t| t.starts_with("crates/")).map(str::to_owned);
            bullets.clear();
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let is_bullet = trimmed.starts_with("- ") || trimmed.starts_with("* ");
        if is_bullet {
            bullets.retain(|(i, _)| *i < indent);
        } else {
            bullets.retain(|(i, _)| i + 2 <= indent);
        }
        let bases = |bullets: &[(usize, Option<String>)]| {
            let mut bases = vec![String::new()];
            if let Some(dir) = &crate_dir {
                bases.push(format!("{dir}/src/"));
                bases.push(format!("{dir}/"));
            }
            bases.extend(bullets.iter().rev().filter_map(|(_, folder)| folder.clone()));
            bases
        };
        let tokens: Vec<&str> = backticked(trimmed).into_iter().filter_map(path_token).collect();
        if is_bullet {
            let leading = trimmed[2..].starts_with('`').then(|| backticked(trimmed).first().copied()).flatten();
            let folder = leading
                .filter(|t| t.ends_with('/'))
                .and_then(|t| bases(&bullets).into_iter().map(|b| format!("{b}{t}")).find(|p| exists(files, p)));
            bullets.push((indent, folder));
        }
        let bases = bases(&bullets);
        for token in tokens {
            if !bases.iter().any(|base| exists(files, &format!("{base}{token}"))) {
                let searched: Vec<&str> = bases.iter().map(|b| if b.is_empty() { "./" } else { b.as_str() }).collect();
                out.push(architecture.violation(
                    n + 1,
                    "code-map",
                    format!("`{token}` names no file (looked in {})", searched.join(", ")),
                ));
            }
        }
    }
    out
}

/// The texts between backticks.
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The path in a token that looks like one (`lib.rs::run` names `lib.rs`).
fn path_token(token: &str) -> Option<&str> {
    let path = token.split("::").next()?;
    let looks_like_path = !path.is_empty() && !path.contains(char::is_whitespace) && !path.starts_with('.');
    (looks_like_path && PATH_ENDINGS.iter().any(|end| path.ends_with(end))).then_some(path)
}

/// Whether `path` is a file or folder in `files`; `*` in its last part matches any text.
fn exists(files: &BTreeSet<String>, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let Some((dir, name)) = path.rsplit_once('/').filter(|(_, name)| name.contains('*')) else {
        let folder = format!("{path}/");
        return files.contains(path) || files.range(folder.clone()..).next().is_some_and(|f| f.starts_with(&folder));
    };
    files.iter().filter_map(|f| f.strip_prefix(dir)?.strip_prefix('/')).any(|f| !f.contains('/') && glob(name, f))
}

/// `*`-only glob matching.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else { return false };
            (0..=rest.len()).filter(|i| rest.is_char_boundary(*i)).any(|i| glob(tail, &rest[i..]))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rule f: queue-core's layers import only downward, and its files form no cycle.

/// queue-core's source folder.
const CORE_SRC: &str = "crates/queue-core/src";

/// queue-core's layers, bottom to top, by the first part of a file's path (`worker` is `worker/`,
/// `queue` is `queue.rs` or `queue/`). A file may import its own layer and those below.
const LAYERS: &[&[&str]] = &[
    &["error", "clock"],
    &["connection"],
    &["bull"],
    &["connections", "heartbeat"],
    &["queue", "handler", "events"],
    &["worker"],
    &["tooling", "lib"],
];

/// Imports that go up a layer on purpose: (from, to, why).
const UPWARD_IMPORTS: &[(&str, &str, &str)] = &[(
    "error.rs",
    "connection/role.rs",
    "`Role` is vocabulary of errors (`Timeout`, `Redis` and `BudgetExhausted` name the role whose \
     connection failed); role.rs is a plain enum that imports nothing from the crate",
)];

#[test]
fn core_imports_only_downward_without_cycles() {
    let sources: Vec<SourceFile> = files_under(CORE_SRC, "rs")
        .into_iter()
        .map(|f| SourceFile { path: f.path[CORE_SRC.len() + 1..].to_owned(), text: f.text })
        .collect();
    let violations =
        check_layers(&sources).into_iter().map(|v| Violation { path: format!("{CORE_SRC}/{}", v.path), ..v }).collect();
    assert_clean(
        violations,
        "queue-core's files import only from their own layer and the ones below, and no files import \
         each other in a circle (STYLE.md, Layout). Layers, bottom to top: (error, clock) < connection/ \
         < bull/ < (connections, heartbeat) < (queue, handler, events) < worker/ < (tooling, lib). A \
         module that reaches up for a helper means the helper lives in the wrong place; a new top-level \
         module gets a row in `LAYERS`.",
    );
}

#[test]
fn core_imports_only_downward_without_cycles_self_check() {
    let files = [
        file("lib.rs", "mod error;\nmod connection;\nmod worker;\npub use error::Error;\n"),
        file("error.rs", "use crate::connection::role::Role;\n"),
        file("connection/mod.rs", "pub(crate) mod role;\npub(crate) mod command;\n"),
        file("connection/role.rs", "pub enum Role { Command }\n"),
        file(
            "connection/command.rs",
            "use crate::{\n    error::Error,\n    worker::Worker,\n};\nfn f() -> crate::Result<()> { Ok(()) }\n",
        ),
        file("worker/mod.rs", "mod fetch;\nmod attempt;\npub struct Worker;\n"),
        file("worker/fetch.rs", "use super::attempt;\n"),
        file(
            "worker/attempt.rs",
            "fn a() {\n    crate::worker::fetch::go();\n}\n#[cfg(test)]\nmod tests {\n    use crate::tooling::X;\n}\n",
        ),
        file("stray.rs", "use crate::error::Error;\n"),
    ];
    let found = check_layers(&files);
    let seen: Vec<String> = found.iter().map(|v| format!("{}:{}", v.path, v.line)).collect();
    assert_eq!(
        seen,
        ["connection/command.rs:3", "connection/command.rs:5", "stray.rs:1", "worker/attempt.rs:2"],
        "{found:#?}"
    );
    assert!(found[3].message.contains("worker/fetch.rs"), "the cycle is named: {}", found[3]);
}

/// Layer violations and cycles among `files` (paths relative to the crate's `src/`).
fn check_layers(files: &[SourceFile]) -> Vec<Violation> {
    let modules: BTreeMap<Vec<String>, &str> = files.iter().map(|f| (module_path(&f.path), f.path.as_str())).collect();
    let layer_of = |path: &str| {
        let top = path.split('/').next().unwrap_or("").trim_end_matches(".rs");
        LAYERS.iter().position(|layer| layer.contains(&top))
    };
    let mut out = Vec::new();
    // from -> to -> (line, path as written) of the first import.
    let mut graph: BTreeMap<&str, BTreeMap<&str, (usize, String)>> = BTreeMap::new();
    for f in files {
        let Some(from_layer) = layer_of(&f.path) else {
            out.push(f.violation(1, "layers", "is in no layer of `LAYERS`".to_owned()));
            continue;
        };
        let here = module_path(&f.path);
        for (line, path) in crate_paths(&Lexed::new(&f.text, Tests::Skip), &["crate", "super"]) {
            let Some(absolute) = absolute_path(&here, &path) else { continue };
            let Some(target) = (0..=absolute.len()).rev().find_map(|k| modules.get(&absolute[..k]).copied()) else {
                continue;
            };
            if target == f.path {
                continue;
            }
            graph.entry(&f.path).or_default().entry(target).or_insert((line, path.join("::")));
            let to_layer = layer_of(target).unwrap_or(0);
            let allowed = UPWARD_IMPORTS.iter().any(|(from, to, _)| *from == f.path && *to == target);
            if to_layer > from_layer && !allowed {
                out.push(f.violation(
                    line,
                    "layers",
                    format!(
                        "`{}` imports `{}` (layer {to_layer}: {}) from layer {from_layer} ({})",
                        path.join("::"),
                        target,
                        LAYERS[to_layer].join(", "),
                        LAYERS[from_layer].join(", "),
                    ),
                ));
            }
        }
    }
    for (cycle, group) in cycles(&graph) {
        let (first, second) = (cycle[0], cycle[1]);
        let steps: Vec<String> =
            cycle.windows(2).map(|w| format!("{}:{} -> {}", w[0], graph[w[0]][w[1]].0, w[1])).collect();
        let mut message = format!("files import each other in a circle: {}", steps.join(", "));
        if group.len() > cycle.len() - 1 {
            let all: Vec<&str> = group.into_iter().collect();
            message += &format!(" (one of the circles among {} files: {})", all.len(), all.join(", "));
        }
        let owner = files.iter().find(|f| f.path == first).unwrap();
        out.push(owner.violation(graph[first][second].0, "import-cycle", message));
    }
    out.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    out
}

/// `lib.rs` is `[]`, `a/mod.rs` and `a.rs` are `[a]`, `a/b.rs` is `[a, b]`.
fn module_path(path: &str) -> Vec<String> {
    let path = path.trim_end_matches(".rs");
    let mut parts: Vec<String> = path.split('/').map(str::to_owned).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// `path` (starting with `crate` or `super`) as a path from the crate root.
fn absolute_path(here: &[String], path: &[String]) -> Option<Vec<String>> {
    // The module `super` is relative to: a file's own module (`mod.rs` is its folder's module).
    let mut base = here.to_vec();
    let mut rest = path;
    match path.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &path[1..];
        }
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// For each group of files that import each other in circles (a strongly connected component of
/// `graph`): one shortest circle through its first file, as a list that ends where it starts, and
/// the whole group.
fn cycles<'a>(graph: &BTreeMap<&'a str, BTreeMap<&'a str, (usize, String)>>) -> Vec<(Vec<&'a str>, BTreeSet<&'a str>)> {
    let successors = |n: &str| graph.get(n).into_iter().flat_map(|m| m.keys().copied()).collect::<Vec<&'a str>>();
    // Breadth-first from `from`: its first step to each file it reaches, for the shortest way back.
    let search = |from: &'a str| -> BTreeMap<&'a str, &'a str> {
        let mut came_from = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            for m in successors(n) {
                if let std::collections::btree_map::Entry::Vacant(entry) = came_from.entry(m) {
                    entry.insert(n);
                    queue.push_back(m);
                }
            }
        }
        came_from
    };
    let reached: BTreeMap<&str, BTreeMap<&str, &str>> = graph.keys().map(|&n| (n, search(n))).collect();
    let mut grouped: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for (&node, came_from) in &reached {
        if grouped.contains(node) || !came_from.contains_key(node) {
            continue;
        }
        let group: BTreeSet<&str> =
            came_from.keys().copied().filter(|m| reached.get(m).is_some_and(|r| r.contains_key(node))).collect();
        grouped.extend(&group);
        let mut cycle = vec![node];
        let mut k = came_from[node];
        while k != node {
            cycle.push(k);
            k = came_from[k];
        }
        cycle.push(node);
        cycle.reverse();
        out.push((cycle, group));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rule g: `queue_core::tooling` is for the operator tools only.

/// Where `queue_core::tooling` may be used: the operator tools, `inspect` (the read-only server
/// facts queuectl and health-svc show), and any crate's integration tests
/// (`crates/<name>/tests/`), which inspect Redis below the handles on purpose.
const TOOLING_USERS: &[&str] = &["crates/queuectl/src/", "crates/queue-bench/src/", "crates/inspect/src/"];

fn may_use_tooling(path: &str) -> bool {
    TOOLING_USERS.iter().any(|dir| path.starts_with(dir))
        || path
            .strip_prefix("crates/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_, p)| p.starts_with("tests/"))
}

#[test]
fn tooling_is_used_only_by_operator_tools() {
    let violations =
        files_under("crates", "rs").iter().filter(|f| !may_use_tooling(&f.path)).flat_map(check_tooling_use).collect();
    assert_clean(
        violations,
        "`queue_core::tooling` (raw Redis access for operator tools) is used only by queuectl, \
         queue-bench, inspect and integration tests (crates/*/tests). Services use the handles \
         and inspect.",
    );
}

#[test]
fn tooling_is_used_only_by_operator_tools_self_check() {
    let planted = r#"
use queue_core::tooling::raw;
use queue_core::{
    Queue,
    tooling,
};
fn f() { queue_core::tooling::scan(); }
"#;
    assert_lines(check_tooling_use(&file("crates/x/tests/it/a.rs", planted)), &[2, 5, 7]);

    let innocent = r#"
//! Not `queue_core::tooling`.
use queue_core::{Queue, toolbox};
fn f() { let _ = "queue_core::tooling"; }
"#;
    assert_lines(check_tooling_use(&file("crates/x/src/b.rs", innocent)), &[]);
}

/// Every path that goes through `queue_core::tooling`, in `use` trees and inline.
fn check_tooling_use(f: &SourceFile) -> Vec<Violation> {
    crate_paths(&Lexed::new(&f.text, Tests::Keep), &["queue_core"])
        .into_iter()
        .filter(|(_, path)| path.get(1).is_some_and(|s| s == "tooling"))
        .map(|(line, path)| f.violation(line, "tooling-use", format!("uses `{}`", path.join("::"))))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rule h: no script call reads a whole collection; each touches a slice.

/// queue-core's Lua scripts and their includes.
const SCRIPTS_DIR: &str = "crates/queue-core/scripts";

/// Reads that return a whole hash, set or keyspace, whatever its size.
const WHOLE_READS: &[&str] = &["SMEMBERS", "HVALS", "HKEYS", "HGETALL", "KEYS", "SCAN", "SSCAN", "HSCAN", "ZSCAN"];

/// Range reads, bounded only by their arguments.
const RANGE_READS: &[&str] = &["LRANGE", "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE"];

/// Whole reads that are bounded by something the rule cannot see: (file, command, why).
const BOUNDED_WHOLE_READS: &[(&str, &str, &str)] = &[
    ("includes/activate.lua", "HGETALL", "a job's own hash, which has a dozen fields"),
    (
        "obliterate-2.lua",
        "HVALS",
        "limiter:index after every job's entry went with the job: only strays are left to read",
    ),
];

#[test]
fn no_script_reads_a_whole_collection() {
    let violations = files_under(SCRIPTS_DIR, "lua").iter().flat_map(check_script_reads).collect();
    assert_clean(
        violations,
        "No script call touches more than a slice of jobs (ARCHITECTURE.md, Invariants): a script \
         reads a list or sorted set through a bounded range (`LIMIT`, or start and stop computed from \
         a slice), never `0, -1`, and never a whole hash or set. A read bounded another way gets a \
         line in `BOUNDED_WHOLE_READS` saying why.",
    );
}

#[test]
fn no_script_reads_a_whole_collection_self_check() {
    let planted = r#"
local ids = rcall("SMEMBERS", KEYS[1])
local all = redis.call("LRANGE", KEYS[2], 0, -1)
local due = rcall("ZRANGEBYSCORE", KEYS[3], 0, now)
local z = rcall("ZRANGE", KEYS[3], 0, -1, "WITHSCORES")
-- rcall("HVALS", key) in a comment is fine
"#;
    assert_lines(check_script_reads(&file("crates/queue-core/scripts/x-3.lua", planted)), &[2, 3, 4, 5]);
    let innocent = r#"
local window = rcall("LRANGE", key, first, stop)
local due = rcall("ZRANGEBYSCORE", KEYS[1], 0, ARGV[2], "LIMIT", 0, slice)
local tail = rcall("LRANGE", key, -budget, -1)
local fields = redis.call("HGETALL", base .. id)
"#;
    assert_lines(check_script_reads(&file("crates/queue-core/scripts/includes/activate.lua", innocent)), &[]);
}

/// Calls of `redis.call`/`rcall` that read a whole collection: a [`WHOLE_READS`] command (unless
/// listed in [`BOUNDED_WHOLE_READS`]), a range read ending `0, -1`, or a by-score read without
/// `LIMIT`. One call per line, as the scripts are written.
fn check_script_reads(f: &SourceFile) -> Vec<Violation> {
    let name = f.path.strip_prefix(SCRIPTS_DIR).unwrap_or(&f.path).trim_start_matches('/');
    let mut out = Vec::new();
    for (i, line) in f.text.lines().enumerate() {
        let code = line.split("--").next().unwrap_or("");
        let Some(at) = code.find("call(\"").or_else(|| code.find("rcall(\"")) else { continue };
        let rest = &code[at..];
        let Some(command) = rest.split('"').nth(1) else { continue };
        let command = command.to_ascii_uppercase();
        let whole = WHOLE_READS.contains(&command.as_str())
            && !BOUNDED_WHOLE_READS.iter().any(|(file, c, _)| *file == name && *c == command);
        let unbounded_range = RANGE_READS.contains(&command.as_str())
            && (rest.contains(", 0, -1") || (command.contains("BYSCORE") && !rest.contains("\"LIMIT\"")));
        if whole || unbounded_range {
            out.push(f.violation(
                i + 1,
                "whole-read",
                format!("{command} reads a whole collection: `{}`", line.trim()),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reading Rust.

/// Whether `#[cfg(test)]` items are blanked like comments.
#[derive(Clone, Copy, PartialEq)]
enum Tests {
    Skip,
    Keep,
}

/// A Rust file as the rules see it.
struct Lexed {
    /// The text with comments and the insides of string and char literals blanked: same length,
    /// same lines, so offsets and line numbers are the source's.
    code: String,
    /// The string literals, in order.
    strings: Vec<Literal>,
    line_starts: Vec<usize>,
}

/// A string literal: `start` is the offset of its opening quote (or `r`/`b` prefix), `end` the offset
/// after its closing quote, `value` the text between the quotes, escapes as written.
#[derive(Clone, Debug)]
struct Literal {
    start: usize,
    end: usize,
    value: String,
}

/// An identifier, `::` or one punctuation character of [`Lexed::code`].
struct Token<'a> {
    text: &'a str,
    offset: usize,
}

impl Lexed {
    fn new(text: &str, tests: Tests) -> Lexed {
        let bytes = text.as_bytes();
        let mut code = bytes.to_vec();
        let mut strings = Vec::new();
        let blank = |code: &mut Vec<u8>, range: std::ops::Range<usize>| {
            for b in &mut code[range] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        };
        let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut i = 0;
        while i < bytes.len() {
            let at = |k: usize| bytes.get(k).copied().unwrap_or(0);
            let starts_token = i == 0 || !is_ident(at(i - 1));
            if bytes[i..].starts_with(b"//") {
                let end = text[i..].find('\n').map_or(bytes.len(), |e| i + e);
                blank(&mut code, i..end);
                i = end;
            } else if bytes[i..].starts_with(b"/*") {
                let (mut depth, mut j) = (1, i + 2);
                while j < bytes.len() && depth > 0 {
                    if bytes[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if bytes[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut code, i..j);
                i = j;
            } else if starts_token && (at(i) == b'r' || (at(i) == b'b' && at(i + 1) == b'r')) && {
                let k = i + if at(i) == b'b' { 2 } else { 1 };
                let hashes = bytes[k..].iter().take_while(|b| **b == b'#').count();
                at(k + hashes) == b'"'
            } {
                let k = i + if at(i) == b'b' { 2 } else { 1 };
                let hashes = bytes[k..].iter().take_while(|b| **b == b'#').count();
                let open = k + hashes + 1;
                let closing = format!("\"{}", "#".repeat(hashes));
                let close = text[open..].find(&closing).map_or(bytes.len(), |e| open + e);
                let end = (close + closing.len()).min(bytes.len());
                strings.push(Literal { start: i, end, value: text[open..close].to_owned() });
                blank(&mut code, open..close);
                i = end;
            } else if at(i) == b'"' {
                let open = i + 1;
                let mut j = open;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                let close = j.min(bytes.len());
                let start = if i > 0 && at(i - 1) == b'b' && (i < 2 || !is_ident(at(i - 2))) { i - 1 } else { i };
                strings.push(Literal { start, end: close + 1, value: text[open..close].to_owned() });
                blank(&mut code, open..close);
                i = close + 1;
            } else if at(i) == b'\'' {
                // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a), which is left alone.
                let end = if at(i + 1) == b'\\' {
                    text.get(i + 3..).and_then(|rest| rest.find('\'')).map(|e| i + 3 + e)
                } else {
                    let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (at(i + 1 + width) == b'\'').then_some(i + 1 + width)
                };
                match end {
                    Some(end) => {
                        blank(&mut code, i + 1..end);
                        i = end + 1;
                    }
                    None => i += 1,
                }
            } else {
                i += 1;
            }
        }
        let code = String::from_utf8(code).expect("blanking keeps UTF-8");
        let line_starts = std::iter::once(0).chain(code.match_indices('\n').map(|(k, _)| k + 1)).collect();
        let mut lexed = Lexed { code, strings, line_starts };
        if tests == Tests::Skip {
            lexed.blank_test_items();
        }
        lexed
    }

    /// Blanks each item marked `#[cfg(test)]`, up to its `;` or its closing brace.
    fn blank_test_items(&mut self) {
        let mut from = 0;
        while let Some(k) = self.code[from..].find("#[cfg(test)]") {
            let start = from + k;
            let bytes = self.code.as_bytes();
            let mut j = start + "#[cfg(test)]".len();
            let mut depth = 0usize;
            let mut end = bytes.len();
            while j < bytes.len() {
                match bytes[j] {
                    b';' if depth == 0 => {
                        end = j + 1;
                        break;
                    }
                    b'{' => depth += 1,
                    b'}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            let blanked: String = self.code[start..end]
                .chars()
                .map(|c| if c == '\n' { "\n".to_owned() } else { " ".repeat(c.len_utf8()) })
                .collect();
            self.code.replace_range(start..end, &blanked);
            self.strings.retain(|s| s.end <= start || s.start >= end);
            from = end;
        }
    }

    /// The 1-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|start| *start <= offset)
    }

    /// Identifiers, `::` and single punctuation characters of the code.
    fn tokens(&self) -> Vec<Token<'_>> {
        let bytes = self.code.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_alphabetic() || b == b'_' {
                let len = bytes[i..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                out.push(Token { text: &self.code[i..i + len], offset: i });
                i += len;
            } else if bytes[i..].starts_with(b"::") {
                out.push(Token { text: "::", offset: i });
                i += 2;
            } else if b.is_ascii_whitespace() || !b.is_ascii() {
                i += 1;
            } else {
                out.push(Token { text: &self.code[i..i + 1], offset: i });
                i += 1;
            }
        }
        out
    }
}

/// A call of a macro: where it starts, its format string if its first argument is a string
/// literal, and the arguments after that as written.
struct MacroCall {
    start: usize,
    format_string: Option<Literal>,
    args: Vec<String>,
}

/// Every `name!(…)` (or `[…]`, `{…}`) in the code.
fn macro_calls(lexed: &Lexed, name: &str) -> Vec<MacroCall> {
    let code = lexed.code.as_bytes();
    let bang = format!("{name}!");
    let mut out = Vec::new();
    for (start, _) in lexed.code.match_indices(&bang) {
        if start > 0 && (code[start - 1].is_ascii_alphanumeric() || code[start - 1] == b'_') {
            continue;
        }
        let Some(open) = (start + bang.len()..code.len()).find(|&k| !code[k].is_ascii_whitespace()) else { continue };
        if !matches!(code[open], b'(' | b'[' | b'{') {
            continue;
        }
        let Some(close) = matching(code, open) else { continue };
        let first = (open + 1..close).find(|&k| !code[k].is_ascii_whitespace());
        let format_string = first.and_then(|k| lexed.strings.iter().find(|s| s.start == k)).cloned();
        let args_from = format_string.as_ref().map_or(open + 1, |s| s.end);
        let args = split_top_level(&lexed.code[args_from..close]);
        out.push(MacroCall { start, format_string, args });
    }
    out
}

/// The offset of the bracket closing the one at `open`.
fn matching(code: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, b) in code.iter().enumerate().skip(open) {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// The comma-separated parts of `text` outside brackets, trimmed, empty ones dropped.
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(c);
    }
    parts.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect()
}

/// The identifiers in an expression.
fn identifiers(expression: &str) -> impl Iterator<Item = &str> {
    expression.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|s| !s.is_empty())
}

/// Every path that starts with one of `roots` (`crate`, `super`, a crate name), with the line of
/// its last segment: the leaves of `use` trees (braces expanded, `as` dropped) and paths written
/// inline in code.
fn crate_paths(lexed: &Lexed, roots: &[&str]) -> Vec<(usize, Vec<String>)> {
    let tokens = lexed.tokens();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let after_path = i > 0 && tokens[i - 1].text == "::";
        if tokens[i].text == "use" && !after_path {
            let end = (i..tokens.len()).find(|&k| tokens[k].text == ";").unwrap_or(tokens.len());
            let mut leaves = Vec::new();
            use_tree(&tokens[i + 1..end], &mut 0, Vec::new(), &mut leaves);
            for (offset, path) in leaves {
                if path.first().is_some_and(|s| roots.contains(&s.as_str())) {
                    out.push((lexed.line_of(offset), path));
                }
            }
            i = end + 1;
            continue;
        }
        if roots.contains(&tokens[i].text) && !after_path && tokens.get(i + 1).is_some_and(|t| t.text == "::") {
            let mut path = vec![tokens[i].text.to_owned()];
            let mut k = i + 1;
            while k + 1 < tokens.len() && tokens[k].text == "::" && is_identifier(tokens[k + 1].text) {
                path.push(tokens[k + 1].text.to_owned());
                k += 2;
            }
            out.push((lexed.line_of(tokens[k - 1].offset), path));
            i = k;
            continue;
        }
        i += 1;
    }
    out
}

/// Expands the `use` tree in `tokens` from `*pos` under `prefix` into (offset of last token, path).
fn use_tree(tokens: &[Token<'_>], pos: &mut usize, mut prefix: Vec<String>, out: &mut Vec<(usize, Vec<String>)>) {
    while let Some(token) = tokens.get(*pos) {
        match token.text {
            "{" => {
                *pos += 1;
                while tokens.get(*pos).is_some_and(|t| t.text != "}") {
                    use_tree(tokens, pos, prefix.clone(), out);
                    if tokens.get(*pos).is_some_and(|t| t.text == ",") {
                        *pos += 1;
                    }
                }
                *pos += 1;
                return;
            }
            "*" => {
                *pos += 1;
                out.push((token.offset, prefix));
                return;
            }
            "::" => *pos += 1,
            text if is_identifier(text) => {
                *pos += 1;
                if text != "self" || prefix.is_empty() {
                    prefix.push(text.to_owned());
                }
                if tokens.get(*pos).is_some_and(|t| t.text == "::") {
                    continue;
                }
                if tokens.get(*pos).is_some_and(|t| t.text == "as") {
                    *pos += 2;
                }
                out.push((token.offset, prefix));
                return;
            }
            // Anything else (`pub`, `(`, …) cannot be part of a tree here: skip it.
            _ => *pos += 1,
        }
    }
}

fn is_identifier(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

// ---------------------------------------------------------------------------------------------
// Reading the workspace.

/// A file: its path from the repository root (or from the folder a rule works in), `/`-separated,
/// and its text.
#[derive(Debug)]
struct SourceFile {
    path: String,
    text: String,
}

impl SourceFile {
    fn violation(&self, line: usize, rule: &'static str, message: String) -> Violation {
        Violation { path: self.path.clone(), line, rule, message }
    }
}

/// A fixture file.
fn file(path: &str, text: &str) -> SourceFile {
    SourceFile { path: path.to_owned(), text: text.to_owned() }
}

/// One broken rule at one place.
#[derive(Clone, Debug)]
struct Violation {
    path: String,
    line: usize,
    rule: &'static str,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: [{}] {}", self.path, self.line, self.rule, self.message)
    }
}

/// Fails listing every violation, then the rule and what to do.
fn assert_clean(violations: Vec<Violation>, rule: &str) {
    if violations.is_empty() {
        return;
    }
    let listed: Vec<String> = violations.iter().map(|v| format!("  {v}")).collect();
    panic!("\n{} tidy violation(s):\n{}\n\n{rule}\n", violations.len(), listed.join("\n"));
}

/// Asserts that a checker reported exactly the lines `expected`, in order.
fn assert_lines(found: Vec<Violation>, expected: &[usize]) {
    let lines: Vec<usize> = found.iter().map(|v| v.line).collect();
    assert_eq!(lines, expected, "the checker no longer reports its planted violations: {found:#?}");
}

/// The repository root: two folders above queue-core's manifest.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("crates/queue-core is two levels deep").to_owned()
}

/// A file's text, by its path from the root.
fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The folder names under `crates/`.
fn crate_dirs() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The source of the product: `crates/*/src/**/*.rs`, except test-support's.
fn product_sources() -> Vec<SourceFile> {
    crate_dirs()
        .iter()
        .filter(|name| *name != "test-support")
        .flat_map(|name| files_under(&format!("crates/{name}/src"), "rs"))
        .collect()
}

/// Files ending in `.{ext}` under `dir` (from the root), recursively, sorted.
fn files_under(dir: &str, ext: &str) -> Vec<SourceFile> {
    let mut out: Vec<SourceFile> = walk(&root(), Path::new(dir))
        .into_iter()
        .filter(|path| path.rsplit_once('.').is_some_and(|(_, e)| e == ext))
        .map(|path| SourceFile { text: read(&path), path })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Every file of the repository (no build output, dependencies or dot folders), from the root.
fn workspace_files() -> BTreeSet<String> {
    walk(&root(), Path::new("")).into_iter().collect()
}

/// The files under `root/dir`, as paths from `root`.
fn walk(root: &Path, dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root.join(dir)) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = dir.join(&name);
        if entry.file_type().unwrap().is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                out.extend(walk(root, &path));
            }
        } else {
            out.push(path.to_string_lossy().replace('\\', "/"));
        }
    }
    out
}
