//! `facematch bench soak`: an open-loop load at a fixed arrival rate for a long but bounded time, reported per time
//! window (answers by status, latency percentiles, the server's resident memory and open files), optionally beside
//! a flood of slow senders that trickle their headers or idle on their connections.
//!
//! Unlike `bench http` (closed loop), arrivals here do not wait for answers: when the server falls behind, requests
//! pile up as they would from independent checkpoints. The pile is bounded by `max_in_flight`; an arrival beyond it
//! is counted as `not_sent`, never silently dropped, so a run that overloads its own client says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{collect_probe_photos, loopback_url, send_search, search_client, LoadError, Outcome, ProbeMode, ProbePhoto};
use crate::eval::metrics::{latency_summary, LatencySummary};

/// Longest soak this tool runs: it is bounded so that a forgotten run stops by itself.
const MAX_SOAK_SECONDS: f64 = 6.0 * 3600.0;
/// Most slow connections one run opens at once.
const MAX_SLOW_SENDERS: usize = 4096;
/// Pause between two bytes of a trickled header block: well under any sane header timeout per byte, so only a
/// timeout on the whole block can end such a connection.
const TRICKLE_PAUSE: Duration = Duration::from_secs(1);

/// How a slow sender misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SlowStyle {
    /// Sends a request line, then one header byte a second, never finishing the header block.
    Headers,
    /// Connects and sends nothing.
    Idle,
    /// Half of each.
    Mixed,
}

impl SlowStyle {
    /// The behaviour of the `i`-th slow sender.
    fn nth(self, i: usize) -> SlowStyle {
        match self {
            SlowStyle::Mixed if i.is_multiple_of(2) => SlowStyle::Headers,
            SlowStyle::Mixed => SlowStyle::Idle,
            style => style,
        }
    }
}

/// What to send, how fast, for how long, and what else to do to the server meanwhile.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub base_url: String,
    pub photos: Vec<ProbePhoto>,
    /// Arrivals per second, evenly spaced.
    pub rate_per_second: f64,
    pub duration: Duration,
    /// Length of one reporting window.
    pub window: Duration,
    /// Requests outstanding at most; arrivals beyond it are counted as not sent.
    pub max_in_flight: usize,
    pub mode: ProbeMode,
    pub request_timeout: Duration,
    pub api_key: Option<String>,
    /// The server's process id on this machine: its resident memory and open files are sampled every window.
    pub server_pid: Option<u32>,
    pub slow_senders: usize,
    pub slow_style: SlowStyle,
}

impl SoakPlan {
    fn check(&self) -> Result<reqwest::Url, LoadError> {
        let invalid = |problem: String| LoadError::InvalidPlan { problem };
        if self.photos.is_empty() {
            return Err(LoadError::NoPhotos);
        }
        if !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0 && self.rate_per_second <= 10_000.0) {
            return Err(invalid(format!("rate must be in (0, 10000] per second, got {}", self.rate_per_second)));
        }
        let seconds = self.duration.as_secs_f64();
        if !(seconds > 0.0 && seconds <= MAX_SOAK_SECONDS) {
            return Err(invalid(format!("duration must be in (0, {MAX_SOAK_SECONDS}] s, got {seconds}")));
        }
        if self.window.is_zero() || self.window > self.duration {
            return Err(invalid("the window must be positive and no longer than the duration".into()));
        }
        if !(1..=super::MAX_CONCURRENCY).contains(&self.max_in_flight) {
            return Err(invalid(format!("max in flight must be 1..={}, got {}", super::MAX_CONCURRENCY, self.max_in_flight)));
        }
        if self.slow_senders > MAX_SLOW_SENDERS {
            return Err(invalid(format!("slow senders must be at most {MAX_SLOW_SENDERS}, got {}", self.slow_senders)));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("request timeout must be positive".into()));
        }
        loopback_url(&self.base_url)
    }
}

/// The server process as seen from `/proc` at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcessSample {
    pub rss_mib: f64,
    pub open_files: usize,
}

/// Reads `VmRSS` and the open file descriptors of `pid`; `None` once the process is gone.
pub fn sample_process(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())?;
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Some(ProcessSample { rss_mib: rss_kib / 1024.0, open_files })
}

/// The slow senders' counters, shared by their tasks and read at every window's end.
#[derive(Debug, Default)]
struct SlowCounters {
    open: AtomicUsize,
    opened: AtomicUsize,
    closed_by_server: AtomicUsize,
    refused_connects: AtomicUsize,
    /// Longest a connection was held before the server closed it, in milliseconds.
    longest_held_ms: AtomicUsize,
}

/// The slow senders during one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SlowWindow {
    /// Slow connections open at the window's end.
    pub open: usize,
    /// Opened during the window.
    pub opened: usize,
    /// Closed by the server during the window (timeouts, the connection cap).
    pub closed_by_server: usize,
    /// Connection attempts that failed outright during the window.
    pub refused_connects: usize,
}

/// One reporting window.
#[derive(Debug, Clone, Serialize)]
pub struct SoakWindow {
    pub start_s: f64,
    pub end_s: f64,
    /// Arrivals the schedule made in the window.
    pub scheduled: usize,
    /// Arrivals not sent because `max_in_flight` requests were outstanding.
    pub not_sent: usize,
    /// Requests sent in the window (counted by when they were sent, whenever they finished).
    pub sent: usize,
    pub ok: usize,
    pub ok_per_second: f64,
    /// HTTP status → count, 2xx included.
    pub status_counts: BTreeMap<u16, usize>,
    /// API error code → count.
    pub errors_by_code: BTreeMap<String, usize>,
    /// Transport failure kind → count.
    pub transport_errors: BTreeMap<String, usize>,
    /// Latency of the successful requests sent in the window.
    pub latency_ms: Option<LatencySummary>,
    /// Latency of the refused ones (503/429 should be fast).
    pub refused_latency_ms: Option<LatencySummary>,
    pub server: Option<ProcessSample>,
    pub slow: SlowWindow,
}

/// The whole run, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct SoakTotals {
    pub sent: usize,
    pub ok: usize,
    pub not_sent: usize,
    pub status_counts: BTreeMap<u16, usize>,
    pub errors_by_code: BTreeMap<String, usize>,
    pub transport_errors: BTreeMap<String, usize>,
    pub latency_ms: Option<LatencySummary>,
    /// Smallest and largest per-window p99 of successful requests.
    pub window_p99_ms: Option<(f64, f64)>,
    /// Resident memory at the end of the first window, the last, and the largest sampled.
    pub rss_first_mib: Option<f64>,
    pub rss_last_mib: Option<f64>,
    pub rss_max_mib: Option<f64>,
    pub open_files_max: Option<usize>,
    pub slow_opened: usize,
    pub slow_closed_by_server: usize,
    pub slow_refused_connects: usize,
    pub slow_longest_held_s: f64,
}

/// A soak run: its plan as figures, every window and the totals.
#[derive(Debug, Clone, Serialize)]
pub struct SoakOutcome {
    pub base_url: String,
    pub mode: ProbeMode,
    pub rate_per_second: f64,
    pub duration_s: f64,
    pub window_s: f64,
    pub max_in_flight: usize,
    pub slow_senders: usize,
    pub slow_style: SlowStyle,
    pub photos: Vec<String>,
    pub windows: Vec<SoakWindow>,
    pub totals: SoakTotals,
}

/// One request: when it was sent (seconds from the start), how long it took, how it ended.
struct Sample {
    sent_s: f64,
    ms: f64,
    outcome: Outcome,
}

/// Runs `plan` on its own async runtime; `on_window` sees every window as it closes (for progress lines).
pub fn run_soak(plan: &SoakPlan, on_window: &(dyn Fn(&SoakWindow) + Sync)) -> Result<SoakOutcome, LoadError> {
    let base = plan.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    runtime.block_on(run_soak_async(plan, base, on_window))
}

async fn run_soak_async(
    plan: &SoakPlan,
    base: reqwest::Url,
    on_window: &(dyn Fn(&SoakWindow) + Sync),
) -> Result<SoakOutcome, LoadError> {
    let client = search_client(plan.api_key.as_deref(), plan.request_timeout, plan.max_in_flight)?;
    let search_url = base
        .join("v1/search")
        .map_err(|source| LoadError::InvalidUrl { url: format!("{base}v1/search"), source: Box::new(source) })?;
    let started = Instant::now();
    let deadline = started + plan.duration;

    let slow = Arc::new(SlowCounters::default());
    let mut slow_tasks = tokio::task::JoinSet::new();
    if plan.slow_senders > 0 {
        let addr = socket_addr(&base)?;
        for i in 0..plan.slow_senders {
            slow_tasks.spawn(hold_slow_connection(addr, plan.slow_style.nth(i), deadline, slow.clone()));
        }
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let photos: Arc<[ProbePhoto]> = plan.photos.clone().into();
    let period = Duration::from_secs_f64(1.0 / plan.rate_per_second);
    let window_count = (plan.duration.as_secs_f64() / plan.window.as_secs_f64()).ceil() as usize;
    let mut windows = Vec::with_capacity(window_count);
    let mut samples: Vec<Sample> = Vec::new();
    let mut arrival = 0usize;
    let mut slow_seen = SlowSnapshot::default();

    for w in 0..window_count {
        let window_start = started + plan.window * w as u32;
        let window_end = (window_start + plan.window).min(deadline);
        let (mut scheduled, mut not_sent) = (0, 0);
        // Arrivals are placed on an absolute schedule so a late wake-up sends the missed ones at once (open loop).
        loop {
            let at = started + period.mul_f64(arrival as f64);
            if at >= window_end {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
            arrival += 1;
            scheduled += 1;
            if in_flight.load(Ordering::Relaxed) >= plan.max_in_flight {
                not_sent += 1;
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (client, url, photos, tx, in_flight) =
                (client.clone(), search_url.clone(), photos.clone(), tx.clone(), in_flight.clone());
            let (mode, i) = (plan.mode, arrival);
            let sent_s = started.elapsed().as_secs_f64();
            tokio::spawn(async move {
                let sent = Instant::now();
                let outcome = send_search(&client, &url, &photos[i % photos.len()], mode, None).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                // The receiver lives until every request has ended; a send error cannot happen before.
                let _ = tx.send(Sample { sent_s, ms: sent.elapsed().as_secs_f64() * 1000.0, outcome });
            });
        }
        tokio::time::sleep_until(window_end.into()).await;
        while let Ok(sample) = rx.try_recv() {
            samples.push(sample);
        }
        let server = plan.server_pid.and_then(sample_process);
        let slow_now = SlowSnapshot::read(&slow);
        let start_s = (window_start - started).as_secs_f64();
        let end_s = (window_end - started).as_secs_f64();
        // Requests of this window still in flight are summarised with it at the end; this first look only
        // feeds the progress line.
        let window = summarise_window(start_s, end_s, scheduled, not_sent, &samples, server, slow_now.since(&slow_seen));
        on_window(&window);
        slow_seen = slow_now;
        windows.push(window);
    }

    // Wait for the stragglers: each ends by its own timeout at the latest.
    drop(tx);
    while let Some(sample) = rx.recv().await {
        samples.push(sample);
    }
    slow_tasks.shutdown().await;
    for window in &mut windows {
        let again = summarise_window(
            window.start_s,
            window.end_s,
            window.scheduled,
            window.not_sent,
            &samples,
            window.server,
            window.slow,
        );
        *window = again;
    }
    let totals = summarise_totals(&windows, &samples, &slow);
    Ok(SoakOutcome {
        base_url: plan.base_url.clone(),
        mode: plan.mode,
        rate_per_second: plan.rate_per_second,
        duration_s: plan.duration.as_secs_f64(),
        window_s: plan.window.as_secs_f64(),
        max_in_flight: plan.max_in_flight,
        slow_senders: plan.slow_senders,
        slow_style: plan.slow_style,
        photos: plan.photos.iter().map(|p| p.name.clone()).collect(),
        windows,
        totals,
    })
}

fn socket_addr(base: &reqwest::Url) -> Result<std::net::SocketAddr, LoadError> {
    use std::net::ToSocketAddrs;
    let invalid = || LoadError::InvalidUrl { url: base.to_string(), source: "no socket address".into() };
    let port = base.port_or_known_default().ok_or_else(invalid)?;
    let host = base.host_str().ok_or_else(invalid)?.trim_start_matches('[').trim_end_matches(']');
    (host, port).to_socket_addrs().map_err(|_| invalid())?.next().ok_or_else(invalid)
}

#[derive(Debug, Clone, Copy, Default)]
struct SlowSnapshot {
    open: usize,
    opened: usize,
    closed_by_server: usize,
    refused_connects: usize,
}

impl SlowSnapshot {
    fn read(counters: &SlowCounters) -> SlowSnapshot {
        SlowSnapshot {
            open: counters.open.load(Ordering::Relaxed),
            opened: counters.opened.load(Ordering::Relaxed),
            closed_by_server: counters.closed_by_server.load(Ordering::Relaxed),
            refused_connects: counters.refused_connects.load(Ordering::Relaxed),
        }
    }

    fn since(&self, before: &SlowSnapshot) -> SlowWindow {
        SlowWindow {
            open: self.open,
            opened: self.opened - before.opened,
            closed_by_server: self.closed_by_server - before.closed_by_server,
            refused_connects: self.refused_connects - before.refused_connects,
        }
    }
}

/// One slow sender: holds a connection the way `style` says until the server closes it, then opens another, until
/// `deadline`.
async fn hold_slow_connection(addr: std::net::SocketAddr, style: SlowStyle, deadline: Instant, counters: Arc<SlowCounters>) {
    let deadline = tokio::time::Instant::from(deadline);
    while tokio::time::Instant::now() < deadline {
        let Ok(Ok(mut stream)) = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await else {
            counters.refused_connects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        counters.opened.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let closed = tokio::time::timeout_at(deadline, misbehave(&mut stream, style)).await.is_ok();
        counters.open.fetch_sub(1, Ordering::Relaxed);
        if closed {
            counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
            let held = opened.elapsed().as_millis().min(usize::MAX as u128) as usize;
            counters.longest_held_ms.fetch_max(held, Ordering::Relaxed);
        }
        // Opening a connection after each close keeps the flood at its size without hammering the accept queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Misbehaves on `stream` until the server closes it (a read of 0 bytes or an error, a write error).
async fn misbehave(stream: &mut tokio::net::TcpStream, style: SlowStyle) {
    let mut buf = [0u8; 1024];
    match style {
        SlowStyle::Idle => loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        },
        SlowStyle::Headers | SlowStyle::Mixed => {
            if stream.write_all(b"POST /v1/search HTTP/1.1\r\nHost: soak\r\n").await.is_err() {
                return;
            }
            let header = b"X-Slow: ".iter().chain(std::iter::repeat(&b'a'));
            for byte in header {
                let wrote = stream.write_all(std::slice::from_ref(byte)).await.is_ok();
                if !wrote {
                    return;
                }
                // Watch for the server's answer or close while pausing between bytes.
                if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(TRICKLE_PAUSE, stream.read(&mut buf)).await {
                    return;
                }
            }
        }
    }
}

fn summarise_window(
    start_s: f64,
    end_s: f64,
    scheduled: usize,
    not_sent: usize,
    samples: &[Sample],
    server: Option<ProcessSample>,
    slow: SlowWindow,
) -> SoakWindow {
    let mine = samples.iter().filter(|s| s.sent_s >= start_s && s.sent_s < end_s);
    let mut window = SoakWindow {
        start_s,
        end_s,
        scheduled,
        not_sent,
        sent: 0,
        ok: 0,
        ok_per_second: 0.0,
        status_counts: BTreeMap::new(),
        errors_by_code: BTreeMap::new(),
        transport_errors: BTreeMap::new(),
        latency_ms: None,
        refused_latency_ms: None,
        server,
        slow,
    };
    let (ok_ms, refused_ms) = tally(mine, &mut window.sent, &mut window.ok, &mut window.status_counts, &mut window.errors_by_code, &mut window.transport_errors);
    window.ok_per_second = window.ok as f64 / (end_s - start_s).max(f64::MIN_POSITIVE);
    window.latency_ms = latency_summary(&ok_ms).ok();
    window.refused_latency_ms = latency_summary(&refused_ms).ok();
    window
}

/// Counts `samples` into the tables; returns the latencies of the successful and of the refused ones.
fn tally<'s>(
    samples: impl Iterator<Item = &'s Sample>,
    sent: &mut usize,
    ok: &mut usize,
    status_counts: &mut BTreeMap<u16, usize>,
    errors_by_code: &mut BTreeMap<String, usize>,
    transport_errors: &mut BTreeMap<String, usize>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut ok_ms, mut refused_ms) = (Vec::new(), Vec::new());
    for sample in samples {
        *sent += 1;
        match &sample.outcome {
            Outcome::Answered { .. } => {
                *ok += 1;
                *status_counts.entry(200).or_default() += 1;
                ok_ms.push(sample.ms);
            }
            Outcome::Refused { status, code } => {
                *status_counts.entry(*status).or_default() += 1;
                *errors_by_code.entry(code.clone()).or_default() += 1;
                refused_ms.push(sample.ms);
            }
            Outcome::Transport { kind } => *transport_errors.entry(kind.to_string()).or_default() += 1,
        }
    }
    (ok_ms, refused_ms)
}

fn summarise_totals(windows: &[SoakWindow], samples: &[Sample], slow: &SlowCounters) -> SoakTotals {
    let mut totals = SoakTotals {
        sent: 0,
        ok: 0,
        not_sent: windows.iter().map(|w| w.not_sent).sum(),
        status_counts: BTreeMap::new(),
        errors_by_code: BTreeMap::new(),
        transport_errors: BTreeMap::new(),
        latency_ms: None,
        window_p99_ms: None,
        rss_first_mib: windows.first().and_then(|w| w.server).map(|s| s.rss_mib),
        rss_last_mib: windows.last().and_then(|w| w.server).map(|s| s.rss_mib),
        rss_max_mib: windows.iter().filter_map(|w| w.server).map(|s| s.rss_mib).reduce(f64::max),
        open_files_max: windows.iter().filter_map(|w| w.server).map(|s| s.open_files).max(),
        slow_opened: slow.opened.load(Ordering::Relaxed),
        slow_closed_by_server: slow.closed_by_server.load(Ordering::Relaxed),
        slow_refused_connects: slow.refused_connects.load(Ordering::Relaxed),
        slow_longest_held_s: slow.longest_held_ms.load(Ordering::Relaxed) as f64 / 1000.0,
    };
    let (ok_ms, _) = tally(
        samples.iter(),
        &mut totals.sent,
        &mut totals.ok,
        &mut totals.status_counts,
        &mut totals.errors_by_code,
        &mut totals.transport_errors,
    );
    totals.latency_ms = latency_summary(&ok_ms).ok();
    let p99s = windows.iter().filter_map(|w| w.latency_ms.as_ref().map(|l| l.p99));
    totals.window_p99_ms = p99s.fold(None, |range, p| match range {
        None => Some((p, p)),
        Some((lo, hi)) => Some((f64::min(lo, p), f64::max(hi, p))),
    });
    totals
}

/// The soak as Markdown: the plan, the totals and one row per window.
pub fn render_soak_markdown(outcome: &SoakOutcome) -> String {
    let t = &outcome.totals;
    let mut out = format!(
        "# Soak: {:.1} searches/s ({}) for {:.0} s, windows of {:.0} s, at most {} in flight, {} slow senders ({:?})\n\n",
        outcome.rate_per_second,
        outcome.mode.as_str(),
        outcome.duration_s,
        outcome.window_s,
        outcome.max_in_flight,
        outcome.slow_senders,
        outcome.slow_style,
    );
    let fmt_opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    out += &format!(
        "- sent {} (not sent, client at its in-flight cap: {}), ok {}, statuses {:?}, error codes {:?}, transport {:?}\n",
        t.sent, t.not_sent, t.ok, t.status_counts, t.errors_by_code, t.transport_errors
    );
    if let Some(l) = &t.latency_ms {
        out += &format!("- ok latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n", l.p50, l.p99, l.max);
    }
    if let Some((lo, hi)) = t.window_p99_ms {
        out += &format!("- per-window p99 from {lo:.1} to {hi:.1} ms\n");
    }
    out += &format!(
        "- server resident memory: first window {} MiB, last {} MiB, largest {} MiB; open files at most {}\n",
        fmt_opt(t.rss_first_mib),
        fmt_opt(t.rss_last_mib),
        fmt_opt(t.rss_max_mib),
        t.open_files_max.map_or("-".to_string(), |n| n.to_string()),
    );
    if outcome.slow_senders > 0 {
        out += &format!(
            "- slow connections: {} opened, {} closed by the server (longest held {:.1} s), {} connects failed\n",
            t.slow_opened, t.slow_closed_by_server, t.slow_longest_held_s, t.slow_refused_connects
        );
    }
    out += "\n| window s | sent | not sent | ok/s | refused | p50 ms | p99 ms | max ms | RSS MiB | open files | slow open |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for w in &outcome.windows {
        let refused: usize = w.status_counts.iter().filter(|(s, _)| **s >= 300).map(|(_, n)| n).sum::<usize>()
            + w.transport_errors.values().sum::<usize>();
        let (p50, p99, max) = w.latency_ms.as_ref().map_or((None, None, None), |l| (Some(l.p50), Some(l.p99), Some(l.max)));
        out += &format!(
            "| {:.0}–{:.0} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |\n",
            w.start_s,
            w.end_s,
            w.sent,
            w.not_sent,
            w.ok_per_second,
            refused,
            fmt_opt(p50),
            fmt_opt(p99),
            fmt_opt(max),
            w.server.map_or("-".to_string(), |s| format!("{:.0}", s.rss_mib)),
            w.server.map_or("-".to_string(), |s| s.open_files.to_string()),
            w.slow.open,
        );
    }
    out
}

/// `facematch bench soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Base URL of a running server on this machine (loopback only).
    #[arg(long)]
    pub url: String,
    /// Probe photos: files, or folders searched recursively (sorted); requests cycle through them.
    #[arg(long, required = true, num_args = 1..)]
    pub photos: Vec<PathBuf>,
    /// Arrivals per second (open loop, evenly spaced).
    #[arg(long)]
    pub rate: f64,
    #[arg(long, default_value_t = 600.0)]
    pub duration_s: f64,
    /// Length of one reporting window.
    #[arg(long, default_value_t = 30.0)]
    pub window_s: f64,
    /// Requests outstanding at most; arrivals beyond are counted as not sent.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    #[arg(long, value_enum, default_value_t = ProbeMode::Identification)]
    pub mode: ProbeMode,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout_s: f64,
    /// The server's process id, to sample its resident memory and open files every window.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Connections that misbehave beside the load for the whole run.
    #[arg(long, default_value_t = 0)]
    pub slow_senders: usize,
    #[arg(long, value_enum, default_value_t = SlowStyle::Mixed)]
    pub slow_style: SlowStyle,
    /// API key for the searches.
    #[arg(long, env = "FACEMATCH_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Write soak.json and soak.md here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_soak_cli(args: &SoakArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        [args.duration_s, args.window_s, args.timeout_s].iter().all(|s| s.is_finite() && *s > 0.0),
        "bench soak: --duration-s, --window-s and --timeout-s must be positive"
    );
    let plan = SoakPlan {
        base_url: args.url.clone(),
        photos: collect_probe_photos(&args.photos)?,
        rate_per_second: args.rate,
        duration: Duration::from_secs_f64(args.duration_s.min(MAX_SOAK_SECONDS)),
        window: Duration::from_secs_f64(args.window_s),
        max_in_flight: args.max_in_flight,
        mode: args.mode,
        request_timeout: Duration::from_secs_f64(args.timeout_s),
        api_key: args.key.clone(),
        server_pid: args.server_pid,
        slow_senders: args.slow_senders,
        slow_style: args.slow_style,
    };
    let progress = |w: &SoakWindow| {
        let p99 = w.latency_ms.as_ref().map_or(f64::NAN, |l| l.p99);
        let rss = w.server.map_or(f64::NAN, |s| s.rss_mib);
        eprintln!(
            "[{:>6.0} s] sent {} ok {} not sent {} p99 {:.1} ms rss {:.0} MiB slow open {} closed {}",
            w.end_s, w.sent, w.ok, w.not_sent, p99, rss, w.slow.open, w.slow.closed_by_server
        );
    };
    let outcome = run_soak(&plan, &progress).context("bench soak")?;
    let markdown = render_soak_markdown(&outcome);
    print!("{markdown}");
    if let Some(dir) = &args.out {
        write_soak(dir, &outcome, &markdown)?;
    }
    Ok(if outcome.totals.ok == 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

fn write_soak(dir: &Path, outcome: &SoakOutcome, markdown: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("bench soak: creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(outcome).context("bench soak: serialising")?;
    std::fs::write(dir.join("soak.json"), json + "\n").context("bench soak: writing soak.json")?;
    std::fs::write(dir.join("soak.md"), markdown).context("bench soak: writing soak.md")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent_s: f64, ms: f64, outcome: Outcome) -> Sample {
        Sample { sent_s, ms, outcome }
    }

    #[test]
    fn a_window_counts_what_was_sent_in_it_whenever_it_ended() {
        let samples = vec![
            sample(0.5, 10.0, Outcome::Answered { faces: 1 }),
            sample(1.5, 900.0, Outcome::Answered { faces: 1 }),
            sample(1.9, 2.0, Outcome::Refused { status: 503, code: "overloaded".into() }),
            sample(2.5, 30_000.0, Outcome::Transport { kind: "timeout" }),
        ];
        let w = summarise_window(1.0, 2.0, 3, 1, &samples, None, SlowWindow::default());
        assert_eq!((w.sent, w.ok, w.not_sent), (2, 1, 1));
        assert_eq!(w.status_counts, BTreeMap::from([(200, 1), (503, 1)]));
        assert_eq!(w.errors_by_code, BTreeMap::from([("overloaded".to_string(), 1)]));
        assert_eq!(w.latency_ms.as_ref().map(|l| l.max), Some(900.0));
        assert_eq!(w.refused_latency_ms.as_ref().map(|l| l.count), Some(1));
        assert!((w.ok_per_second - 1.0).abs() < 1e-9);
    }

    #[test]
    fn totals_span_the_windows() {
        let samples = vec![
            sample(0.5, 10.0, Outcome::Answered { faces: 1 }),
            sample(1.5, 30.0, Outcome::Answered { faces: 1 }),
            sample(1.6, 1.0, Outcome::Transport { kind: "connect" }),
        ];
        let server = |rss_mib| Some(ProcessSample { rss_mib, open_files: 12 });
        let windows = vec![
            summarise_window(0.0, 1.0, 1, 0, &samples, server(100.0), SlowWindow::default()),
            summarise_window(1.0, 2.0, 3, 1, &samples, server(120.0), SlowWindow::default()),
        ];
        let totals = summarise_totals(&windows, &samples, &SlowCounters::default());
        assert_eq!((totals.sent, totals.ok, totals.not_sent), (3, 2, 1));
        assert_eq!(totals.transport_errors, BTreeMap::from([("connect".to_string(), 1)]));
        assert_eq!((totals.rss_first_mib, totals.rss_last_mib, totals.rss_max_mib), (Some(100.0), Some(120.0), Some(120.0)));
        let (lo, hi) = totals.window_p99_ms.expect("two windows with answers");
        assert!(lo < 11.0 && hi > 29.0, "{lo} {hi}");
        let md = render_soak_markdown(&SoakOutcome {
            base_url: "http://127.0.0.1:1".into(),
            mode: ProbeMode::Identification,
            rate_per_second: 2.0,
            duration_s: 2.0,
            window_s: 1.0,
            max_in_flight: 4,
            slow_senders: 0,
            slow_style: SlowStyle::Idle,
            photos: vec![],
            windows,
            totals,
        });
        assert_eq!(md.matches("\n| ").count(), 3, "{md}");
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample_process(std::process::id()).expect("/proc of this process");
        assert!(me.rss_mib > 1.0 && me.open_files >= 3, "{me:?}");
        assert_eq!(sample_process(u32::MAX), None);
    }

    #[test]
    fn mixed_alternates_the_styles() {
        let styles: Vec<_> = (0..4).map(|i| SlowStyle::Mixed.nth(i)).collect();
        assert_eq!(styles, [SlowStyle::Headers, SlowStyle::Idle, SlowStyle::Headers, SlowStyle::Idle]);
        assert_eq!(SlowStyle::Idle.nth(0), SlowStyle::Idle);
    }
}
