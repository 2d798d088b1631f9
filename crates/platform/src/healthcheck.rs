//! `<service> --healthcheck`: the container's `HEALTHCHECK` without curl or wget in the image.
//! The binary asks its own running instance over HTTP (`GET <path>` on the address in `var`) and
//! exits 0 on a 200, 1 otherwise, within a few seconds.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// How long the whole check may take, per step.
const TIMEOUT: Duration = Duration::from_secs(3);

/// When the process was started as `<binary> --healthcheck`: checks `GET <path>` on the address
/// in `var` (`default` when unset) and returns the exit code. `None` otherwise: start normally.
pub fn from_args(var: &str, default: &str, path: &str) -> Option<ExitCode> {
    if std::env::args().nth(1).as_deref() != Some("--healthcheck") {
        return None;
    }
    let raw = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    Some(match check(&raw, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    })
}

/// `GET path` on `addr` answers 200.
fn check(addr: &str, path: &str) -> Result<(), String> {
    let mut target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    // A service bound to every interface is asked on loopback.
    if target.ip().is_unspecified() {
        target.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT).map_err(|e| format!("{target}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[..n]);
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code == "200" { Ok(()) } else { Err(format!("GET {path} on {target}: {}", status.lines().next().unwrap_or(""))) }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_200_passes_anything_else_fails() {
        for (answer, ok) in [("HTTP/1.1 200 OK\r\n\r\n", true), ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false)] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 256];
                let _ = conn.read(&mut buf);
                conn.write_all(answer.as_bytes()).unwrap();
            });
            assert_eq!(check(&addr.to_string(), "/readyz").is_ok(), ok, "{answer}");
            server.join().unwrap();
        }
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(check(&closed.to_string(), "/livez").is_err(), "nothing listens");
    }
}
