//! The driver-API backend: `cedana-gpu-helper`, a small program of ours that calls the
//! checkpoint functions of libcuda (`cuCheckpointProcessLock/Checkpoint/Restore/Unlock`,
//! `cuCheckpointProcessGetState`; driver r570+, CUDA 12.8+) on another process. libcuda
//! is loaded at run time (no link-time dependency, and never inside the daemon), and
//! the helper takes cuda-checkpoint's command line, so [`super::backend::CudaCheckpoint`]
//! drives it unchanged on hosts where NVIDIA's tool was never installed.

use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};

use super::map::{uuid_bytes, GpuMap};

/// File name of the helper.
pub const HELPER_NAME: &str = "cedana-gpu-helper";
/// The driver library, as the driver installs it.
const LIBCUDA: &CStr = c"libcuda.so.1";

/// `CUcheckpointLockArgs`: a timeout, then reserved words that must be zero.
#[repr(C)]
struct LockArgs {
    timeout_ms: u32,
    reserved0: u32,
    reserved1: [u64; 7],
}

/// `CUcheckpointGpuPair`: a GPU of the checkpoint and the GPU it is restored onto.
#[repr(C)]
struct GpuPair {
    old_uuid: [u8; 16],
    new_uuid: [u8; 16],
}

/// `CUcheckpointRestoreArgs` (r580+): the GPU pairs, then reserved bytes that must be zero.
#[repr(C)]
struct RestoreArgs {
    gpu_pairs: *mut GpuPair,
    gpu_pairs_count: u32,
    reserved: [u8; 52 - std::mem::size_of::<*mut GpuPair>()],
    reserved1: u64,
}

type Init = unsafe extern "C" fn(u32) -> i32;
type WithArgs = unsafe extern "C" fn(i32, *mut c_void) -> i32;
type GetState = unsafe extern "C" fn(i32, *mut i32) -> i32;
type ErrorName = unsafe extern "C" fn(i32, *mut *const c_char) -> i32;

/// libcuda's checkpoint functions, loaded.
struct Driver {
    handle: *mut c_void,
}

impl Driver {
    /// Loads libcuda and initialises the driver.
    fn load() -> Result<Self, String> {
        // SAFETY: a NUL-terminated name; the handle is checked before use.
        let handle = unsafe { libc::dlopen(LIBCUDA.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(
                "libcuda.so.1 cannot be loaded: install the NVIDIA driver (r570+ for the \
                 checkpoint API)"
                    .into(),
            );
        }
        let driver = Self { handle };
        // SAFETY: cuInit's C signature is `CUresult cuInit(unsigned int flags)`.
        let init: Init = unsafe { std::mem::transmute(driver.symbol(c"cuInit")?) };
        // SAFETY: a plain call with flags 0, as the driver requires.
        driver.check(unsafe { init(0) }, "cuInit")?;
        Ok(driver)
    }

    fn symbol(&self, name: &CStr) -> Result<*mut c_void, String> {
        // SAFETY: a live handle and a NUL-terminated name.
        let f = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        match f.is_null() {
            true => Err(format!(
                "libcuda has no {}: the driver is older than r570; update it, or use NVIDIA's \
                 cuda-checkpoint (gpu.cuda_checkpoint)",
                name.to_string_lossy()
            )),
            false => Ok(f),
        }
    }

    /// `Ok` for CUDA_SUCCESS, else the error's name.
    fn check(&self, code: i32, call: &str) -> Result<(), String> {
        if code == 0 {
            return Ok(());
        }
        let mut name: *const c_char = std::ptr::null();
        let named = self.symbol(c"cuGetErrorName").ok().is_some_and(|f| {
            // SAFETY: `CUresult cuGetErrorName(CUresult, const char **)`.
            let f: ErrorName = unsafe { std::mem::transmute(f) };
            // SAFETY: a valid out-pointer; the driver returns a static string.
            unsafe { f(code, &mut name) == 0 && !name.is_null() }
        });
        let what = match named {
            // SAFETY: a static NUL-terminated string owned by the driver.
            true => unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned(),
            false => format!("CUresult {code}"),
        };
        Err(format!("{call} failed: {what}"))
    }

    fn act(&self, action: &str, pid: i32, timeout_ms: u32, map: &GpuMap) -> Result<(), String> {
        let mut pairs = map
            .0
            .iter()
            .map(|(old, new)| {
                Ok(GpuPair {
                    old_uuid: uuid_bytes(old)?,
                    new_uuid: uuid_bytes(new)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut restore = (action == "restore" && !pairs.is_empty()).then_some(RestoreArgs {
            gpu_pairs: pairs.as_mut_ptr(),
            gpu_pairs_count: pairs.len() as u32,
            reserved: [0; 52 - std::mem::size_of::<*mut GpuPair>()],
            reserved1: 0,
        });
        let (symbol, mut lock) = match action {
            "lock" => (
                c"cuCheckpointProcessLock",
                Some(LockArgs {
                    timeout_ms,
                    reserved0: 0,
                    reserved1: [0; 7],
                }),
            ),
            "checkpoint" => (c"cuCheckpointProcessCheckpoint", None),
            "restore" => (c"cuCheckpointProcessRestore", None),
            "unlock" => (c"cuCheckpointProcessUnlock", None),
            other => return Err(format!("unknown action {other:?}")),
        };
        // SAFETY: each of these is `CUresult f(int pid, XArgs *args)`, args optional.
        let f: WithArgs = unsafe { std::mem::transmute(self.symbol(symbol)?) };
        let args = match (lock.as_mut(), restore.as_mut()) {
            (Some(a), _) => a as *mut LockArgs as *mut c_void,
            (None, Some(r)) => r as *mut RestoreArgs as *mut c_void,
            (None, None) => std::ptr::null_mut(),
        };
        // SAFETY: args is null or points at zeroed LockArgs or RestoreArgs (whose pairs
        // live in `pairs`) that outlive the call.
        self.check(unsafe { f(pid, args) }, &symbol.to_string_lossy())
    }

    fn state(&self, pid: i32) -> Result<&'static str, String> {
        // SAFETY: `CUresult cuCheckpointProcessGetState(int pid, CUprocessState *state)`.
        let f: GetState =
            unsafe { std::mem::transmute(self.symbol(c"cuCheckpointProcessGetState")?) };
        let mut state = -1;
        // SAFETY: a valid out-pointer.
        self.check(unsafe { f(pid, &mut state) }, "cuCheckpointProcessGetState")?;
        Ok(match state {
            0 => "running",
            1 => "locked",
            2 => "checkpointed",
            _ => "failed",
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen and is closed once.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// The helper's usage line.
pub const USAGE: &str =
    "usage: cedana-gpu-helper --action lock|checkpoint|restore|unlock --pid PID \
    [--timeout MS] [--device-map OLD=NEW,...] | --get-state --pid PID  (cuda-checkpoint's command line, on libcuda's \
    checkpoint API)";

/// Runs the helper with `args` (without the program name); its exit code. Like
/// cuda-checkpoint, it reports on stdout.
pub fn run_helper(args: &[String]) -> i32 {
    let flag = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).map(String::as_str)
    };
    if args.iter().any(|a| a == "--help") {
        println!("{USAGE}");
        return 0;
    }
    let Some(pid) = flag("--pid").and_then(|p| p.parse::<i32>().ok()) else {
        println!("{USAGE}");
        return 2;
    };
    let timeout = flag("--timeout").and_then(|t| t.parse().ok()).unwrap_or(0);
    let map = match flag("--device-map").map(GpuMap::parse).transpose() {
        Ok(map) => map.unwrap_or_default(),
        Err(e) => {
            println!("{e}; {USAGE}");
            return 2;
        }
    };
    let action = flag("--action");
    let get_state = args.iter().any(|a| a == "--get-state");
    if action.is_none() && !get_state {
        println!("{USAGE}");
        return 2;
    }
    let done = Driver::load().and_then(|d| match action {
        Some(a) => d.act(a, pid, timeout, &map).map(|()| None),
        None => d.state(pid).map(Some),
    });
    match done {
        Ok(Some(state)) => println!("{state}"),
        Ok(None) => {}
        Err(e) => {
            println!("process {pid}: {e}");
            return 1;
        }
    }
    0
}

/// The helper beside this binary, or on PATH.
pub fn locate_helper() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(HELPER_NAME)))
        .filter(|p| p.is_file());
    beside.or_else(|| crate::host::find_executable(Path::new(HELPER_NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_args_have_the_driver_layout() {
        // cuda.h: a pointer, an unsigned int, reserved up to byte 56, then a cuuint64_t.
        assert_eq!(std::mem::size_of::<RestoreArgs>(), 64);
        assert_eq!(std::mem::size_of::<GpuPair>(), 32);
    }

    #[test]
    fn bad_command_lines_are_refused_with_the_usage() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(run_helper(&s(&["--help"])), 0);
        assert_eq!(run_helper(&s(&["--action", "lock"])), 2);
        assert_eq!(run_helper(&s(&["--pid", "1"])), 2);
        let bad_map = [
            "--action",
            "restore",
            "--pid",
            "1",
            "--device-map",
            "GPU-1=GPU-2",
        ];
        assert_eq!(run_helper(&s(&bad_map)), 2);
    }

    #[test]
    fn a_host_without_the_driver_is_told_so() {
        if Path::new("/proc/driver/nvidia").exists() {
            return; // A GPU host: the driver is there.
        }
        let e = Driver::load().err().expect("no libcuda here");
        assert!(e.contains("install the NVIDIA driver"), "{e}");
    }
}
