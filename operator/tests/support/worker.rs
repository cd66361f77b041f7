//! Worker hosts for the end-to-end tests: `hack/worker-up.sh` run with a `kubeadm join`
//! line, and `hack/worker-down.sh` run when the test ends, also when it panics (the guard's
//! `Drop`, like [`super::Operator`]'s). See docs/development.md, "Worker hosts".
//!
//! Worker names are a short prefix and random hex: the scripts allow 12 characters (the
//! name is part of a veth name), and two runs of a suite on one machine must not share a
//! worker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (the scripts live in its hack/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate sits in the repository").to_path_buf()
}

/// `NAME=value` of a hack/ shell file (versions.env, lib.sh), so the tests and the scripts
/// never disagree on a pinned version or tag.
pub fn hack_variable(file: &str, name: &str) -> String {
    let path = repo_root().join("hack").join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    let prefix = format!("{name}=");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("{} sets no {name}", path.display()))
}

/// The cache of upstream binaries and images (hack/lib.sh's NESTOR_CACHE).
fn nestor_cache() -> PathBuf {
    if let Some(cache) = std::env::var_os("NESTOR_CACHE").filter(|value| !value.is_empty()) {
        return cache.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    base.join("nestor")
}

/// The kubectl hack/build-upstream.sh built (KUBERNETES_VERSION of hack/versions.env).
pub fn kubectl_binary() -> PathBuf {
    let version = hack_variable("versions.env", "KUBERNETES_VERSION");
    nestor_cache().join("bin").join(format!("kubernetes-{version}")).join("kubectl")
}

/// The busybox image hack/build-images.sh built and worker-up imports.
pub fn busybox_image() -> String {
    format!("nestor.local/busybox:{}", hack_variable("lib.sh", "BUSYBOX_TAG"))
}

/// Where the meta cluster and the workers keep their logs (hack/lib.sh's META_LOG_DIR).
fn meta_log_dir() -> PathBuf {
    std::env::var_os("NESTOR_META_DIR")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/nestor-meta"))
        .join("logs")
}

/// How one run of worker-up ended.
pub struct WorkerUpRun {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Everything it wrote to stderr (its log; on a failed join, kubeadm's last lines).
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// A worker host of this test; removed with worker-down when dropped.
pub struct WorkerHost {
    /// The worker's name, also its Node's.
    pub name: String,
    /// A worker-up running in the background ([`WorkerHost::spawn_up`]).
    background: Option<Child>,
}

impl WorkerHost {
    /// A worker host named `prefix-<6 hex>` (`prefix` of at most 5 characters); nothing runs
    /// until [`WorkerHost::up`] or [`WorkerHost::spawn_up`].
    pub fn named(prefix: &str) -> WorkerHost {
        assert!(prefix.len() <= 5, "worker names have at most 12 characters");
        let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        WorkerHost { name, background: None }
    }

    fn command(&self, join_line: &str, extra_join_args: &[&str], images: &str) -> Command {
        let mut command = Command::new(repo_root().join("hack/worker-up.sh"));
        command
            .arg(&self.name)
            .arg("--")
            .args(join_line.split_whitespace())
            .args(extra_join_args)
            .env("WORKER_IMAGES", images)
            .stdin(Stdio::null());
        command
    }

    /// Runs worker-up with `join_line` (as `nestor join` printed it) and `extra_join_args`
    /// to completion, importing the image archives named in `images`; off the async
    /// runtime's threads.
    pub async fn up(&self, join_line: &str, extra_join_args: &[&str], images: &str) -> WorkerUpRun {
        let mut command = self.command(join_line, extra_join_args, images);
        let started = Instant::now();
        let output = tokio::task::spawn_blocking(move || command.output().expect("run hack/worker-up.sh"))
            .await
            .expect("worker-up runner");
        let run = WorkerUpRun {
            success: output.status.success(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        };
        eprintln!("worker-up {} exited {} after {:?}", self.name, output.status, run.elapsed);
        run
    }

    /// Starts worker-up in the background (its output goes to the test's stderr); the
    /// guard stops it, by its pid, when dropped.
    pub fn spawn_up(&mut self, join_line: &str, extra_join_args: &[&str], images: &str) {
        let child =
            self.command(join_line, extra_join_args, images).spawn().expect("start hack/worker-up.sh");
        eprintln!("worker-up {} running in the background, pid {}", self.name, child.id());
        self.background = Some(child);
    }

    /// The log of one of the worker's processes: kubeadm, kubelet or containerd.
    pub fn log_path(&self, component: &str) -> PathBuf {
        meta_log_dir().join(format!("worker-{}", self.name)).join(format!("{component}.log"))
    }

    /// The whole log of `component`, empty when there is none yet.
    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.log_path(component)).unwrap_or_default()
    }

    /// File `path` as the worker sees it (in its own mount namespace: /etc/kubernetes and
    /// /var/lib/kubelet are the worker's, symlinks resolve there).
    pub fn read_file(&self, path: &str) -> Result<String, String> {
        let namespace = format!("/run/nestor-workers/ns/{}.mnt", self.name);
        let output = Command::new("nsenter")
            .arg(format!("--mount={namespace}"))
            .args(["--", "cat", path])
            .output()
            .map_err(|error| format!("nsenter: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "cat {path} in worker {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn log_tail(&self, component: &str) -> String {
        let text = self.log(component);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }

    /// Stops a background worker-up (SIGKILL to its pid; worker-down removes what it
    /// started) and removes the worker.
    fn down(&mut self) {
        if let Some(mut child) = self.background.take() {
            // `Child::kill` is SIGKILL to this child's pid only.
            let _ = child.kill();
            let _ = child.wait();
        }
        let started = Instant::now();
        match Command::new(repo_root().join("hack/worker-down.sh"))
            .arg(&self.name)
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) if output.status.success() => {
                eprintln!("worker-down {} in {:?}", self.name, started.elapsed())
            }
            Ok(output) => eprintln!(
                "worker-down {} failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("cannot run worker-down {}: {error}", self.name),
        }
    }
}

impl Drop for WorkerHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for component in ["kubeadm", "kubelet"] {
                eprintln!(
                    "worker {} {component} log {}\n--- last lines ---\n{}\n---",
                    self.name,
                    self.log_path(component).display(),
                    self.log_tail(component)
                );
            }
        }
        self.down();
    }
}
