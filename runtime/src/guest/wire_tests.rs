//! The stream format: round trip, and every way a stream can be damaged is refused.

use std::io::Cursor;

use super::*;

fn stream_of(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    send_stream(&mut out, &mut Cursor::new(data)).expect("send");
    out
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn a_stream_of_several_chunks_arrives_whole() {
    let d = data(CHUNK_BYTES * 2 + 17);
    let wire = stream_of(&d);
    let mut got = Vec::new();
    let n = recv_stream(&mut Cursor::new(wire), &mut got, Some(d.len() as u64)).expect("recv");
    assert_eq!(n, d.len() as u64);
    assert_eq!(got, d);
}

#[test]
fn a_cut_stream_is_truncated() {
    let d = data(CHUNK_BYTES + 5);
    let wire = stream_of(&d);
    let cut = &wire[..wire.len() / 2];
    let err =
        recv_stream(&mut Cursor::new(cut), &mut Vec::new(), Some(d.len() as u64)).unwrap_err();
    assert!(matches!(err, GuestError::Truncated { .. }), "{err}");
}

#[test]
fn a_flipped_byte_is_a_corrupt_chunk() {
    let d = data(4096);
    let mut wire = stream_of(&d);
    wire[5 + 32 + 100] ^= 0xff;
    let err = recv_stream(
        &mut Cursor::new(wire),
        &mut Vec::new(),
        Some(d.len() as u64),
    )
    .unwrap_err();
    assert!(
        matches!(err, GuestError::CorruptChunk { offset: 0 }),
        "{err}"
    );
}

#[test]
fn a_size_other_than_announced_is_refused() {
    let d = data(4096);
    let wire = stream_of(&d);
    let err = recv_stream(&mut Cursor::new(wire.clone()), &mut Vec::new(), Some(4000)).unwrap_err();
    assert!(matches!(err, GuestError::CorruptStream { .. }), "{err}");
    let err = recv_stream(&mut Cursor::new(wire), &mut Vec::new(), Some(5000)).unwrap_err();
    assert!(matches!(err, GuestError::CorruptStream { .. }), "{err}");
}

#[test]
fn an_error_frame_becomes_the_agents_error() {
    let mut wire = Vec::new();
    let e = GuestError::Invalid("no such thing".into());
    send_error(&mut wire, &e).expect("send");
    let err = recv_msg::<Ack, _>(&mut Cursor::new(wire)).unwrap_err();
    match err {
        GuestError::Remote { kind, message } => {
            assert_eq!(kind, RemoteKind::InvalidArgument);
            assert_eq!(message, "no such thing");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn an_oversized_frame_is_refused_before_it_is_read() {
    let mut wire = vec![HEADER];
    wire.extend_from_slice(&u32::MAX.to_be_bytes());
    let err = recv_msg::<Ack, _>(&mut Cursor::new(wire)).unwrap_err();
    assert!(matches!(err, GuestError::Protocol(_)), "{err}");
}
