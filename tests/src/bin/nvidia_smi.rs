//! A STAND-IN for `nvidia-smi`, for tests on machines without a GPU: it answers the two
//! CSV queries cedana makes (`--query-gpu=...`, `--query-compute-apps=...`) with the
//! lines of a file, as the real tool would print them with `--format=csv,noheader,nounits`.
//!
//! - `CEDANA_TEST_NVIDIA_SMI_GPUS`: file of `index, uuid, name, memory.total,
//!   memory.free, driver_version, mig.mode.current` lines. Unset: no driver, as on a host
//!   without a GPU.
//! - `CEDANA_TEST_NVIDIA_SMI_APPS`: file of `pid, gpu_uuid, used_memory` lines (optional).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let apps = args.iter().any(|a| a.starts_with("--query-compute-apps"));
    let var = match apps {
        true => "CEDANA_TEST_NVIDIA_SMI_APPS",
        false => "CEDANA_TEST_NVIDIA_SMI_GPUS",
    };
    let text = std::env::var_os(var).and_then(|p| std::fs::read_to_string(p).ok());
    match (text, apps) {
        (Some(t), _) => print!("{t}"),
        (None, true) => {}
        (None, false) => {
            println!(
                "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. \
                 (stand-in: CEDANA_TEST_NVIDIA_SMI_GPUS is not set)"
            );
            std::process::exit(9);
        }
    }
}
