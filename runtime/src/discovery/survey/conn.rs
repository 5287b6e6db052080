//! One SP/TCP connection on tokio: the handshake, then framed messages.

use alloc::string::String;
use core::time::Duration;
use std::io;

use bytes::Bytes;
use herdcache_proto::sp::{SpDecoder, SpLimits, SpProtocol, encode_handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection whose handshake completed both ways.
pub(super) struct SpConnection {
    stream: TcpStream,
    decoder: SpDecoder,
    read_buffer: alloc::boxed::Box<[u8]>,
}

/// Why a connection ended or could not start.
pub(super) fn protocol_error(error: herdcache_proto::sp::SpError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl SpConnection {
    /// Sends our handshake and reads the peer's, within `timeout`.
    pub(super) async fn open(
        stream: TcpStream,
        ours: SpProtocol,
        limits: SpLimits,
        timeout: Duration,
    ) -> io::Result<SpConnection> {
        let _ = stream.set_nodelay(true);
        let mut connection = SpConnection {
            stream,
            decoder: SpDecoder::new(ours, limits),
            read_buffer: alloc::vec![0u8; 4096].into_boxed_slice(),
        };
        let handshake = async {
            connection.stream.write_all(&encode_handshake(ours)).await?;
            // Messages may follow the handshake in the same read: they stay buffered.
            while connection.decoder.peer().is_none() {
                connection.read_once().await?;
            }
            Ok::<(), io::Error>(())
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no SP handshake in time"));
            }
        }
        Ok(connection)
    }

    /// Reads once and feeds the decoder (which consumes the peer's handshake when complete).
    async fn read_once(&mut self) -> io::Result<()> {
        let read = self.stream.read(&mut self.read_buffer).await?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed"));
        }
        self.decoder.push(&self.read_buffer[..read]).map_err(protocol_error)?;
        Ok(())
    }

    /// The next message; an error when the peer closed or broke the protocol. Cancel-safe:
    /// its only await is a read, whose bytes are fed to the decoder before anything else.
    pub(super) async fn recv(&mut self) -> io::Result<Bytes> {
        loop {
            // Drained to `None` before every read, so a push never finds the decoder full.
            if let Some(message) = self.decoder.next_message().map_err(protocol_error)? {
                return Ok(message);
            }
            self.read_once().await?;
        }
    }

    /// Writes one framed message, within `timeout`.
    pub(super) async fn send(&mut self, framed: &[u8], timeout: Duration) -> io::Result<()> {
        match tokio::time::timeout(timeout, self.stream.write_all(framed)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the peer does not read")),
        }
    }
}

/// `host:port` of a `tcp://host:port` address, or the address as given without a scheme.
pub(super) fn strip_tcp_scheme(address: &str) -> String {
    String::from(address.strip_prefix("tcp://").unwrap_or(address))
}
