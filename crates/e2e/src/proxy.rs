//! A TCP proxy that can cut a link without stopping the server behind it: an outage of a
//! shared server (Postgres) for one test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// A TCP proxy in front of a server that can cut every link (open and new) and restore them:
/// an outage without stopping the shared server.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    cuts: broadcast::Sender<()>,
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
        let cut = Arc::new(AtomicBool::new(false));
        let (cuts, _) = broadcast::channel(4);
        let (flag, signal) = (cut.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut_now = signal.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_now.recv() => {}
                    }
                });
            }
        });
        ChaosProxy { addr, cut, cuts }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open link and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let _ = self.cuts.send(());
    }

    /// Lets links through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
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
