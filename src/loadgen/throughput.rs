//! `facematch bench pipeline-throughput`: the face pipeline alone on N threads, the baseline the server's
//! throughput is compared with, and the process's own processor time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::eval::metrics::{latency_summary, LatencySummary, MetricError};
use crate::pipeline::{AnalyzeOptions, FacePipeline, PipelineError};

/// Longest a measurement may be asked to run.
const MAX_SECONDS: f64 = 3600.0;


/// Throughput of the face pipeline alone: N threads analysing the same photo back to back.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub threads: usize,
    pub photos: usize,
    /// Wall time from the common start of the threads to the end of the last analysis.
    pub seconds: f64,
    pub photos_per_second: f64,
    pub faces_per_photo: f64,
    pub latency_ms: LatencySummary,
    /// User + system processor time of the process over the timed region, per photo: unlike wall time it does not
    /// grow when other processes hold the cores. `None` where `/proc/self/stat` is unavailable.
    pub cpu_ms_per_photo: Option<f64>,
}

/// Why the pipeline-alone measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum ThroughputError {
    #[error("analysing the photo")]
    Pipeline(#[source] PipelineError),
    #[error("latency summary")]
    Summary(#[source] MetricError),
}

/// One thread's timed work.
struct ThreadRun {
    latencies_ms: Vec<f64>,
    faces: usize,
    ended: Instant,
}

/// Runs `threads` threads that each analyse `photo` (decode → detect → align → embed, the options the search
/// route uses) until `duration` has passed, after `warmup` untimed analyses per thread. Each thread does at least
/// one timed analysis.
pub fn measure_pipeline_throughput(
    pipeline: &FacePipeline,
    photo: &[u8],
    threads: usize,
    duration: Duration,
    warmup: usize,
) -> Result<ThroughputResult, ThroughputError> {
    let options = AnalyzeOptions { min_face_px: None, max_faces: Some(64) };
    let threads = threads.max(1);
    let barrier = std::sync::Barrier::new(threads + 1);
    let (started, cpu_seconds, runs) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<ThreadRun, PipelineError> {
                    let warmed = (0..warmup).try_for_each(|_| pipeline.analyze_bytes(photo, options).map(drop));
                    // Every thread starts timing together, so the wall time covers N busy threads; a thread whose
                    // warm-up failed still meets the others at the barrier and then reports its error.
                    barrier.wait();
                    warmed?;
                    let deadline = Instant::now() + duration;
                    let (mut latencies_ms, mut faces) = (Vec::new(), 0);
                    loop {
                        let t = Instant::now();
                        faces += pipeline.analyze_bytes(photo, options)?.faces.len();
                        latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    Ok(ThreadRun { latencies_ms, faces, ended: Instant::now() })
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let cpu_start = process_cpu_seconds();
        let runs: Vec<Result<ThreadRun, PipelineError>> =
            handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect();
        (started, cpu_start.zip(process_cpu_seconds()).map(|(a, b)| b - a), runs)
    });
    let (mut latencies, mut faces, mut ended) = (Vec::new(), 0, started);
    for run in runs {
        let mut run = run.map_err(ThroughputError::Pipeline)?;
        latencies.append(&mut run.latencies_ms);
        faces += run.faces;
        ended = ended.max(run.ended);
    }
    let seconds = (ended - started).as_secs_f64();
    let photos = latencies.len();
    let latency_ms = latency_summary(&latencies).map_err(ThroughputError::Summary)?;
    Ok(ThroughputResult {
        threads,
        photos,
        seconds,
        photos_per_second: photos as f64 / seconds,
        faces_per_photo: faces as f64 / photos as f64,
        latency_ms,
        cpu_ms_per_photo: cpu_seconds.map(|s| s * 1000.0 / photos as f64),
    })
}

/// User + system processor time of this process in seconds, from `/proc/self/stat` (`None` where it cannot be
/// read). Linux counts these fields in USER_HZ ticks, fixed at 100 per second for user space.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_ticks(&stat).map(|ticks| ticks as f64 / 100.0)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, counted after the command name's last `)`
/// because the name itself may hold spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `facematch bench pipeline-throughput`.
#[derive(Debug, clap::Args)]
pub struct PipelineThroughputArgs {
    /// The photo every thread analyses.
    #[arg(long)]
    pub photo: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Untimed analyses per thread first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
}

pub fn run_pipeline_throughput_cli(config: &Config, args: &PipelineThroughputArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= MAX_SECONDS,
        "bench pipeline-throughput: --seconds must be in (0, {MAX_SECONDS}]"
    );
    let photo = std::fs::read(&args.photo).with_context(|| format!("photo {}: cannot be read", args.photo.display()))?;
    // The server's settings: sessions per model from `runtime.sessions` (default: cores), one intra-op thread.
    let pipeline = FacePipeline::load(&config.pipeline()).context("bench pipeline-throughput: loading the face pipeline")?;
    let result = measure_pipeline_throughput(&pipeline, &photo, args.threads, Duration::from_secs_f64(args.seconds), args.warmup)
        .with_context(|| format!("bench pipeline-throughput: photo {}", args.photo.display()))?;
    eprintln!(
        "pipeline alone: {:.2} photos/s on {} thread(s) ({} photos, p50 {:.2} ms, {:.2} faces per photo)",
        result.photos_per_second, result.threads, result.photos, result.latency_ms.p50, result.faces_per_photo
    );
    let runtime = &config.runtime;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "photo": args.photo, "sessions": runtime.sessions, "intra_threads": runtime.intra_threads, "result": result,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let own = std::fs::read_to_string("/proc/self/stat").expect("linux /proc");
        assert!(cpu_ticks(&own).is_some(), "{own}");
        let odd = "42 (a) b) (c) R 1 2 3 4 5 6 7 8 9 10 1234 56 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(odd), Some(1290));
        assert_eq!(cpu_ticks("42 (x) R 1 2"), None);
    }

}
