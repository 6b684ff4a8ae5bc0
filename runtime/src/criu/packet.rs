//! CRIU's swrk framing, both ways: one protobuf message per SOCK_SEQPACKET datagram, no
//! length prefix. Used by our swrk client and by the stream relay's server side.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags};
use prost::Message;

/// Why a datagram could not be sent or received.
#[derive(Debug)]
pub(crate) enum PacketError {
    /// The peer closed its end.
    HungUp,
    /// A datagram did not fit (`what`: what was short, with sizes).
    Garbled(String),
    /// Any other socket error.
    Io(std::io::Error),
}

/// Sends `msg` as one datagram.
pub(crate) fn send(fd: BorrowedFd<'_>, msg: &impl Message) -> Result<(), PacketError> {
    let bytes = msg.encode_to_vec();
    loop {
        match socket::send(fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => {
                return Err(PacketError::Garbled(format!(
                    "short send: {n} of {} bytes",
                    bytes.len()
                )))
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Err(PacketError::HungUp),
            Err(e) => return Err(PacketError::Io(e.into())),
        }
    }
}

/// Receives one datagram into `buf` (left queued with `peek`); `None` when the peer
/// closed its end.
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    peek: bool,
) -> Result<Option<usize>, PacketError> {
    let mut flags = MsgFlags::MSG_TRUNC;
    if peek {
        flags |= MsgFlags::MSG_PEEK;
    }
    loop {
        match socket::recv(fd.as_raw_fd(), buf, flags) {
            Ok(0) => return Ok(None),
            Ok(n) if n > buf.len() => {
                return Err(PacketError::Garbled(format!(
                    "a message of {n} bytes exceeds the {} byte buffer",
                    buf.len()
                )))
            }
            Ok(n) => return Ok(Some(n)),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET) => return Ok(None),
            Err(e) => return Err(PacketError::Io(e.into())),
        }
    }
}
