//! A test's own end of the native peer protocol, for tests that play a peer the nodes should
//! not trust: raw frames over a raw TCP connection ([`raw_exchange`]), a hello in any name
//! ([`hello`]), and the dialler's side of the cluster secret's handshake
//! ([`SecretDialler`]), so that a test can complete a handshake as a process that knows the
//! secret and then misbehave.
//!
//! The proof ([`hello_proof`]) is written here from the protocol's description (the core's
//! `node::auth` module docs), not taken from the core: a test that computed it with the
//! node's own code would not notice the two drifting apart.
//!
//! Sockets and timers are async-io's (async-net), whose reactor serves any executor.

use std::net::SocketAddr;
use std::time::Duration;

use async_io::Timer;
use async_net::TcpStream;
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use herdcache_proto::{FrameDecoder, Message, PROTOCOL_VERSION, WireLimits};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long [`raw_exchange`] and [`SecretDialler::exchange`] wait for another byte before
/// they call the node quiet.
pub const QUIET: Duration = Duration::from_millis(500);

/// A hello in the name of `node_id`, for the cluster labelled `cluster`, with `nonce` (a node
/// with a cluster secret refuses a hello without one).
#[must_use]
pub fn hello(cluster: &str, node_id: &str, nonce: Option<[u8; 16]>) -> Message {
    Message::Hello {
        protocol_version: u16::from(PROTOCOL_VERSION),
        cluster: Bytes::copy_from_slice(cluster.as_bytes()),
        node_id: Bytes::copy_from_slice(node_id.as_bytes()),
        nonce,
    }
}

/// The bytes of `frames` (request id, message) on the wire.
#[must_use]
pub fn encode(frames: &[(u64, Message)]) -> Vec<u8> {
    let limits = WireLimits::default();
    let mut bytes = Vec::new();
    for (id, message) in frames {
        message.encode(*id, &mut bytes, &limits).expect("a frame within the limits");
    }
    bytes
}

/// Speaks the native wire on a raw TCP connection to `addr`: sends `frames` (request id,
/// message) and returns every frame the node sends back until it closes the connection or
/// goes [`QUIET`] for a moment, and whether it closed.
pub async fn raw_exchange(
    addr: SocketAddr,
    frames: &[(u64, Message)],
) -> (Vec<(u64, Message)>, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(&encode(frames)).await.expect("written");
    let mut decoder = FrameDecoder::new(WireLimits::default());
    read_frames(&mut stream, &mut decoder).await
}

/// Reads frames from `stream` until the node closes it or goes [`QUIET`]; the frames and
/// whether it closed.
async fn read_frames(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
) -> (Vec<(u64, Message)>, bool) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        let read = async { Some(stream.read(&mut buffer).await) };
        let quiet = async {
            Timer::after(QUIET).await;
            None
        };
        match read.or(quiet).await {
            None => break false,
            Some(Ok(0) | Err(_)) => break true,
            Some(Ok(n)) => {
                decoder.push(&buffer[..n]).expect("the node's frames decode");
                while let Some((header, message)) = decoder.next_frame().expect("a frame") {
                    received.push((header.request_id, message));
                }
            }
        }
    };
    (received, closed)
}

/// A side of the handshake, as the proof binds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that opened the connection.
    Dialler = 1,
    /// The side that accepted it.
    Acceptor = 2,
}

/// `role`'s proof of `secret` on one connection: HMAC-SHA256 keyed by the secret over the
/// domain label `herdcache hello proof v1`, the role's byte, the cluster label, the dialler's
/// and the acceptor's node ids (each after its length as 4 big-endian bytes), then the
/// dialler's and the acceptor's nonces.
#[must_use]
pub fn hello_proof(
    secret: &[u8],
    role: Role,
    cluster: &[u8],
    (dialler, acceptor): (&[u8], &[u8]),
    (dialler_nonce, acceptor_nonce): (&[u8; 16], &[u8; 16]),
) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"herdcache hello proof v1");
    mac.update(&[role as u8]);
    for field in [cluster, dialler, acceptor] {
        let len = u32::try_from(field.len()).expect("a short field");
        mac.update(&len.to_be_bytes());
        mac.update(field);
    }
    mac.update(dialler_nonce);
    mac.update(acceptor_nonce);
    mac.finalize().into_bytes().into()
}

/// A raw connection that said hello as the dialler and got the node's hello and proof back:
/// the handshake's first half, before this side proves anything.
pub struct HalfHandshake {
    stream: TcpStream,
    decoder: FrameDecoder,
    cluster: String,
    node_id: String,
    own_nonce: [u8; 16],
    acceptor: Bytes,
    acceptor_nonce: [u8; 16],
    acceptor_proof: Message,
}

impl HalfHandshake {
    /// Dials `addr` and says hello as `node_id` of `cluster` (with a nonce); fails unless the
    /// node answers with its hello (with a nonce) and a proof.
    pub async fn open(addr: SocketAddr, cluster: &str, node_id: &str) -> Result<Self, String> {
        let mut stream = TcpStream::connect(addr).await.map_err(|error| error.to_string())?;
        let own_nonce = [0x5a; 16];
        stream
            .write_all(&encode(&[(0, hello(cluster, node_id, Some(own_nonce)))]))
            .await
            .map_err(|error| error.to_string())?;
        let mut decoder = FrameDecoder::new(WireLimits::default());
        let mut frames = Vec::new();
        let mut buffer = [0u8; 4096];
        while frames.len() < 2 {
            let n = stream.read(&mut buffer).await.map_err(|error| error.to_string())?;
            if n == 0 {
                return Err(format!("closed during the handshake after {frames:?}"));
            }
            decoder.push(&buffer[..n]).map_err(|error| format!("{error:?}"))?;
            while let Some((_, message)) = decoder.next_frame().map_err(|e| format!("{e:?}"))? {
                frames.push(message);
            }
        }
        let acceptor_proof = frames.remove(1);
        let (acceptor, acceptor_nonce) = match frames.remove(0) {
            Message::Hello { node_id, nonce: Some(nonce), .. } => (node_id, nonce),
            other => return Err(format!("expected the node's hello, got {other:?}")),
        };
        Ok(HalfHandshake {
            stream,
            decoder,
            cluster: cluster.to_owned(),
            node_id: node_id.to_owned(),
            own_nonce,
            acceptor,
            acceptor_nonce,
            acceptor_proof,
        })
    }

    /// `role`'s proof on this connection with `secret`.
    fn proof(&self, secret: &[u8], role: Role) -> [u8; 32] {
        let ids = (self.node_id.as_bytes(), &self.acceptor[..]);
        let nonces = (&self.own_nonce, &self.acceptor_nonce);
        hello_proof(secret, role, self.cluster.as_bytes(), ids, nonces)
    }

    /// Whether the node proved `secret`.
    #[must_use]
    pub fn node_proved(&self, secret: &[u8]) -> bool {
        self.acceptor_proof == (Message::HelloProof { mac: self.proof(secret, Role::Acceptor) })
    }

    /// Sends this side's proof made with `secret` (right or wrong), then `frames`, and
    /// returns what the node answers until it closes or goes [`QUIET`], and whether it closed.
    pub async fn prove_then(
        mut self,
        secret: &[u8],
        frames: &[(u64, Message)],
    ) -> (Vec<(u64, Message)>, bool) {
        let mac = self.proof(secret, Role::Dialler);
        let mut all = vec![(0, Message::HelloProof { mac })];
        all.extend_from_slice(frames);
        self.stream.write_all(&encode(&all)).await.expect("written");
        read_frames(&mut self.stream, &mut self.decoder).await
    }

    /// Sends this side's proof made with `secret`: the handshake is complete if the secret
    /// is the node's.
    pub async fn prove(mut self, secret: &[u8]) -> Result<SecretDialler, String> {
        let mac = self.proof(secret, Role::Dialler);
        self.stream
            .write_all(&encode(&[(0, Message::HelloProof { mac })]))
            .await
            .map_err(|error| error.to_string())?;
        Ok(SecretDialler { stream: self.stream, decoder: self.decoder })
    }
}

/// A raw connection that completed the cluster secret's handshake as the dialler, under a
/// node id of the test's choosing: what a process that holds the secret (and nothing else)
/// can do.
pub struct SecretDialler {
    /// The connection, authenticated.
    pub stream: TcpStream,
    decoder: FrameDecoder,
}

impl SecretDialler {
    /// Dials `addr` and completes the handshake as `node_id` of `cluster` with `secret`;
    /// fails if the node does not answer with its hello and a good proof.
    pub async fn connect(
        addr: SocketAddr,
        cluster: &str,
        node_id: &str,
        secret: &[u8],
    ) -> Result<SecretDialler, String> {
        let half = HalfHandshake::open(addr, cluster, node_id).await?;
        if !half.node_proved(secret) {
            return Err(format!("the node's proof does not check out: {:?}", half.acceptor_proof));
        }
        half.prove(secret).await
    }

    /// Sends `frames` and returns what the node answers until it closes or goes [`QUIET`],
    /// and whether it closed.
    pub async fn exchange(&mut self, frames: &[(u64, Message)]) -> (Vec<(u64, Message)>, bool) {
        self.stream.write_all(&encode(frames)).await.expect("written");
        read_frames(&mut self.stream, &mut self.decoder).await
    }

    /// Sends raw `bytes` and waits up to `limit` for the node to close the connection
    /// ([`watch_close`]).
    pub async fn send_raw(mut self, bytes: &[u8], limit: Duration) -> Watched {
        let started = std::time::Instant::now();
        let _ = self.stream.write_all(bytes).await;
        watch_close(&mut self.stream, started, limit).await
    }
}

/// What a misbehaving connection saw of the node.
#[derive(Debug)]
pub struct Watched {
    /// The frames the node sent (those that decoded).
    pub frames: Vec<Message>,
    /// How long after the misbehaviour began the node closed the connection (EOF or a
    /// reset), if within the limit.
    pub closed_after: Option<Duration>,
}

impl Watched {
    /// The codes of the error frames the node sent.
    #[must_use]
    pub fn error_codes(&self) -> Vec<herdcache_proto::ErrorCode> {
        self.frames
            .iter()
            .filter_map(|frame| match frame {
                Message::Error(error) => Some(error.code),
                _ => None,
            })
            .collect()
    }
}

/// Connects to `addr`, sends raw `bytes`, and waits up to `limit` for the node to close the
/// connection.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Watched {
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let _ = stream.write_all(bytes).await;
    watch_close(&mut stream, started, limit).await
}

/// Reads `stream` until the node closes it or `limit` after `started`; a write that the node
/// refused (a reset) counts as closed.
pub async fn watch_close(
    stream: &mut TcpStream,
    started: std::time::Instant,
    limit: Duration,
) -> Watched {
    let mut decoder = FrameDecoder::new(WireLimits::default());
    let mut frames = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut decodable = true;
    let closed_after = loop {
        let left = limit.saturating_sub(started.elapsed());
        let read = async { Some(stream.read(&mut buffer).await) };
        let give_up = async {
            Timer::after(left).await;
            None
        };
        match read.or(give_up).await {
            None => break None,
            Some(Ok(0) | Err(_)) => break Some(started.elapsed()),
            Some(Ok(n)) => {
                decodable = decodable && decoder.push(&buffer[..n]).is_ok();
                while decodable {
                    match decoder.next_frame() {
                        Ok(Some((_, message))) => frames.push(message),
                        Ok(None) => break,
                        Err(_) => decodable = false,
                    }
                }
            }
        }
    };
    Watched { frames, closed_after }
}
