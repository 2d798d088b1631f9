//! A network namespace joined to this one by a veth pair, with a link whose latency and packet
//! loss a test sets: Redis and Postgres run inside, the services outside, and every packet
//! between them crosses the veth pair.
//!
//! The kernel's `netem` would shape the link, but kernels without it exist (this project's CI
//! machine has none), so the shaping is done by netfilter instead: `iptables` sends every packet
//! entering or leaving the namespace's end of the pair to an `NFQUEUE`, and a thread of the test
//! holds each one for the one-way delay before it lets it through, or drops it with the loss
//! probability. Both are real packets in the kernel: TCP sees a longer round trip and
//! retransmits what was dropped, exactly as on a real network.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The netfilter queue the namespace's rules feed (queues are per namespace).
const QUEUE: u16 = 0;
/// The namespaces' names: `qtest-<index>-<pid of the test process>`.
const PREFIX: &str = "qtest-";
/// Where the links' addresses come from: 198.18.0.0/15, reserved for benchmarking networks
/// (RFC 2544), so never a real network's; four addresses (a /30) per link.
const SUBNETS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// How many links can exist at once (a /30 each in the /15).
const LINKS: u32 = 32_768;
/// The most packets the shaper takes from the kernel between two looks at what is due.
const BATCH: usize = 4096;
/// How many packets the kernel may hold for the shaper (far above what a test's link carries in
/// a delay's time; beyond it the kernel would drop them).
const QUEUE_MAX_LEN: u32 = 65_536;
/// How long the shaper sleeps between looks at the queue: the delay's granularity.
const TICK: Duration = Duration::from_micros(200);

/// How the link behaves, in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkShape {
    /// Added to every packet, each way.
    pub one_way: Duration,
    /// The probability that a packet is dropped (0.01 is 1%).
    pub loss: f64,
}

/// What the shaper did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Packets let through (after the delay).
    pub passed: u64,
    /// Packets dropped (the loss).
    pub dropped: u64,
    /// Verdicts the kernel refused (a packet it had given up on).
    pub errors: u64,
}

/// The settings the shaper thread reads at each packet.
#[derive(Debug, Default)]
struct Shared {
    one_way_micros: AtomicU64,
    /// Loss in millionths.
    loss_ppm: AtomicU32,
    passed: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// A network namespace `qtest-<n>-<pid>` with a veth pair, a /30 of 198.18.0.0/15: `.1` on
/// this side, `.2` inside. Dropping it stops the shaper, kills whatever still runs inside and
/// deletes the namespace (which deletes the pair); a later `create` removes what a killed test
/// process left.
///
/// ```no_run
/// use std::time::Duration;
/// let netns = test_support::Netns::create().expect("root, iproute2 and iptables");
/// let redis = test_support::RedisServer::start_in(&netns, &[]);
/// netns.shape(test_support::LinkShape { one_way: Duration::from_millis(2), loss: 0.01 });
/// assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
/// ```
#[derive(Debug)]
pub struct Netns {
    name: String,
    index: u32,
    shared: Arc<Shared>,
    shaper: Option<JoinHandle<()>>,
    /// Whether this one made its veth pair (and so may delete its host end).
    made_pair: bool,
}

impl Netns {
    /// Why namespaces cannot be made here (they need root), if they cannot: a test says so and
    /// skips. Where this is `None`, [`create`](Self::create) is expected to work.
    pub fn unavailable() -> Option<String> {
        (!crate::postgres_server::is_root()).then(|| "network namespaces need root".to_owned())
    }

    /// Creates the namespace, the pair, the rules and the shaper (an unshaped link until
    /// [`shape`](Self::shape)). What killed test processes left behind is removed first. `Err`
    /// says why it failed (no `ip` or `iptables`, a kernel without `NFQUEUE`...).
    pub fn create() -> Result<Netns, String> {
        let taken = remove_abandoned();
        let pid = std::process::id();
        let first = pid.wrapping_mul(7919) % LINKS;
        for attempt in 0..64 {
            let index = (first + attempt * 397) % LINKS;
            if taken.contains(&index) {
                continue;
            }
            let name = format!("{PREFIX}{index}-{pid}");
            run(&["ip", "netns", "add", &name]).map_err(|why| format!("cannot create a network namespace: {why}"))?;
            // From here, dropping it removes whatever was made.
            let mut netns = Netns { name, index, shared: Arc::default(), shaper: None, made_pair: false };
            match netns.wire() {
                Ok(()) => return Ok(netns),
                // Another process took the index at the same moment, or a pair of that index
                // is still going away: the next one.
                Err(why) if why.contains("File exists") => continue,
                Err(why) => return Err(why),
            }
        }
        Err("no free link after 64 attempts".to_owned())
    }

    /// The pair, its addresses, the rules and the shaper thread.
    fn wire(&mut self) -> Result<(), String> {
        let (host_if, ns_if) = (host_interface(self.index), format!("qt{}n", self.index));
        let (host, inside) = (format!("{}/30", self.host_address()), format!("{}/30", self.address()));
        let ns = self.name.as_str();
        run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])
            .map_err(|why| format!("cannot make the veth pair {host_if}: {why}"))?;
        self.made_pair = true;
        for step in [
            vec!["ip", "link", "set", &ns_if, "netns", ns],
            vec!["ip", "addr", "add", &host, "dev", &host_if],
            vec!["ip", "link", "set", &host_if, "up"],
            vec!["ip", "netns", "exec", ns, "ip", "addr", "add", &inside, "dev", &ns_if],
            vec!["ip", "netns", "exec", ns, "ip", "link", "set", &ns_if, "up"],
            vec!["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
        ] {
            run(&step).map_err(|why| format!("cannot wire the veth pair ({}): {why}", step.join(" ")))?;
        }
        // The shaper binds the queue before any rule feeds it.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        let path = format!("/run/netns/{ns}");
        self.shaper = Some(std::thread::spawn(move || shaper(&path, &shared, &ready_tx)));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the link shaper did not start".to_owned())
            .and_then(|bound| bound)?;
        let queue = QUEUE.to_string();
        for (chain, direction) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            let rule = ["ip", "netns", "exec", ns, "iptables", "-A", chain, direction, &ns_if];
            let target = ["-j", "NFQUEUE", "--queue-num", &queue];
            run(&[&rule[..], &target[..]].concat())
                .map_err(|why| format!("cannot send the link's packets to NFQUEUE (iptables): {why}"))?;
        }
        Ok(())
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address inside the namespace, where its servers listen.
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(SUBNETS) + self.index * 4 + 2)
    }

    /// This side's address of the pair.
    pub fn host_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(SUBNETS) + self.index * 4 + 1)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Sets the link's latency and loss from now on (packets already held keep their delay).
    ///
    /// # Panics
    ///
    /// If `loss` is not a probability.
    pub fn shape(&self, shape: LinkShape) {
        assert!((0.0..=1.0).contains(&shape.loss), "loss is a probability: {}", shape.loss);
        self.shared.one_way_micros.store(shape.one_way.as_micros() as u64, Ordering::Relaxed);
        self.shared.loss_ppm.store((shape.loss * 1_000_000.0).round() as u32, Ordering::Relaxed);
    }

    /// What the shaper let through and dropped so far.
    pub fn counts(&self) -> LinkCounts {
        LinkCounts {
            passed: self.shared.passed.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(shaper) = self.shaper.take() {
            let _ = shaper.join();
        }
        remove(&self.name, self.index, self.made_pair);
    }
}

/// Kills what runs in namespace `name` and deletes it (and so the pair inside it); with
/// `host_end`, also the pair's end on this side, in case the pair never moved in.
fn remove(name: &str, index: u32, host_end: bool) {
    if let Ok(pids) = run(&["ip", "netns", "pids", name]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = run(&["ip", "netns", "del", name]);
    if host_end {
        let _ = run(&["ip", "link", "del", &host_interface(index)]);
    }
}

/// Removes the links of test processes that are gone (killed before they could clean up), and
/// returns the indexes still in use.
fn remove_abandoned() -> Vec<u32> {
    let listed = run(&["ip", "netns", "list"]).unwrap_or_default();
    let mut taken = Vec::new();
    for name in listed.lines().filter_map(|line| line.split_whitespace().next()) {
        let Some((index, pid)) = name.strip_prefix(PREFIX).and_then(|rest| rest.split_once('-')) else { continue };
        let (Ok(index), Ok(pid)) = (index.parse::<u32>(), pid.parse::<u32>()) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            taken.push(index);
        } else {
            remove(name, index, false);
        }
    }
    taken
}

/// The pair's end on this side.
fn host_interface(index: u32) -> String {
    format!("qt{index}h")
}

/// The shaper: joins the namespace (this thread only), binds the queue, reports whether that
/// worked, then holds every packet for the delay of the moment it arrived, in order, and gives
/// each its verdict when due.
fn shaper(netns_path: &str, shared: &Shared, ready: &std::sync::mpsc::Sender<Result<(), String>>) {
    let queue = std::fs::File::open(netns_path)
        .map_err(|e| format!("open {netns_path}: {e}"))
        .and_then(|ns| nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}")))
        .and_then(|()| bind_queue().map_err(|e| format!("cannot bind a netfilter queue: {e}")));
    let mut queue = match queue {
        Ok(queue) => {
            let _ = ready.send(Ok(()));
            queue
        }
        Err(why) => {
            let _ = ready.send(Err(why));
            return;
        }
    };
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut random = Xorshift::seeded();
    while !shared.stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            match queue.recv() {
                Ok(packet) => {
                    let delay = Duration::from_micros(shared.one_way_micros.load(Ordering::Relaxed));
                    held.push_back((Instant::now() + delay, packet));
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                // The kernel's answer to a verdict it could not apply (the packet's device went
                // away): counted, and the link goes on.
                Err(_) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, mut packet) = held.pop_front().expect("a held packet");
            let lost = random.below_ppm(shared.loss_ppm.load(Ordering::Relaxed));
            let (verdict, counter) =
                if lost { (nfq::Verdict::Drop, &shared.dropped) } else { (nfq::Verdict::Accept, &shared.passed) };
            packet.set_verdict(verdict);
            if queue.verdict(packet).is_err() {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(TICK);
    }
    // Let whatever is still held through, so nothing waits for a verdict that never comes.
    for (_, mut packet) in held {
        packet.set_verdict(nfq::Verdict::Accept);
        let _ = queue.verdict(packet);
    }
}

/// The namespace's queue: metadata only (the verdict needs no payload), room for every packet
/// in flight, and never blocking. GSO packets are segmented by the kernel before they are
/// queued, so the loss applies to packets as they would cross a wire.
fn bind_queue() -> std::io::Result<nfq::Queue> {
    let mut queue = nfq::Queue::open()?;
    queue.bind(QUEUE)?;
    queue.set_copy_range(QUEUE, 0)?;
    queue.set_queue_max_len(QUEUE, QUEUE_MAX_LEN)?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// A small, fast, good-enough generator for the loss decisions.
struct Xorshift(u64);

impl Xorshift {
    fn seeded() -> Xorshift {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Xorshift((nanos as u64) | 1)
    }

    /// True with probability `ppm` in a million.
    fn below_ppm(&mut self, ppm: u32) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ppm > 0 && (self.0 % 1_000_000) < u64::from(ppm)
    }
}

/// Runs a command; its stdout, or its stderr as the reason it failed.
fn run(args: &[&str]) -> Result<String, String> {
    let Output { status, stdout, stderr } =
        Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&stderr).trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisServer;
    use crate::resp::try_resp_command_at;

    /// The quickest of `n` PINGs, each on a fresh connection (a handshake and a command: two
    /// round trips).
    fn quickest_ping(redis: &RedisServer, netns: &Netns, n: usize) -> Duration {
        let addr = std::net::SocketAddr::from((netns.address(), redis.port()));
        (0..n)
            .map(|_| {
                let started = Instant::now();
                let reply = try_resp_command_at(addr, &["PING"], Duration::from_secs(5), Duration::from_secs(5));
                assert_eq!(reply.expect("PING across the link"), "+PONG\r\n");
                started.elapsed()
            })
            .min()
            .expect("n > 0")
    }

    #[test]
    fn the_link_delays_and_drops_real_packets() {
        if let Some(why) = Netns::unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
        let netns = Netns::create().expect("a namespace (scripts/test installs iproute2 and iptables)");
        let redis = RedisServer::start_in(&netns, &[]);
        assert!(redis.url().contains(&netns.address().to_string()), "{}", redis.url());
        let unshaped = quickest_ping(&redis, &netns, 5);

        netns.shape(LinkShape { one_way: Duration::from_millis(20), loss: 0.0 });
        let shaped = quickest_ping(&redis, &netns, 3);
        assert!(shaped >= Duration::from_millis(80), "two round trips of 40 ms: {shaped:?} (unshaped {unshaped:?})");

        netns.shape(LinkShape { one_way: Duration::ZERO, loss: 1.0 });
        let addr = std::net::SocketAddr::from((netns.address(), redis.port()));
        let cut = try_resp_command_at(addr, &["PING"], Duration::from_millis(500), Duration::from_millis(500));
        assert!(cut.is_err(), "every packet dropped: {cut:?}");
        assert!(netns.counts().dropped > 0);

        netns.shape(LinkShape::default());
        assert!(quickest_ping(&redis, &netns, 1) < Duration::from_secs(5));
        assert!(netns.counts().passed > 0);
        assert_eq!(netns.counts().errors, 0, "every verdict was taken");

        let name = netns.name().to_owned();
        drop(redis);
        drop(netns);
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists(), "the namespace is gone");
    }

    #[test]
    fn loss_decisions_follow_the_probability() {
        let mut random = Xorshift::seeded();
        let dropped = (0..100_000).filter(|_| random.below_ppm(10_000)).count();
        assert!((700..1300).contains(&dropped), "about 1% of 100,000: {dropped}");
        assert_eq!((0..10_000).filter(|_| random.below_ppm(0)).count(), 0);
        assert_eq!((0..10_000).filter(|_| random.below_ppm(1_000_000)).count(), 10_000);
    }
}
