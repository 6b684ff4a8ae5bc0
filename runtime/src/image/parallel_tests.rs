//! Tests of the parallel gzip/lz4 packing.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Deterministic bytes: runs of a repeated byte and pseudo-random stretches.
fn mixed(len: usize) -> Vec<u8> {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if seed.is_multiple_of(3) {
            v.extend(std::iter::repeat_n(seed as u8, (seed % 5000) as usize));
        } else {
            v.extend((0..(seed % 3000)).map(|i| (seed >> (i % 57)) as u8 ^ i as u8));
        }
    }
    v.truncate(len);
    v
}

/// Writes `data` through `w` in uneven pieces and returns what `w` wrote.
fn write_all_uneven(mut w: ParallelWriter<Vec<u8>>, data: &[u8]) -> Vec<u8> {
    let mut at = 0;
    let mut step = 1;
    while at < data.len() {
        let end = (at + step).min(data.len());
        w.write_all(&data[at..end]).expect("write");
        at = end;
        step = step * 7 % 100_003 + 1;
    }
    w.flush().expect("flush");
    w.finish().expect("finish")
}

fn identity(delay: bool) -> Compressor {
    Arc::new(move |data: &[u8], mut out: Vec<u8>| {
        if delay {
            // Later blocks finish first, so the writer must reorder.
            let first = data.first().copied().unwrap_or(0);
            thread::sleep(Duration::from_millis(u64::from(first % 4)));
        }
        out.extend_from_slice(data);
        Ok(out)
    })
}

#[test]
fn blocks_come_out_in_order() {
    let data = mixed(3 << 20);
    for threads in [2, 3, 8] {
        let w = ParallelWriter::with_compressor(
            Vec::new(),
            Path::new("out"),
            4096,
            threads,
            identity(true),
        )
        .expect("start");
        assert_eq!(write_all_uneven(w, &data), data, "{threads} threads");
    }
}

#[test]
fn gzip_and_lz4_blocks_decode_as_one_stream() {
    let data = mixed(5 << 20);
    let lz4 = lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max64KB)
        .content_checksum(true);
    for format in [
        BlockFormat::Gzip(flate2::Compression::fast()),
        BlockFormat::Lz4(lz4),
    ] {
        let w = ParallelWriter::new(Vec::new(), Path::new("out"), format.clone()).expect("start");
        let packed = write_all_uneven(w, &data);
        let mut back = Vec::new();
        match format {
            BlockFormat::Gzip(_) => {
                flate2::bufread::MultiGzDecoder::new(packed.as_slice())
                    .read_to_end(&mut back)
                    .expect("gunzip");
            }
            BlockFormat::Lz4(_) => {
                Lz4Frames::new(packed.as_slice())
                    .read_to_end(&mut back)
                    .expect("unlz4");
            }
        }
        assert!(back == data, "{format:?}: round trip differs");
    }
}

#[test]
fn empty_stream_is_one_valid_member_or_frame() {
    let lz4 = lz4_flex::frame::FrameInfo::new().content_checksum(true);
    let gz = ParallelWriter::new(
        Vec::new(),
        Path::new("out"),
        BlockFormat::Gzip(flate2::Compression::fast()),
    )
    .expect("start")
    .finish()
    .expect("finish");
    let mut back = Vec::new();
    flate2::bufread::MultiGzDecoder::new(gz.as_slice())
        .read_to_end(&mut back)
        .expect("gunzip");
    assert!(back.is_empty() && !gz.is_empty());
    let lz = ParallelWriter::new(Vec::new(), Path::new("out"), BlockFormat::Lz4(lz4))
        .expect("start")
        .finish()
        .expect("finish");
    Lz4Frames::new(lz.as_slice())
        .read_to_end(&mut back)
        .expect("unlz4");
    assert!(back.is_empty() && !lz.is_empty());
}

#[test]
fn worker_error_and_panic_surface_from_finish() {
    let failing: Compressor = Arc::new(|data: &[u8], out: Vec<u8>| {
        if data.first() == Some(&3) {
            Err(io::Error::other("disk on fire"))
        } else {
            Ok(out)
        }
    });
    let panicking: Compressor = Arc::new(|data: &[u8], out: Vec<u8>| {
        assert!(data.first() != Some(&3), "block three is cursed");
        Ok(out)
    });
    for (compressor, expect) in [(failing, "disk on fire"), (panicking, "cursed")] {
        let mut w = ParallelWriter::with_compressor(
            Vec::new(),
            Path::new("/x/out.tar.gz"),
            1024,
            2,
            compressor,
        )
        .expect("start");
        // Blocks 0..9, each filled with its number; writes may fail once block 3 has.
        let mut write_err = None;
        for i in 0..10u8 {
            if let Err(e) = w.write_all(&[i; 1024]) {
                write_err = Some(e.to_string());
                break;
            }
        }
        let err = w.finish().expect_err("a block failed").to_string();
        assert!(err.contains("/x/out.tar.gz"), "{err}");
        let seen = write_err.unwrap_or_default() + &err;
        assert!(seen.contains(expect), "{seen}");
    }
}

#[test]
fn inner_write_error_surfaces() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("no space left"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut w = ParallelWriter::with_compressor(Full, Path::new("out"), 64, 2, identity(false))
        .expect("start");
    let _ = w.write_all(&[1; 1000]);
    let err = w.finish().err().expect("write error").to_string();
    assert!(err.contains("no space left"), "{err}");
}

#[test]
fn in_flight_blocks_are_bounded() {
    let gate = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let (g, s) = (Arc::clone(&gate), Arc::clone(&started));
    let blocked: Compressor = Arc::new(move |data: &[u8], mut out: Vec<u8>| {
        s.fetch_add(1, Ordering::SeqCst);
        while !g.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        out.extend_from_slice(data);
        Ok(out)
    });
    let threads = 3;
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = Arc::clone(&accepted);
    let producer = thread::spawn(move || {
        let mut w =
            ParallelWriter::with_compressor(Vec::new(), Path::new("out"), 100, threads, blocked)
                .expect("start");
        for i in 0..50u8 {
            w.write_all(&[i; 100]).expect("write");
            acc.fetch_add(1, Ordering::SeqCst);
        }
        w.finish().expect("finish")
    });
    thread::sleep(Duration::from_millis(300));
    let (acc_now, started_now) = (
        accepted.load(Ordering::SeqCst),
        started.load(Ordering::SeqCst),
    );
    gate.store(true, Ordering::SeqCst);
    let out = producer.join().expect("producer");
    assert!(
        acc_now <= 2 * threads,
        "{acc_now} blocks accepted while none could finish"
    );
    assert!(
        started_now <= threads,
        "{started_now} blocks compressing at once"
    );
    let expect: Vec<u8> = (0..50u8).flat_map(|i| [i; 100]).collect();
    assert_eq!(out, expect);
}

#[test]
fn lz4_frames_reader_reads_frames_of_any_block_size() {
    // Auto block size: 4 MiB blocks for a 1 MiB write, 64 KiB for a small one.
    let pieces = [mixed(1 << 20), b"small".to_vec(), mixed(300_000)];
    let mut packed = Vec::new();
    for p in &pieces {
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(p).expect("write");
        packed.extend(enc.finish().expect("finish"));
    }
    let mut back = Vec::new();
    Lz4Frames::new(packed.as_slice())
        .read_to_end(&mut back)
        .expect("unlz4");
    assert!(back == pieces.concat());
}

#[test]
fn lz4_frames_reader_refuses_garbage_after_a_frame() {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(b"hello").expect("write");
    let mut data = enc.finish().expect("finish");
    data.extend_from_slice(b"not a frame");
    let mut back = Vec::new();
    assert!(Lz4Frames::new(data.as_slice())
        .read_to_end(&mut back)
        .is_err());
}
