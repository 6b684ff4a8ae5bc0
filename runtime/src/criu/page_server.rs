//! The serving side of CRIU's page-server protocol, as `criu lazy-pages --page-server`
//! speaks it: lazy-pages asks for `nr_pages` pages of a task at an address (`GET`), and
//! the server answers with a header naming how many it sends (possibly fewer: lazy-pages
//! asks again for the rest), then the bytes; `CLOSE` ends the session with a status word.
//!
//! The socket is one end of a socketpair handed to lazy-pages as `--ps-socket FD`, so no
//! address is ever listened on: nobody but that lazy-pages can ask for the pages.
//! Where the pages come from is a [`PageSource`] (a streamed checkpoint's shards, read and
//! checked chunk by chunk as they are asked for).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use super::pagemap::{PAGE_SIZE, PE_PRESENT};

/// lazy-pages asks for pages.
const PS_IOV_GET: u32 = 7;
/// Pages follow, with flags in the high bits (the answer to a GET).
const PS_IOV_ADD_F: u32 = 6;
/// End of the session; the server answers with a status word.
const PS_IOV_CLOSE: u32 = 0x1023;
/// The same, from a client on an inherited socket (`--ps-socket`, what lazy-pages sends).
const PS_IOV_FORCE_CLOSE: u32 = 0x1024;
/// Bits of a command word that hold the command (the rest: flags).
const PS_CMD_MASK: u32 = 0xffff;
/// Size of the header both sides send: cmd, nr_pages (u32), vaddr, dst_id (u64).
const HEADER: usize = 24;
/// Most pages one request may ask for (lazy-pages asks for at most 4 MiB at a time).
const MAX_REQUEST_PAGES: u32 = 16 << 20 >> 12;

/// Where the served pages come from.
pub trait PageSource: Send {
    /// Appends to `out` up to `nr_pages` pages of task `pid` from `vaddr` (all from one
    /// range of its pagemap) and returns how many; 0 when the checkpoint has none there.
    fn pages(&mut self, pid: u32, vaddr: u64, nr_pages: u32, out: &mut Vec<u8>) -> io::Result<u32>;
}

/// What one session served.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Requests answered.
    pub requests: u64,
    /// Pages sent.
    pub pages: u64,
}

struct Header {
    cmd: u32,
    nr_pages: u32,
    vaddr: u64,
    dst_id: u64,
}

impl Header {
    fn parse(b: &[u8; HEADER]) -> Header {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        Header {
            cmd: u32_at(0),
            nr_pages: u32_at(4),
            vaddr: u64_at(8),
            dst_id: u64_at(16),
        }
    }

    fn bytes(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..4].copy_from_slice(&self.cmd.to_le_bytes());
        b[4..8].copy_from_slice(&self.nr_pages.to_le_bytes());
        b[8..16].copy_from_slice(&self.vaddr.to_le_bytes());
        b[16..24].copy_from_slice(&self.dst_id.to_le_bytes());
        b
    }
}

/// Reads a header; `None` when the client closed the socket between requests.
fn read_header(sock: &mut UnixStream) -> io::Result<Option<Header>> {
    let mut b = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match sock.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Header::parse(&b)))
}

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Answers lazy-pages on `sock` from `source` until it closes the session.
pub fn serve(mut sock: UnixStream, source: &mut dyn PageSource) -> io::Result<Served> {
    let mut served = Served::default();
    let mut buf = Vec::new();
    while let Some(h) = read_header(&mut sock)? {
        match h.cmd & PS_CMD_MASK {
            PS_IOV_GET => {}
            PS_IOV_CLOSE | PS_IOV_FORCE_CLOSE => {
                sock.write_all(&0i32.to_le_bytes())?;
                return Ok(served);
            }
            other => {
                return Err(protocol(format!(
                    "unexpected page-server command {other:#x}"
                )))
            }
        }
        if h.nr_pages == 0 || h.nr_pages > MAX_REQUEST_PAGES || !h.vaddr.is_multiple_of(PAGE_SIZE) {
            return Err(protocol(format!(
                "a request for {} pages at {:#x}",
                h.nr_pages, h.vaddr
            )));
        }
        let pid = u32::try_from(h.dst_id)
            .map_err(|_| protocol(format!("a request for task {}", h.dst_id)))?;
        buf.clear();
        let n = source.pages(pid, h.vaddr, h.nr_pages, &mut buf)?;
        if n == 0 || n > h.nr_pages || buf.len() as u64 != u64::from(n) * PAGE_SIZE {
            return Err(protocol(format!(
                "the checkpoint holds no pages of task {pid} at {:#x}",
                h.vaddr
            )));
        }
        let answer = Header {
            cmd: (PE_PRESENT << 16) | PS_IOV_ADD_F,
            nr_pages: n,
            ..h
        };
        sock.write_all(&answer.bytes())?;
        sock.write_all(&buf)?;
        served.requests += 1;
        served.pages += u64::from(n);
    }
    Ok(served)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages whose every byte is the low byte of their page number; task 42 only, at
    /// most 3 pages per answer.
    struct Numbered;

    impl PageSource for Numbered {
        fn pages(&mut self, pid: u32, vaddr: u64, nr: u32, out: &mut Vec<u8>) -> io::Result<u32> {
            if pid != 42 {
                return Ok(0);
            }
            let n = nr.min(3);
            for p in 0..u64::from(n) {
                let page = vaddr / PAGE_SIZE + p;
                out.extend(std::iter::repeat_n(page as u8, PAGE_SIZE as usize));
            }
            Ok(n)
        }
    }

    fn request(cmd: u32, nr_pages: u32, vaddr: u64, dst_id: u64) -> [u8; HEADER] {
        Header {
            cmd,
            nr_pages,
            vaddr,
            dst_id,
        }
        .bytes()
    }

    /// A server of `Numbered` on a thread, and the client's end.
    fn session() -> (UnixStream, std::thread::JoinHandle<io::Result<Served>>) {
        let (client, server) = UnixStream::pair().unwrap();
        (
            client,
            std::thread::spawn(move || serve(server, &mut Numbered)),
        )
    }

    #[test]
    fn answers_gets_with_what_it_has_and_closes_with_a_status() {
        let (mut client, t) = session();
        client
            .write_all(&request(PS_IOV_GET, 5, 0x7000, 42))
            .unwrap();
        let mut h = [0u8; HEADER];
        client.read_exact(&mut h).unwrap();
        let h = Header::parse(&h);
        assert_eq!(
            (h.cmd & PS_CMD_MASK, h.cmd >> 16),
            (PS_IOV_ADD_F, PE_PRESENT)
        );
        assert_eq!((h.nr_pages, h.vaddr, h.dst_id), (3, 0x7000, 42));
        let mut pages = vec![0u8; 3 * PAGE_SIZE as usize];
        client.read_exact(&mut pages).unwrap();
        assert_eq!(pages[0], 7);
        assert_eq!(pages[2 * PAGE_SIZE as usize], 9);
        client
            .write_all(&request(PS_IOV_FORCE_CLOSE, 0, 0, 0))
            .unwrap();
        let mut status = [0u8; 4];
        client.read_exact(&mut status).unwrap();
        assert_eq!(i32::from_le_bytes(status), 0);
        let served = t.join().unwrap().unwrap();
        assert_eq!(
            served,
            Served {
                requests: 1,
                pages: 3
            }
        );
    }

    #[test]
    fn a_request_for_pages_it_lacks_ends_the_session_with_why() {
        let (mut client, t) = session();
        client
            .write_all(&request(PS_IOV_GET, 1, 0x1000, 7))
            .unwrap();
        let e = t.join().unwrap().unwrap_err();
        assert!(
            e.to_string().contains("no pages of task 7 at 0x1000"),
            "{e}"
        );
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "nothing was sent");
    }

    #[test]
    fn unknown_commands_and_absurd_requests_are_refused() {
        for req in [
            request(PS_IOV_ADD_F, 1, 0, 42),
            request(PS_IOV_GET, 0, 0x1000, 42),
            request(PS_IOV_GET, 1, 0x1001, 42),
            request(PS_IOV_GET, u32::MAX, 0x1000, 42),
        ] {
            let (mut client, t) = session();
            client.write_all(&req).unwrap();
            assert!(t.join().unwrap().is_err());
        }
    }

    #[test]
    fn a_client_gone_between_requests_ends_the_session_quietly() {
        let (client, server) = UnixStream::pair().unwrap();
        drop(client);
        assert_eq!(serve(server, &mut Numbered).unwrap(), Served::default());
    }
}
