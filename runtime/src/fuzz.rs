//! Property tests (proptest, stable Rust) of the checkpoint readers: archive extraction
//! (random bytes and hostile tar entries, in every compression), metadata.json, the
//! streamer's `streams.json`, and the relay's swrk request. Each property: no panic, a
//! typed error on bad input, and nothing written outside the destination.
//!
//! Case counts are set low enough that all of them together take well under a minute in
//! a debug build; `PROPTEST_CASES=N` overrides them all (e.g. for a longer local run).
//! Failures found by these properties are kept as plain regression tests below.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::criu::relay::translate::{self, Places};
use crate::criu::rpc;
use crate::image::archive::{self, Manifest, MANIFEST_FILE};
use crate::image::compression::Compression;
use crate::image::error::ImageError;
use crate::image::integrity;
use crate::image::metadata::METADATA_FILE;
use crate::streamer::index::{max_stored, StreamIndex, MAX_CHUNK_BYTES};

/// `default` cases, or `PROPTEST_CASES` when set.
fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

const FORMATS: [Compression; 4] = [
    Compression::Tar,
    Compression::Gzip,
    Compression::Lz4,
    Compression::Zstd,
];

/// `tar` compressed in format `c`.
fn compress(c: Compression, tar: &[u8]) -> Vec<u8> {
    match c {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(tar).expect("lz4");
            e.finish().expect("lz4")
        }
        Compression::Zstd => zstd::encode_all(tar, 1).expect("zstd"),
        Compression::None | Compression::Tar => tar.to_vec(),
    }
}

/// Every path below `root`, without following links.
fn all_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Unpacks `bytes` as a checkpoint archive into `tmp/a/b/dest` and checks the properties:
/// no panic (the caller's), nothing outside dest, no link inside, an empty dest on error.
fn unpack_and_check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("ck.archive");
    fs::write(&archive, bytes).expect("write");
    let dest = tmp.path().join("a/b/dest");
    fs::create_dir_all(&dest).expect("mkdir");
    let r = archive::unpack_checkpoint(&archive, &dest);
    let allowed = [
        archive.clone(),
        tmp.path().join("a"),
        tmp.path().join("a/b"),
    ];
    for p in all_paths(tmp.path()) {
        prop_assert!(
            allowed.contains(&p) || p.starts_with(&dest),
            "wrote outside the destination: {}",
            p.display()
        );
        let meta = fs::symlink_metadata(&p).expect("stat");
        prop_assert!(
            !meta.file_type().is_symlink(),
            "made a link: {}",
            p.display()
        );
    }
    prop_assert!(!Path::new("/abs_evil").exists(), "wrote /abs_evil");
    if let Err(e) = r {
        prop_assert!(!e.to_string().is_empty());
        if let ImageError::Io { path, .. } = &e {
            prop_assert!(path.starts_with(tmp.path()), "I/O outside: {e}");
        }
        prop_assert!(
            fs::read_dir(&dest).expect("ls").next().is_none(),
            "a failed unpack left files: {e}"
        );
    }
    Ok(())
}

/// One tar entry as a fuzzer builds it: any name, type byte, declared size and data.
#[derive(Debug, Clone)]
struct RawEntry {
    name: String,
    kind: u8,
    declared: u64,
    data_len: usize,
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let name = prop_oneof![
        Just("..".to_string()),
        Just("../evil".to_string()),
        Just("/abs_evil".to_string()),
        Just("a/../../evil".to_string()),
        Just("./pages-1.img".to_string()),
        Just("pages-1.img".to_string()),
        Just("sub".to_string()),
        Just("sub/core-1.img".to_string()),
        Just(MANIFEST_FILE.to_string()),
        Just(METADATA_FILE.to_string()),
        "[a-z./]{1,12}",
        "[a-z]{101,300}",
    ];
    let kind = prop::sample::select(vec![
        b'0', b'0', b'0', b'5', b'5', b'1', b'2', b'3', b'4', b'6', b'7', b'L', b'K', b'x', b'g',
        b'S', b'V',
    ]);
    let declared = prop_oneof![
        4 => 0u64..3000,
        1 => Just(2u64 << 30),
        1 => Just(1u64 << 60),
    ];
    (name, kind, declared, 0usize..3000).prop_map(|(name, kind, declared, data_len)| RawEntry {
        name,
        kind,
        declared,
        data_len,
    })
}

/// A raw GNU header; names longer than the header's field go in a GNU long name entry.
fn push_entry(tar: &mut Vec<u8>, e: &RawEntry) {
    let bytes = e.name.as_bytes();
    if bytes.len() > 100 {
        let mut long = bytes.to_vec();
        long.push(0);
        push_raw(tar, b"././@LongLink", b'L', long.len() as u64, &long);
    }
    let data = vec![0x5a; e.data_len];
    push_raw(
        tar,
        &bytes[..bytes.len().min(100)],
        e.kind,
        e.declared,
        &data,
    );
}

fn push_raw(tar: &mut Vec<u8>, name: &[u8], kind: u8, size: u64, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size);
    h.set_mode(0o600);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    if kind == b'2' || kind == b'1' {
        h.as_old_mut().linkname[..4].copy_from_slice(b"/etc");
    }
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
}

/// A manifest for `entries` as declared (regular files and directories only).
fn manifest_for(entries: &[RawEntry]) -> Vec<u8> {
    let m = Manifest {
        manifest_version: archive::MANIFEST_VERSION,
        entries: entries
            .iter()
            .map(|e| archive::ManifestEntry {
                path: e.name.trim_start_matches("./").to_string(),
                kind: if e.kind == b'5' {
                    archive::EntryType::Dir
                } else {
                    archive::EntryType::File
                },
                size: e.declared,
                size_is_limit: e.name == METADATA_FILE,
            })
            .collect(),
    };
    serde_json::to_vec(&m).expect("json")
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_archive_random_bytes(data in prop::collection::vec(any::<u8>(), 0..4096),
                                 c in prop::sample::select(FORMATS.to_vec()),
                                 as_is in any::<bool>()) {
        // As they are (mostly an unknown format), and as the payload of each codec.
        let bytes = if as_is { data } else { compress(c, &data) };
        unpack_and_check(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_archive_hostile_entries(entries in prop::collection::vec(raw_entry(), 0..6),
                                    manifest in 0u8..3,
                                    junk in prop::collection::vec(any::<u8>(), 0..200),
                                    end_marker in any::<bool>(),
                                    cut in any::<prop::sample::Index>(),
                                    truncate in any::<bool>(),
                                    c in prop::sample::select(FORMATS.to_vec())) {
        let mut tar = Vec::new();
        match manifest {
            1 => push_raw(&mut tar, MANIFEST_FILE.as_bytes(), b'0', 0, &[]),
            2 => {
                let m = manifest_for(&entries);
                push_raw(&mut tar, MANIFEST_FILE.as_bytes(), b'0', m.len() as u64, &m);
            }
            _ => {}
        }
        if manifest == 1 {
            // Replace the empty manifest by junk of the declared length.
            tar.clear();
            push_raw(&mut tar, MANIFEST_FILE.as_bytes(), b'0', junk.len() as u64, &junk);
        }
        for e in &entries {
            push_entry(&mut tar, e);
        }
        if end_marker {
            tar.extend_from_slice(&[0u8; 1024]);
        }
        if truncate && !tar.is_empty() {
            tar.truncate(cut.index(tar.len()));
        }
        unpack_and_check(&compress(c, &tar))?;
    }
}

/// A metadata.json-shaped JSON value with random replacements of real fields.
fn metadata_json() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "[a-z0-9./]{0,12}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_0-9.]{1,10}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let field = prop::sample::select(vec![
        "format_version",
        "kind",
        "name",
        "created_at",
        "host",
        "criu_version",
        "criu_opts",
        "process",
        "timings_ms",
        "sizes",
        "files",
        "container",
        "containerd",
    ]);
    prop::collection::vec((field, value), 0..5).prop_map(|changes| {
        let mut md =
            serde_json::to_value(crate::image::metadata::Metadata::default()).expect("json");
        for (k, v) in changes {
            md[k] = v;
        }
        serde_json::to_vec(&md).expect("json")
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_metadata_json(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        metadata_json(),
    ]) {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(METADATA_FILE), &bytes).expect("write");
        match integrity::read_metadata(tmp.path()) {
            Ok(_) => {}
            Err(ImageError::Metadata { .. } | ImageError::NewerFormat { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error type: {e:?}"),
        }
    }

    #[test]
    fn fuzz_stream_index(text in prop_oneof![
        ".{0,200}",
        stream_index_json(),
    ]) {
        if let Ok(idx) = StreamIndex::parse(&text) {
            // What the restore side relies on, for a parsed index.
            for f in &idx.files {
                let mut total = 0u64;
                for c in &f.chunks {
                    if let Some(s) = c.shard() {
                        prop_assert!((s as usize) < idx.shards.len());
                    }
                    prop_assert!(c.len() <= idx.chunk_bytes, "chunk longer than chunk_bytes");
                    if let crate::streamer::index::ChunkRef::Data { stored, .. } = c {
                        prop_assert!(*stored <= max_stored(idx.chunk_bytes));
                    }
                    total = total.checked_add(c.len()).expect("sum bounded by the checks");
                }
                prop_assert_eq!(total, f.size, "chunks do not add up to the file size");
            }
            prop_assert!(idx.chunk_bytes > 0 && idx.chunk_bytes <= MAX_CHUNK_BYTES);
        }
    }
}

/// A `streams.json` with random versions, numbers and names.
fn stream_index_json() -> impl Strategy<Value = String> {
    let num = prop_oneof![0u64..10, Just(4u64 << 20), any::<u64>()];
    let chunk = prop_oneof![
        num.clone()
            .prop_map(|len| format!(r#"{{"kind":"zero","len":{len}}}"#)),
        (0u32..3, num.clone(), num.clone(), num.clone()).prop_map(|(s, o, st, l)| format!(
            r#"{{"kind":"data","shard":{s},"offset":{o},"stored":{st},"len":{l}}}"#
        )),
        (0u32..3, num.clone(), num.clone()).prop_map(|(s, o, l)| format!(
            r#"{{"kind":"raw","shard":{s},"offset":{o},"len":{l},"xxh64":7}}"#
        )),
    ];
    let name = prop_oneof![Just("pages-1.img"), Just(".."), Just("a/b"), Just("")];
    (
        prop_oneof![Just(1u32), Just(2u32), any::<u32>()],
        num.clone(),
        prop::collection::vec((name, num, prop::collection::vec(chunk, 0..4)), 0..3),
    )
        .prop_map(|(v, cb, files)| {
            let files: Vec<String> = files
                .into_iter()
                .map(|(n, size, chunks)| {
                    format!(r#"{{"name":"{n}","size":{size},"chunks":[{}]}}"#, chunks.join(","))
                })
                .collect();
            format!(
                r#"{{"version":{v},"codec":"zstd","chunk_bytes":{cb},"shards":["shard-0.zst","shard-1.zst"],"files":[{}]}}"#,
                files.join(",")
            )
        })
}

/// What the relay does with a request before running anything: decode, refuse unknown
/// fields, translate to CRIU's command line.
fn relay_translate(bytes: &[u8]) -> Result<Vec<std::ffi::OsString>, String> {
    use prost::Message;
    let req = rpc::CriuReq::decode(bytes).map_err(|e| e.to_string())?;
    translate::check_known_fields(bytes).map_err(|e| e.to_string())?;
    let places = Places {
        images_dir: "/ck".into(),
        work_dir: "/w".into(),
        pid_file: "/w/pid".into(),
        action_script: Some("/bin/relay".into()),
    };
    let opts = req.opts.clone().unwrap_or_default();
    translate::cli_args(req.r#type(), &opts, &places).map_err(|e| e.to_string())
}

/// A protobuf field: key then a varint, fixed or length-delimited body.
fn field(tag: u32, wire: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut key = (u64::from(tag) << 3) | u64::from(wire & 7);
    loop {
        let b = (key & 0x7f) as u8;
        key >>= 7;
        out.push(if key == 0 { b } else { b | 0x80 });
        if key == 0 {
            break;
        }
    }
    if wire == 2 {
        out.push(body.len().min(127) as u8);
        out.extend_from_slice(&body[..body.len().min(127)]);
    } else {
        out.extend_from_slice(body);
    }
    out
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn fuzz_relay_request(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        // criu_req {type, opts {random known or unknown fields}}
        (0u8..4, prop::collection::vec(
            (prop_oneof![1u32..70, any::<u32>().prop_map(|t| t >> 3)], 0u8..6,
             prop::collection::vec(any::<u8>(), 0..24)), 0..12))
            .prop_map(|(ty, fields)| {
                let opts: Vec<u8> = fields.iter().flat_map(|(t, w, b)| field(*t, *w, b)).collect();
                let mut req = field(1, 0, &[ty]);
                req.extend(field(2, 2, &opts));
                req
            }),
    ]) {
        // Any outcome but a panic; errors are RelayError / DecodeError, rendered.
        if let Err(e) = relay_translate(&bytes) {
            prop_assert!(!e.is_empty());
        }
    }
}

// Regression tests: inputs the properties above found.

/// `streams.json` with a chunk size of 0, a chunk longer than the chunk size (the restore
/// side allocated a buffer of its length: 2^60 bytes aborted the process), a compressed
/// chunk larger than any compression of a chunk, and chunks that do not add up to the
/// file's size: all refused by the parser now (they were accepted).
#[test]
fn stream_index_sizes_are_checked() {
    let index = |cb: u64, size: u64, chunk: &str| {
        format!(
            r#"{{"version":2,"codec":"zstd","chunk_bytes":{cb},"shards":["shard-0.zst"],"files":[{{"name":"pages-1.img","size":{size},"chunks":[{chunk}]}}]}}"#
        )
    };
    let zero = |len: u64| format!(r#"{{"kind":"zero","len":{len}}}"#);
    assert!(StreamIndex::parse(&index(4 << 20, 8, &zero(8))).is_ok());
    for (text, what) in [
        (index(0, 0, ""), "chunk size 0"),
        (index(1 << 40, 0, ""), "huge chunk size"),
        (
            index(4 << 20, 1 << 60, &zero(1 << 60)),
            "zero chunk of 2^60",
        ),
        (index(4 << 20, 9, &zero(8)), "sizes do not add up"),
        (
            index(
                4 << 20,
                8,
                r#"{"kind":"data","shard":0,"offset":0,"stored":1099511627776,"len":8}"#,
            ),
            "stored 1 TiB",
        ),
    ] {
        let e = StreamIndex::parse(&text).expect_err(what);
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{what}");
    }
    // Several full chunks add up.
    let two = format!("{},{}", zero(4 << 20), zero(4 << 20));
    assert!(StreamIndex::parse(&index(4 << 20, 8 << 20, &two)).is_ok());
}
