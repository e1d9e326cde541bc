//! [`BackgroundWriter`]: a run's files written on a thread of their own, so the training
//! loop does not wait for the disk.
//!
//! Every iteration ends with its record on disk: the metrics line and TensorBoard event
//! (each fsynced), `policy.bin` and the checkpoint (each written atomically: the file and its
//! directory fsynced). That is six syncs, about 0.6 ms each on this project's CI disk and
//! far more on a busy or network file system. A simulated 10M-step run has 500 iterations
//! of about 40 ms, so writing in place kept the devices and the learner idle for about 2 s
//! of it (and serialising the checkpoint for another 0.5 s).
//!
//! Jobs run one at a time in the order they were submitted, so what a crash can leave on
//! disk is what writing in place could leave, only up to [`BackgroundWriter::spawn`]'s
//! `queue_depth + 1` records older. A failed job's error is returned by the next
//! [`BackgroundWriter::submit`] or [`BackgroundWriter::wait`], so the loop stops one
//! iteration later than it would have; the checkpoint on disk is then the last one written
//! whole, as before.

use std::fmt::Display;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// One unit of writing: it runs on the writer's thread and says whether it succeeded.
type Job<E> = Box<dyn FnOnce() -> Result<(), E> + Send>;

/// What the writer's thread reports back.
struct Completion<E> {
    /// Jobs finished, successfully or not.
    finished: u64,
    /// The first job's error not yet handed to the caller.
    first_error: Option<E>,
    /// A job panicked: nothing after it runs.
    panicked: bool,
}

struct Shared<E> {
    completion: Mutex<Completion<E>>,
    changed: Condvar,
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, Completion<E>> {
        // Jobs run outside the lock, so a poisoned lock still holds consistent counts.
        self.completion
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A thread that runs writing jobs in order (see the module docs). Dropping it waits for
/// the jobs already submitted and logs an error they end with.
pub struct BackgroundWriter<E: Display + Send + 'static> {
    jobs: Option<SyncSender<Job<E>>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared<E>>,
    submitted: u64,
}

impl<E: Display + Send + 'static> BackgroundWriter<E> {
    /// Starts the thread, named `name`. At most `queue_depth` jobs wait behind the running
    /// one; [`BackgroundWriter::submit`] blocks while that many do, so a disk slower than
    /// the loop slows the loop instead of piling up records in memory.
    pub fn spawn(name: &str, queue_depth: usize) -> std::io::Result<Self> {
        let (jobs, queue) = sync_channel::<Job<E>>(queue_depth);
        let shared = Arc::new(Shared {
            completion: Mutex::new(Completion {
                finished: 0,
                first_error: None,
                panicked: false,
            }),
            changed: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                for job in queue {
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    let mut completion = worker.lock();
                    completion.finished += 1;
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            completion.first_error.get_or_insert(e);
                        }
                        Err(_) => completion.panicked = true,
                    }
                    let stop = completion.panicked;
                    drop(completion);
                    worker.changed.notify_all();
                    if stop {
                        return;
                    }
                }
            })?;
        Ok(BackgroundWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            shared,
            submitted: 0,
        })
    }

    /// Queues `job` behind the jobs before it. Returns the error an earlier job ended with
    /// instead (once; `job` is then not queued: the caller is expected to stop).
    ///
    /// # Panics
    /// If an earlier job panicked (a bug in the job, as it would have been in place).
    pub fn submit(
        &mut self,
        job: impl FnOnce() -> Result<(), E> + Send + 'static,
    ) -> Result<(), E> {
        self.take_failure()?;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(Box::new(job)).is_ok());
        if !sent {
            // The thread only stops after a panic, which take_failure reports; a send can
            // fail only in the moment between the two.
            self.take_failure()?;
            panic!("the run's writer thread stopped");
        }
        self.submitted += 1;
        Ok(())
    }

    /// Blocks until every submitted job has run; returns the first error one ended with.
    ///
    /// # Panics
    /// If a job panicked.
    pub fn wait(&mut self) -> Result<(), E> {
        let mut completion = self.shared.lock();
        while completion.finished < self.submitted && !completion.panicked {
            completion = self
                .shared
                .changed
                .wait(completion)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(completion);
        self.take_failure()
    }

    fn take_failure(&mut self) -> Result<(), E> {
        let mut completion = self.shared.lock();
        if completion.panicked {
            drop(completion);
            panic!("a job of the run's writer thread panicked");
        }
        match completion.first_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<E: Display + Send + 'static> Drop for BackgroundWriter<E> {
    fn drop(&mut self) {
        // Closing the queue ends the thread once the jobs in it have run.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let completion = self.shared.lock();
        if let Some(e) = &completion.first_error {
            tracing::error!("a run file could not be written: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn jobs_run_in_submission_order_and_wait_sees_them_all() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut writer = BackgroundWriter::<String>::spawn("test-writer", 1).expect("spawns");
        for i in 0..50 {
            let order = Arc::clone(&order);
            writer
                .submit(move || {
                    if i % 7 == 0 {
                        // Slow jobs make later ones queue (and submit block) behind them.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    order.lock().expect("lock").push(i);
                    Ok(())
                })
                .expect("queued");
        }
        writer.wait().expect("all succeeded");
        assert_eq!(*order.lock().expect("lock"), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_job_is_reported_once_and_the_next_submission_is_refused() {
        let mut writer = BackgroundWriter::<String>::spawn("test-writer", 1).expect("spawns");
        let ran = Arc::new(AtomicUsize::new(0));
        let count = |ran: &Arc<AtomicUsize>| {
            let ran = Arc::clone(ran);
            move || {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        };
        // A job that fails with `message` once its sender is signalled: what is queued
        // behind it is queued before the failure is recorded.
        let held_failure = |message: &'static str| {
            let (release, released) = std::sync::mpsc::channel::<()>();
            let job = move || {
                released.recv().expect("released");
                Err(message.to_owned())
            };
            (release, job)
        };

        // Two failures: the first is the one reported.
        let (release, failing) = held_failure("disk full: checkpoint.bin");
        writer.submit(failing).expect("queued");
        writer.submit(|| Err("second".to_owned())).expect("queued");
        release.send(()).expect("release");
        assert_eq!(writer.wait(), Err("disk full: checkpoint.bin".to_owned()));
        // Reported once: the writer goes on working afterwards.
        writer.submit(count(&ran)).expect("queued after the report");
        assert_eq!(writer.wait(), Ok(()));
        assert_eq!(ran.load(Ordering::SeqCst), 1);

        // A failure not yet reported refuses the next submission, which never runs. The
        // failing job is held until the job behind it is queued: otherwise its failure could
        // be recorded first and refuse that job instead.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let (release, failing) = held_failure("third");
        writer.submit(failing).expect("queued");
        writer
            .submit(move || {
                done.send(()).expect("signal");
                Ok(())
            })
            .expect("queued");
        release.send(()).expect("release");
        finished.recv().expect("the failing job has run");
        assert_eq!(writer.submit(count(&ran)), Err("third".to_owned()));
        assert_eq!(writer.wait(), Ok(()));
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the refused job never ran");
    }

    #[test]
    fn dropping_the_writer_finishes_the_queued_jobs() {
        let ran = Arc::new(AtomicUsize::new(0));
        {
            let mut writer = BackgroundWriter::<String>::spawn("test-writer", 4).expect("spawns");
            for _ in 0..5 {
                let counter = Arc::clone(&ran);
                writer
                    .submit(move || {
                        std::thread::sleep(Duration::from_millis(1));
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .expect("queued");
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), 5);
    }

    #[test]
    #[should_panic(expected = "writer thread panicked")]
    fn a_panicking_job_surfaces_in_wait_instead_of_hanging() {
        let mut writer = BackgroundWriter::<String>::spawn("test-writer", 1).expect("spawns");
        writer.submit(|| panic!("bug in a job")).expect("queued");
        let _ = writer.wait();
    }
}
