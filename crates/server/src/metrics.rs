//! Server metrics and their Prometheus text exposition.
//!
//! Hand-rolled on atomics rather than the `metrics` facade: every counter here is bumped
//! once per publication or per socket write (never per subscriber), a global recorder
//! would be shared by every server a test process starts, and the exposition is a few
//! dozen lines.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tether_proto::ErrorCode;

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Which transport a connection uses, for labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Native WebSocket `/ws`.
    Native,
    /// Server-sent events `/sse`.
    Sse,
    /// Event-server WebSocket `/events`.
    EventServer,
    /// Autobahn echo.
    Echo,
    /// Jetstream `/jetstream`.
    Jetstream,
}

impl Transport {
    const ALL: [Transport; 5] =
        [Transport::Native, Transport::Sse, Transport::EventServer, Transport::Echo, Transport::Jetstream];
    fn label(self) -> &'static str {
        match self {
            Transport::Native => "ws",
            Transport::Sse => "sse",
            Transport::EventServer => "event_server",
            Transport::Echo => "echo",
            Transport::Jetstream => "jetstream",
        }
    }
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    connections: [AtomicI64; 5],
    connections_total: [AtomicU64; 5],
    /// Publications accepted (from any source).
    pub publications: AtomicU64,
    /// Frames handed to connection queues.
    pub deliveries: AtomicU64,
    /// Frames refused by full or closing queues.
    pub dropped: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    /// Bytes read from sockets (WebSocket message payloads and HTTP API bodies).
    pub bytes_in: AtomicU64,
    /// Connections closed for being slow consumers.
    pub slow_consumers: AtomicU64,
    /// Connections closed for idleness.
    pub idle_timeouts: AtomicU64,
    /// Requests refused because of connection limits.
    pub connections_rejected: AtomicU64,
    errors: Vec<AtomicU64>,
    /// Time from publish to the socket write that carried it.
    pub publish_to_write: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            connections: Default::default(),
            connections_total: Default::default(),
            publications: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            errors: ErrorCode::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            publish_to_write: Histogram::default(),
        }
    }

    /// Counts an error sent to a client.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Errors sent with `code` so far.
    pub fn errors_with(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL.iter().position(|c| *c == code).map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// A connection opened; the returned guard counts it closed when dropped.
    pub fn connection_opened(self: &Arc<Self>, t: Transport) -> ConnectionGauge {
        let i = t as usize;
        self.connections[i].fetch_add(1, Ordering::Relaxed);
        self.connections_total[i].fetch_add(1, Ordering::Relaxed);
        ConnectionGauge { metrics: Arc::clone(self), index: i }
    }

    /// Open connections of transport `t`.
    pub fn open_connections(&self, t: Transport) -> i64 {
        self.connections[t as usize].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition; the hub's gauges are passed in.
    pub fn render(&self, subscriptions: usize, channels: usize) -> String {
        let mut o = String::with_capacity(4096);
        let _ = writeln!(o, "# HELP tether_connections Open connections.\n# TYPE tether_connections gauge");
        for t in Transport::ALL {
            let _ =
                writeln!(o, "tether_connections{{transport=\"{}\"}} {}", t.label(), self.open_connections(t));
        }
        let _ = writeln!(
            o,
            "# HELP tether_connections_opened_total Connections accepted.\n# TYPE tether_connections_opened_total counter"
        );
        for t in Transport::ALL {
            let _ = writeln!(
                o,
                "tether_connections_opened_total{{transport=\"{}\"}} {}",
                t.label(),
                self.connections_total[t as usize].load(Ordering::Relaxed)
            );
        }
        let gauges: [(&str, &str, usize); 2] = [
            ("tether_subscriptions", "Active subscriptions.", subscriptions),
            (
                "tether_channels",
                "Channels the hub holds: with subscribers, history or idempotency keys.",
                channels,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let counters: [(&str, &str, &AtomicU64); 8] = [
            ("tether_publications_total", "Publications accepted.", &self.publications),
            ("tether_deliveries_total", "Frames queued to subscribers.", &self.deliveries),
            ("tether_deliveries_dropped_total", "Frames refused by full or closing queues.", &self.dropped),
            ("tether_bytes_out_total", "Bytes written to WebSocket and SSE clients.", &self.bytes_out),
            ("tether_bytes_in_total", "Bytes received in WebSocket messages and API bodies.", &self.bytes_in),
            (
                "tether_slow_consumer_disconnects_total",
                "Connections closed as slow consumers.",
                &self.slow_consumers,
            ),
            ("tether_idle_timeouts_total", "Connections closed for idleness.", &self.idle_timeouts),
            (
                "tether_connections_rejected_total",
                "Connections refused by connection limits.",
                &self.connections_rejected,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP tether_errors_total Errors sent to clients, by code.\n# TYPE tether_errors_total counter"
        );
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            let _ =
                writeln!(o, "tether_errors_total{{code=\"{c}\"}} {}", self.errors[i].load(Ordering::Relaxed));
        }
        self.publish_to_write.render(
            &mut o,
            "tether_publish_to_write_seconds",
            "Time from publish to the socket write carrying it (oldest frame of each write).",
        );
        o
    }
}

/// Decrements the open-connections gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGauge {
    metrics: Arc<Metrics>,
    index: usize,
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.metrics.connections[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}
