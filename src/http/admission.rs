//! Admission control for CPU-heavy photo work: a bounded number of tickets (running + queued, refused with 503
//! beyond) and a fixed set of analysis threads that take queued work straight from one shared queue.
//!
//! Why dedicated threads rather than a semaphore in front of `spawn_blocking`: with a semaphore, the moment one
//! analysis ends, the next one starts only after an async task is woken to take the freed permit and hands the work
//! to a blocking thread — two thread wake-ups on cores the other analyses keep busy. Here a thread that finishes one
//! analysis pops the next itself. Measured on 2 cores at concurrency 8 against the semaphore: about +5 % searches/s
//! (research/README.md, where also three threads on two cores measured ahead of two, pinned to cores or not).
//! rayon's pool, already a dependency, is not used for this: its idle workers spin before they sleep, which takes
//! cycles from the other analyses on a 2-core machine.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::{oneshot, Semaphore};

use super::ApiError;

type Job = Box<dyn FnOnce() + Send>;

/// Bounded admission of CPU-heavy work: a request takes a ticket (running + queued) or is refused with 503, then
/// its work runs on the first free analysis thread. Work never piles up without bound.
#[derive(Clone)]
pub struct Admission {
    tickets: Arc<Semaphore>,
    pool: Arc<AnalysisPool>,
    running: usize,
    capacity: usize,
}

impl Admission {
    /// `running` analysis threads and room for `queued` more requests waiting for one.
    pub fn new(running: usize, queued: usize) -> std::io::Result<Admission> {
        let running = running.max(1);
        Ok(Admission {
            tickets: Arc::new(Semaphore::new(running + queued)),
            pool: Arc::new(AnalysisPool::start(running)?),
            running,
            capacity: running + queued,
        })
    }

    /// Requests admitted beyond the analysis threads, i.e. waiting for one: what background work yields to.
    pub fn queued(&self) -> usize {
        let taken = self.capacity.saturating_sub(self.tickets.available_permits());
        taken.saturating_sub(self.running)
    }

    /// Runs `work` on an analysis thread once admitted. If the caller goes away while the work still waits in the
    /// queue (a client that gave up), the work is skipped.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let ticket = self.tickets.clone().try_acquire_owned().map_err(|_| ApiError::busy())?;
        let (reply, answer) = oneshot::channel();
        self.pool.submit(Box::new(move || {
            // The job, not the request, holds the ticket: a client that sends a photo and hangs up at once must not
            // free its ticket while the photo still sits in the queue, or the queue would grow without bound.
            if reply.is_closed() {
                return;
            }
            let outcome = panic::catch_unwind(AssertUnwindSafe(work));
            // Returned before the answer, so a client that sends its next photo as soon as it has this one's answer
            // never finds the ticket still taken.
            drop(ticket);
            let _ = reply.send(outcome);
        }));
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_panic)) => Err(ApiError::internal("photo analysis failed unexpectedly")),
            Err(_) => Err(ApiError::internal("analysis thread stopped")),
        }
    }
}

/// A fixed set of threads running queued jobs in arrival order; stops its threads when dropped.
struct AnalysisPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    queued: Condvar,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl AnalysisPool {
    /// Starts `threads` threads; if one cannot be started, those already running are stopped (by `Drop`).
    fn start(threads: usize) -> std::io::Result<AnalysisPool> {
        let shared = Arc::new(Shared { queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false }), queued: Condvar::new() });
        let mut pool = AnalysisPool { shared, threads: Vec::with_capacity(threads) };
        for n in 0..threads {
            let shared = pool.shared.clone();
            pool.threads.push(std::thread::Builder::new().name(format!("analysis-{n}")).spawn(move || shared.work())?);
        }
        Ok(pool)
    }

    fn submit(&self, job: Job) {
        self.shared.queue.lock().jobs.push_back(job);
        self.shared.queued.notify_one();
    }
}

impl Shared {
    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.queue.lock();
                loop {
                    if let Some(job) = queue.jobs.pop_front() {
                        break job;
                    }
                    if queue.closed {
                        return;
                    }
                    self.queued.wait(&mut queue);
                }
            };
            // Jobs catch their own panics (see `Admission::run`), so one bad photo never takes a thread down.
            job();
        }
    }
}

impl Drop for AnalysisPool {
    /// Lets queued jobs finish, then joins the threads.
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.queued.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_work_on_named_analysis_threads_and_returns_its_value() {
        let admission = Admission::new(2, 4).unwrap();
        let name = admission.run(|| std::thread::current().name().map(str::to_owned)).await.unwrap();
        assert!(name.is_some_and(|n| n.starts_with("analysis-")));
    }

    /// Waits (at most 10 s) until exactly `free` tickets are left.
    async fn tickets_left(admission: &Admission, free: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while admission.tickets.available_permits() != free {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("tickets settle")
    }

    /// A job that blocks its analysis thread until the returned sender sends (or is dropped).
    fn held_job() -> (std::sync::mpsc::Sender<()>, impl FnOnce() + Send + 'static) {
        let (open, opened) = std::sync::mpsc::channel::<()>();
        (open, move || {
            let _ = opened.recv();
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_with_503_once_running_and_queued_are_full() {
        let admission = Admission::new(1, 1).unwrap();
        let (open_first, first_job) = held_job();
        let (open_second, second_job) = held_job();
        let first = tokio::spawn({
            let a = admission.clone();
            async move { a.run(first_job).await }
        });
        let second = tokio::spawn({
            let a = admission.clone();
            async move { a.run(second_job).await }
        });
        // Both tickets are taken once the two tasks have submitted; a third request must be refused at once.
        tickets_left(&admission, 0).await;
        let refused = admission.run(|| ()).await.unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        open_first.send(()).unwrap();
        open_second.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert_eq!(admission.tickets.available_permits(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_request_keeps_its_ticket_until_its_queued_work_is_skipped() {
        let admission = Admission::new(1, 1).unwrap();
        let (open_first, first_job) = held_job();
        let first = tokio::spawn({
            let a = admission.clone();
            async move { a.run(first_job).await }
        });
        let ran = Arc::new(AtomicUsize::new(0));
        let abandoned = tokio::spawn({
            let a = admission.clone();
            let ran = ran.clone();
            async move { a.run(move || ran.fetch_add(1, Ordering::SeqCst)).await }
        });
        tickets_left(&admission, 0).await;
        abandoned.abort();
        let _ = abandoned.await;
        // Its photo is still queued behind the first, so its ticket is still taken.
        let third = tokio::time::timeout(Duration::from_secs(5), admission.run(|| 0)).await;
        assert!(
            matches!(&third, Ok(Err(e)) if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE),
            "a third request must be refused at once, got {third:?}"
        );
        open_first.send(()).unwrap();
        first.await.unwrap().unwrap();
        tickets_left(&admission, 2).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "work of a request that went away must be skipped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_analysis_is_an_internal_error_and_the_thread_lives_on() {
        let admission = Admission::new(1, 2).unwrap();
        let err = admission.run(|| panic!("bad photo")).await.unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(admission.run(|| 7).await.unwrap(), 7);
    }

    #[test]
    fn dropping_the_pool_finishes_queued_jobs_and_joins_its_threads() {
        let done = Arc::new(AtomicUsize::new(0));
        let pool = AnalysisPool::start(2).unwrap();
        for _ in 0..10 {
            let done = done.clone();
            pool.submit(Box::new(move || {
                std::thread::sleep(Duration::from_millis(2));
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        drop(pool);
        assert_eq!(done.load(Ordering::SeqCst), 10);
    }
}
