//! Which callback URLs may be called: the guard against a caller turning our worker into a proxy
//! to the host's own network (SSRF).
//!
//! A callback URL is accepted when:
//! - it is `https://`, or `http://` to a host listed in `CALLBACK_ALLOWED_HOSTS`;
//! - it has no userinfo (`user:pass@`) and a host;
//! - its host is listed in `CALLBACK_ALLOWED_HOSTS`, or else it is a name (not an IP literal)
//!   and every address it resolves to is public: not loopback, private, link-local, unique-local,
//!   shared (CGNAT), documentation, multicast, broadcast or unspecified.
//!
//! The check runs at upload (api-svc answers 400) and again at each delivery (worker-svc), where
//! the connection goes to the addresses just checked, so a name that re-resolves to a private
//! address in between (DNS rebinding) is still refused. Redirects are never followed.
//!
//! `CALLBACK_ALLOWED_HOSTS` is a comma-separated list of host names or IPs, each optionally with
//! `:port` (then only that port), e.g. `hooks.internal,127.0.0.1:9000`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::env::{ConfigError, Env};

/// Why a callback URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("callback_url refused: {0}")]
pub struct Refused(pub String);

/// An allowed host, optionally with a port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Allowed {
    host: String,
    port: Option<u16>,
}

/// The callback policy of a service.
#[derive(Clone, Debug, Default)]
pub struct CallbackPolicy {
    allowed: Vec<Allowed>,
}

/// A URL that passed the policy, with the addresses to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedUrl {
    /// The URL as given.
    pub url: String,
    /// Its host.
    pub host: String,
    /// Its port (the scheme's default when none is given).
    pub port: u16,
    /// The addresses checked: connect to these and nothing else.
    pub addrs: Vec<SocketAddr>,
}

impl CallbackPolicy {
    /// Reads `CALLBACK_ALLOWED_HOSTS` (default: empty, so only public https hosts).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut allowed = Vec::new();
        for item in env.list("CALLBACK_ALLOWED_HOSTS") {
            allowed.push(parse_allowed(&item).ok_or_else(|| {
                ConfigError::new("CALLBACK_ALLOWED_HOSTS", format!("{item:?} is not a host or host:port"))
            })?);
        }
        Ok(CallbackPolicy { allowed })
    }

    /// A policy allowing exactly these `host` or `host:port` entries (tests).
    pub fn allowing(hosts: &[&str]) -> Self {
        CallbackPolicy { allowed: hosts.iter().filter_map(|h| parse_allowed(h)).collect() }
    }

    fn is_listed(&self, host: &str, port: u16) -> bool {
        self.allowed.iter().any(|a| a.host.eq_ignore_ascii_case(host) && a.port.is_none_or(|p| p == port))
    }

    /// Checks `url` and resolves its host; see the module docs for the rules.
    pub async fn check(&self, url: &str) -> Result<CheckedUrl, Refused> {
        let parsed = parse_url(url)?;
        let listed = self.is_listed(&parsed.host, parsed.port);
        if parsed.scheme == "http" && !listed {
            return Err(Refused(format!(
                "http:// is allowed only to hosts in CALLBACK_ALLOWED_HOSTS, not {}",
                parsed.host
            )));
        }
        let literal = parsed.host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        if let Some(ip) = literal {
            if !listed {
                return Err(Refused(format!(
                    "an IP address ({ip}) is allowed only when listed in CALLBACK_ALLOWED_HOSTS"
                )));
            }
            return Ok(CheckedUrl {
                url: url.to_owned(),
                addrs: vec![SocketAddr::new(ip, parsed.port)],
                host: parsed.host,
                port: parsed.port,
            });
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((parsed.host.as_str(), parsed.port))
            .await
            .map_err(|e| Refused(format!("{} does not resolve: {e}", parsed.host)))?
            .collect();
        if addrs.is_empty() {
            return Err(Refused(format!("{} does not resolve", parsed.host)));
        }
        if !listed && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(Refused(format!("{} resolves to a non-public address ({})", parsed.host, bad.ip())));
        }
        Ok(CheckedUrl { url: url.to_owned(), host: parsed.host, port: parsed.port, addrs })
    }
}

struct ParsedUrl {
    scheme: String,
    host: String,
    port: u16,
}

/// Enough of RFC 3986 for the checks: scheme, no userinfo, host, port.
fn parse_url(url: &str) -> Result<ParsedUrl, Refused> {
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Refused("not a valid URL".into()));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| Refused("not an absolute URL".into()))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        other => return Err(Refused(format!("scheme {other:?} is not allowed (https, or http to listed hosts)"))),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(Refused("credentials in the URL are not allowed".into()));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| Refused("the URL has no valid host".into()))?;
    if host.is_empty() {
        return Err(Refused("the URL has no host".into()));
    }
    Ok(ParsedUrl { scheme, host: host.to_ascii_lowercase(), port: port.unwrap_or(default_port) })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{v6}]"), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None => Some((authority.to_owned(), None)),
    }
}

fn parse_allowed(item: &str) -> Option<Allowed> {
    let (host, port) = split_host_port(item.trim())?;
    (!host.is_empty()).then(|| Allowed { host: host.to_ascii_lowercase(), port })
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 (could reach v4 private space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_targets_are_refused_unless_listed() {
        let none = CallbackPolicy::default();
        for url in [
            "http://example.com/hook",
            "https://127.0.0.1/hook",
            "https://[::1]/hook",
            "https://localhost/hook",
            "https://user:pw@example.com/",
            "ftp://example.com/",
            "https:///nohost",
            "https://10.0.0.1:8443/",
            "not a url",
        ] {
            assert!(none.check(url).await.is_err(), "{url} should be refused");
        }
        let listed = CallbackPolicy::allowing(&["127.0.0.1:9000", "localhost"]);
        let ok = listed.check("http://127.0.0.1:9000/hook?a=1").await.unwrap();
        assert_eq!(ok.addrs, vec!["127.0.0.1:9000".parse().unwrap()]);
        assert!(listed.check("http://127.0.0.1:9001/hook").await.is_err(), "another port is not listed");
        assert!(listed.check("http://localhost:1234/x").await.is_ok());
    }

    #[test]
    fn address_classes() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
