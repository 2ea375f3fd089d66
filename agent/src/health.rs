//! flanneld's health endpoint (`--healthz-ip`/`--healthz-port`) and Prometheus metrics, served by a tiny
//! HTTP/1.0-style handler on tokio's TcpListener: GET /healthz and GET /metrics, one request per
//! connection. The agent's loop updates [`Metrics`]; the server only reads it.

use crate::status::Status;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bounds (seconds) of the event-to-kernel histogram buckets.
const BUCKETS: [f64; 11] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub status: Status,
    /// Unix time (seconds, fractional) of the last successful kernel pass.
    pub last_sync: f64,
    /// Failed rounds with etcd (connect, read, watch, keepalive, write).
    pub etcd_errors: u64,
    pub kernel_errors: u64,
    /// Counts per bucket of [`BUCKETS`] (not cumulative), plus the +Inf bucket.
    latency: [u64; BUCKETS.len() + 1],
    latency_sum: f64,
    latency_count: u64,
}

pub type Shared = Arc<Mutex<Metrics>>;

impl Metrics {
    /// One lease change (the oldest of a coalesced batch) from its watch event to the kernel.
    pub fn observe_latency(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| s <= *b).unwrap_or(BUCKETS.len());
        self.latency[i] += 1;
        self.latency_sum += s;
        self.latency_count += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: String| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
        };
        gauge("rcni_overlay_peers", "Peers programmed into the kernel.", "gauge", self.status.peers.to_string());
        gauge(
            "rcni_overlay_last_sync_timestamp_seconds",
            "Unix time of the last successful kernel pass (0: none yet).",
            "gauge",
            format!("{:.3}", self.last_sync),
        );
        gauge("rcni_overlay_etcd_errors_total", "Failed rounds with etcd.", "counter", self.etcd_errors.to_string());
        gauge("rcni_overlay_kernel_errors_total", "Failed kernel passes.", "counter", self.kernel_errors.to_string());
        gauge(
            "rcni_overlay_etcd_reachable",
            "1 while the agent's last etcd round worked.",
            "gauge",
            u8::from(self.status.etcd_reachable).to_string(),
        );
        gauge(
            "rcni_overlay_revision",
            "etcd revision the applied peer set reflects.",
            "gauge",
            self.status.revision.to_string(),
        );
        gauge(
            "rcni_overlay_pending_removals",
            "Peers a suspect snapshot would remove, held for the grace period.",
            "gauge",
            self.status.pending_removals.to_string(),
        );
        let name = "rcni_overlay_event_to_kernel_seconds";
        let _ = write!(
            o,
            "# HELP {name} From a lease change's watch event to the kernel change (oldest event of a coalesced batch).\n# TYPE {name} histogram\n"
        );
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.latency[i];
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.latency[BUCKETS.len()];
        let _ = write!(
            o,
            "{name}_bucket{{le=\"+Inf\"}} {cum}\n{name}_sum {:.6}\n{name}_count {}\n",
            self.latency_sum, self.latency_count
        );
        o
    }

    /// `/healthz`: 200 while the node has a subnet and no conflict (also while etcd is down: the node is
    /// served from the last known peer set, which the body says); 503 otherwise, with the reason.
    pub fn health(&self) -> (u16, String) {
        let s = &self.status;
        if let Some(c) = &s.conflict {
            return (503, format!("conflict: {c}\n"));
        }
        let Some(subnet) = &s.subnet else {
            return (503, format!("no subnet yet: {}\n", s.last_error.as_deref().unwrap_or("joining")));
        };
        if !s.etcd_reachable {
            return (
                200,
                format!(
                    "degraded: etcd unreachable, serving {subnet} with the last known peer set ({} peers, revision {})\n",
                    s.peers, s.revision
                ),
            );
        }
        (200, format!("ok: {subnet}, {} peers, revision {}\n", s.peers, s.revision))
    }
}

/// Serves until the runtime ends. Bind errors are the caller's (reported at startup).
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        let Ok((conn, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(conn, shared)).await;
        });
    }
}

async fn answer(mut conn: TcpStream, shared: Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (code, ctype, body) = match (method, path) {
        ("GET", "/healthz") => {
            let (c, b) = shared.lock().expect("metrics lock").health();
            (c, "text/plain; charset=utf-8", b)
        }
        ("GET", "/metrics") => {
            (200, "text/plain; version=0.0.4; charset=utf-8", shared.lock().expect("metrics lock").render())
        }
        ("GET", _) => (404, "text/plain; charset=utf-8", "not found: try /healthz or /metrics\n".to_string()),
        _ => (405, "text/plain; charset=utf-8", "only GET\n".to_string()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_health_says_why() {
        let mut m = Metrics::default();
        m.observe_latency(Duration::from_millis(3));
        m.observe_latency(Duration::from_millis(40));
        m.observe_latency(Duration::from_secs(9));
        let t = m.render();
        assert!(t.contains("rcni_overlay_event_to_kernel_seconds_bucket{le=\"0.005\"} 1\n"), "{t}");
        assert!(t.contains("rcni_overlay_event_to_kernel_seconds_bucket{le=\"0.05\"} 2\n"), "{t}");
        assert!(t.contains("rcni_overlay_event_to_kernel_seconds_bucket{le=\"+Inf\"} 3\n"), "{t}");
        assert!(t.contains("rcni_overlay_event_to_kernel_seconds_count 3\n"), "{t}");
        assert_eq!(m.health().0, 503, "no subnet yet");
        m.status.subnet = Some("10.244.5.0/24".into());
        assert_eq!(m.health().0, 200);
        assert!(m.health().1.starts_with("degraded"), "etcd not reached yet: {}", m.health().1);
        m.status.etcd_reachable = true;
        assert!(m.health().1.starts_with("ok"));
        m.status.conflict = Some("10.244.5.0/24 is held by 198.18.0.9".into());
        assert_eq!(m.health().0, 503);
    }
}
