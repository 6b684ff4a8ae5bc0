//! Hand-written prost messages for the subset of CRIU's `rpc.proto` (proto2) that the driver
//! uses. Field numbers follow CRIU 4.1.1's `images/rpc.proto`; fields we never send or read
//! are simply left out (prost skips unknown fields when decoding).

/// `criu_req_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CriuReqType {
    Empty = 0,
    Dump = 1,
    Restore = 2,
    Check = 3,
    PreDump = 4,
    PageServer = 5,
    Notify = 6,
    CpuinfoDump = 7,
    CpuinfoCheck = 8,
    FeatureCheck = 9,
    Version = 10,
    WaitPid = 11,
    PageServerChld = 12,
    SinglePreDump = 13,
}

/// `inherit_fd`: a file descriptor of the requesting process handed to the restored tree.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InheritFd {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(int32, required, tag = "2")]
    pub fd: i32,
}

/// `ext_mount_map`: an external (bind) mount, `key` inside, `val` outside.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtMountMap {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub val: String,
}

/// `join_namespace`: a namespace to join on restore.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JoinNamespace {
    #[prost(string, required, tag = "1")]
    pub ns: String,
    #[prost(string, required, tag = "2")]
    pub ns_file: String,
    #[prost(string, optional, tag = "3")]
    pub extra_opt: Option<String>,
}

/// `cgroup_root`: where a controller's (or, with no controller, every) cgroup tree goes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CgroupRoot {
    #[prost(string, optional, tag = "1")]
    pub ctrl: Option<String>,
    #[prost(string, required, tag = "2")]
    pub path: String,
}

/// `criu_opts` (subset: what we send, and what runc sends, which the stream relay reads).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuOpts {
    /// Always sent. Refers to a descriptor in the *requesting* process (CRIU opens
    /// `/proc/<peer pid>/fd/<n>`).
    #[prost(int32, required, tag = "1", default = "-1")]
    pub images_dir_fd: i32,
    #[prost(int32, optional, tag = "2")]
    pub pid: Option<i32>,
    #[prost(bool, optional, tag = "3")]
    pub leave_running: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub ext_unix_sk: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub tcp_established: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub evasive_devices: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub shell_job: Option<bool>,
    #[prost(bool, optional, tag = "8")]
    pub file_locks: Option<bool>,
    #[prost(int32, optional, tag = "9", default = "2")]
    pub log_level: Option<i32>,
    #[prost(string, optional, tag = "10")]
    pub log_file: Option<String>,
    #[prost(bool, optional, tag = "12")]
    pub notify_scripts: Option<bool>,
    #[prost(string, optional, tag = "13")]
    pub root: Option<String>,
    #[prost(bool, optional, tag = "16")]
    pub auto_dedup: Option<bool>,
    #[prost(int32, optional, tag = "17")]
    pub work_dir_fd: Option<i32>,
    #[prost(bool, optional, tag = "18")]
    pub link_remap: Option<bool>,
    #[prost(message, repeated, tag = "23")]
    pub ext_mnt: Vec<ExtMountMap>,
    #[prost(bool, optional, tag = "24")]
    pub manage_cgroups: Option<bool>,
    #[prost(message, repeated, tag = "25")]
    pub cg_root: Vec<CgroupRoot>,
    #[prost(bool, optional, tag = "26")]
    pub rst_sibling: Option<bool>,
    #[prost(message, repeated, tag = "27")]
    pub inherit_fd: Vec<InheritFd>,
    /// `criu_cg_mode`: 0 ignore, 1 none, 2 props, 3 soft, 4 full, 5 strict, 6 default.
    #[prost(int32, optional, tag = "34")]
    pub manage_cgroups_mode: Option<i32>,
    #[prost(string, repeated, tag = "37")]
    pub external: Vec<String>,
    /// Namespaces restored empty (CLONE_NEWNET only).
    #[prost(uint32, optional, tag = "38")]
    pub empty_ns: Option<u32>,
    #[prost(message, repeated, tag = "39")]
    pub join_ns: Vec<JoinNamespace>,
    #[prost(string, optional, tag = "44")]
    pub freeze_cgroup: Option<String>,
    #[prost(bool, optional, tag = "48")]
    pub lazy_pages: Option<bool>,
    #[prost(bool, optional, tag = "50")]
    pub orphan_pts_master: Option<bool>,
    #[prost(string, optional, tag = "51")]
    pub config_file: Option<String>,
    #[prost(bool, optional, tag = "52")]
    pub tcp_close: Option<bool>,
    #[prost(string, optional, tag = "53")]
    pub lsm_profile: Option<String>,
    /// `criu_network_lock_method`: 1 iptables (CRIU's default), 2 nftables, 3 skip.
    #[prost(int32, optional, tag = "64")]
    pub network_lock: Option<i32>,
    #[prost(string, optional, tag = "68")]
    pub images_dir: Option<String>,
    #[prost(bool, optional, tag = "69")]
    pub leave_stopped: Option<bool>,
}

/// `criu_dump_resp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuDumpResp {
    #[prost(bool, optional, tag = "1")]
    pub restored: Option<bool>,
}

/// `criu_restore_resp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuRestoreResp {
    #[prost(int32, required, tag = "1")]
    pub pid: i32,
}

/// `criu_notify`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuNotify {
    #[prost(string, optional, tag = "1")]
    pub script: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub pid: Option<i32>,
}

/// `criu_features`: asked for in a FEATURE_CHECK request, answered in the response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuFeatures {
    #[prost(bool, optional, tag = "1")]
    pub mem_track: Option<bool>,
    #[prost(bool, optional, tag = "2")]
    pub lazy_pages: Option<bool>,
    #[prost(bool, optional, tag = "3")]
    pub pidfd_store: Option<bool>,
}

/// `criu_version`: the answer to a VERSION request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuVersion {
    #[prost(int32, required, tag = "1")]
    pub major_number: i32,
    #[prost(int32, required, tag = "2")]
    pub minor_number: i32,
    #[prost(string, optional, tag = "3")]
    pub gitid: Option<String>,
    #[prost(int32, optional, tag = "4")]
    pub sublevel: Option<i32>,
    #[prost(int32, optional, tag = "5")]
    pub extra: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub name: Option<String>,
}

/// `criu_req`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuReq {
    #[prost(enumeration = "CriuReqType", required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub opts: Option<CriuOpts>,
    #[prost(bool, optional, tag = "3")]
    pub notify_success: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub keep_open: Option<bool>,
    #[prost(message, optional, tag = "5")]
    pub features: Option<CriuFeatures>,
    #[prost(uint32, optional, tag = "6")]
    pub pid: Option<u32>,
}

/// `criu_resp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuResp {
    #[prost(enumeration = "CriuReqType", required, tag = "1")]
    pub r#type: i32,
    #[prost(bool, required, tag = "2")]
    pub success: bool,
    #[prost(message, optional, tag = "3")]
    pub dump: Option<CriuDumpResp>,
    #[prost(message, optional, tag = "4")]
    pub restore: Option<CriuRestoreResp>,
    #[prost(message, optional, tag = "5")]
    pub notify: Option<CriuNotify>,
    #[prost(int32, optional, tag = "7")]
    pub cr_errno: Option<i32>,
    #[prost(message, optional, tag = "8")]
    pub features: Option<CriuFeatures>,
    #[prost(string, optional, tag = "9")]
    pub cr_errmsg: Option<String>,
    #[prost(message, optional, tag = "10")]
    pub version: Option<CriuVersion>,
    #[prost(int32, optional, tag = "11")]
    pub status: Option<i32>,
}

impl CriuReq {
    /// A request of `ty` with no options.
    pub fn new(ty: CriuReqType) -> Self {
        CriuReq {
            r#type: ty as i32,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn req_type_only_encodes_tag_1() {
        let bytes = CriuReq::new(CriuReqType::Version).encode_to_vec();
        // field 1, varint (0x08), value 10
        assert_eq!(bytes, vec![0x08, 10]);
    }

    #[test]
    fn required_zero_fields_are_still_encoded() {
        // proto2 `required` fields must be on the wire even at their zero value.
        let bytes = CriuReq::new(CriuReqType::Empty).encode_to_vec();
        assert_eq!(bytes, vec![0x08, 0]);
        let resp = CriuResp {
            r#type: CriuReqType::Dump as i32,
            success: false,
            ..Default::default()
        };
        assert_eq!(resp.encode_to_vec(), vec![0x08, 1, 0x10, 0]);
    }

    #[test]
    fn dump_request_known_bytes() {
        let req = CriuReq {
            r#type: CriuReqType::Dump as i32,
            opts: Some(CriuOpts {
                images_dir_fd: 5,
                pid: Some(1234),
                leave_running: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        // type=DUMP; opts (field 2, len-delimited: 0x12) with
        // images_dir_fd=5 (0x08 05), pid=1234 (0x10 d2 09), leave_running (0x18 01)
        assert_eq!(
            bytes,
            vec![0x08, 1, 0x12, 7, 0x08, 5, 0x10, 0xd2, 0x09, 0x18, 1]
        );
    }

    #[test]
    fn high_tags_and_repeated_fields() {
        let opts = CriuOpts {
            images_dir_fd: 3,
            leave_stopped: Some(true),
            external: vec!["mnt[/a]:k".into()],
            inherit_fd: vec![InheritFd {
                key: "pipe:[1]".into(),
                fd: 7,
            }],
            ..Default::default()
        };
        let bytes = opts.encode_to_vec();
        // leave_stopped = field 69, varint: key = 69<<3 = 552 -> 0xa8 0x04
        assert!(bytes.windows(3).any(|w| w == [0xa8, 0x04, 1]));
        // external = field 37, length-delimited: key = 37<<3|2 = 298 -> 0xaa 0x02
        assert!(bytes.windows(3).any(|w| w == [0xaa, 0x02, 9]));
        // inherit_fd = field 27, length-delimited: key = 27<<3|2 = 218 -> 0xda 0x01
        assert!(bytes.windows(2).any(|w| w == [0xda, 0x01]));
        let back = CriuOpts::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, opts);
    }

    #[test]
    fn resp_round_trip_and_decode_known_bytes() {
        let resp = CriuResp {
            r#type: CriuReqType::Restore as i32,
            success: true,
            restore: Some(CriuRestoreResp { pid: 4242 }),
            ..Default::default()
        };
        let bytes = resp.encode_to_vec();
        assert_eq!(CriuResp::decode(bytes.as_slice()).unwrap(), resp);

        // A version response as CRIU would send it, including a field we do not model
        // (criu_resp.ps = 6) which must be skipped.
        let wire = vec![
            0x08, 10, // type VERSION
            0x10, 1, // success
            0x32, 0x00, // ps: empty message (unknown to us)
            0x52, 6, // version (field 10), len 6
            0x08, 4, 0x10, 1, 0x20, 1, // major 4, minor 1, sublevel 1
        ];
        let resp = CriuResp::decode(wire.as_slice()).unwrap();
        assert_eq!(resp.r#type(), CriuReqType::Version);
        assert!(resp.success);
        let v = resp.version.unwrap();
        assert_eq!(
            (v.major_number, v.minor_number, v.sublevel),
            (4, 1, Some(1))
        );
        assert_eq!(v.gitid, None);
    }

    #[test]
    fn features_round_trip() {
        let req = CriuReq {
            r#type: CriuReqType::FeatureCheck as i32,
            features: Some(CriuFeatures {
                mem_track: Some(true),
                lazy_pages: Some(true),
                pidfd_store: Some(true),
            }),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        assert_eq!(&bytes[..2], &[0x08, 9]);
        assert_eq!(&bytes[2..], &[0x2a, 6, 0x08, 1, 0x10, 1, 0x18, 1]);
        assert_eq!(CriuReq::decode(bytes.as_slice()).unwrap(), req);
    }
}
