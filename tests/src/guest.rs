//! Guest VMs for the kata tests: QEMU in software emulation (KVM guests hang on these
//! machines) with a vhost-user vsock device backed by `vhost-device-vsock`, which gives
//! the host the hybrid-vsock unix socket kata's VMMs expose. The image comes from
//! `scripts/guest-image.sh` with the agent just built. Each guest is killed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{bin, wait_for, which};

/// How long a guest may take to boot and start its agent (about 7 s idle, far more on a
/// loaded machine under emulation).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// What the guest tests need and is missing here, with the fix; None when all is there.
pub fn missing_tools() -> Option<String> {
    let kernel = fs::read_dir("/boot")
        .ok()
        .and_then(|d| {
            d.flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .is_some();
    if which("qemu-system-x86_64").is_none() {
        return Some(
            "qemu-system-x86_64 missing (apt-get install qemu-system-x86; `make deps`)".into(),
        );
    }
    if !kernel {
        return Some(
            "no guest kernel in /boot (apt-get install linux-image-amd64; `make deps`)".into(),
        );
    }
    if vhost_device_vsock().is_none() {
        return Some(
            "vhost-device-vsock missing (cargo install vhost-device-vsock --version 0.3.0; `make deps`)".into(),
        );
    }
    if which("cpio").is_none() {
        return Some("cpio missing (apt-get install cpio; `make deps`)".into());
    }
    None
}

fn vhost_device_vsock() -> Option<PathBuf> {
    which("vhost-device-vsock").or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = Path::new(&home).join(".cargo/bin/vhost-device-vsock");
        p.is_file().then_some(p)
    })
}

/// Builds the guest image (kernel link + initrd.gz) into `dir` with the built agent and
/// the `extra` built binaries.
pub fn build_image(dir: &Path, extra: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/guest-image.sh");
    let extra: Vec<String> = extra.iter().map(|b| bin(b).display().to_string()).collect();
    let out = Command::new("bash")
        .env("CEDANA_GUEST_EXTRA", extra.join(" "))
        .arg(&script)
        .arg(dir)
        .arg(bin("cedana-guest-agent"))
        .output()
        .expect("run guest-image.sh");
    assert!(
        out.status.success(),
        "guest-image.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running guest.
pub struct Guest {
    /// The host end of its vsock device (hybrid vsock).
    pub vsock: PathBuf,
    /// Its serial console, as a file.
    pub console: PathBuf,
    qemu: Child,
    vdv: Child,
}

impl Guest {
    /// Boots the image in `image` with `mem_mib` of RAM and `cmdline` added to the kernel's
    /// command line; its files go to `work/name.*`. Returns once the agent listens.
    pub fn boot(image: &Path, work: &Path, name: &str, mem_mib: u32, cmdline: &str) -> Guest {
        let vhost = work.join(format!("{name}.vhost.sock"));
        let vsock = work.join(format!("{name}.vsock"));
        let console = work.join(format!("{name}.console"));
        let vdv = Command::new(vhost_device_vsock().expect("vhost-device-vsock"))
            .arg("--vm")
            .arg(format!(
                "guest-cid=3,socket={},uds-path={}",
                vhost.display(),
                vsock.display()
            ))
            .stdout(Stdio::null())
            .stderr(fs::File::create(work.join(format!("{name}.vdv.log"))).expect("log"))
            .spawn()
            .expect("start vhost-device-vsock");
        wait_for(
            "vhost-device-vsock's socket",
            Duration::from_secs(30),
            || vhost.exists().then_some(()),
        );
        let mem = format!("{mem_mib}M");
        let qemu = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-m",
                &mem,
                "-nographic",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initrd.gz"))
            .arg("-append")
            .arg(format!("console=ttyS0 quiet panic=-1 {cmdline}"))
            // vhost-user needs the guest's memory in a shared memfd.
            .arg("-object")
            .arg(format!("memory-backend-memfd,id=mem,size={mem},share=on"))
            .args(["-numa", "node,memdev=mem"])
            .arg("-chardev")
            .arg(format!("socket,id=vv,path={}", vhost.display()))
            .args(["-device", "vhost-user-vsock-pci,chardev=vv"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&console).expect("console"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu");
        let g = Guest {
            vsock,
            console,
            qemu,
            vdv,
        };
        wait_for("the guest agent to listen", BOOT_TIMEOUT, || {
            g.console_text()
                .contains("cedana-guest-agent: listening on vsock")
                .then_some(())
        });
        g
    }

    /// Everything the console printed so far.
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Values the counter `name` printed on the console (`COUNTER NAME N`, after the
    /// kernel's timestamp).
    pub fn counter_values(&self, name: &str) -> Vec<u64> {
        let key = format!("COUNTER {name} ");
        self.console_text()
            .lines()
            .filter_map(|l| {
                let at = l.find(&key)?;
                l[at + key.len()..].trim().parse().ok()
            })
            .collect()
    }

    /// Waits until the counter `file` shows a value above `above`; returns it.
    pub fn wait_counter_above(&self, file: &str, above: u64) -> u64 {
        self.wait_counter_above_within(file, above, Duration::from_secs(120))
    }

    /// [`Guest::wait_counter_above`] with its own time limit (a big workload starts slowly
    /// under emulation).
    pub fn wait_counter_above_within(&self, file: &str, above: u64, limit: Duration) -> u64 {
        wait_for(
            &format!("guest counter {file} above {above}"),
            limit,
            || {
                self.counter_values(file)
                    .last()
                    .copied()
                    .filter(|v| *v > above)
            },
        )
    }

    /// The PID the init printed for workload `name` (`WORKLOAD NAME PID N`).
    pub fn workload_pid(&self, name: &str) -> i32 {
        let prefix = format!("WORKLOAD {name} PID ");
        self.console_text()
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no workload {name} on the console"))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        let _ = self.vdv.kill();
        let _ = self.vdv.wait();
    }
}
