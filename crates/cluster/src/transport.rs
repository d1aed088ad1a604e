//! The network between brokers: one outbound connection per peer, carrying
//! every group's Raft messages in batched frames, and an accept loop for
//! the peers' connections. Messages that cannot be sent are dropped: Raft
//! retransmits, and a queue that grew while a peer is down helps nobody.

use std::collections::HashMap;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use raft::eraftpb::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::ClusterConfig;
use crate::driver::Input;
use crate::secret::{self, ClusterSecret};
use crate::wire::{self, Frame};

pub type Batch = Vec<(u64, Message)>;

/// A peer cut off by the network drops packets without a reset: TCP would
/// retransmit with backoff for minutes, and after the link returns a
/// connection could stay silent for tens of seconds (the retransmit after a
/// 30 s cut comes about 50 s after it began). Past these limits the
/// connection is abandoned and a new one made, so a healed peer hears from
/// us within about a second. The write timeout alone does not do it: small
/// heartbeats fit in the socket buffer, so writes succeed while nothing
/// arrives; the kernel's user timeout ends such a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection that has not introduced itself by then is closed, so
/// strangers cannot hold connections open.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Peers known at most: node ids are below 1024 (producer ids are spaced by
/// node id), so more means something is wrong.
pub const MAX_PEERS: usize = 1024;

/// One peer's writer task and the queue to it.
struct Peer {
    addr: String,
    tx: mpsc::Sender<Batch>,
    task: tokio::task::JoinHandle<()>,
}

/// Senders to each peer's writer task. Peers are the voters from the
/// configuration and, added at run time, brokers that joined.
pub struct Transport {
    node_id: u64,
    /// Where the others reach this broker; sent in every hello.
    advertised: String,
    queue_len: usize,
    secret: Option<ClusterSecret>,
    runtime: tokio::runtime::Handle,
    peers: HashMap<u64, Peer>,
    /// The accept loop, owning its connections' readers; aborted when the
    /// transport is dropped, which frees the port.
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport {
    /// Binds `--cluster-listen` (an error here stops the broker's start) and
    /// starts the accept loop and one writer per voter.
    pub async fn start(config: &ClusterConfig, inbound: SyncSender<Input>) -> std::io::Result<Transport> {
        let listener = TcpListener::bind(config.listen).await?;
        info!(listen = %listener.local_addr()?, node_id = config.node_id, "accepting cluster connections");
        if config.secret.is_none() {
            warn!("cluster connections are not authenticated: any process that reaches the cluster listener is taken for a broker; set --cluster-secret-file");
        }
        let accept = Some(tokio::spawn(accept_loop(listener, config.node_id, config.secret.clone(), inbound)));
        let mut transport = Transport {
            node_id: config.node_id,
            advertised: config.advertised_addr(),
            queue_len: config.max_queued_messages_per_peer,
            secret: config.secret.clone(),
            runtime: tokio::runtime::Handle::current(),
            peers: HashMap::new(),
            accept,
        };
        for peer in config.peers() {
            transport.add_peer(peer.id, &peer.addr);
        }
        Ok(transport)
    }

    /// Starts sending to `id` at `addr`; a peer known at another address
    /// (a broker restarted elsewhere) is dialed at the new one. Callable
    /// from outside the runtime (the Raft thread).
    pub fn add_peer(&mut self, id: u64, addr: &str) {
        if id == self.node_id || self.peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        if !self.peers.contains_key(&id) && self.peers.len() >= MAX_PEERS {
            warn!(peer = id, %addr, limit = MAX_PEERS, "too many cluster peers; this one is ignored");
            return;
        }
        if let Some(old) = self.peers.remove(&id) {
            info!(peer = id, from = %old.addr, to = %addr, "cluster peer moved");
            old.task.abort();
        }
        let (tx, rx) = mpsc::channel(self.queue_len);
        let me = Caller { node_id: self.node_id, advertised: self.advertised.clone(), secret: self.secret.clone() };
        let task = self.runtime.spawn(write_loop(me, id, addr.to_string(), rx));
        self.peers.insert(id, Peer { addr: addr.to_string(), tx, task });
    }

    /// Stops accepting and sending; frees the cluster port.
    pub fn shutdown(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for (_, p) in self.peers.drain() {
            p.task.abort();
        }
    }

    /// Queues one batch for a peer; false if it was dropped.
    pub fn send(&self, to: u64, batch: Batch) -> bool {
        match self.peers.get(&to) {
            Some(p) => p.tx.try_send(batch).is_ok(),
            None => false,
        }
    }
}

/// Who dials out: what goes in each hello.
struct Caller {
    node_id: u64,
    advertised: String,
    secret: Option<ClusterSecret>,
}

/// The hello that introduces `me`: with a secret, it first reads the
/// peer's challenge and answers it.
async fn hello(stream: &mut TcpStream, me: &Caller) -> Result<Frame, String> {
    let Some(secret) = &me.secret else {
        return Ok(Frame::Hello { node_id: me.node_id, addr: me.advertised.clone(), proof: Vec::new() });
    };
    match tokio::time::timeout(HELLO_TIMEOUT, read_frame(stream)).await {
        Ok(Ok(Frame::Challenge { nonce })) => Ok(Frame::Hello { node_id: me.node_id, addr: me.advertised.clone(), proof: secret.prove(&nonce, me.node_id, &me.advertised) }),
        Ok(Ok(_)) => Err("the peer's first frame was not a challenge".into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the peer did not ask for the cluster secret: set the same --cluster-secret-file on every broker".into()),
    }
}

async fn write_loop(me: Caller, peer: u64, addr: String, mut rx: mpsc::Receiver<Batch>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await;
        let mut stream = match connected.unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))) {
            Ok(s) => s,
            Err(e) => {
                debug!(peer, %addr, error = %e, "cannot reach peer; retrying");
                // Drop what queued up meanwhile: it is stale, Raft resends.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(UNACKNOWLEDGED_TIMEOUT)) {
            warn!(peer, %addr, error = %e, "cannot set TCP_USER_TIMEOUT; a healed link may stay silent longer");
        }
        let hello = match hello(&mut stream, &me).await {
            Ok(h) => h,
            Err(e) => {
                warn!(peer, %addr, error = %e, "cannot introduce this broker to the peer; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if write_frame(&mut stream, &hello).await.is_err() {
            continue;
        }
        info!(peer, %addr, "connected to peer");
        loop {
            let Some(mut batch) = rx.recv().await else { return };
            // Everything queued meanwhile goes in the same frame.
            while let Ok(more) = rx.try_recv() {
                batch.extend(more);
            }
            if let Err(e) = write_frame(&mut stream, &Frame::Raft(batch)).await {
                warn!(peer, %addr, error = %e, "connection to peer lost");
                break;
            }
        }
    }
}

async fn write_frame(stream: &mut TcpStream, frame: &Frame) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&wire::encode(frame))).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out: peer unreachable")),
    }
}

async fn accept_loop(listener: TcpListener, node_id: u64, secret: Option<ClusterSecret>, inbound: SyncSender<Input>) {
    let mut readers = tokio::task::JoinSet::new();
    loop {
        // Reap finished readers so the set does not grow with reconnects.
        while readers.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                readers.spawn(read_loop(stream, addr, node_id, secret.clone(), inbound.clone()));
            }
            Err(e) => {
                warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> Result<Frame, String> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.map_err(|e| e.to_string())?;
    let len = wire::body_len(header).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    wire::decode(&body).map_err(|e| e.to_string())
}

/// The caller's hello, checked against our challenge when the cluster has
/// a secret: its node id and listen address, or why it is refused.
async fn introduction(stream: &mut TcpStream, me: u64, secret: Option<&ClusterSecret>) -> Result<(u64, String), String> {
    let nonce = match secret {
        Some(_) => {
            let nonce = secret::nonce().map_err(|e| format!("no random nonce: {e}"))?;
            write_frame(stream, &Frame::Challenge { nonce }).await.map_err(|e| e.to_string())?;
            Some(nonce)
        }
        None => None,
    };
    let frame = tokio::time::timeout(HELLO_TIMEOUT, read_frame(stream)).await.map_err(|_| "no hello in time".to_string())??;
    let Frame::Hello { node_id, addr, proof } = frame else { return Err("the first frame was not a hello".into()) };
    if node_id == 0 || node_id == me {
        return Err(format!("the caller claims node id {node_id}"));
    }
    if let (Some(secret), Some(nonce)) = (secret, nonce) {
        if !secret.verify(&nonce, node_id, &addr, &proof) {
            return Err(format!("node {node_id} at {addr} does not know the cluster secret"));
        }
    }
    Ok((node_id, addr))
}

async fn read_loop(mut stream: TcpStream, addr: std::net::SocketAddr, me: u64, secret: Option<ClusterSecret>, inbound: SyncSender<Input>) {
    let peer = match introduction(&mut stream, me, secret.as_ref()).await {
        Ok((node_id, listen)) => {
            // The driver dials back the brokers it does not know (one joining).
            let _ = inbound.try_send(Input::PeerHello { node_id, addr: listen });
            node_id
        }
        Err(e) => {
            warn!(%addr, error = %e, "refused a cluster connection");
            return;
        }
    };
    loop {
        match read_frame(&mut stream).await {
            Ok(Frame::Raft(messages)) => {
                for (group, msg) in messages {
                    if msg.from != peer {
                        warn!(%addr, peer, from = msg.from, "message claims another sender; closing");
                        return;
                    }
                    match inbound.try_send(Input::Raft { group, msg }) {
                        Ok(()) | Err(TrySendError::Full(_)) => {}
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
            }
            Ok(_) => warn!(%addr, peer, "a hello or challenge in the middle of a cluster connection; ignored"),
            Err(e) => {
                debug!(%addr, peer, error = %e, "cluster connection closed");
                return;
            }
        }
    }
}
