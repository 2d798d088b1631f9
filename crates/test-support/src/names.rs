//! The shared Redis URL and unique names for isolating tests from each other.

/// The Redis URL tests use: `TEST_REDIS_URL`, else `REDIS_URL`, else `redis://127.0.0.1:6379`.
///
/// Empty variables are ignored.
pub fn redis_url() -> String {
    ["TEST_REDIS_URL", "REDIS_URL"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A name that no other test run uses: `prefix-` followed by 8 lowercase hex characters from a
/// random (v4) UUID, e.g. `unique("q")` → `q-3f09a1c2`.
///
/// Use it for queue names and key prefixes so tests sharing one Redis do not see each other's keys.
pub fn unique(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &hex[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_have_the_prefix_and_8_hex_chars() {
        let a = unique("q");
        let b = unique("q");
        assert_ne!(a, b);
        let suffix = a.strip_prefix("q-").expect("prefix kept");
        assert_eq!(suffix.len(), 8);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a}");
    }

    #[test]
    fn redis_url_is_a_redis_url() {
        assert!(redis_url().starts_with("redis"), "{}", redis_url());
    }
}
