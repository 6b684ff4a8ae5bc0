//! The runc shim's options (`containerd.runc.v1.Options`, the typed message from
//! `containerd-shim-protos`) and how a checkpoint records them: base64 of the protobuf,
//! as containerd prints protobuf bytes, in `metadata.json` and in our container label.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use containerd_shim_protos::protobuf::Message;
pub use containerd_shim_protos::shim::oci::Options as RuncOptions;

/// Type URL of an OCI spec in a container record (JSON value).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of the runc shim's options.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// Standard base64; padding optional when reading (containerd writes it, people may not).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes protobuf bytes as the record keeps them.
pub fn base64_encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Decodes recorded protobuf bytes; `None` when they are not base64.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64.decode(clean).ok()
}

/// Recorded runc options (base64); `None` when they are not base64 runc options.
pub fn decode_recorded(recorded: &str) -> Option<RuncOptions> {
    RuncOptions::parse_from_bytes(&base64_decode(recorded)?).ok()
}

/// The runc options as protobuf bytes.
pub fn encode(options: &RuncOptions) -> Result<Vec<u8>, String> {
    options.write_to_bytes().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_runc_options_containerd_prints() {
        // `ctr containers info` of a container run with --runc-binary /work/main/target/debug/cedana-runc.
        let recorded = "MiMvd29yay9tYWluL3RhcmdldC9kZWJ1Zy9jZWRhbmEtcnVuYw==";
        let o = decode_recorded(recorded).expect("runc options");
        assert_eq!(o.binary_name, "/work/main/target/debug/cedana-runc");
        assert_eq!(o.root, "");
        assert_eq!(base64_encode(&encode(&o).expect("encode")), recorded);
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("!!!!").is_none());
        assert!(decode_recorded("!!!!").is_none());
    }

    #[test]
    fn checkpoint_fields_join_the_recorded_options() {
        let mut o = RuncOptions::new();
        o.binary_name = "runc".into();
        o.root = "/run/r".into();
        let recorded = base64_encode(&encode(&o).expect("encode"));
        let mut o = decode_recorded(&recorded).expect("decode");
        o.criu_image_path = "/ck".into();
        let o = RuncOptions::parse_from_bytes(&encode(&o).expect("encode")).expect("decode");
        assert_eq!(
            (
                o.binary_name.as_str(),
                o.root.as_str(),
                o.criu_image_path.as_str()
            ),
            ("runc", "/run/r", "/ck")
        );
    }
}
