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

use super::TestNamespace;

/// The meta cluster's pod range (hack/lib.sh's META_POD_CIDR).
pub const META_POD_CIDR: &str = "10.200.0.0/16";
/// The meta node's address, where the tenants' NodePorts are (hack/lib.sh's META_NODE_IP).
pub const META_NODE_IP: &str = "10.200.0.1";

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
pub fn nestor_cache() -> PathBuf {
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

    /// Runs `iptables ARGS` in the worker's network namespace (the worker host's own
    /// firewall); the rules go with the namespace at worker-down.
    pub fn iptables(&self, args: &[&str]) -> Result<(), String> {
        let output = Command::new("nsenter")
            .arg(format!("--net=/run/netns/nestor-w-{}", self.name))
            .arg("iptables")
            .args(args)
            .output()
            .map_err(|error| format!("nsenter iptables: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables {args:?} in worker {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// On the worker host, drops every packet of every connection the meta cluster's pod
    /// network (10.200.0.0/16, the tenant apiservers among them) opens to the worker, its
    /// own address and its pods' alike: the meta cluster cannot reach the worker at all.
    /// Replies to connections the worker opens are kept (conntrack direction), so it still
    /// reaches the tenant endpoint, whose address (10.200.0.1, the meta node's) lies in
    /// that range on this machine.
    pub fn cut_off_from_meta_pods(&self) {
        for chain in ["INPUT", "FORWARD"] {
            self.iptables(&[
                "-I",
                chain,
                "1",
                "-s",
                META_POD_CIDR,
                "-m",
                "conntrack",
                "--ctdir",
                "ORIGINAL",
                "-m",
                "comment",
                "--comment",
                "tunnel proof: meta pods cannot reach the worker",
                "-j",
                "DROP",
            ])
            .unwrap_or_else(|error| panic!("{error}"));
        }
        eprintln!("worker {}: every connection from {META_POD_CIDR} dropped on the worker", self.name);
    }

    /// Blocks (`true`) or unblocks (`false`) the worker's connections to `port` on the meta
    /// node address (the tunnel's node port): packets are dropped, nothing is refused.
    pub fn block_port(&self, port: i32, blocked: bool) {
        let port = port.to_string();
        for chain in ["OUTPUT", "FORWARD"] {
            let action = if blocked { "-I" } else { "-D" };
            let mut args = vec![action, chain];
            if blocked {
                args.push("1");
            }
            args.extend(["-d", META_NODE_IP, "-p", "tcp", "--dport", &port, "-j", "DROP"]);
            self.iptables(&args).unwrap_or_else(|error| panic!("{error}"));
        }
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

/// A node port for one test of this run (workers.rs and tunnel.rs, each test its own
/// `test` offset): from 31600–32559 (the join test uses 30100–31599, the demo 30050), starting at an offset of this run's pid so two runs on one meta cluster
/// differ, and skipping every node port a meta cluster Service already holds.
pub async fn free_node_port(ns: &TestNamespace, test: i32) -> i32 {
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::all(ns.client.clone());
    let taken: Vec<i32> = services
        .list(&kube::api::ListParams::default())
        .await
        .expect("list meta Services")
        .items
        .into_iter()
        .flat_map(|service| service.spec.and_then(|spec| spec.ports).unwrap_or_default())
        .filter_map(|port| port.node_port)
        .collect();
    let start = (std::process::id() % 480) as i32 * 2 + test;
    (0..960)
        .map(|step| 31600 + (start + step * 2) % 960)
        .find(|port| !taken.contains(port))
        .expect("a free node port in 31600-32559")
}

/// kubectl for `tenant` with its admin kubeconfig, reaching the apiserver the way
/// support's tenant_client does (the Service's ClusterIP, its DNS name for TLS); the
/// kubeconfig file lives as long as the returned guard.
pub async fn kubectl_command(
    ns: &TestNamespace,
    tenant: &str,
    args: &[&str],
) -> (std::process::Command, tempfile::NamedTempFile) {
    let names = ns.names(tenant);
    let secret = ns.secret(&names.admin_kubeconfig_secret()).await.expect("read").expect("admin kubeconfig");
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(kubeconfig.path(), &secret.data.expect("data")["value"].0).expect("write kubeconfig");
    let service = ns
        .api::<k8s_openapi::api::core::v1::Service>()
        .get(&names.apiserver())
        .await
        .expect("apiserver Service");
    let cluster_ip = service.spec.and_then(|spec| spec.cluster_ip).expect("ClusterIP");
    let mut command = std::process::Command::new(kubectl_binary());
    command
        .arg(format!("--kubeconfig={}", kubeconfig.path().display()))
        .arg(format!("--server=https://{cluster_ip}:6443"))
        .arg(format!("--tls-server-name={}", names.apiserver_service_host()))
        .arg("--request-timeout=30s")
        .args(args)
        .stdin(std::process::Stdio::null());
    (command, kubeconfig)
}

/// Runs kubectl against `tenant` (see [`kubectl_command`]); returns stdout, panics on
/// failure.
pub async fn kubectl(ns: &TestNamespace, tenant: &str, args: &[&str]) -> String {
    let (mut command, kubeconfig) = kubectl_command(ns, tenant, args).await;
    let output =
        tokio::task::spawn_blocking(move || command.output().expect("run kubectl")).await.expect("kubectl");
    drop(kubeconfig);
    assert!(output.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `kubectl port-forward` running in the background on a free local port; killed (SIGKILL
/// to its pid) when dropped, also when the test fails.
pub struct PortForward {
    child: std::process::Child,
    /// The local port.
    pub port: u16,
    _kubeconfig: tempfile::NamedTempFile,
}

impl PortForward {
    /// Forwards 127.0.0.1:<a free port> to `target`'s `remote_port` through the tenant apiserver.
    pub async fn start(ns: &TestNamespace, tenant: &str, target: &str, remote_port: u16) -> PortForward {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free local port")
            .port();
        let mapping = format!("{port}:{remote_port}");
        let (mut command, kubeconfig) =
            kubectl_command(ns, tenant, &["port-forward", "--address=127.0.0.1", target, &mapping]).await;
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start kubectl port-forward");
        eprintln!("kubectl port-forward {target} {mapping}: pid {}", child.id());
        PortForward { child, port, _kubeconfig: kubeconfig }
    }

    /// kubectl's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        // `Child::kill` is SIGKILL to this child's pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET of `/` on 127.0.0.1:`port` (the answer is close-delimited); the
/// whole response, headers included. tokio's readiness calls, so only its `net` feature.
pub async fn http_get_local(port: u16) -> Result<String, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
        let mut written = 0;
        while written < request.len() {
            stream.writable().await?;
            match stream.try_write(&request[written..]) {
                Ok(count) => written += count,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        let mut response = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            stream.readable().await?;
            match stream.try_read(&mut buffer) {
                Ok(0) => return Ok(response),
                Ok(count) => response.extend_from_slice(&buffer[..count]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET 127.0.0.1:{port}: no answer in 10 s"))?
        .map_err(|error| format!("GET 127.0.0.1:{port}: {error}"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    if text.starts_with("HTTP/1.") && text.contains(" 200 ") {
        Ok(text)
    } else {
        Err(format!("answered {text:?}"))
    }
}
