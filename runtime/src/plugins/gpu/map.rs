//! `--gpu-map OLD=NEW,...`: a GPU job restored onto other GPUs than it was checkpointed
//! on (another host, or other GPUs of this one). cuda-checkpoint takes it as
//! `--device-map` (driver r580+), libcuda as `CUcheckpointRestoreArgs.gpuPairs`.

use std::collections::BTreeSet;

/// Pairs of GPU UUIDs: a GPU of the checkpoint, and the GPU of this host it moves to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuMap(pub Vec<(String, String)>);

impl GpuMap {
    /// Reads `GPU-a=GPU-b,GPU-c=GPU-d`; each UUID once on each side.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pairs = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (old, new) = pair.split_once('=').ok_or_else(|| {
                    format!("--gpu-map entry {pair:?} is not OLD=NEW (two GPU UUIDs, as nvidia-smi -L prints them)")
                })?;
                Ok((old.trim().to_string(), new.trim().to_string()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let map = GpuMap(pairs);
        map.validate()?;
        Ok(map)
    }

    /// Each side names real-looking UUIDs, none twice.
    pub fn validate(&self) -> Result<(), String> {
        let (mut olds, mut news) = (BTreeSet::new(), BTreeSet::new());
        for (old, new) in &self.0 {
            for uuid in [old, new] {
                uuid_bytes(uuid)?;
            }
            if !olds.insert(old) {
                return Err(format!("--gpu-map maps {old} twice"));
            }
            if !news.insert(new) {
                return Err(format!("--gpu-map puts two GPUs onto {new}"));
            }
        }
        Ok(())
    }

    /// Where the checkpoint's GPU `old` goes.
    pub fn target(&self, old: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(o, _)| o.eq_ignore_ascii_case(old))
            .map(|(_, n)| n.as_str())
    }

    /// Whether no GPU is mapped.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `OLD=NEW,...` argument of cuda-checkpoint's `--device-map`.
    pub fn to_arg(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(o, n)| format!("{o}={n}")).collect();
        pairs.join(",")
    }
}

/// The 16 bytes of a `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` UUID (libcuda's `CUuuid`).
pub fn uuid_bytes(uuid: &str) -> Result<[u8; 16], String> {
    let bad = || {
        format!("{uuid:?} is not a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, as nvidia-smi -L prints it)")
    };
    let hex: String = uuid
        .strip_prefix("GPU-")
        .ok_or_else(bad)?
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let bytes = hex::decode(&hex).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "GPU-8f6e3b2a-1c4d-4e5f-9a0b-1c2d3e4f5a6b";
    const B: &str = "GPU-00000000-1111-2222-3333-444444444444";

    #[test]
    fn pairs_are_read_and_written_back() {
        let map = GpuMap::parse(&format!("{A}={B}")).expect("map");
        assert_eq!(map.target(A), Some(B));
        assert_eq!(map.target(B), None);
        assert_eq!(map.to_arg(), format!("{A}={B}"));
        assert_eq!(uuid_bytes(B).expect("uuid")[15], 0x44);
    }

    #[test]
    fn bad_maps_are_refused_with_what_is_wrong() {
        let e = GpuMap::parse(A).expect_err("no =");
        assert!(e.contains("OLD=NEW"), "{e}");
        let e = GpuMap::parse(&format!("{A}=GPU-1")).expect_err("short");
        assert!(e.contains("not a GPU UUID"), "{e}");
        let e = GpuMap::parse(&format!("{A}={B},{A}={B}")).expect_err("twice");
        assert!(e.contains("twice"), "{e}");
        let e = GpuMap::parse(&format!("{A}={B},{B}={B}")).expect_err("onto one");
        assert!(e.contains("two GPUs onto"), "{e}");
    }
}
