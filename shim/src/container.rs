//! A container: its bundle, runtime, init process and execs, and the verbs containerd
//! asks of it. Each verb checks the state it needs, calls the runtime binary, and updates
//! the state; the task service (service.rs) only translates requests and publishes events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim::asynchronous::util::write_options;
use containerd_shim_protos::api::CreateTaskRequest;
use containerd_shim_protos::shim::oci::Options as RuncOptions;

use crate::bundle;
use crate::error::{Result, ShimError};
use crate::io::{ConsoleSocket, ProcessIo, StdioPaths};
use crate::process::{Process, State};
use crate::reaper::{Exit, Reaper};
use crate::restore_from;
use crate::runtime::{self, CheckpointArgs, ChildStdio, Runtime};

/// A container managed by this shim.
pub struct Container {
    /// Container id.
    pub id: String,
    /// Bundle dir.
    pub bundle: PathBuf,
    /// The runtime binary and its flags.
    pub runtime: Runtime,
    /// Runtime options it was created with.
    pub options: RuncOptions,
    /// The init process.
    pub init: Arc<Process>,
    /// Exec processes by exec id.
    pub execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Checkpoint to restore from at start (Create with `checkpoint`, or the options'
    /// `CriuImagePath`).
    pub restore_from: Option<PathBuf>,
    rootfs_mounted: bool,
    /// Held across a checkpoint and each pause/resume: a resume that arrives while CRIU
    /// works (ctr pauses, checkpoints, then resumes; a containerd restarted meanwhile
    /// replays that resume early) would be undone when CRIU restores the frozen state it
    /// found, leaving the task frozen while containerd reports it running.
    freezer: Arc<tokio::sync::Mutex<()>>,
}

fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

fn read_pid(path: &Path) -> Result<i32> {
    let s = std::fs::read_to_string(path)
        .map_err(ShimError::io(format!("read pid file {}", path.display())))?;
    s.trim()
        .parse()
        .map_err(|_| ShimError::Other(format!("bad pid file {}: {s:?}", path.display())))
}

impl Container {
    /// Creates the container (`runtime create`), or prepares a restore when `checkpoint`
    /// is set (the runtime restores at start).
    pub async fn create(
        req: &CreateTaskRequest,
        options: RuncOptions,
        namespace: &str,
        reaper: &Reaper,
    ) -> Result<Container> {
        let bundle = PathBuf::from(&req.bundle);
        let runtime = Runtime {
            binary: runtime::resolve_binary(&options.binary_name),
            root: bundle::runtime_root(&options, namespace),
            systemd_cgroup: options.systemd_cgroup,
            log: bundle.join("log.json"),
        };
        write_options(&bundle, &options).await?;
        let rootfs_mounted = bundle::mount_all(&req.rootfs, &bundle.join("rootfs")).await?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let init = Arc::new(Process::new(&req.id, "", stdio));
        let restore_from = match restore_from::annotated_restore(&bundle, rootfs_mounted).await {
            Ok(Some(images)) => Some(images),
            Ok(None) => restore_from::restore_source(&req.checkpoint, &options),
            Err(e) => {
                if rootfs_mounted {
                    bundle::unmount_rootfs(&bundle);
                }
                return Err(e);
            }
        };
        let c = Container {
            id: req.id.clone(),
            bundle,
            runtime,
            options,
            init,
            execs: Mutex::new(HashMap::new()),
            restore_from,
            rootfs_mounted,
            freezer: Arc::new(tokio::sync::Mutex::new(())),
        };
        if c.restore_from.is_some() {
            return Ok(c);
        }
        let pid_path = pid_file(&c.bundle, "init");
        if let Err(e) = c
            .spawn(&c.init, reaper, |console| {
                runtime::create_args(
                    &c.id,
                    &c.bundle,
                    &pid_path,
                    console,
                    c.options.no_pivot_root,
                )
            })
            .await
        {
            if c.rootfs_mounted {
                bundle::unmount_rootfs(&c.bundle);
            }
            return Err(e);
        }
        c.init.set_pid(read_pid(&pid_path)?);
        Ok(c)
    }

    /// Runs a runtime command that starts a process with the process's stdio.
    async fn spawn(
        &self,
        p: &Process,
        reaper: &Reaper,
        args: impl FnOnce(Option<&Path>) -> Vec<String>,
    ) -> Result<()> {
        if p.stdio.terminal {
            let socket = ConsoleSocket::new()?;
            let cmd = args(Some(socket.path()));
            self.runtime
                .run(reaper, cmd, Some(ChildStdio::default()))
                .await?;
            *p.io.lock().await = Some(ProcessIo::console(&socket, &p.stdio)?);
        } else {
            let (child, io) = ProcessIo::pipes(&p.stdio)?;
            *p.io.lock().await = Some(io);
            self.runtime.run(reaper, args(None), Some(child)).await?;
        }
        Ok(())
    }

    /// Starts the init (`runtime start`, or `runtime restore` from a checkpoint) or an exec.
    pub async fn start(&self, p: &Arc<Process>, reaper: &Reaper) -> Result<i32> {
        if p.state() != State::Created {
            return Err(ShimError::FailedPrecondition(format!(
                "process {} is {:?}, not created",
                p.event_id(),
                p.state()
            )));
        }
        if !p.exec_id.is_empty() {
            if self.init.state() != State::Running {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {} is not running",
                    self.id
                )));
            }
            let spec = self.exec_spec_path(&p.exec_id);
            let pid_path = pid_file(&self.bundle, &format!("exec-{}", p.exec_id));
            self.spawn(p, reaper, |console| {
                runtime::exec_args(&self.id, &spec, &pid_path, console)
            })
            .await?;
            let pid = read_pid(&pid_path)?;
            p.set_pid(pid);
        } else if let Some(image) = &self.restore_from {
            let pid_path = pid_file(&self.bundle, "init");
            let work = self.bundle.join("criu-work");
            let _ = std::fs::create_dir_all(&work);
            let r = self
                .spawn(p, reaper, |console| {
                    runtime::restore_args(
                        &self.id,
                        &self.bundle,
                        image,
                        &work,
                        &pid_path,
                        console,
                        self.options.no_pivot_root,
                    )
                })
                .await;
            if let Err(e) = r {
                // A failed restore leaves a stopped task that can be deleted.
                p.set_exited(Exit {
                    status: 255,
                    at: std::time::SystemTime::now(),
                });
                return Err(e);
            }
            p.set_pid(read_pid(&pid_path)?);
        } else {
            self.runtime
                .run(reaper, vec!["start".into(), self.id.clone()], None)
                .await?;
        }
        p.set_state(State::Running);
        Ok(p.pid())
    }

    /// Where an exec's process spec is written.
    pub fn exec_spec_path(&self, exec_id: &str) -> PathBuf {
        self.bundle.join(format!("exec-{exec_id}.json"))
    }

    /// A process by exec id ("" is the init).
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .expect("execs")
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                ShimError::NotFound(format!("exec {exec_id} not found in container {}", self.id))
            })
    }

    /// Sends a signal to a process, or to every process of the container with `all`.
    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool, reaper: &Reaper) -> Result<()> {
        let p = self.process(exec_id)?;
        if p.state() == State::Stopped {
            return Err(ShimError::NotFound(format!(
                "process {} already finished",
                p.event_id()
            )));
        }
        if !exec_id.is_empty() {
            let pid = p.pid();
            if pid <= 0 {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} is not started"
                )));
            }
            let sig = nix::sys::signal::Signal::try_from(signal as i32)
                .map_err(|_| ShimError::InvalidArgument(format!("bad signal {signal}")))?;
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
                .map_err(|e| ShimError::io(format!("kill {pid}"))(e.into()));
        }
        if p.pid() <= 0 {
            // Created for restore and never started: nothing runs.
            return Ok(());
        }
        self.runtime
            .run(reaper, runtime::kill_args(&self.id, signal, all), None)
            .await
            .map(|_| ())
    }

    /// `runtime delete --force` and unmount the rootfs (the init).
    pub async fn delete_runtime(&self, reaper: &Reaper) -> Result<()> {
        let r = self
            .runtime
            .run(
                reaper,
                vec!["delete".into(), "--force".into(), self.id.clone()],
                None,
            )
            .await;
        if self.rootfs_mounted {
            bundle::unmount_rootfs(&self.bundle);
        }
        match r {
            Err(ShimError::Runtime { ref stderr, .. })
                if stderr.contains("does not exist") || stderr.contains("not exist") =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Pauses or resumes.
    pub async fn pause(&self, pause: bool, reaper: &Reaper) -> Result<()> {
        let _freezer = self.freezer.lock().await;
        let want = if pause { State::Running } else { State::Paused };
        let now = self.init.state();
        if now != want {
            return Err(ShimError::FailedPrecondition(format!(
                "cannot {} container {}: task is {}",
                if pause { "pause" } else { "resume" },
                self.id,
                match now {
                    State::Created => "created, not started",
                    State::Running => "running",
                    State::Paused => "paused",
                    State::Stopped => "stopped",
                }
            )));
        }
        let verb = if pause { "pause" } else { "resume" };
        self.runtime
            .run(reaper, vec![verb.into(), self.id.clone()], None)
            .await?;
        self.init
            .set_state(if pause { State::Paused } else { State::Running });
        Ok(())
    }

    /// PIDs of every process in the container.
    pub async fn pids(&self, reaper: &Reaper) -> Result<Vec<u32>> {
        let out = self
            .runtime
            .run(
                reaper,
                vec![
                    "ps".into(),
                    "--format".into(),
                    "json".into(),
                    self.id.clone(),
                ],
                None,
            )
            .await?;
        serde_json::from_str::<Option<Vec<u32>>>(out.trim())
            .map(Option::unwrap_or_default)
            .map_err(|e| ShimError::Other(format!("runtime ps output {out:?}: {e}")))
    }

    /// `runtime update` with the resources (JSON LinuxResources).
    pub async fn update(&self, resources_json: &[u8], reaper: &Reaper) -> Result<()> {
        let path = self.bundle.join("update-resources.json");
        std::fs::write(&path, resources_json).map_err(ShimError::io("write resources"))?;
        let r = self
            .runtime
            .run(
                reaper,
                vec![
                    "update".into(),
                    "--resources".into(),
                    path.display().to_string(),
                    self.id.clone(),
                ],
                None,
            )
            .await;
        let _ = std::fs::remove_file(&path);
        r.map(|_| ())
    }

    /// Checkpoints the container (`runtime checkpoint`) from the running or paused state.
    pub async fn checkpoint(&self, mut args: CheckpointArgs, reaper: &Reaper) -> Result<()> {
        let freezer = Arc::clone(&self.freezer).lock_owned().await;
        match self.init.state() {
            State::Running | State::Paused => {}
            s => {
                return Err(ShimError::FailedPrecondition(format!(
                    "cannot checkpoint container {}: task is {}",
                    self.id,
                    match s {
                        State::Created => "created, not started",
                        _ => "stopped",
                    }
                )))
            }
        }
        if args.work_path.is_empty() {
            args.work_path = self.bundle.join("criu-work").display().to_string();
        }
        std::fs::create_dir_all(&args.image_path)
            .map_err(ShimError::io(format!("create {}", args.image_path)))?;
        std::fs::create_dir_all(&args.work_path)
            .map_err(ShimError::io(format!("create {}", args.work_path)))?;
        let cmd = runtime::checkpoint_args(&self.id, &args);
        log::info!("{} {}", self.runtime.binary.display(), cmd.join(" "));
        // In a task of its own: a request dropped with its connection (containerd
        // restarted) must neither lose the runtime's exit nor free the freezer lock
        // while CRIU still works.
        let (runtime, reaper) = (self.runtime.clone(), reaper.clone());
        tokio::spawn(async move {
            let _freezer = freezer;
            runtime.run(&reaper, cmd, None).await.map(|_| ())
        })
        .await
        .map_err(|e| ShimError::Other(format!("checkpoint task: {e}")))?
    }
}
