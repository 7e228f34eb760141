//! Publish/subscribe scenarios: `fanout`, `channels` and `http` are all this one engine
//! with different shapes (channels × subscribers per channel, publishers, pacing).
//!
//! Phases: connect and subscribe every subscriber (bounded concurrency), publish for the
//! duration (or request budget), wait a bounded time for stragglers, stop, then count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::history::{OffsetSum, OffsetTracker};
use crate::http::HttpConn;
use crate::server::{CpuSample, Target};
use crate::track::{self, Latencies, SeqTracker};
use crate::ws::{self, op};

/// How publications are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Via {
    /// `POST /api/publish`, one request in flight per publisher connection.
    Http,
    /// Client `publish` over a WebSocket, pipelined.
    Ws,
}

/// How fast to publish.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pace {
    /// This many publications per second in total.
    Rate(f64),
    /// As fast as subscribers keep up: at most `window` publications per channel whose
    /// deliveries have not all arrived yet.
    FlatOut {
        /// Publications in flight per channel.
        window: u64,
    },
    /// As fast as the publishers can go (each waits for its previous request).
    Unpaced,
}

/// When publishing stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Budget {
    /// After this long.
    Duration(Duration),
    /// After this many publications in total.
    Count(u64),
}

/// A scenario's shape.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Scenario name for the report.
    pub(crate) name: &'static str,
    /// Number of channels (`bench:c0` …).
    pub(crate) channels: usize,
    /// Subscribers on each channel.
    pub(crate) subs_per_channel: usize,
    /// Pacing.
    pub(crate) pace: Pace,
    /// Stop condition.
    pub(crate) budget: Budget,
    /// Approximate size of each publication's data.
    pub(crate) payload_bytes: usize,
    /// HTTP or WebSocket publishing.
    pub(crate) via: Via,
    /// Publisher connections.
    pub(crate) publishers: usize,
    /// Longest wait for stragglers after publishing.
    pub(crate) drain: Duration,
    /// Connection handshakes in flight at once.
    pub(crate) connect_concurrency: usize,
    /// Initial read buffer per subscriber.
    pub(crate) read_buf: usize,
    /// Channel name prefix.
    pub(crate) prefix: String,
    /// Print progress to stderr.
    pub(crate) progress: bool,
    /// History channels: every subscriber checks that its pushes' offsets follow each
    /// other from the position its subscribe returned (see [`crate::history`]).
    pub(crate) check_offsets: bool,
}

struct Shared {
    /// Deliveries received by all subscribers (duplicates included).
    delivered: AtomicU64,
    /// Publications sent by all publishers.
    published: AtomicU64,
    /// Publication budget handed out (for [`Budget::Count`]).
    claimed: AtomicU64,
    /// Subscriber latencies.
    lat: Latencies,
    /// Set once publishers must stop.
    stop_publishing: AtomicBool,
}

#[derive(Debug, Default)]
struct SubResult {
    chan: usize,
    tracker: SeqTracker,
    offsets: OffsetTracker,
    /// Why the connection ended before we stopped it.
    closed: Option<String>,
    /// Setup failure.
    failed: Option<String>,
}

#[derive(Debug)]
struct PubResult {
    /// Publications sent per channel (index = channel).
    sent: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    ack_latency: Option<Histogram<u64>>,
    /// When the last publication was sent.
    last_send: Option<Instant>,
}

/// Runs the scenario and returns the report.
pub(crate) async fn run(
    target: &Target,
    p: Params,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let total_subs = p.channels * p.subs_per_channel;
    let channels: Arc<Vec<String>> = Arc::new((0..p.channels).map(|c| format!("{}{c}", p.prefix)).collect());
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        published: AtomicU64::new(0),
        claimed: AtomicU64::new(0),
        lat: Latencies::new(64),
        stop_publishing: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    // Phase 1: subscribers.
    let rss_before = server_pid.and_then(crate::server::rss_kib);
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(p.connect_concurrency.max(1)));
    let ready = Arc::new(AtomicU64::new(0));
    let mut subs = JoinSet::new();
    for i in 0..total_subs {
        let chan = i % p.channels;
        let sub = Subscriber {
            idx: i,
            chan,
            channel: channels[chan].clone(),
            target: target.clone(),
            shared: Arc::clone(&shared),
            stop: stop_rx.clone(),
            gate: Arc::clone(&gate),
            ready: Arc::clone(&ready),
            read_buf: p.read_buf,
            check_offsets: p.check_offsets,
        };
        subs.spawn(sub.run());
    }
    let setup_deadline = Instant::now() + Duration::from_secs(120);
    let mut early_failures: Vec<SubResult> = Vec::new();
    loop {
        let failed = early_failures.iter().filter(|r| r.failed.is_some()).count() as u64;
        let done = ready.load(Ordering::Relaxed) + failed;
        if done >= total_subs as u64 || Instant::now() > setup_deadline {
            break;
        }
        // Collect setup failures as they happen so we do not wait for them.
        match tokio::time::timeout(Duration::from_millis(50), subs.join_next()).await {
            Ok(Some(Ok(r))) => early_failures.push(r),
            Ok(Some(Err(e))) => {
                early_failures.push(SubResult { failed: Some(e.to_string()), ..Default::default() })
            }
            _ => {}
        }
    }
    let connected = ready.load(Ordering::Relaxed);
    let setup_secs = t0.elapsed().as_secs_f64();
    if p.progress {
        eprintln!("{connected}/{total_subs} subscribers ready in {setup_secs:.1} s");
    }
    if connected == 0 {
        anyhow::bail!(
            "no subscriber could connect: {}",
            early_failures.iter().find_map(|r| r.failed.clone()).unwrap_or_default()
        );
    }
    let rss_subscribed = server_pid.and_then(crate::server::rss_kib);

    // Phase 2: publish.
    let cpu0 = CpuSample::now(server_pid);
    let pad: Arc<[u8]> = track::make_pad(p.payload_bytes).into();
    let publish_start = Instant::now();
    let deadline = match p.budget {
        Budget::Duration(d) => Some(publish_start + d),
        Budget::Count(_) => None,
    };
    let mut pubs = JoinSet::new();
    for k in 0..p.publishers.max(1) {
        let publisher = Publisher {
            k,
            target: target.clone(),
            channels: Arc::clone(&channels),
            shared: Arc::clone(&shared),
            pace: match p.pace {
                Pace::Rate(r) => Pace::Rate(r / p.publishers.max(1) as f64),
                other => other,
            },
            budget: p.budget,
            deadline,
            pad: Arc::clone(&pad),
            subs_per_channel: p.subs_per_channel as u64,
            total_subs: connected,
        };
        match p.via {
            Via::Http => pubs.spawn(publisher.run_http()),
            Via::Ws => pubs.spawn(publisher.run_ws()),
        };
    }
    let mut progress_at = Instant::now() + Duration::from_secs(5);
    let mut last_delivered = 0u64;
    let mut last_progress_t = Instant::now();
    let mut pub_results = Vec::new();
    while !pubs.is_empty() {
        match tokio::time::timeout(Duration::from_millis(100), pubs.join_next()).await {
            Ok(Some(r)) => pub_results.push(r.context("publisher task")?),
            Ok(None) => break,
            Err(_) => {}
        }
        if p.progress && Instant::now() >= progress_at {
            let d = shared.delivered.load(Ordering::Relaxed);
            let dt = last_progress_t.elapsed().as_secs_f64();
            let (t, published) =
                (publish_start.elapsed().as_secs_f64(), shared.published.load(Ordering::Relaxed));
            let rate = (d - last_delivered) as f64 / dt;
            eprintln!("  t={t:>5.1}s published={published} delivered={d} ({rate:.0}/s)");
            last_delivered = d;
            last_progress_t = Instant::now();
            progress_at += Duration::from_secs(5);
        }
        if deadline.is_some_and(|d| Instant::now() > d + Duration::from_secs(30)) {
            shared.stop_publishing.store(true, Ordering::Relaxed);
        }
    }
    let publish_secs = pub_results
        .iter()
        .filter_map(|r| r.last_send)
        .max()
        .map_or(0.0, |t| t.duration_since(publish_start).as_secs_f64());
    let acks_secs = publish_start.elapsed().as_secs_f64();

    // Expected deliveries per channel.
    let mut sent_per_channel = vec![0u64; p.channels];
    for r in &pub_results {
        for (c, n) in r.sent.iter().enumerate() {
            sent_per_channel[c] += n;
        }
    }
    let publications: u64 = sent_per_channel.iter().sum();
    let expected_now = publications * p.subs_per_channel as u64 * connected / total_subs.max(1) as u64;

    // Phase 3: stragglers, bounded.
    let drain_start = Instant::now();
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    let mut last_delivery_at = Instant::now();
    loop {
        let d = shared.delivered.load(Ordering::Relaxed);
        if d != last {
            last = d;
            last_change = Instant::now();
            last_delivery_at = last_change;
        }
        if d >= expected_now
            || drain_start.elapsed() >= p.drain
            || last_change.elapsed() > Duration::from_secs(3)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let active_secs = last_delivery_at.duration_since(publish_start).as_secs_f64().max(1e-3);
    let cpu = cpu0.since(server_pid);
    let rss_after = server_pid.and_then(crate::server::rss_kib);
    let metrics = crate::server::fetch_metrics(target.api, &target.api_host).await;

    // Phase 4: stop and count.
    let _ = stop_tx.send(true);
    let mut results = early_failures;
    while let Some(r) = subs.join_next().await {
        results.push(r.unwrap_or_else(|e| SubResult { failed: Some(e.to_string()), ..Default::default() }));
    }
    let mut received = 0u64;
    let mut distinct = 0u64;
    let (mut dups, mut ooo, mut unparsed, mut missing, mut missing_disconnected) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut expected = 0u64;
    let mut offsets = OffsetSum::default();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut disconnects: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        if let Some(f) = &r.failed {
            *failures.entry(f.clone()).or_default() += 1;
            continue;
        }
        let exp = sent_per_channel[r.chan];
        expected += exp;
        received += r.tracker.received;
        let got = r.tracker.distinct_total();
        distinct += got;
        dups += r.tracker.duplicates;
        ooo += r.tracker.out_of_order;
        unparsed += r.tracker.unparsed;
        r.offsets.add_to(&mut offsets);
        if let Some(c) = &r.closed {
            *disconnects.entry(c.clone()).or_default() += 1;
            missing_disconnected += exp.saturating_sub(got);
        } else {
            missing += exp.saturating_sub(got);
        }
    }
    let lat = shared.lat.merged();
    let mut ack: Option<Histogram<u64>> = None;
    let mut pub_errors = 0;
    let mut first_pub_error = None;
    for r in &pub_results {
        pub_errors += r.errors;
        if first_pub_error.is_none() {
            first_pub_error.clone_from(&r.first_error);
        }
        if let Some(h) = &r.ack_latency {
            match &mut ack {
                Some(a) => {
                    let _ = a.add(h);
                }
                None => ack = Some(h.clone()),
            }
        }
    }
    let pick = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied();
    let mut report = json!({
        "scenario": p.name,
        "channels": p.channels,
        "subscribers_per_channel": p.subs_per_channel,
        "subscribers": total_subs,
        "subscribers_connected": connected,
        "subscriber_setup_s": setup_secs,
        "connect_failures": failures,
        "publishers": p.publishers,
        "publish_via": match p.via { Via::Http => "http", Via::Ws => "ws" },
        "pace": match p.pace {
            Pace::Rate(r) => json!({"rate_per_s": r}),
            Pace::FlatOut { window } => json!({"flat_out_window_per_channel": window}),
            Pace::Unpaced => json!("unpaced"),
        },
        "payload_bytes": p.payload_bytes,
        "publish_s": publish_secs,
        "publish_and_acks_s": acks_secs,
        "active_s": active_secs,
        "publications": publications,
        "publications_per_s": publications as f64 / publish_secs.max(1e-3),
        "publish_errors": pub_errors,
        "first_publish_error": first_pub_error,
        "publish_ack_latency": ack.as_ref().map(track::latency_json),
        "deliveries_expected": expected,
        "deliveries_received": received,
        "deliveries_distinct": distinct,
        "deliveries_per_s": received as f64 / active_secs,
        "latency": track::latency_json(&lat),
        "missing": missing,
        "missing_on_disconnected": missing_disconnected,
        "duplicates": dups,
        "out_of_order": ooo,
        "unparsed": unparsed,
        "subscriber_disconnects": disconnects,
        "cpu": cpu,
        "server_rss_kib": {"before": rss_before, "subscribed": rss_subscribed, "after": rss_after},
        "server_metrics": metrics.as_ref().map(|m| json!({
            "publications_total": pick(m, "tether_publications_total"),
            "deliveries_total": pick(m, "tether_deliveries_total"),
            "deliveries_dropped_total": pick(m, "tether_deliveries_dropped_total"),
            "slow_consumer_disconnects_total": pick(m, "tether_slow_consumer_disconnects_total"),
            "publish_to_write_seconds_sum": pick(m, "tether_publish_to_write_seconds_sum"),
            "publish_to_write_seconds_count": pick(m, "tether_publish_to_write_seconds_count"),
        })),
        "_latency_line": track::latency_line(&lat),
        "_ack_line": ack.as_ref().map(track::latency_line),
    });
    if p.check_offsets {
        report["offsets"] = offsets.json();
    }
    Ok(report)
}

/// Renders the human summary of a pub/sub report.
pub(crate) fn summary(r: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let g = |k: &str| r.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let f = |k: &str| g(k).as_f64().unwrap_or(0.0);
    let _ = writeln!(s, "== {} ==", g("scenario").as_str().unwrap_or("?"));
    let _ = writeln!(
        s,
        "subscribers      {} connected of {} ({} channels x {}), setup {:.1} s",
        g("subscribers_connected"),
        g("subscribers"),
        g("channels"),
        g("subscribers_per_channel"),
        f("subscriber_setup_s")
    );
    let _ = writeln!(
        s,
        "publishing       {} publisher(s) via {}, pace {}, payload {} B",
        g("publishers"),
        g("publish_via").as_str().unwrap_or("?"),
        g("pace"),
        g("payload_bytes")
    );
    let _ = writeln!(
        s,
        "publications     {} in {:.2} s ({:.0}/s), errors {}",
        g("publications"),
        f("publish_s"),
        f("publications_per_s"),
        g("publish_errors")
    );
    if let Some(line) = g("_ack_line").as_str() {
        let _ = writeln!(s, "publish ack      {line}");
    }
    let _ = writeln!(
        s,
        "deliveries       {} received of {} expected, {:.0}/s over {:.2} s",
        g("deliveries_received"),
        g("deliveries_expected"),
        f("deliveries_per_s"),
        f("active_s")
    );
    let _ = writeln!(s, "latency          {}", g("_latency_line").as_str().unwrap_or(""));
    let _ = writeln!(
        s,
        "integrity        missing {}, duplicates {}, out-of-order {}, unparsed {}, missing on disconnected subscribers {}",
        g("missing"),
        g("duplicates"),
        g("out_of_order"),
        g("unparsed"),
        g("missing_on_disconnected")
    );
    let _ = writeln!(s, "disconnects      {}", g("subscriber_disconnects"));
    if g("connect_failures").as_object().is_some_and(|m| !m.is_empty()) {
        let _ = writeln!(s, "connect failures {}", g("connect_failures"));
    }
    let _ = writeln!(s, "cpu              {}", g("cpu"));
    let _ = writeln!(s, "server rss KiB   {}", g("server_rss_kib"));
    if !g("server_metrics").is_null() {
        let _ = writeln!(s, "server metrics   {}", g("server_metrics"));
    }
    s
}

struct Subscriber {
    idx: usize,
    chan: usize,
    channel: String,
    target: Target,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    gate: Arc<Semaphore>,
    ready: Arc<AtomicU64>,
    read_buf: usize,
    check_offsets: bool,
}

impl Subscriber {
    async fn run(self) -> SubResult {
        let mut res = SubResult { chan: self.chan, ..Default::default() };
        let setup = async {
            let _permit = self.gate.acquire().await?;
            let t = &self.target;
            let (mut rd, mut wr) =
                ws::connect(t.ws, &t.ws_host, &t.ws_path, None, self.read_buf, self.idx as u64).await?;
            wr.send_text(br#"{"id":1,"op":"connect"}"#).await?;
            let r = rd.read_text(&mut wr).await?;
            anyhow::ensure!(
                r.starts_with(br#"{"id":1,"result""#),
                "connect: {}",
                String::from_utf8_lossy(&r)
            );
            let sub = format!(r#"{{"id":2,"op":"subscribe","channel":"{}"}}"#, self.channel);
            wr.send_text(sub.as_bytes()).await?;
            let r = rd.read_text(&mut wr).await?;
            anyhow::ensure!(
                r.starts_with(br#"{"id":2,"result""#),
                "subscribe: {}",
                String::from_utf8_lossy(&r)
            );
            anyhow::Ok((rd, wr, r))
        };
        let (mut rd, mut wr) = match setup.await {
            Ok((rd, wr, reply)) => {
                if self.check_offsets
                    && let Some((top, _)) = crate::history::result_position(&reply)
                {
                    res.offsets.start(top);
                }
                (rd, wr)
            }
            Err(e) => {
                res.failed = Some(format!("{e:#}"));
                return res;
            }
        };
        self.ready.fetch_add(1, Ordering::Relaxed);
        let mut stop = self.stop;
        let mut lat = Vec::with_capacity(64);
        let tracker = &mut res.tracker;
        let offsets = &mut res.offsets;
        let check_offsets = self.check_offsets;
        'outer: loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break 'outer,
                r = rd.fill() => match r {
                    Ok(0) => { res.closed = Some("eof".to_owned()); break 'outer; }
                    Err(e) => { res.closed = Some(format!("read error: {e}")); break 'outer; }
                    Ok(_) => {}
                },
            }
            let now = track::now_nanos();
            let before = tracker.received;
            let mut pong = false;
            let mut ws_pong: Option<Vec<u8>> = None;
            loop {
                match rd.next_frame() {
                    Ok(Some(f)) => match f.opcode {
                        op::TEXT => {
                            let payload = rd.payload(&f);
                            if let Some(s) = track::parse_stamp(payload) {
                                tracker.on(s.p, s.seq);
                                lat.push(now.saturating_sub(s.t) / 1000);
                                if check_offsets {
                                    offsets.on(crate::history::push_offset(payload));
                                }
                            } else if ws::is_ping(payload) {
                                pong = true;
                            } else {
                                tracker.unparsed += 1;
                            }
                        }
                        op::PING => ws_pong = Some(rd.payload(&f).to_vec()),
                        op::CLOSE => {
                            res.closed = Some(format!("close {}", ws::close_reason(rd.payload(&f))));
                            break 'outer;
                        }
                        _ => {}
                    },
                    Ok(None) => break,
                    Err(e) => {
                        res.closed = Some(format!("protocol error: {e}"));
                        break 'outer;
                    }
                }
            }
            let n = tracker.received - before;
            if n > 0 {
                self.shared.delivered.fetch_add(n, Ordering::Relaxed);
                self.shared.lat.record(self.idx, &lat);
                lat.clear();
            }
            if pong && wr.send_text(ws::PONG).await.is_err() {
                res.closed = Some("write error".to_owned());
                break;
            }
            if let Some(p) = ws_pong
                && wr.send(op::PONG, &p).await.is_err()
            {
                res.closed = Some("write error".to_owned());
                break;
            }
        }
        if res.closed.is_none() {
            wr.close().await;
        }
        res
    }
}

struct Publisher {
    k: usize,
    target: Target,
    channels: Arc<Vec<String>>,
    shared: Arc<Shared>,
    pace: Pace,
    budget: Budget,
    deadline: Option<Instant>,
    pad: Arc<[u8]>,
    subs_per_channel: u64,
    total_subs: u64,
}

impl Publisher {
    fn over(&self) -> bool {
        self.shared.stop_publishing.load(Ordering::Relaxed)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Claims up to `want` publications from the budget; returns how many were granted.
    fn claim(&self, want: u64) -> u64 {
        match self.budget {
            Budget::Duration(_) => want,
            Budget::Count(total) => {
                let got = self.shared.claimed.fetch_add(want, Ordering::Relaxed);
                if got >= total { 0 } else { want.min(total - got) }
            }
        }
    }

    /// How many more publications the pace allows now (`sent` so far by this publisher).
    fn allowance(&self, start: Instant, sent: u64, stall: &mut (u64, Instant)) -> u64 {
        match self.pace {
            Pace::Rate(r) => {
                let due = (start.elapsed().as_secs_f64() * r) as u64 + 1;
                due.saturating_sub(sent)
            }
            Pace::FlatOut { window } => {
                let nchan = self.channels.len() as u64;
                let configured = (self.subs_per_channel * nchan).max(1);
                let published = self.shared.published.load(Ordering::Relaxed);
                let delivered = self.shared.delivered.load(Ordering::Relaxed);
                // Deliveries owed for what was published, scaled to connected subscribers.
                let owed = published * self.subs_per_channel * self.total_subs / configured;
                let in_flight = owed.saturating_sub(delivered);
                let limit = window * self.total_subs;
                let per_pub = (self.total_subs / nchan).max(1);
                if in_flight < limit {
                    *stall = (delivered, Instant::now());
                    ((limit - in_flight) / per_pub).max(1)
                } else if delivered != stall.0 {
                    *stall = (delivered, Instant::now());
                    0
                } else if stall.1.elapsed() > Duration::from_secs(1) {
                    // Deliveries stopped (subscribers gone?): keep publishing, slowly.
                    stall.1 = Instant::now();
                    1
                } else {
                    0
                }
            }
            Pace::Unpaced => u64::MAX,
        }
    }

    /// When to look again after the allowance ran out.
    fn next_wake(&self, start: Instant, sent: u64) -> Instant {
        match self.pace {
            Pace::Rate(r) => start + Duration::from_secs_f64(sent as f64 / r),
            _ => Instant::now() + Duration::from_millis(1),
        }
    }

    async fn run_ws(self) -> PubResult {
        let mut res = PubResult {
            sent: vec![0; self.channels.len()],
            errors: 0,
            first_error: None,
            ack_latency: None,
            last_send: None,
        };
        let t = &self.target;
        let (mut rd, mut wr) =
            match ws::connect(t.ws, &t.ws_host, &t.ws_path, None, 64 * 1024, 0xfeed + self.k as u64).await {
                Ok(x) => x,
                Err(e) => {
                    res.errors += 1;
                    res.first_error = Some(format!("{e:#}"));
                    return res;
                }
            };
        let setup = async {
            wr.send_text(br#"{"id":0,"op":"connect"}"#).await?;
            let r = rd.read_text(&mut wr).await?;
            anyhow::ensure!(
                r.starts_with(br#"{"id":0,"result""#),
                "connect: {}",
                String::from_utf8_lossy(&r)
            );
            anyhow::Ok(())
        };
        if let Err(e) = setup.await {
            res.errors += 1;
            res.first_error = Some(format!("{e:#}"));
            return res;
        }
        // Acks are read by a separate task; it asks the writer for heartbeat answers.
        let acked = Arc::new(AtomicU64::new(0));
        let want_pong = Arc::new(AtomicBool::new(false));
        let reader = {
            let acked = Arc::clone(&acked);
            let want_pong = Arc::clone(&want_pong);
            tokio::spawn(async move {
                let mut errors = 0u64;
                let mut first: Option<String> = None;
                loop {
                    match rd.fill().await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let mut n = 0;
                    loop {
                        match rd.next_frame() {
                            Ok(Some(f)) if f.opcode == op::TEXT => {
                                let p = rd.payload(&f);
                                if ws::is_ping(p) {
                                    want_pong.store(true, Ordering::Relaxed);
                                } else {
                                    n += 1;
                                    if memchr::memmem::find(p, br#""error""#).is_some() {
                                        errors += 1;
                                        if first.is_none() {
                                            first = Some(String::from_utf8_lossy(p).into_owned());
                                        }
                                    }
                                }
                            }
                            Ok(Some(f)) if f.opcode == op::CLOSE => {
                                // Expected after our own close; unacked publications
                                // are reported by the writer.
                                acked.fetch_add(n, Ordering::Relaxed);
                                return (errors, first);
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => {
                                first.get_or_insert_with(|| e.to_string());
                                return (errors, first);
                            }
                        }
                    }
                    acked.fetch_add(n, Ordering::Relaxed);
                }
                (errors, first)
            })
        };
        let start = Instant::now();
        let nchan = self.channels.len();
        let mut next_chan = self.k % nchan;
        let mut sent_total = 0u64;
        let mut id = 1u64;
        let mut stall = (0u64, Instant::now());
        while !self.over() {
            let allow = self.allowance(start, sent_total, &mut stall).min(256);
            let allow = if allow > 0 { self.claim(allow) } else { 0 };
            if allow == 0 {
                if let Budget::Count(total) = self.budget
                    && self.shared.claimed.load(Ordering::Relaxed) >= total
                {
                    break;
                }
                tokio::time::sleep_until(self.next_wake(start, sent_total)).await;
                continue;
            }
            for _ in 0..allow {
                let c = next_chan;
                next_chan = (next_chan + 1) % nchan;
                let seq = res.sent[c];
                res.sent[c] += 1;
                let channel = &self.channels[c];
                let pad = &self.pad;
                let k = self.k;
                wr.push_text_with(|out| {
                    use std::io::Write as _;
                    let _ = write!(out, r#"{{"id":{id},"op":"publish","channel":"{channel}","data":"#);
                    track::write_data(out, k, seq, pad);
                    out.push(b'}');
                });
                id += 1;
            }
            sent_total += allow;
            self.shared.published.fetch_add(allow, Ordering::Relaxed);
            if want_pong.swap(false, Ordering::Relaxed) {
                wr.push_frame(op::TEXT, ws::PONG);
            }
            if let Err(e) = wr.flush().await {
                res.errors += 1;
                res.first_error = Some(format!("write: {e:#}"));
                break;
            }
            res.last_send = Some(Instant::now());
        }
        // Wait (bounded) for the acks, answering heartbeats meanwhile.
        let wait_until = Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::Relaxed) < sent_total
            && Instant::now() < wait_until
            && !reader.is_finished()
        {
            if want_pong.swap(false, Ordering::Relaxed) {
                let _ = wr.send_text(ws::PONG).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wr.close().await;
        let (errors, first) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or((0, None));
        let unacked = sent_total.saturating_sub(acked.load(Ordering::Relaxed));
        res.errors += errors + unacked;
        if res.first_error.is_none() {
            res.first_error =
                first.or_else(|| (unacked > 0).then(|| format!("{unacked} publications not acked")));
        }
        res
    }

    async fn run_http(self) -> PubResult {
        let mut res = PubResult {
            sent: vec![0; self.channels.len()],
            errors: 0,
            first_error: None,
            ack_latency: Some(track::new_histogram()),
            last_send: None,
        };
        let t = &self.target;
        let mut conn = match HttpConn::connect(t.api, &t.api_host, &t.key).await {
            Ok(c) => c,
            Err(e) => {
                res.errors += 1;
                res.first_error = Some(format!("{e:#}"));
                return res;
            }
        };
        let start = Instant::now();
        let nchan = self.channels.len();
        let mut next_chan = self.k % nchan;
        let mut sent_total = 0u64;
        let mut stall = (0u64, Instant::now());
        let hist = res.ack_latency.as_mut().expect("set above");
        while !self.over() {
            if self.allowance(start, sent_total, &mut stall) == 0 {
                tokio::time::sleep_until(self.next_wake(start, sent_total)).await;
                continue;
            }
            if self.claim(1) == 0 {
                break;
            }
            let c = next_chan;
            next_chan = (next_chan + 1) % nchan;
            let seq = res.sent[c];
            res.sent[c] += 1;
            sent_total += 1;
            self.shared.published.fetch_add(1, Ordering::Relaxed);
            let t0 = Instant::now();
            let (k, pad) = (self.k, &self.pad);
            let r = conn.publish(&self.channels[c], |out| track::write_data(out, k, seq, pad)).await;
            hist.saturating_record((t0.elapsed().as_micros() as u64).max(1));
            res.last_send = Some(Instant::now());
            if let Err(e) = r {
                res.errors += 1;
                if res.first_error.is_none() {
                    res.first_error = Some(format!("{e:#}"));
                }
                if e.to_string().contains("closed") || e.downcast_ref::<std::io::Error>().is_some() {
                    match HttpConn::connect(t.api, &t.api_host, &t.key).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
            }
        }
        res
    }
}
