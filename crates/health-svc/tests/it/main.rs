//! The health-svc binary on its own: a bad or missing variable stops it at once, naming the
//! variable. (It is tested against the running stack in `crates/e2e`; this binary also makes
//! a workspace test build build `health-svc`, which the end-to-end tests run.)

use std::process::Command;

fn start_with(vars: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_health-svc"))
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("health-svc runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_bad_or_missing_variable_stops_start_up_naming_it() {
    let database = ("DATABASE_URL", "postgres://app:app@127.0.0.1:5432/app");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[database], "LISTEN_ADDR"),
        (&[("LISTEN_ADDR", "127.0.0.1:0")], "DATABASE_URL"),
        (&[("LISTEN_ADDR", "127.0.0.1:0"), database, ("HEALTH_CANARY_MAX_AGE_MS", "1")], "HEALTH_CANARY_MAX_AGE_MS"),
        (&[("LISTEN_ADDR", "127.0.0.1:0"), database, ("HEALTH_QUEUE", "files")], "HEALTH_QUEUE"),
    ];
    for (vars, named) in cases {
        let (started, output) = start_with(vars);
        assert!(!started, "{vars:?} must not start");
        assert!(output.contains(named), "{vars:?}: the message names {named}: {output}");
    }
}
