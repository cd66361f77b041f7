//! The konnectivity tunnel's probe (condition TunnelReady): how many agents each
//! konnectivity-server beside an apiserver has, against how many Ready nodes the tenant
//! has. Each server reports its agents on its health port's `/metrics`; the nodes come
//! from the tenant apiserver. Every server needs an agent of every node: the apiserver
//! behind it reaches a node only through that node's agent.
//!
//! Which series counts the agents (konnectivity v0.34.0, `pkg/server/backend_manager.go`):
//! the server keeps one backend storage per proxy strategy (`--proxy-strategies=destHost,default`),
//! and each writes its size to `ready_backends{proxy_strategy=...}` under its own lock on
//! every change. The `default` storage is keyed by agent ID, so its series is the number of
//! connected agents. The `destHost` storage is keyed by the addresses agents announce (a
//! count of addresses, not agents), and both storages write the deprecated, unlabelled
//! `ready_backend_connections`: it holds whichever wrote last.
//!
//! [`verdict`] is pure; [`probe`] does the requests.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::{Method, StatusCode};
use k8s_openapi::api::core::v1::{Node, Pod};

use super::ProbeOutcome;
use crate::resources::konnectivity::{AGENT_PORT, HEALTH_PORT, SERVER_CONTAINER};
use crate::transport::TlsClient;

/// The gauge of a server's `/metrics` that counts connected agents, in the series of
/// [`AGENTS_STRATEGY`] (see the module comment).
pub const AGENTS_METRIC: &str = "konnectivity_network_proxy_server_ready_backends";
/// The `proxy_strategy` label of the series of [`AGENTS_METRIC`] that counts agents: the
/// `default` strategy's storage, keyed by agent ID.
pub const AGENTS_STRATEGY: &str = "default";
/// Bound on a `/metrics` answer (a server's is a few KiB).
const MAX_METRICS_BYTES: usize = 1 << 20;

/// A konnectivity-server to ask: the apiserver pod it runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTarget {
    /// The apiserver pod's name.
    pub pod: String,
    /// Its address.
    pub ip: IpAddr,
}

/// The servers among the tenant's apiserver `pods` (pure): running pods with a started
/// konnectivity-server container; none when the tenant runs no tunnel.
pub fn servers(pods: &[Pod]) -> Vec<ServerTarget> {
    let mut servers: Vec<ServerTarget> =
        pods.iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| {
                let status = pod.status.as_ref()?;
                let started =
                    status.container_statuses.iter().flatten().any(|container| {
                        container.name == SERVER_CONTAINER && container.started == Some(true)
                    });
                (started && status.phase.as_deref() == Some("Running")).then_some(())?;
                Some(ServerTarget {
                    pod: pod.metadata.name.clone()?,
                    ip: status.pod_ip.as_deref()?.parse().ok()?,
                })
            })
            .collect();
    servers.sort_by(|a, b| a.pod.cmp(&b.pod));
    servers
}

/// The agents a server's `/metrics` text reports (pure): the value of [`AGENTS_METRIC`]
/// with `proxy_strategy` [`AGENTS_STRATEGY`]; `None` without that series.
pub fn agents_in_metrics(text: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(sample)
        .find(|sample| {
            sample.name == AGENTS_METRIC
                && sample
                    .labels
                    .iter()
                    .any(|(label, value)| *label == "proxy_strategy" && value == AGENTS_STRATEGY)
        })
        .map(|sample| sample.value.max(0.0) as u64)
}

/// One sample of the Prometheus text format.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    /// Label names and their values, unescaped.
    labels: Vec<(&'a str, String)>,
    value: f64,
}

/// The sample on one line of the Prometheus text format (pure); an optional timestamp
/// after the value is ignored. `None` for anything else.
fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            inside = inside.trim_start_matches([' ', ',']);
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inside.split_once('=')?;
            let mut chars = after.strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (index, '"') => break index,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, other) => value.push(other),
                }
            };
            labels.push((label.trim(), value));
            inside = &after[end + 2..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

/// TunnelReady's verdict (pure) from the Ready `nodes` and each server's agents (or why
/// they could not be read). Healthy when every server has at least one agent per node;
/// with no node, healthy with nothing to carry. The messages name each server's count,
/// never a time, so a steady tunnel never rewrites its condition.
pub fn verdict(nodes: usize, servers: &[(String, Result<u64, String>)]) -> ProbeOutcome {
    if servers.is_empty() {
        return ProbeOutcome::Inconclusive("no konnectivity-server is running yet".into());
    }
    if let Some((pod, Err(error))) = servers.iter().find(|(_, agents)| agents.is_err()) {
        return ProbeOutcome::Inconclusive(format!("cannot read the agents of the server in {pod}: {error}"));
    }
    let counts: Vec<String> = servers
        .iter()
        .map(|(pod, agents)| format!("{pod}: {} agent(s)", agents.as_ref().copied().unwrap_or_default()))
        .collect();
    let short =
        servers.iter().filter(|(_, agents)| agents.as_ref().is_ok_and(|count| (*count as usize) < nodes));
    if nodes == 0 {
        ProbeOutcome::Healthy(format!("no node has joined; {} server(s) wait for agents", servers.len()))
    } else if short.count() == 0 {
        ProbeOutcome::Healthy(format!(
            "agents of {nodes} node(s) connected to every server ({})",
            counts.join(", ")
        ))
    } else {
        ProbeOutcome::Unhealthy(format!(
            "agents missing: {nodes} node(s), {}; the nodes must reach the tenant endpoint's tunnel port \
             (Service port konnectivity, {AGENT_PORT})",
            counts.join(", ")
        ))
    }
}

/// Asks each server for its agents and the tenant apiserver (at `address`, as the admin)
/// for its Ready nodes, then judges with [`verdict`].
pub async fn probe(
    admin: &TlsClient,
    address: SocketAddr,
    server_name: &str,
    servers: &[ServerTarget],
    timeout: Duration,
) -> ProbeOutcome {
    let scrapes = futures::future::join_all(servers.iter().map(|server| async move {
        (server.pod.clone(), agents_of(SocketAddr::new(server.ip, HEALTH_PORT as u16), timeout).await)
    }));
    let nodes = ready_nodes(admin, address, server_name, timeout);
    let (scrapes, nodes) = futures::join!(scrapes, nodes);
    match nodes {
        Ok(nodes) => verdict(nodes, &scrapes),
        Err(error) => ProbeOutcome::Inconclusive(format!("cannot count the tenant's nodes: {error}")),
    }
}

async fn ready_nodes(
    admin: &TlsClient,
    address: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<usize, String> {
    let response = admin
        .request(address, server_name, Method::GET, "/api/v1/nodes", None, timeout)
        .await
        .map_err(|error| error.to_string())?;
    if response.status != StatusCode::OK {
        return Err(format!("HTTP {}: {}", response.status.as_u16(), response.summary()));
    }
    let nodes: kube::core::ObjectList<Node> =
        serde_json::from_slice(&response.body).map_err(|error| error.to_string())?;
    Ok(nodes
        .items
        .iter()
        .filter(|node| {
            node.status.as_ref().and_then(|status| status.conditions.as_ref()).is_some_and(|conditions| {
                conditions.iter().any(|condition| condition.type_ == "Ready" && condition.status == "True")
            })
        })
        .count())
}

/// The agents the server at `address` (its health port) reports.
async fn agents_of(address: SocketAddr, timeout: Duration) -> Result<u64, String> {
    let text = metrics_text(address, timeout).await?;
    agents_in_metrics(&text)
        .ok_or_else(|| format!("{address}: no {AGENTS_METRIC}{{proxy_strategy=\"{AGENTS_STRATEGY}\"}}"))
}

/// The `/metrics` text of the server whose health port is `address`: `GET /metrics` over
/// plain HTTP/1.0 (the health port serves no TLS), within `timeout`.
pub async fn metrics_text(address: SocketAddr, timeout: Duration) -> Result<String, String> {
    // tokio's readiness calls (its `net` feature only): the request is one small write,
    // the answer is read until the server closes (HTTP/1.0).
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address).await?;
        let request = b"GET /metrics HTTP/1.0\r\nHost: konnectivity-server\r\n\r\n";
        let mut written = 0;
        while written < request.len() {
            stream.writable().await?;
            match stream.try_write(&request[written..]) {
                Ok(count) => written += count,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        let mut body = Vec::new();
        let mut buffer = [0u8; 16 * 1024];
        while body.len() < MAX_METRICS_BYTES {
            stream.readable().await?;
            match stream.try_read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => body.extend_from_slice(&buffer[..count]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{address}: no answer within {}s", timeout.as_secs()))?
        .map_err(|error| format!("{address}: {error}"))?;
    let text = String::from_utf8_lossy(&body);
    if !text.starts_with("HTTP/1.") || !text.lines().next().is_some_and(|line| line.contains(" 200")) {
        return Err(format!("{address}: {}", text.lines().next().unwrap_or("empty answer")));
    }
    Ok(text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent gauges as a v0.34.0 server with `--proxy-strategies=destHost,default`
    /// serves them, with the deprecated gauge as the `destHost` storage may leave it (its
    /// last write: two addresses announced by one agent).
    const METRICS: &str = "\
# HELP konnectivity_network_proxy_server_ready_backend_connections Number of konnectivity agent connected to the proxy server. DEPRECATED, please use ready_backends
# TYPE konnectivity_network_proxy_server_ready_backend_connections gauge
konnectivity_network_proxy_server_ready_backend_connections 2
# HELP konnectivity_network_proxy_server_ready_backends Number of konnectivity agent connected to the proxy server
# TYPE konnectivity_network_proxy_server_ready_backends gauge
konnectivity_network_proxy_server_ready_backends{proxy_strategy=\"default\"} 1
konnectivity_network_proxy_server_ready_backends{proxy_strategy=\"destHost\"} 2
";

    #[test]
    fn the_agents_are_the_default_strategys_series_not_the_deprecated_gauge() {
        assert_eq!(agents_in_metrics(METRICS), Some(1));
        let destination_first = "konnectivity_network_proxy_server_ready_backends{proxy_strategy=\"destHost\"} 3\n\
                                 konnectivity_network_proxy_server_ready_backends{proxy_strategy=\"default\"} 0\n";
        assert_eq!(agents_in_metrics(destination_first), Some(0), "a server with no agent");
        let deprecated_only = "konnectivity_network_proxy_server_ready_backend_connections 1\n";
        assert_eq!(agents_in_metrics(deprecated_only), None);
        assert_eq!(agents_in_metrics("other_metric 1\n"), None);
        assert_eq!(agents_in_metrics(""), None);
    }

    #[test]
    fn sample_lines_are_parsed_with_their_labels_and_without_a_timestamp() {
        let line = "konnectivity_network_proxy_server_ready_backends{pod=\"a,\\\"b\\\"\", proxy_strategy=\"default\",} 4 1700000000000";
        let parsed = sample(line).expect("a sample");
        assert_eq!(parsed.name, AGENTS_METRIC);
        assert_eq!(
            parsed.labels,
            vec![("pod", "a,\"b\"".to_string()), ("proxy_strategy", "default".to_string())]
        );
        assert_eq!(parsed.value, 4.0);
        assert_eq!(agents_in_metrics(line), Some(4));
        assert_eq!(
            sample("plain_gauge 2.5"),
            Some(Sample { name: "plain_gauge", labels: Vec::new(), value: 2.5 })
        );
        assert_eq!(sample("broken{proxy_strategy=\"default} 1"), None, "an unterminated value");
        assert_eq!(sample("no_value{}"), None);
        assert_eq!(sample("not_a_number x"), None);
    }

    #[test]
    fn every_server_needs_an_agent_of_every_node() {
        let servers = |counts: &[u64]| -> Vec<(String, Result<u64, String>)> {
            counts.iter().enumerate().map(|(index, count)| (format!("api-{index}"), Ok(*count))).collect()
        };
        assert!(verdict(0, &servers(&[0])).is_healthy(), "no node, nothing to carry");
        let healthy = verdict(2, &servers(&[2, 2]));
        assert_eq!(
            healthy,
            ProbeOutcome::Healthy(
                "agents of 2 node(s) connected to every server (api-0: 2 agent(s), api-1: 2 agent(s))".into()
            )
        );
        let ProbeOutcome::Unhealthy(message) = verdict(2, &servers(&[2, 1])) else {
            panic!("one server short")
        };
        assert!(message.contains("api-1: 1 agent(s)") && message.contains("tunnel port"), "{message}");
        assert!(matches!(verdict(1, &[]), ProbeOutcome::Inconclusive(_)));
        let unreadable = vec![("api-0".to_string(), Err("refused".to_string()))];
        assert!(matches!(verdict(1, &unreadable), ProbeOutcome::Inconclusive(_)));
    }
}
