//! Which callback URLs may be called: the guard against a caller turning our worker into a proxy
//! to the host's own network (SSRF).
//!
//! A URL is read as the HTTP client (reqwest) reads it, with the `url` crate (the WHATWG URL
//! standard), so the host checked is the host connected to: every IPv4 notation
//! (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`) is an IP address, percent-encoding and
//! IDNA are applied. A callback URL is accepted when:
//! - it is `https://`, or `http://` to a host listed in `CALLBACK_ALLOWED_HOSTS`;
//! - it has no userinfo (`user:pass@`, not even an empty `@`), no backslash, and a host;
//! - its host is listed in `CALLBACK_ALLOWED_HOSTS`, or else it is a name (not an IP literal)
//!   and every address it resolves to is public: not loopback, private, link-local, unique-local,
//!   shared (CGNAT), documentation, multicast, broadcast, unspecified, nor an IPv6 form of one
//!   (IPv4-mapped, -compatible, NAT64, 6to4, Teredo) or outside global unicast.
//!
//! The check runs at upload (api-svc answers 400) and again at each delivery (worker-svc), where
//! the connection goes to the addresses just checked, so a name that re-resolves to a private
//! address in between (DNS rebinding) is still refused. Redirects are never followed.
//!
//! `CALLBACK_ALLOWED_HOSTS` is a comma-separated list of host names or IPs, each optionally with
//! `:port` (then only that port), e.g. `hooks.internal,127.0.0.1:9000`. A listed address matches
//! in any notation (`127.0.0.1` lists `2130706433` too).

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
    /// Its host as the HTTP client reads it: a lower-case (punycode) name, a dotted IPv4
    /// address, or an IPv6 address in brackets.
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
        if let Some(ip) = parsed.ip {
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
    /// As the HTTP client reads it (see [`parse_url`]).
    host: String,
    /// The host, when it is an IP address (in whatever notation it was written).
    ip: Option<IpAddr>,
    port: u16,
}

/// Scheme, host and port, read exactly as the HTTP client (reqwest) will read them: with the
/// `url` crate, i.e. the WHATWG URL standard. Another parser would let a URL pass the check as
/// one host and be sent to another (`https://10.0.0.1\.example.com/` is a name to a resolver and
/// `10.0.0.1` to the client; `%31%30.0.0.1.example.com` is `10.0.0.1.example.com`). So every
/// IPv4 notation (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`) is an IP address here,
/// percent-encoding and IDNA are applied, and the result is the normalised host.
///
/// A backslash is refused anywhere (WHATWG reads it as `/` in an http URL, other parsers as a
/// character of the host or path, so it only ever serves to confuse). Userinfo is refused as
/// written, before any parser can read it away: an `@` in the authority, an empty userinfo
/// (`https://@host/`) included.
fn parse_url(raw: &str) -> Result<ParsedUrl, Refused> {
    if raw.len() > 2048 || raw.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return Err(Refused("not a valid URL".into()));
    }
    let (_, rest) = raw.split_once("://").ok_or_else(|| Refused("not an absolute URL".into()))?;
    let authority = rest.trim_start_matches('/').split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(Refused("credentials in the URL are not allowed".into()));
    }
    let url = url::Url::parse(raw).map_err(|e| Refused(format!("not a valid URL: {e}")))?;
    let scheme = url.scheme().to_owned();
    if scheme != "https" && scheme != "http" {
        return Err(Refused(format!("scheme {scheme:?} is not allowed (https, or http to listed hosts)")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused("credentials in the URL are not allowed".into()));
    }
    let (host, ip) = match url.host() {
        Some(url::Host::Domain(name)) if !name.is_empty() => (name.to_owned(), None),
        Some(url::Host::Ipv4(v4)) => (v4.to_string(), Some(IpAddr::V4(v4))),
        Some(url::Host::Ipv6(v6)) => (format!("[{v6}]"), Some(IpAddr::V6(v6))),
        _ => return Err(Refused("the URL has no host".into())),
    };
    let port = url.port_or_known_default().ok_or_else(|| Refused("the URL has no port".into()))?;
    Ok(ParsedUrl { scheme, host, ip, port })
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

/// An entry of `CALLBACK_ALLOWED_HOSTS`, its host normalised as [`parse_url`] normalises a URL's
/// (`2130706433` is `127.0.0.1`, `[0:0::1]` is `[::1]`, names in lower case).
fn parse_allowed(item: &str) -> Option<Allowed> {
    let (host, port) = split_host_port(item.trim())?;
    if host.is_empty() {
        return None;
    }
    let host = url::Host::parse(&host).ok()?.to_string();
    Some(Allowed { host, port })
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

/// Only global unicast (2000::/3) can be public; everything else is loopback, unspecified,
/// IPv4-compatible or -translated, NAT64, discard, unique or site local, link local, multicast or
/// reserved. Within it: documentation, Teredo and benchmarking, and 6to4 of a non-public IPv4.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    (s[0] & 0xe000) == 0x2000
        && !(s[0] == 0x2001 && s[1] == 0x0db8 // documentation
            || s[0] == 0x3fff && s[1] < 0x1000 // documentation (3fff::/20)
            || s[0] == 0x2001 && s[1] == 0 // Teredo: a tunnel to an IPv4 address
            || s[0] == 0x2001 && s[1] == 2 && s[2] == 0 // benchmarking
            || s[0] == 0x2002 && !is_public_v4(embedded_v4(s[1], s[2]))) // 6to4 of a non-public IPv4
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

    /// Private, loopback, link-local, shared and unspecified addresses written as IP literals in
    /// every notation a URL may use (decimal, hex, octal, shortened, IPv4-mapped, percent-encoded,
    /// full-width) are IP addresses, refused unless listed, whatever a resolver would make of
    /// them. `https` so that the refusal is about the host, not the plain-http rule; the `http`
    /// and explicit-port twins of each are refused too.
    #[tokio::test]
    async fn internal_ip_literals_are_refused_in_every_notation() {
        let none = CallbackPolicy::default();
        for (host, ip) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.255.255.254", "127.255.255.254"),
            ("[::1]", "::1"),
            ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
            ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
            ("[0:0:0:0:0:ffff:127.0.0.1]", "::ffff:127.0.0.1"),
            ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254"),
            ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1"),
            ("[::127.0.0.1]", "::7f00:1"),
            ("[::]", "::"),
            ("[fe80::1]", "fe80::1"),
            ("[fc00::1]", "fc00::1"),
            ("[fd12:3456::1]", "fd12:3456::1"),
            ("[fec0::1]", "fec0::1"),
            ("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe"),
            ("169.254.169.254", "169.254.169.254"),
            ("0.0.0.0", "0.0.0.0"),
            ("0", "0.0.0.0"),
            ("100.64.0.1", "100.64.0.1"),
            ("10.0.0.1", "10.0.0.1"),
            ("172.16.0.1", "172.16.0.1"),
            ("192.168.0.1", "192.168.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0x7F.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("0177.0.0.01", "127.0.0.1"),
            ("0251.0376.0251.0376", "169.254.169.254"),
            ("0xa9fea9fe", "169.254.169.254"),
            ("2852039166", "169.254.169.254"),
            ("127.0.0.1.", "127.0.0.1"),
            ("%31%32%37.0.0.1", "127.0.0.1"),
            ("\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}", "127.0.0.1"),
        ] {
            for url in [format!("https://{host}/hook"), format!("http://{host}/hook"), format!("https://{host}:8443/")]
            {
                let refused = none.check(&url).await.expect_err(&url).0;
                if url.starts_with("https") {
                    let reason = format!("an IP address ({ip}) is allowed only when listed");
                    assert!(refused.contains(&reason), "{url}: {refused}");
                }
            }
        }
    }

    /// Names that resolve to loopback (`localhost`, however written, and every name /etc/hosts
    /// gives a non-public address) are refused for what they resolve to.
    #[tokio::test]
    async fn names_of_internal_addresses_are_refused() {
        // (name, whether it must resolve: an IPv6 line of /etc/hosts may not, where IPv6 is off)
        let mut names: Vec<(String, bool)> =
            ["localhost", "LOCALHOST", "%6c%6f%63%61%6c%68%6f%73%74", "\u{ff4c}ocalhost"]
                .map(|name| (name.to_owned(), true))
                .into();
        for line in std::fs::read_to_string("/etc/hosts").unwrap_or_default().lines() {
            let mut fields = line.split('#').next().unwrap_or("").split_whitespace();
            let Some(ip) = fields.next().and_then(|ip| ip.parse::<IpAddr>().ok()) else { continue };
            if !is_public(ip) {
                names.extend(fields.map(|name| (name.to_owned(), ip.is_ipv4())));
            }
        }
        assert!(names.len() > 4, "/etc/hosts names loopback at least");
        let none = CallbackPolicy::default();
        for (name, resolves) in names {
            let url = format!("https://{name}/hook");
            let refused = none.check(&url).await.expect_err(&url).0;
            if resolves {
                assert!(refused.contains("resolves to a non-public address"), "{url}: {refused}");
            }
        }
    }

    /// Userinfo in any form, backslashes (read as `/` by some parsers and not others), zone ids,
    /// and hosts that are not valid are refused.
    #[tokio::test]
    async fn urls_that_parsers_read_differently_are_refused() {
        let none = CallbackPolicy::default();
        for url in [
            "https://example.com@127.0.0.1/",
            "https://user:pw@127.0.0.1/",
            "https://@127.0.0.1/",
            "https://:@127.0.0.1/",
            "https:///@127.0.0.1/",
            "https://example.com:443@127.0.0.1/",
            "https://example.com%40127.0.0.1/",
            "https://127.0.0.1\\@example.com/",
            "https://127.0.0.1\\.example.com/",
            "https://example.com\\@127.0.0.1/",
            "https:\\\\127.0.0.1/",
            "https:127.0.0.1/",
            "https://127.0.0.1%5c.example.com/",
            "https://[fe80::1%25eth0]/",
            "https://1.2.3.4.5/",
            "https://0x100000000/",
            "https://[::ffff:127.0.0.1/",
        ] {
            assert!(none.check(url).await.is_err(), "{url} should be refused");
        }
    }

    /// Listing one address lets exactly that address through, in whatever notation, and nothing
    /// that merely looks like it.
    #[tokio::test]
    async fn a_listed_address_does_not_open_its_neighbours() {
        let listed = CallbackPolicy::allowing(&["127.0.0.1:9000"]);
        for url in [
            "http://127.0.0.2:9000/",
            "http://[::1]:9000/",
            "http://localhost:9000/",
            "http://10.0.0.1:9000/",
            "http://example.com@127.0.0.1:9000/",
            "http://127.0.0.1:9000@10.0.0.1:9000/",
            "http://127.0.0.1:90000/",
        ] {
            assert!(listed.check(url).await.is_err(), "{url} should be refused");
        }
        for url in ["http://127.0.0.1:9000/hook", "http://2130706433:9000/hook", "http://127.1:9000/x"] {
            let checked = listed.check(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(checked.addrs, vec!["127.0.0.1:9000".parse().unwrap()], "{url}");
        }
    }

    /// The host checked is the host the HTTP client connects to: reqwest parses URLs with the
    /// `url` crate (WHATWG), so a URL that another parser reads differently (a backslash, percent
    /// encoding, full-width characters, IDNA) must not pass the check as one host and be sent to
    /// another.
    #[test]
    fn the_host_checked_is_the_host_connected_to() {
        for raw in [
            "https://%31%30.0.0.1.example.com/hook",
            "https://10.0.0.1\\.example.com/hook",
            "https://example.com\\.10.0.0.1/hook",
            "https://EXAMPLE.com./hook",
            "https://\u{ff45}xample.com/hook",
            "https://example\u{3002}com/hook",
            "https://b\u{fc}cher.example/hook",
            "https://[0:0::1]/hook",
            "https://0x0a.0.0.1/hook",
            "https://example.com:443/hook",
            "https://example.com:/hook",
        ] {
            let Ok(parsed) = parse_url(raw) else { continue };
            let client =
                url::Url::parse(raw).unwrap_or_else(|e| panic!("{raw} passed our parser but not reqwest's: {e}"));
            let host = client.host_str().unwrap_or_default();
            assert_eq!(parsed.host.as_str(), host, "{raw}: we would check {:?} and connect to {host:?}", parsed.host);
            assert_eq!(Some(parsed.port), client.port_or_known_default(), "{raw}");
        }
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
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::ffff:0:127.0.0.1",
            "fec0::1",
            "fc00::1",
            "fe00::",
            "::2",
            "4000::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "ff02::1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in
            ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8", "::ffff:8.8.8.8", "2002:808:808::1", "2a00:1450:4001::1"]
        {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
