//! `cedana-gpu-helper`: moves a process's GPU state with libcuda's checkpoint API, on
//! cuda-checkpoint's command line; see `cedana_runtime::plugins::gpu::driver`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cedana_runtime::plugins::gpu::driver::run_helper(&args));
}
