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

/// Senders to each peer's writer task.
pub struct Transport {
    peers: HashMap<u64, mpsc::Sender<Batch>>,
    /// The accept loop (owning its connections' readers) and the writers;
    /// aborted when the transport is dropped, which frees the port.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Transport {
    /// Binds `--cluster-listen` (an error here stops the broker's start) and
    /// starts the accept loop and one writer per peer.
    pub async fn start(config: &ClusterConfig, inbound: SyncSender<Input>) -> std::io::Result<Transport> {
        let listener = TcpListener::bind(config.listen).await?;
        info!(listen = %listener.local_addr()?, node_id = config.node_id, "accepting cluster connections");
        let voters: Vec<u64> = config.voter_ids();
        let mut tasks = vec![tokio::spawn(accept_loop(listener, voters, inbound))];
        let mut peers = HashMap::new();
        for peer in config.peers() {
            let (tx, rx) = mpsc::channel(config.max_queued_messages_per_peer);
            tasks.push(tokio::spawn(write_loop(config.node_id, peer.id, peer.addr.clone(), rx)));
            peers.insert(peer.id, tx);
        }
        Ok(Transport { peers, tasks })
    }

    /// Stops accepting and sending; frees the cluster port.
    pub fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Queues one batch for a peer; false if it was dropped.
    pub fn send(&self, to: u64, batch: Batch) -> bool {
        match self.peers.get(&to) {
            Some(tx) => tx.try_send(batch).is_ok(),
            None => false,
        }
    }
}

async fn write_loop(node_id: u64, peer: u64, addr: String, mut rx: mpsc::Receiver<Batch>) {
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
        backoff = Duration::from_millis(50);
        if write_frame(&mut stream, &Frame::Hello { node_id }).await.is_err() {
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

async fn accept_loop(listener: TcpListener, voters: Vec<u64>, inbound: SyncSender<Input>) {
    let mut readers = tokio::task::JoinSet::new();
    loop {
        // Reap finished readers so the set does not grow with reconnects.
        while readers.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                readers.spawn(read_loop(stream, addr, voters.clone(), inbound.clone()));
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

async fn read_loop(mut stream: TcpStream, addr: std::net::SocketAddr, voters: Vec<u64>, inbound: SyncSender<Input>) {
    let peer = match read_frame(&mut stream).await {
        Ok(Frame::Hello { node_id }) if voters.contains(&node_id) => node_id,
        Ok(other) => {
            warn!(%addr, frame = ?other, "cluster connection did not introduce a voter; closing");
            return;
        }
        Err(e) => {
            debug!(%addr, error = %e, "cluster connection closed before its hello");
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
            Ok(Frame::Hello { .. }) => warn!(%addr, peer, "second hello on a cluster connection; ignored"),
            Err(e) => {
                debug!(%addr, peer, error = %e, "cluster connection closed");
                return;
            }
        }
    }
}
