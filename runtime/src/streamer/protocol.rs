//! CRIU's image-streamer socket protocol (criu/img-streamer.c), as CRIU speaks it with
//! `--stream`:
//!
//! - CRIU connects to `<images-dir>/streamer-capture.sock` (dump) or
//!   `streamer-serve.sock` (restore), a SOCK_STREAM unix socket.
//! - For every image file it opens, CRIU sends a request: a little-endian u32 length and
//!   an `img_streamer_request_entry { required string filename = 1 }`.
//! - Restore only: the streamer answers with the same framing and an
//!   `img_streamer_reply_entry { required bool exists = 1 }`; CRIU stops there if false.
//! - Then one end of a fresh pipe arrives with SCM_RIGHTS on a single dummy byte: the
//!   read end on dump (CRIU writes the image into it), the write end on restore.
//! - CRIU closes the socket when it will open no more files.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use prost::Message;

/// Requests larger than this are not CRIU's (file names are short).
const MAX_MESSAGE: u32 = 64 * 1024;

/// `img_streamer_request_entry`.
#[derive(Clone, PartialEq, Message)]
pub struct RequestEntry {
    /// Image file name, e.g. `pages-1.img`.
    #[prost(string, required, tag = "1")]
    pub filename: String,
}

/// `img_streamer_reply_entry`.
#[derive(Clone, PartialEq, Message)]
pub struct ReplyEntry {
    /// Whether the requested file exists.
    #[prost(bool, required, tag = "1")]
    pub exists: bool,
}

/// Reads the next request; `Ok(None)` when CRIU closed the connection.
pub fn read_request(sock: &mut UnixStream) -> io::Result<Option<String>> {
    let mut len = [0u8; 4];
    match sock.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("request of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    sock.read_exact(&mut buf)?;
    let req = RequestEntry::decode(buf.as_slice())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some(req.filename))
}

/// Answers whether a requested file exists (restore only).
pub fn write_reply(sock: &mut UnixStream, exists: bool) -> io::Result<()> {
    let body = ReplyEntry { exists }.encode_to_vec();
    let mut msg = (body.len() as u32).to_le_bytes().to_vec();
    msg.extend_from_slice(&body);
    sock.write_all(&msg)
}

/// Receives the pipe end CRIU passes after a request.
pub fn recv_pipe(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "CRIU sent no pipe with its request",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_framing() {
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        let body = RequestEntry {
            filename: "pages-1.img".into(),
        }
        .encode_to_vec();
        let mut msg = (body.len() as u32).to_le_bytes().to_vec();
        msg.extend_from_slice(&body);
        a.write_all(&msg).expect("write");
        assert_eq!(
            read_request(&mut b).expect("read").as_deref(),
            Some("pages-1.img")
        );
        write_reply(&mut b, true).expect("reply");
        let mut len = [0u8; 4];
        a.read_exact(&mut len).expect("len");
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        a.read_exact(&mut body).expect("body");
        assert!(ReplyEntry::decode(body.as_slice()).expect("decode").exists);
        drop(a);
        assert_eq!(read_request(&mut b).expect("eof"), None);
    }

    #[test]
    fn pipe_end_passes_with_scm_rights() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        let (a, b) = UnixStream::pair().expect("pair");
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let fds = [r.as_raw_fd()];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[io::IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("send");
        drop(r);
        let got = recv_pipe(&b).expect("recv");
        let mut w = std::fs::File::from(w);
        w.write_all(b"hello").expect("write");
        drop(w);
        let mut s = String::new();
        std::fs::File::from(got)
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "hello");
    }
}
