//! The wire format between the host and `cedana-guest-agent`, on one byte stream:
//!
//! ```text
//! frame   = kind:u8  len:u32(BE)  payload[len]
//! HEADER  (1) a JSON message (`messages.rs`)
//! CHUNK   (2) sha256(data):32  data   (at most CHUNK_BYTES of one file's bytes)
//! END     (3) JSON {size, sha256}: the whole stream's length and digest
//! ERROR   (4) JSON {kind, message}: the operation failed; nothing follows
//! ```
//! A checkpoint file (a shard, the stream index, metadata.json, or a range of a shard
//! during a restore) crosses as CHUNKs, each checked on arrival, then END, checked
//! against everything received: the receiver never holds more than one chunk in memory,
//! and a cut or damaged stream is refused before anything is kept.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{GuestError, RemoteKind};
pub use super::messages::*;

/// Largest chunk of checkpoint data in one frame: 1 MiB keeps both ends' buffers small
/// while the per-frame overhead (37 bytes) stays negligible.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Largest JSON frame accepted (a health report or listing is a few KiB).
const MAX_JSON_BYTES: u32 = 4 << 20;
const SHA_BYTES: usize = 32;

const HEADER: u8 = 1;
const CHUNK: u8 = 2;
const END: u8 = 3;
const ERROR: u8 = 4;

/// The trailer of a checkpoint stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamEnd {
    size: u64,
    sha256: String,
}

/// An error sent in place of a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemoteError {
    kind: RemoteKind,
    message: String,
}

fn write_frame<W: Write + ?Sized>(w: &mut W, kind: u8, parts: &[&[u8]]) -> Result<(), GuestError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(|_| GuestError::Protocol("frame too large".into()))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_be_bytes());
    let mut send = || -> io::Result<()> {
        w.write_all(&head)?;
        for p in parts {
            w.write_all(p)?;
        }
        w.flush()
    };
    send().map_err(|e| GuestError::link("sending", e))
}

/// Reads one frame's kind and payload, refusing payloads over `max` bytes.
fn read_frame<R: Read + ?Sized>(r: &mut R, max: u32) -> Result<(u8, Vec<u8>), GuestError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head)
        .map_err(|e| GuestError::link("receiving", e))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > max {
        return Err(GuestError::Protocol(format!(
            "frame of kind {} announces {len} bytes, more than the {max} allowed",
            head[0]
        )));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(|e| GuestError::link("receiving", e))?;
    Ok((head[0], payload))
}

/// Sends a JSON message.
pub fn send_msg<T: Serialize, W: Write + ?Sized>(w: &mut W, msg: &T) -> Result<(), GuestError> {
    let json = serde_json::to_vec(msg).map_err(|e| GuestError::Protocol(e.to_string()))?;
    write_frame(w, HEADER, &[&json])
}

/// Sends `err` as the reply: the peer turns it back into [`GuestError::Remote`].
pub fn send_error<W: Write + ?Sized>(w: &mut W, err: &GuestError) -> Result<(), GuestError> {
    let msg = RemoteError {
        kind: err.remote_kind(),
        message: err.to_string(),
    };
    let json = serde_json::to_vec(&msg).map_err(|e| GuestError::Protocol(e.to_string()))?;
    write_frame(w, ERROR, &[&json])
}

/// Receives a JSON message (an ERROR frame becomes [`GuestError::Remote`]).
pub fn recv_msg<T: DeserializeOwned, R: Read + ?Sized>(r: &mut R) -> Result<T, GuestError> {
    let (kind, payload) = read_frame(r, MAX_JSON_BYTES)?;
    match kind {
        HEADER => serde_json::from_slice(&payload)
            .map_err(|e| GuestError::Protocol(format!("bad message: {e}"))),
        ERROR => {
            let e: RemoteError = serde_json::from_slice(&payload)
                .map_err(|e| GuestError::Protocol(format!("bad error message: {e}")))?;
            Err(GuestError::Remote {
                kind: e.kind,
                message: e.message,
            })
        }
        k => Err(GuestError::Protocol(format!(
            "expected a message, got a frame of kind {k}"
        ))),
    }
}

/// One stream being sent piece by piece (a shard while CRIU writes it): CHUNKs of at
/// most `CHUNK_BYTES`, then END with the size and digest of everything sent.
#[derive(Default)]
pub struct StreamSender {
    whole: Sha256,
    size: u64,
}

impl StreamSender {
    /// Sends `data` as one or more CHUNKs.
    pub fn send<W: Write + ?Sized>(&mut self, w: &mut W, data: &[u8]) -> Result<(), GuestError> {
        for piece in data.chunks(CHUNK_BYTES) {
            self.whole.update(piece);
            let sum = Sha256::digest(piece);
            write_frame(w, CHUNK, &[&sum, piece])?;
            self.size += piece.len() as u64;
        }
        Ok(())
    }

    /// Sends END; returns the bytes sent.
    pub fn finish<W: Write + ?Sized>(self, w: &mut W) -> Result<u64, GuestError> {
        let end = StreamEnd {
            size: self.size,
            sha256: hex::encode(self.whole.finalize()),
        };
        let json = serde_json::to_vec(&end).map_err(|e| GuestError::Protocol(e.to_string()))?;
        write_frame(w, END, &[&json])?;
        Ok(self.size)
    }
}

/// Sends `data` as one CHUNK whose sha256 does not match it, then END as if it had been
/// whole: fault injection, for the tests of what a receiver does with a damaged stream.
pub fn send_damaged<W: Write + ?Sized>(w: &mut W, data: &[u8]) -> Result<(), GuestError> {
    let sum = Sha256::digest(data);
    let mut bad = data[..data.len().min(CHUNK_BYTES)].to_vec();
    if let Some(b) = bad.first_mut() {
        *b ^= 0x55;
    }
    write_frame(w, CHUNK, &[&sum, &bad])?;
    let end = StreamEnd {
        size: bad.len() as u64,
        sha256: hex::encode(sum),
    };
    let json = serde_json::to_vec(&end).map_err(|e| GuestError::Protocol(e.to_string()))?;
    write_frame(w, END, &[&json])
}

/// Streams everything `src` yields as CHUNKs, then END; returns the bytes sent.
pub fn send_stream<W: Write + ?Sized>(w: &mut W, src: &mut impl Read) -> Result<u64, GuestError> {
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut sender = StreamSender::default();
    loop {
        let n =
            read_full(src, &mut buf).map_err(|e| GuestError::link("reading the checkpoint", e))?;
        if n == 0 {
            break;
        }
        sender.send(w, &buf[..n])?;
    }
    sender.finish(w)
}

/// Fills `buf` as far as `src` allows (short only at its end).
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Receives a stream into `out`, checking each chunk, the total against `expected` bytes
/// when known (more is refused as it arrives) and the final digest; returns the bytes
/// written.
pub fn recv_stream<R: Read + ?Sized>(
    r: &mut R,
    out: &mut (impl Write + ?Sized),
    expected: Option<u64>,
) -> Result<u64, GuestError> {
    let limit = expected.unwrap_or(u64::MAX);
    let mut whole = Sha256::new();
    let mut size = 0u64;
    loop {
        let (kind, payload) = match read_frame(r, (CHUNK_BYTES + SHA_BYTES) as u32) {
            Ok(f) => f,
            Err(GuestError::Link { source, .. })
                if source.kind() == io::ErrorKind::UnexpectedEof
                    || source.kind() == io::ErrorKind::ConnectionReset =>
            {
                return Err(GuestError::Truncated { received: size });
            }
            Err(e) => return Err(e),
        };
        match kind {
            CHUNK => {
                if payload.len() < SHA_BYTES {
                    return Err(GuestError::Protocol("chunk shorter than its digest".into()));
                }
                let (sum, data) = payload.split_at(SHA_BYTES);
                if Sha256::digest(data).as_slice() != sum {
                    return Err(GuestError::CorruptChunk { offset: size });
                }
                size += data.len() as u64;
                if size > limit {
                    return Err(GuestError::CorruptStream {
                        detail: format!("more than the {limit} bytes announced"),
                    });
                }
                whole.update(data);
                out.write_all(data)
                    .map_err(|e| GuestError::link("writing the checkpoint", e))?;
            }
            END => {
                let end: StreamEnd = serde_json::from_slice(&payload)
                    .map_err(|e| GuestError::Protocol(format!("bad end marker: {e}")))?;
                let actual = hex::encode(whole.finalize());
                if end.size != size || expected.is_some_and(|e| e != size) {
                    return Err(GuestError::CorruptStream {
                        detail: format!(
                            "{size} bytes received, {} announced at the end, {limit} at the start",
                            end.size
                        ),
                    });
                }
                if end.sha256 != actual {
                    return Err(GuestError::CorruptStream {
                        detail: format!("sha256 {actual} received, {} sent", end.sha256),
                    });
                }
                return Ok(size);
            }
            ERROR => {
                let e: RemoteError = serde_json::from_slice(&payload)
                    .map_err(|e| GuestError::Protocol(format!("bad error message: {e}")))?;
                return Err(GuestError::Remote {
                    kind: e.kind,
                    message: e.message,
                });
            }
            k => {
                return Err(GuestError::Protocol(format!(
                    "expected checkpoint data, got a frame of kind {k}"
                )))
            }
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
