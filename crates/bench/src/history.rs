//! `history`: what channel history costs and what recovery takes (issue 5).
//!
//! Two parts, one run, one server:
//!
//! 1. **Publish throughput with and without history.** The same `channels`-shaped load
//!    (C channels × K subscribers, P pipelined publishers, flat out, paced by deliveries;
//!    see [`crate::pubsub`]) on a namespace without history (`bench:`), on one with
//!    `history_size = N` (`benchhist:`), and with `--persist` on a second spawned server
//!    with `[history] persist = true` (`benchhist:` again). Modes alternate between rounds
//!    (A B C, then C B A, …) so that neither is always first. On history channels every
//!    subscriber also checks that the `offset`s of its pushes follow each other, from the
//!    position its subscribe returned ([`OffsetTracker`]).
//! 2. **Recovery of M missed publications, end to end.** On one channel of
//!    `benchrec:` (history of `max(N, M)`, `recovery_limit = M`): a connection subscribes
//!    and leaves; a publisher publishes M (pipelined, every ack's offset checked); a new
//!    connection sends `subscribe` with `recover` from the old position, and the time from
//!    writing that frame to having the whole reply read and its offsets scanned
//!    ([`scan_recovery`]) is recorded. Its result position is the next round's old
//!    position. Afterwards, untimed, the reply is parsed in full ([`verify_recovery`]):
//!    `recovered: true`, the same epoch, and exactly offsets `LAST+1..=TOP`, each carrying
//!    the data that was published at that offset.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use memchr::memmem::Finder;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::pubsub::{self, Budget, Pace, Via};
use crate::server::{CpuSample, Spawned, Target};
use crate::track;
use crate::ws::{self, WsReader, WsWriter, op, parse_u64};

/// Namespace without history (the spawned server's `[namespaces.bench]`).
const NS_PLAIN: &str = "bench";
/// Namespace with `history_size = N`.
const NS_HIST: &str = "benchhist";
/// Namespace of the recovery part.
const NS_REC: &str = "benchrec";

/// One throughput configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No history.
    Plain,
    /// `history_size = N`, in memory.
    History,
    /// `history_size = N` on a server with `[history] persist = true`.
    Persist,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "no_history",
            Mode::History => "history",
            Mode::Persist => "history_persist",
        }
    }
}

/// Which parts to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// Publish throughput with and without history.
    Throughput,
    /// Recovery of missed publications.
    Recovery,
}

/// The scenario's options.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) parts: Vec<Part>,
    pub(crate) channels: usize,
    pub(crate) subs_per_channel: usize,
    pub(crate) publishers: usize,
    pub(crate) window: u64,
    pub(crate) duration: Duration,
    pub(crate) payload_bytes: usize,
    pub(crate) via: Via,
    pub(crate) drain: Duration,
    pub(crate) rounds: usize,
    pub(crate) history_size: usize,
    /// Also measure history on a second server with `persist = true` (needs the binary).
    pub(crate) persist: Option<(PathBuf, usize)>,
    pub(crate) recoveries: usize,
    pub(crate) missed: usize,
    pub(crate) connect_concurrency: usize,
    pub(crate) progress: bool,
}

/// The namespaces (and `[history]` table) the spawned server needs, appended to its config.
/// `bench` (no history) is already there; other scenarios do not get these.
pub(crate) fn server_toml(history_size: usize, missed: usize, persist: bool) -> String {
    let rec_size = history_size.max(missed).max(1);
    let mut s = format!(
        "[namespaces.{NS_HIST}]\npublish = \"anyone\"\nhistory_size = {hs}\n\
         [namespaces.{NS_REC}]\npublish = \"anyone\"\nhistory_size = {rec_size}\nrecovery_limit = {lim}\n",
        hs = history_size.max(1),
        lim = missed.max(1),
    );
    if persist {
        s.push_str("[history]\npersist = true\n");
    }
    s
}

/// CPU over a phase with the share of everyone else (`other_pct`) added.
fn cpu_with_others(cpu: &mut Value) {
    if let (Some(m), Some(a), Some(b)) =
        (cpu["machine_pct"].as_f64(), cpu["server_pct"].as_f64(), cpu["bench_pct"].as_f64())
    {
        cpu["other_pct"] = json!((m - a - b).max(0.0));
    }
}

/// Runs the scenario against `target` (and a persist server it spawns itself).
pub(crate) async fn run(target: &Target, p: Params, server_pid: Option<u32>) -> anyhow::Result<Value> {
    let mut report = json!({
        "scenario": "history",
        "channels": p.channels,
        "subscribers_per_channel": p.subs_per_channel,
        "publishers": p.publishers,
        "publish_via": match p.via { Via::Http => "http", Via::Ws => "ws" },
        "flat_out_window_per_channel": p.window,
        "duration_s": p.duration.as_secs_f64(),
        "payload_bytes": p.payload_bytes,
        "history_size": p.history_size,
        "rounds": p.rounds,
    });
    let mut text_rows = String::new();
    if p.parts.contains(&Part::Throughput) {
        let (t, rows_text) = throughput(target, &p, server_pid).await?;
        report["throughput"] = t;
        text_rows = rows_text;
    }
    if p.parts.contains(&Part::Recovery) {
        report["recovery"] = recovery(target, &p, server_pid).await?;
    }
    report["_rows_text"] = json!(text_rows);
    Ok(report)
}

async fn throughput(target: &Target, p: &Params, server_pid: Option<u32>) -> anyhow::Result<(Value, String)> {
    // The persist server lives for the whole part; idle while the others run.
    let persist = match &p.persist {
        Some((bin, queue)) => {
            let toml = server_toml(p.history_size, p.missed, true);
            let (bin, queue) = (bin.clone(), *queue);
            let s = tokio::task::spawn_blocking(move || Spawned::start(&bin, queue, &toml, &mut |_| Ok(())))
                .await
                .context("spawning the persist server")??;
            Some(s)
        }
        None => None,
    };
    let persist_target = persist.as_ref().map(|s| {
        let host = s.addr.to_string();
        Target {
            ws: s.addr,
            ws_host: host.clone(),
            ws_path: target.ws_path.clone(),
            api: s.addr,
            api_host: host,
            key: s.key.clone(),
        }
    });
    let mut modes = vec![Mode::Plain, Mode::History];
    if persist.is_some() {
        modes.push(Mode::Persist);
    }
    let mut rows = Vec::new();
    let mut text = String::new();
    for round in 0..p.rounds.max(1) {
        let order: Vec<Mode> =
            if round % 2 == 0 { modes.clone() } else { modes.iter().rev().copied().collect() };
        for mode in order {
            let (t, pid) = match mode {
                Mode::Persist => {
                    (persist_target.as_ref().expect("persist server"), persist.as_ref().map(Spawned::pid))
                }
                _ => (target, server_pid),
            };
            let ns = if mode == Mode::Plain { NS_PLAIN } else { NS_HIST };
            if p.progress {
                eprintln!("round {} of {}: {}", round + 1, p.rounds.max(1), mode.name());
            }
            let params = pubsub::Params {
                name: mode.name(),
                channels: p.channels.max(1),
                subs_per_channel: p.subs_per_channel,
                pace: Pace::FlatOut { window: p.window.max(1) },
                budget: Budget::Duration(p.duration),
                payload_bytes: p.payload_bytes,
                via: p.via,
                publishers: p.publishers.max(1),
                drain: p.drain,
                connect_concurrency: p.connect_concurrency,
                read_buf: 16 * 1024,
                // Fresh channels every round, so every subscriber starts at a known top.
                prefix: format!("{ns}:r{round}c"),
                progress: p.progress,
                check_offsets: mode != Mode::Plain,
            };
            let mut r = pubsub::run(t, params, pid).await?;
            cpu_with_others(&mut r["cpu"]);
            r["mode"] = json!(mode.name());
            r["round"] = json!(round + 1);
            text.push_str(&row_text(&r));
            if let Some(o) = r.as_object_mut() {
                o.retain(|k, _| !k.starts_with('_'));
            }
            rows.push(r);
        }
    }
    // Evidence that the persist server wrote to its store, and whether it fell behind
    // (it logs when its write-behind queue overflows or a write fails).
    let persist_server = persist.as_ref().map(|s| {
        let log = strip_ansi(&s.log());
        let lines: Vec<&str> = log.lines().filter(|l| l.to_ascii_lowercase().contains("persist")).collect();
        let (failed_writes, dropped) = persist_failures(&lines);
        json!({
            "data_dir_bytes": s.data_bytes(),
            "log_lines_about_persisting": lines.len(),
            "failed_write_attempts": failed_writes,
            "publications_not_persisted": dropped,
            "first_lines": lines.iter().take(3).collect::<Vec<_>>(),
        })
    });
    drop(persist);
    let mean = |mode: Mode, key: &str| -> Option<f64> {
        let v: Vec<f64> =
            rows.iter().filter(|r| r["mode"] == mode.name()).filter_map(|r| r[key].as_f64()).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut summary = serde_json::Map::new();
    for &m in &modes {
        summary.insert(
            m.name().to_owned(),
            json!({
                "publications_per_s": mean(m, "publications_per_s"),
                "deliveries_per_s": mean(m, "deliveries_per_s"),
            }),
        );
    }
    let base = mean(Mode::Plain, "publications_per_s");
    let ratio = |m: Mode| match (mean(m, "publications_per_s"), base) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let ok = |r: &Value| {
        r["missing"] == 0
            && r["duplicates"] == 0
            && r["out_of_order"] == 0
            && r["missing_on_disconnected"] == 0
            && r["publish_errors"] == 0
            && r.get("offsets").is_none_or(|o| o["gaps"] == 0 && o["backwards"] == 0 && o["no_offset"] == 0)
    };
    let integrity_ok = rows.iter().all(ok);
    let max_other = rows.iter().filter_map(|r| r["cpu"]["other_pct"].as_f64()).fold(0.0, f64::max);
    let out = json!({
        "rows": rows,
        "mean": summary,
        "ratio_history": ratio(Mode::History),
        "ratio_persist": if persist_target.is_some() { json!(ratio(Mode::Persist)) } else { Value::Null },
        "persist_server": persist_server,
        "integrity_ok": integrity_ok,
        "max_other_cpu_pct": max_other,
        "target_ratio": 0.5,
        "target_met": ratio(Mode::History).map(|r| r >= 0.5),
    });
    Ok((out, text))
}

fn row_text(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let mut s = format!(
        "  {:<16} round {}: {:>9.0} pub/s {:>10.0} deliveries/s  latency {}\n",
        r["mode"].as_str().unwrap_or("?"),
        r["round"],
        f("publications_per_s"),
        f("deliveries_per_s"),
        r["_latency_line"].as_str().unwrap_or("")
    );
    s.push_str(&format!(
        "  {:<16}   received {} of {} (missing {}, dup {}, out-of-order {}, on disconnected {}), publish errors {}, \
         offsets {}; cpu server {} bench {} others {} of {}\n",
        "",
        r["deliveries_received"],
        r["deliveries_expected"],
        r["missing"],
        r["duplicates"],
        r["out_of_order"],
        r["missing_on_disconnected"],
        r["publish_errors"],
        r.get("offsets").map_or_else(|| "not checked".to_owned(), Value::to_string),
        r["cpu"]["server_pct"],
        r["cpu"]["bench_pct"],
        r["cpu"]["other_pct"],
        r["cpu"]["cores"].as_u64().unwrap_or(1) * 100,
    ));
    s
}

/// `text` without ANSI colour sequences (`ESC [ … letter`), as the server's log has them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// From the persist server's log lines: failed write attempts (`cannot persist channel
/// history`) and the publications given up on (`not persisted`, `publications=N`).
fn persist_failures(lines: &[&str]) -> (u64, u64) {
    let mut attempts = 0;
    let mut dropped = 0;
    for l in lines {
        if l.contains("cannot persist channel history") {
            attempts += 1;
        } else if l.contains("not persisted") {
            let n = l.split_once("publications=").and_then(|(_, r)| parse_u64(r.as_bytes()));
            dropped += n.map_or(0, |(v, _)| v);
        }
    }
    (attempts, dropped)
}

// ---------------------------------------------------------------------------------------
// Offsets of live pushes.

/// Follows the offsets of one subscriber's pushes on one channel: each must be one more
/// than the one before, starting after the position the subscribe returned.
#[derive(Debug, Default, Clone)]
pub(crate) struct OffsetTracker {
    /// The offset the next push must carry.
    next: Option<u64>,
    /// Pushes with the expected offset.
    pub(crate) consecutive: u64,
    /// Pushes whose offset skipped ahead.
    pub(crate) gaps: u64,
    /// Offsets skipped over by those.
    pub(crate) skipped: u64,
    /// Pushes whose offset was not above the previous one.
    pub(crate) backwards: u64,
    /// Pushes without an offset.
    pub(crate) no_offset: u64,
    /// Whether the subscribe result carried a position.
    pub(crate) positioned: bool,
}

impl OffsetTracker {
    /// The position the subscribe returned (`offset` = the channel's top then).
    pub(crate) fn start(&mut self, top: u64) {
        self.next = Some(top + 1);
        self.positioned = true;
    }

    /// One push's offset (`None`: the push had none).
    pub(crate) fn on(&mut self, offset: Option<u64>) {
        let Some(o) = offset else {
            self.no_offset += 1;
            return;
        };
        match self.next {
            Some(n) if o == n => self.consecutive += 1,
            Some(n) if o > n => {
                self.gaps += 1;
                self.skipped += o - n;
            }
            Some(_) => {
                self.backwards += 1;
                return;
            }
            // No position to start from: the first push sets it.
            None => self.consecutive += 1,
        }
        self.next = Some(o + 1);
    }

    /// Adds another tracker's counts into a JSON summary.
    pub(crate) fn add_to(&self, sum: &mut OffsetSum) {
        sum.consecutive += self.consecutive;
        sum.gaps += self.gaps;
        sum.skipped += self.skipped;
        sum.backwards += self.backwards;
        sum.no_offset += self.no_offset;
        sum.unpositioned += u64::from(!self.positioned);
    }
}

/// [`OffsetTracker`]s summed over subscribers.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OffsetSum {
    consecutive: u64,
    gaps: u64,
    skipped: u64,
    backwards: u64,
    no_offset: u64,
    unpositioned: u64,
}

impl OffsetSum {
    /// As reported.
    pub(crate) fn json(&self) -> Value {
        json!({
            "consecutive": self.consecutive,
            "gaps": self.gaps,
            "skipped": self.skipped,
            "backwards": self.backwards,
            "no_offset": self.no_offset,
            "subscribers_without_position": self.unpositioned,
        })
    }
}

/// The offset of a native `pub` push, which the server writes last:
/// `{…,"offset":N}`. Read from the end, so the data is never scanned.
pub(crate) fn push_offset(frame: &[u8]) -> Option<u64> {
    let body = frame.strip_suffix(b"}")?;
    let digits = body.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let (head, num) = body.split_at(body.len() - digits);
    if !head.ends_with(br#","offset":"#) {
        return None;
    }
    parse_u64(num).map(|(v, _)| v)
}

/// The position in a subscribe or publish result: `"offset":N` and `"epoch":"E"` (the
/// first of each, which in a subscribe result precede any recovered publication).
pub(crate) fn result_position(reply: &[u8]) -> Option<(u64, String)> {
    static OFFSET: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""offset":"#));
    static EPOCH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""epoch":""#));
    let offset = crate::jsonscan::number_after(reply, &OFFSET)?;
    let at = EPOCH.find(reply)? + EPOCH.needle().len();
    let len = memchr::memchr(b'"', &reply[at..])?;
    let epoch = std::str::from_utf8(&reply[at..at + len]).ok()?.to_owned();
    Some((offset, epoch))
}

// ---------------------------------------------------------------------------------------
// Recovery.

/// What the timed scan of a recovery reply found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecoveryScan {
    /// The result's position.
    pub(crate) top: u64,
    pub(crate) epoch: String,
    /// Publications in the reply.
    pub(crate) count: u64,
}

/// The timed part: checks a subscribe-with-recover reply is `recovered: true` and that
/// its publications carry exactly the offsets `since + 1 ..= top`, in order. One pass of
/// substring searches over the frame.
pub(crate) fn scan_recovery(reply: &[u8], since: u64) -> anyhow::Result<RecoveryScan> {
    static PUBS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""publications":["#));
    static PUSH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#"{"push":"pub","#));
    static OFFSET: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#","offset":"#));
    ensure!(reply.starts_with(br#"{"id":"#), "not a reply: {}", preview(reply));
    let Some(at) = PUBS.find(reply) else {
        bail!("not recovered: {}", preview(reply));
    };
    let head = &reply[..at];
    ensure!(
        memchr::memmem::find(head, br#""recovered":true"#).is_some(),
        "not recovered: {}",
        preview(reply)
    );
    let (top, epoch) = result_position(head).context("no position in the result")?;
    let list = &reply[at + PUBS.needle().len()..];
    let mut next = since + 1;
    let mut count = 0u64;
    let mut i = 0;
    while let Some(p) = PUSH.find(&list[i..]) {
        let start = i + p;
        // This push's offset is the last `,"offset":` before the next push (or the end).
        let end = PUSH.find(&list[start + 1..]).map_or(list.len(), |q| start + 1 + q);
        let o_at = OFFSET.find_iter(&list[start..end]).last().context("a publication without an offset")?;
        let (o, _) = parse_u64(&list[start + o_at + OFFSET.needle().len()..]).context("bad offset")?;
        ensure!(o == next, "publication {count}: offset {o}, expected {next}");
        next += 1;
        count += 1;
        i = end;
    }
    ensure!(next == top + 1, "publications end at {}, the result's offset is {top}", next - 1);
    Ok(RecoveryScan { top, epoch, count })
}

/// The untimed part: parses the whole reply and checks everything in it. `base` is the
/// offset the channel had before this run published its first publication (so the data
/// of offset `o` carries `seq = o - base - 1`).
pub(crate) fn verify_recovery(
    reply: &[u8],
    id: u64,
    channel: &str,
    since: u64,
    epoch: &str,
    base: u64,
) -> anyhow::Result<()> {
    let v: Value = serde_json::from_slice(reply).context("the reply is not JSON")?;
    ensure!(v["id"] == id, "reply id {} (expected {id})", v["id"]);
    let r = &v["result"];
    ensure!(r["recovered"] == true, "recovered is {}", r["recovered"]);
    ensure!(r["epoch"] == epoch, "epoch {} (expected {epoch})", r["epoch"]);
    let top = r["offset"].as_u64().context("no offset")?;
    let pubs = r["publications"].as_array().context("no publications")?;
    ensure!(pubs.len() as u64 == top - since, "{} publications for offsets {since}..{top}", pubs.len());
    for (i, p) in pubs.iter().enumerate() {
        let want = since + 1 + i as u64;
        ensure!(p["push"] == "pub" && p["channel"] == channel, "publication {i}: {p}");
        ensure!(p["offset"] == want, "publication {i}: offset {} (expected {want})", p["offset"]);
        let seq = p["data"]["seq"].as_u64().context("publication without a stamp")?;
        ensure!(seq + base + 1 == want, "publication {i} at offset {want} carries seq {seq}");
    }
    Ok(())
}

fn preview(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

/// Connects and sends `connect`.
async fn open(target: &Target, seed: u64, read_buf: usize) -> anyhow::Result<(WsReader, WsWriter)> {
    let (mut rd, mut wr) =
        ws::connect(target.ws, &target.ws_host, &target.ws_path, None, read_buf, seed).await?;
    wr.send_text(br#"{"id":1,"op":"connect"}"#).await?;
    let r = rd.read_text(&mut wr).await?;
    ensure!(r.starts_with(br#"{"id":1,"result""#), "connect: {}", preview(&r));
    Ok((rd, wr))
}

/// Reads until one text frame that is not a heartbeat has arrived; calls `f` with it in
/// place (no copy).
async fn read_reply<T>(
    rd: &mut WsReader,
    wr: &mut WsWriter,
    mut f: impl FnMut(&[u8]) -> T,
) -> anyhow::Result<T> {
    loop {
        while let Some(fr) = rd.next_frame()? {
            match fr.opcode {
                op::TEXT => {
                    let p = rd.payload(&fr);
                    if ws::is_ping(p) {
                        wr.send_text(ws::PONG).await?;
                        continue;
                    }
                    return Ok(f(p));
                }
                op::PING => {
                    let p = rd.payload(&fr).to_vec();
                    wr.send(op::PONG, &p).await?;
                }
                op::CLOSE => bail!("closed: {}", ws::close_reason(rd.payload(&fr))),
                _ => {}
            }
        }
        if rd.fill().await? == 0 {
            bail!("connection closed");
        }
    }
}

/// The recovery part's publisher: one connection, pipelined publishes to one channel.
struct BatchPublisher {
    rd: WsReader,
    wr: WsWriter,
    channel: String,
    pad: Vec<u8>,
    next_id: u64,
    /// Sequence number of the next publication (in its data's stamp).
    seq: u64,
}

impl BatchPublisher {
    /// Publishes `n` publications in one write and waits for every ack; checks that each
    /// ack's offset follows the one before, from `top`, and returns the last.
    async fn publish(&mut self, n: usize, mut top: u64) -> anyhow::Result<u64> {
        let first_id = self.next_id;
        for _ in 0..n {
            let (id, seq, channel, pad) = (self.next_id, self.seq, &self.channel, &self.pad);
            self.wr.push_text_with(|out| {
                use std::io::Write as _;
                let _ = write!(out, r#"{{"id":{id},"op":"publish","channel":"{channel}","data":"#);
                track::write_data(out, 0, seq, pad);
                out.push(b'}');
            });
            self.next_id += 1;
            self.seq += 1;
        }
        self.wr.flush().await?;
        let mut acked = 0usize;
        let mut want_pong = false;
        while acked < n {
            while let Some(fr) = self.rd.next_frame()? {
                match fr.opcode {
                    op::TEXT => {
                        let p = self.rd.payload(&fr);
                        if ws::is_ping(p) {
                            want_pong = true;
                            continue;
                        }
                        let id = first_id + acked as u64;
                        let head = format!(r#"{{"id":{id},"result""#);
                        ensure!(p.starts_with(head.as_bytes()), "ack: {}", preview(p));
                        let (o, _) = result_position(p)
                            .with_context(|| format!("ack without offset: {}", preview(p)))?;
                        ensure!(o == top + 1, "ack offset {o}, expected {}", top + 1);
                        top = o;
                        acked += 1;
                    }
                    op::CLOSE => bail!("publisher closed: {}", ws::close_reason(self.rd.payload(&fr))),
                    _ => {}
                }
            }
            if want_pong {
                self.wr.send_text(ws::PONG).await?;
                want_pong = false;
            }
            if acked < n && self.rd.fill().await? == 0 {
                bail!("publisher connection closed");
            }
        }
        Ok(top)
    }
}

async fn recovery(target: &Target, p: &Params, server_pid: Option<u32>) -> anyhow::Result<Value> {
    let missed = p.missed.max(1);
    let channel = format!("{NS_REC}:c{}", std::process::id());
    let pad = track::make_pad(p.payload_bytes);
    // Where the channel is: a first subscriber that then leaves.
    let (mut rd, mut wr) = open(target, 0x5eed, 16 * 1024).await?;
    wr.send_text(format!(r#"{{"id":2,"op":"subscribe","channel":"{channel}"}}"#).as_bytes()).await?;
    let r = rd.read_text(&mut wr).await?;
    let (mut since, mut epoch) =
        result_position(&r).with_context(|| format!("subscribe gave no position: {}", preview(&r)))?;
    wr.close().await;
    let base = since;
    // Recovered publications are compared with the epoch as text.
    let epoch_text = |raw: &str| serde_json::from_str::<String>(&format!("\"{raw}\"")).ok();
    let (rd, wr) = open(target, 0xbeef, 64 * 1024).await?;
    let mut publisher = BatchPublisher { rd, wr, channel: channel.clone(), pad, next_id: 2, seq: 0 };
    let mut hist = track::new_histogram();
    let mut first_byte = track::new_histogram();
    let mut publish_ms = track::new_histogram();
    let (mut failures, mut verified) = (0u64, 0u64);
    let mut first_failure: Option<String> = None;
    let mut reply_bytes = 0usize;
    let mut reply = Vec::new();
    let cpu0 = CpuSample::now(server_pid);
    let t_start = Instant::now();
    for i in 0..p.recoveries {
        let t_pub = Instant::now();
        let top = publisher.publish(missed, since).await?;
        publish_ms.saturating_record((t_pub.elapsed().as_micros() as u64).max(1));
        ensure!(top == since + missed as u64, "published up to {top}, expected {}", since + missed as u64);
        let (mut rd, mut wr) = open(target, 0x1000 + i as u64, 256 * 1024).await?;
        let id = 2u64;
        let sub = format!(
            r#"{{"id":{id},"op":"subscribe","channel":"{channel}","recover":{{"offset":{since},"epoch":"{epoch}"}}}}"#
        );
        // Timed: the frame goes out, the whole reply comes back and its offsets are scanned.
        let t0 = Instant::now();
        wr.send_text(sub.as_bytes()).await?;
        // Time to the first byte of the reply, for the split between server and transfer.
        if rd.fill().await? == 0 {
            bail!("recovering connection closed");
        }
        let t_first = t0.elapsed();
        let (scan, dt) = read_reply(&mut rd, &mut wr, |b| {
            let s = scan_recovery(b, since);
            let dt = t0.elapsed();
            reply.clear();
            reply.extend_from_slice(b);
            (s, dt)
        })
        .await?;
        wr.close().await;
        hist.saturating_record((dt.as_micros() as u64).max(1));
        first_byte.saturating_record((t_first.as_micros() as u64).max(1));
        reply_bytes = reply.len();
        let checked = scan.and_then(|s| {
            ensure!(
                s.top == top && s.epoch == epoch,
                "position {}/{} (expected {top}/{epoch})",
                s.top,
                s.epoch
            );
            ensure!(s.count == missed as u64, "{} publications", s.count);
            let e = epoch_text(&epoch).context("epoch is not a JSON string")?;
            verify_recovery(&reply, id, &channel, since, &e, base)?;
            Ok(s)
        });
        match checked {
            Ok(s) => {
                verified += 1;
                since = s.top;
                epoch = s.epoch;
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert_with(|| format!("recovery {i}: {e:#}"));
                // Carry on from where the channel is.
                since = top;
            }
        }
        if p.progress && (i + 1) % 50 == 0 {
            eprintln!("  {} recoveries, {}", i + 1, track::latency_line(&hist));
        }
    }
    let mut cpu = cpu0.since(server_pid);
    cpu_with_others(&mut cpu);
    publisher.wr.close().await;
    let p99_ms = if hist.is_empty() { None } else { Some(hist.value_at_quantile(0.99) as f64 / 1000.0) };
    Ok(json!({
        "channel": channel,
        "missed_per_recovery": missed,
        "recoveries": p.recoveries,
        "verified": verified,
        "failures": failures,
        "first_failure": first_failure,
        "reply_bytes": reply_bytes,
        "latency": track::latency_json(&hist),
        "first_byte": track::latency_json(&first_byte),
        "publish_batch": track::latency_json(&publish_ms),
        "phase_s": t_start.elapsed().as_secs_f64(),
        "cpu": cpu,
        "target_p99_ms": 20.0,
        "target_met": p99_ms.map(|v| v < 20.0 && failures == 0),
    }))
}

/// Renders the human summary.
pub(crate) fn summary(r: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "== history ==");
    if let Some(t) = r.get("throughput") {
        let _ = writeln!(
            s,
            "shape            {} channels x {} subscribers, {} publisher(s) via {}, flat out (window {}), {} s, \
             payload {} B, history_size {}",
            r["channels"],
            r["subscribers_per_channel"],
            r["publishers"],
            r["publish_via"].as_str().unwrap_or("?"),
            r["flat_out_window_per_channel"],
            r["duration_s"],
            r["payload_bytes"],
            r["history_size"]
        );
        s.push_str(r["_rows_text"].as_str().unwrap_or(""));
        if let Some(m) = t["mean"].as_object() {
            for (k, v) in m {
                let _ = writeln!(
                    s,
                    "mean {k:<16}  {:>9.0} pub/s {:>10.0} deliveries/s",
                    v["publications_per_s"].as_f64().unwrap_or(0.0),
                    v["deliveries_per_s"].as_f64().unwrap_or(0.0)
                );
            }
        }
        let _ = writeln!(
            s,
            "ratio            history/no-history {:.3}{} (target >= 0.5: {}); integrity {}; max others CPU {}%",
            t["ratio_history"].as_f64().unwrap_or(f64::NAN),
            t["ratio_persist"].as_f64().map_or(String::new(), |x| format!(", persist/no-history {x:.3}")),
            t["target_met"],
            if t["integrity_ok"] == true { "ok" } else { "FAILED" },
            t["max_other_cpu_pct"]
        );
        if !t["persist_server"].is_null() {
            let _ = writeln!(s, "persist server   {}", t["persist_server"]);
        }
    }
    if let Some(c) = r.get("recovery") {
        let l = &c["latency"];
        let ms = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "recovery         {} x {} missed ({} B replies): p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms \
             (target p99 < 20 ms: {})",
            c["recoveries"],
            c["missed_per_recovery"],
            c["reply_bytes"],
            ms(l, "p50_ms"),
            ms(l, "p90_ms"),
            ms(l, "p99_ms"),
            ms(l, "max_ms"),
            c["target_met"]
        );
        let fb = &c["first_byte"];
        let _ = writeln!(
            s,
            "  first byte     p50 {:.2} ms  p99 {:.2} ms; publishing each batch p50 {:.2} ms",
            ms(fb, "p50_ms"),
            ms(fb, "p99_ms"),
            ms(&c["publish_batch"], "p50_ms")
        );
        let _ = writeln!(
            s,
            "  verified       {} of {}, failures {}{}; cpu {}",
            c["verified"],
            c["recoveries"],
            c["failures"],
            c["first_failure"].as_str().map_or(String::new(), |f| format!(" (first: {f})")),
            c["cpu"]
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(channel: &str, seq: u64, offset: u64) -> Vec<u8> {
        let mut d = Vec::new();
        track::write_data(&mut d, 0, seq, b"xx");
        [
            format!(r#"{{"push":"pub","channel":"{channel}","data":"#).as_bytes(),
            &d,
            format!(r#","offset":{offset}}}"#).as_bytes(),
        ]
        .concat()
    }

    fn recovery_reply(id: u64, since: u64, top: u64, offsets: impl Iterator<Item = u64>) -> Vec<u8> {
        let pubs: Vec<Vec<u8>> = offsets.map(|o| push("benchrec:c1", o - since - 1, o)).collect();
        [
            format!(r#"{{"id":{id},"result":{{"offset":{top},"epoch":"e\u00e9x","recovered":true,"publications":["#)
                .as_bytes(),
            &pubs.join(&b','),
            b"]}}",
        ]
        .concat()
    }

    #[test]
    fn push_offsets() {
        assert_eq!(push_offset(&push("bench:c0", 1, 42)), Some(42));
        assert_eq!(push_offset(br#"{"push":"pub","channel":"a:b","data":1}"#), None);
        assert_eq!(push_offset(br#"{"push":"pub","channel":"a:b","data":{"offset":7}}"#), None);
        assert_eq!(push_offset(br#"{"x":1,"offset":}"#), None);
        assert_eq!(push_offset(b""), None);
    }

    #[test]
    fn positions() {
        let r = br#"{"id":2,"result":{"offset":17,"epoch":"abc"}}"#;
        assert_eq!(result_position(r), Some((17, "abc".to_owned())));
        assert_eq!(result_position(br#"{"id":2,"result":{}}"#), None);
    }

    #[test]
    fn offset_tracker() {
        let mut t = OffsetTracker::default();
        t.start(10);
        for o in [11, 12, 13, 15, 16, 16, 14, 17] {
            t.on(Some(o));
        }
        t.on(None);
        assert_eq!((t.consecutive, t.gaps, t.skipped, t.backwards, t.no_offset), (5, 1, 1, 2, 1));
        assert!(t.positioned);

        // In order from the position: nothing to report.
        let mut t = OffsetTracker::default();
        t.start(0);
        (1..=1000).for_each(|o| t.on(Some(o)));
        assert_eq!((t.consecutive, t.gaps, t.backwards), (1000, 0, 0));

        // The first push after the position already skips one.
        let mut t = OffsetTracker::default();
        t.start(5);
        t.on(Some(7));
        assert_eq!((t.gaps, t.skipped), (1, 1));

        // Without a position the first push starts the count.
        let mut t = OffsetTracker::default();
        t.on(Some(3));
        t.on(Some(4));
        let mut sum = OffsetSum::default();
        t.add_to(&mut sum);
        assert_eq!(sum.json()["subscribers_without_position"], 1);
        assert_eq!(sum.json()["consecutive"], 2);
    }

    #[test]
    fn recovery_scan_and_verify() {
        let r = recovery_reply(2, 100, 103, 101..=103);
        let s = scan_recovery(&r, 100).unwrap();
        assert_eq!((s.top, s.count, s.epoch.as_str()), (103, 3, r"e\u00e9x"));
        verify_recovery(&r, 2, "benchrec:c1", 100, "e\u{e9}x", 100).unwrap();

        // Nothing missed: an empty list is a recovery of nothing.
        let r = recovery_reply(2, 5, 5, std::iter::empty());
        assert_eq!(scan_recovery(&r, 5).unwrap().count, 0);

        // A hole, a duplicate, a short list, a wrong position.
        for offsets in [vec![101, 103], vec![101, 102, 102, 103], vec![101, 102], vec![102, 103]] {
            let r = recovery_reply(2, 100, 103, offsets.into_iter());
            assert!(scan_recovery(&r, 100).is_err());
            assert!(verify_recovery(&r, 2, "benchrec:c1", 100, "e\u{e9}x", 100).is_err());
        }
        // Wrong epoch, wrong id, data from another offset.
        let r = recovery_reply(2, 100, 103, 101..=103);
        assert!(verify_recovery(&r, 2, "benchrec:c1", 100, "other", 100).is_err());
        assert!(verify_recovery(&r, 3, "benchrec:c1", 100, "e\u{e9}x", 100).is_err());
        assert!(verify_recovery(&r, 2, "benchrec:c1", 100, "e\u{e9}x", 99).is_err());

        // Not recovered.
        let r = br#"{"id":2,"result":{"offset":9,"epoch":"e","recovered":false,"reason":"too_many"}}"#;
        assert!(scan_recovery(r, 1).unwrap_err().to_string().contains("not recovered"));
        let r = br#"{"id":2,"error":{"code":"bad_request","message":"x"}}"#;
        assert!(scan_recovery(r, 1).is_err());
    }

    #[test]
    fn persist_log_lines() {
        let log = "\u{1b}[2m2026-11-23T10:38:55Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m cannot persist channel history \
                   \u{1b}[3merror\u{1b}[0m=offset 1232 after 1233 publications=1823 attempt=0\n\
                   ERROR channel history not persisted; the next start will begin new epochs publications=1823\n\
                   WARN cannot persist channel history publications=7 attempt=1\n";
        let clean = strip_ansi(log);
        assert!(clean.starts_with("2026-11-23T10:38:55Z  WARN cannot persist"), "{clean}");
        assert!(clean.contains("error=offset 1232"));
        let lines: Vec<&str> = clean.lines().collect();
        assert_eq!(persist_failures(&lines), (2, 1823));
    }

    #[test]
    fn config_for_the_spawned_server() {
        let t = server_toml(1000, 1000, false);
        assert!(t.contains("[namespaces.benchhist]\npublish = \"anyone\"\nhistory_size = 1000\n"));
        assert!(t.contains("[namespaces.benchrec]"));
        assert!(t.contains("recovery_limit = 1000"));
        assert!(!t.contains("persist"));
        let t = server_toml(100, 5000, true);
        assert!(t.contains("history_size = 5000\nrecovery_limit = 5000"));
        assert!(t.ends_with("[history]\npersist = true\n"));
    }
}
