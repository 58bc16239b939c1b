//! The background threads: the model migration's worker (see `migration.rs`), and the ones that work through the
//! jobs' queue: `jobs.workers` of them, each taking one photo at a time from the
//! store (so a restart, or a second node, picks up where the queue stands), at a lower OS priority, and stepping
//! aside whenever checkpoint searches wait for an analysis thread.
//!
//! What "never starves a checkpoint" rests on, so it can be measured: (1) the workers' nice value (+10) makes the
//! kernel prefer the analysis threads whenever both want a core; (2) `yield_to` — at the server, "searches are
//! queued for an analysis thread" — stops a worker from starting a photo while it holds; (3) one photo at a time per
//! worker bounds the extra latency a checkpoint search can see to one photo's analysis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};

use super::WatchlistService;

/// How long an idle worker sleeps before it looks at the queue again (a submission wakes it sooner).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long a worker waits before looking again while checkpoint searches are queued.
const YIELD_WAIT: Duration = Duration::from_millis(20);
/// The workers' nice value: below every request thread.
const WORKER_NICENESS: i32 = 10;

/// Wakes idle workers when a job is submitted.
#[derive(Debug, Default)]
pub(super) struct JobSignal {
    submitted: Mutex<u64>,
    changed: Condvar,
}

impl JobSignal {
    pub(super) fn notify(&self) {
        *self.submitted.lock() += 1;
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for a submission after `seen`; returns the count now.
    fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let mut submitted = self.submitted.lock();
        if *submitted == seen {
            self.changed.wait_for(&mut submitted, timeout);
        }
        *submitted
    }
}

/// Whether checkpoint searches are waiting: the workers do not start a photo meanwhile.
pub type YieldTo = Arc<dyn Fn() -> bool + Send + Sync>;

/// The running workers; dropping it stops them, each after the photo it is on.
pub struct JobRunner {
    stop: Arc<AtomicBool>,
    service: Arc<WatchlistService>,
    threads: Vec<JoinHandle<()>>,
}

impl WatchlistService {
    /// Gives back claims of workers that died, then starts `jobs.workers` workers (none with 0).
    pub fn start_job_runner(self: &Arc<Self>, yield_to: YieldTo) -> JobRunner {
        let lease = Duration::from_secs(self.jobs.claim_lease_s);
        let stale = humantime::format_rfc3339_millis(SystemTime::now().checked_sub(lease).unwrap_or(SystemTime::UNIX_EPOCH));
        match self.store.resume_jobs(&stale.to_string()) {
            Ok(0) => {}
            Ok(released) => tracing::info!(photos = released, "jobs: photos of stopped workers queued again"),
            Err(e) => tracing::warn!(error = %e, "jobs: stale claims not released; they are at the next start"),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for n in 0..self.jobs.workers {
            let (service, stop, yield_to) = (self.clone(), stop.clone(), yield_to.clone());
            let failed = "jobs: a photo could not be recorded; it is retried after its claim's lease";
            let worker = move || work(&service, &stop, &*yield_to, WatchlistService::run_next_job_photo, failed);
            match std::thread::Builder::new().name(format!("job-runner-{n}")).spawn(worker) {
                Ok(handle) => threads.push(handle),
                Err(e) => tracing::error!(error = %e, "jobs: a worker thread could not start"),
            }
        }
        let (service, migration_stop) = (self.clone(), stop.clone());
        let failed = "model migration: a step failed; it is tried again";
        let worker = move || work(&service, &migration_stop, &*yield_to, WatchlistService::run_migration_step, failed);
        match std::thread::Builder::new().name("model-migration".into()).spawn(worker) {
            Ok(handle) => threads.push(handle),
            Err(e) => tracing::error!(error = %e, "model migration: the worker thread could not start"),
        }
        JobRunner { stop, service: self.clone(), threads }
    }
}

/// What one worker does per turn: `Ok(true)` when it did some work, `Ok(false)` when there was none.
type Step = fn(&WatchlistService) -> Result<bool, super::ServiceError>;

/// A job worker (`run_next_job_photo`) or the model migration's worker (`run_migration_step`, one batch of faces):
/// at a lower priority, stepping aside while checkpoint searches wait, resting `jobs.pause_ms` after each piece of
/// work; a submission or a migration started on this node wakes it, work found in the store by another node within a
/// second. `failed` says in the log what a failed step means.
fn work(service: &WatchlistService, stop: &AtomicBool, yield_to: &(dyn Fn() -> bool + Send + Sync), step: Step, failed: &str) {
    lower_priority();
    let pause = Duration::from_millis(service.jobs.pause_ms);
    let mut seen = 0;
    while !stop.load(Ordering::SeqCst) {
        if yield_to() {
            std::thread::sleep(YIELD_WAIT);
            continue;
        }
        match step(service) {
            Ok(true) if !pause.is_zero() => seen = service.job_signal.wait(seen, pause),
            Ok(true) => {}
            Ok(false) => seen = service.job_signal.wait(seen, IDLE_WAIT),
            Err(e) => {
                tracing::warn!(error = ?anyhow::Error::from(e), "{failed}");
                seen = service.job_signal.wait(seen, IDLE_WAIT);
            }
        }
    }
}

/// Lowers this thread's scheduling priority (Linux: `setpriority` on the thread id applies to that thread alone).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, WORKER_NICENESS)
        };
        if result != 0 {
            tracing::debug!("jobs: worker priority not lowered");
        }
    }
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.service.job_signal.notify();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
