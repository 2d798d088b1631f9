//! A TCP proxy that can cut or blackhole a link without stopping the server behind it: an
//! outage of a shared server (Postgres) for one test, or a network that drops everything.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Bytes flow.
    Open,
    /// Every link is dropped and new ones refused: the peer sees a reset at once.
    Cut,
    /// Links stay open and connections are accepted, but no byte goes through: the peer sees
    /// nothing at all, as when packets are lost on the way, until its own timeouts fire.
    Blackhole,
}

/// A TCP proxy in front of a server that can cut every link (open and new), blackhole them, and
/// restore them: an outage without stopping the server.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
}

impl ChaosProxy {
    /// A proxy on a free port in front of `upstream`.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub async fn start(upstream: SocketAddr) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, _) = watch::channel(Link::Open);
        let state = link.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *state.borrow() == Link::Cut {
                    drop(client);
                    continue;
                }
                let state = state.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, state.clone()) => {}
                        () = pump(server_read, client_write, state) => {}
                    }
                });
            }
        });
        ChaosProxy { addr, link }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open link and refuses new ones.
    pub fn cut(&self) {
        self.link.send_replace(Link::Cut);
    }

    /// Keeps every link open but lets no byte through, and accepts new links that go nowhere.
    pub fn blackhole(&self) {
        self.link.send_replace(Link::Blackhole);
    }

    /// Lets links through again (held bytes of a blackhole flow on, as TCP's retransmissions
    /// would deliver them).
    pub fn restore(&self) {
        self.link.send_replace(Link::Open);
    }
}

/// Copies `from` to `to` while the link is open; holds while it is blackholed; ends when it is
/// cut or either side closes.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut link: watch::Receiver<Link>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = link.wait_for(|l| *l == Link::Cut) => return,
        };
        match link.wait_for(|l| *l != Link::Blackhole).await.map(|l| *l) {
            Ok(Link::Open) => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` (a Postgres URL) with its host and port replaced by `addr`; the upstream address.
///
/// # Panics
///
/// If `url` has no host and path, or its host does not resolve.
pub fn through(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, after) = rest.rsplit_once('@').map_or(("", rest), |(u, a)| (u, a));
    let (hostport, path) = after.split_once('/').unwrap();
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&hostport).unwrap().next().unwrap();
    let at = if userinfo.is_empty() { String::new() } else { format!("{userinfo}@") };
    (format!("{scheme}://{at}{addr}/{path}"), upstream)
}
