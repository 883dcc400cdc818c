//! The blackholing TCP proxies in front of a proxied cluster's nodes, and
//! the links they can cut.
//!
//! Node `i` binds `127.0.0.(10+i)` and makes its outgoing connections from
//! there (`bind-source-addr`); two proxies listen on `127.0.0.1` on the same
//! two port numbers (client and cluster bus) and forward to it. The node
//! announces `127.0.0.1`, so clients, replication (a replica connects to its
//! primary's announced client port) and the cluster bus all pass through a
//! proxy. A proxy knows who is on the other end of a connection by its
//! source IP: `127.0.0.(10+j)` is node `j`, anything else the client side.
//!
//! What holds:
//! - A cut link carries no byte in either direction, on connections open
//!   before the cut and on new ones, and nothing is closed or reset: each
//!   direction stops reading and forwarding, so bytes queue (in the kernel's
//!   buffers and at most one [`BUFFER`] per direction here) and the peer
//!   sees silence, then timeouts. On heal the queued bytes are delivered in
//!   order, late, as TCP retransmission would deliver them.
//! - A connection accepted while its link is cut is connected to the node
//!   only once the link heals (the node sees nothing of it before).
//! - Memory is bounded: per connection two pumps, each with one fixed
//!   buffer; nothing else is queued in user space.
//! - The proxies run on their own OS thread with their own single-threaded
//!   tokio runtime, so a busy or current-thread test runtime cannot stall
//!   them. Dropping [`Proxies`] stops that thread and closes every listener
//!   and connection before it returns.
//!
//! What differs from a real partition: the kernel completes the TCP
//! handshake, so `connect` succeeds at once instead of timing out on
//! unanswered SYNs; a close (FIN) sent while cut reaches the other side
//! after the heal, as it would after a real one. When the node does not run
//! (killed), a new connection is accepted and then closed (no `RST`/refused
//! as a direct connect would see). Traffic the kit itself sends to a node's
//! own address (its queries, `MIGRATE` of a slot migration) does not pass
//! a proxy and is never cut.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener as StdListener};
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Bytes one direction of one connection holds at most in user space.
pub(super) const BUFFER: usize = 16 * 1024;
/// Node `i` lives at `127.0.0.(FIRST_HOST + i)`.
const FIRST_HOST: u8 = 10;
/// Most nodes a proxied cluster can have (`127.0.0.10` to `127.0.0.254`).
pub(super) const MAX_NODES: usize = (u8::MAX - FIRST_HOST) as usize;

/// One end of a link: the client side (every process on `127.0.0.1`), or a
/// node by its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum End {
    Client,
    Node(usize),
}

/// An unordered pair of ends: a cut applies to both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Link(End, End);

impl Link {
    pub(super) fn new(a: End, b: End) -> Link {
        if a <= b { Link(a, b) } else { Link(b, a) }
    }
}

/// The address node `index` binds behind proxies.
pub(super) fn node_ip(index: usize) -> Ipv4Addr {
    let host = u8::try_from(index)
        .ok()
        .and_then(|i| i.checked_add(FIRST_HOST))
        .filter(|h| *h < u8::MAX)
        .expect("a proxied cluster has at most MAX_NODES nodes");
    Ipv4Addr::new(127, 0, 0, host)
}

/// Who connected from `ip`, in a cluster of `nodes` nodes.
fn end_of(ip: IpAddr, nodes: usize) -> End {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] => {
            match usize::from(v4.octets()[3]).checked_sub(usize::from(FIRST_HOST)) {
                Some(i) if i < nodes => End::Node(i),
                _ => End::Client,
            }
        }
        _ => End::Client,
    }
}

/// The proxies of one cluster: two per node, on one thread.
#[derive(Debug)]
pub(super) struct Proxies {
    /// (client, bus) port of each node, on `127.0.0.1` and on its own IP.
    ports: Vec<(u16, u16)>,
    /// The links cut now; every pump watches it.
    cuts: watch::Sender<HashSet<Link>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxies {
    /// Binds two listeners on `127.0.0.1` per node (free ports) and starts
    /// forwarding them to `127.0.0.(10+i)` on the same ports; the nodes may
    /// start later (until then a connection is accepted and closed).
    pub(super) fn start(nodes: usize) -> io::Result<Proxies> {
        if nodes > MAX_NODES {
            return Err(io::Error::other(format!(
                "at most {MAX_NODES} nodes can be proxied, not {nodes}"
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (cuts, _) = watch::channel(HashSet::new());
        let mut ports = Vec::with_capacity(nodes);
        let mut listeners = Vec::with_capacity(2 * nodes);
        {
            let _context = runtime.enter();
            for i in 0..nodes {
                let mut pair = [0u16; 2];
                for port in &mut pair {
                    let std = StdListener::bind((Ipv4Addr::LOCALHOST, 0))?;
                    *port = std.local_addr()?.port();
                    std.set_nonblocking(true)?;
                    let upstream = SocketAddr::V4(SocketAddrV4::new(node_ip(i), *port));
                    listeners.push((TcpListener::from_std(std)?, upstream, i));
                }
                ports.push((pair[0], pair[1]));
            }
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let watcher = cuts.subscribe();
        let thread = std::thread::Builder::new()
            .name("shardlock-testkit-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (listener, upstream, node) in listeners {
                        let accept = accept_loop(listener, upstream, node, nodes, watcher.clone());
                        tokio::spawn(accept);
                    }
                    // Ends when `Proxies` is dropped (sender dropped or sent).
                    let _ = stopped.await;
                });
                // Dropping the runtime here drops every task: all listeners
                // and connections close before the thread ends.
                drop(runtime);
            })?;
        Ok(Proxies {
            ports,
            cuts,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The (client, bus) ports of node `index`.
    pub(super) fn ports(&self, index: usize) -> (u16, u16) {
        self.ports[index]
    }

    /// Cuts `link` (both directions); a no-op if it is cut already.
    pub(super) fn cut(&self, link: Link) {
        self.cuts.send_modify(|cuts| {
            cuts.insert(link);
        });
    }

    /// Heals `link`; a no-op if it is not cut.
    pub(super) fn heal(&self, link: Link) {
        self.cuts.send_modify(|cuts| {
            cuts.remove(&link);
        });
    }

    /// Heals every link.
    pub(super) fn heal_all(&self) {
        self.cuts.send_modify(HashSet::clear);
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only awaits `stop`, then drops its runtime.
            let _ = thread.join();
        }
    }
}

/// Accepts connections for node `node` until the runtime stops.
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    node: usize,
    nodes: usize,
    cuts: watch::Receiver<HashSet<Link>>,
) {
    loop {
        match listener.accept().await {
            Ok((down, from)) => {
                let link = Link::new(end_of(from.ip(), nodes), End::Node(node));
                tokio::spawn(serve(down, upstream, link, cuts.clone()));
            }
            // Out of file descriptors and the like: try again shortly
            // rather than spin.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// Forwards one accepted connection to the node, both ways, while `link`
/// is not cut. A failing direction ends both; an end of stream is passed on
/// (half-close) and the other direction goes on.
async fn serve(
    down: TcpStream,
    upstream: SocketAddr,
    link: Link,
    mut cuts: watch::Receiver<HashSet<Link>>,
) {
    if open(&mut cuts, link).await.is_err() {
        return;
    }
    // A node that does not run: the accepted connection is closed.
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (down_read, down_write) = down.into_split();
    let (up_read, up_write) = up.into_split();
    let _ = tokio::try_join!(
        pump(down_read, up_write, link, cuts.clone()),
        pump(up_read, down_write, link, cuts),
    );
}

/// Waits until `link` is not cut; fails once the proxies are dropped.
async fn open(cuts: &mut watch::Receiver<HashSet<Link>>, link: Link) -> io::Result<()> {
    match cuts.wait_for(|cut| !cut.contains(&link)).await {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other("proxies stopped")),
    }
}

/// One direction of a connection: reads into one fixed buffer and writes it
/// on, never while `link` is cut (checked before each read and again before
/// each write, so bytes read just before a cut wait for the heal).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Link,
    mut cuts: watch::Receiver<HashSet<Link>>,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        open(&mut cuts, link).await?;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        open(&mut cuts, link).await?;
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_name_the_ends() {
        let ip = |d: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d));
        assert_eq!(end_of(ip(1), 6), End::Client);
        assert_eq!(end_of(ip(10), 6), End::Node(0));
        assert_eq!(end_of(ip(15), 6), End::Node(5));
        assert_eq!(end_of(ip(16), 6), End::Client);
        assert_eq!(end_of(ip(9), 6), End::Client);
        assert_eq!(
            end_of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10)), 6),
            End::Client
        );
        assert_eq!(node_ip(0), Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(node_ip(MAX_NODES - 1), Ipv4Addr::new(127, 0, 0, 254));
    }

    #[test]
    fn links_are_unordered() {
        assert_eq!(
            Link::new(End::Node(2), End::Client),
            Link::new(End::Client, End::Node(2))
        );
        assert_ne!(
            Link::new(End::Node(1), End::Node(2)),
            Link::new(End::Node(1), End::Node(3))
        );
    }
}
