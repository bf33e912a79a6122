//! Long-lived worker threads, one per CPU, pinned: `cycle_threads` hands
//! each measurement's iterations to them, so thread start-up and migration
//! stay outside the timing, as in the C floor (`shared/tools/floor`).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

/// A unit of work run on every worker.
pub type Work<'a> = &'a (dyn Fn() + Sync);

/// `threads` pinned workers living as long as the scope.
pub struct Workers<'scope, 'env> {
    jobs: Vec<Sender<Option<(u64, Work<'env>)>>>,
    spans: Receiver<(Instant, Instant)>,
    handles: Vec<ScopedJoinHandle<'scope, ()>>,
}

impl<'scope, 'env> Workers<'scope, 'env> {
    /// Starts `threads` workers in `scope`, worker `i` pinned to CPU `i`
    /// (modulo the CPUs there are).
    pub fn new(scope: &'scope Scope<'scope, 'env>, threads: usize) -> Self {
        let barrier = Arc::new(Barrier::new(threads));
        let (span_tx, spans) = channel();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut jobs = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads {
            let (tx, rx) = channel::<Option<(u64, Work<'env>)>>();
            jobs.push(tx);
            let (barrier, span_tx) = (barrier.clone(), span_tx.clone());
            handles.push(scope.spawn(move || {
                pin(i % cpus);
                while let Ok(Some((iters, work))) = rx.recv() {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        work();
                    }
                    let _ = span_tx.send((start, Instant::now()));
                }
            }));
        }
        Workers {
            jobs,
            spans,
            handles,
        }
    }

    /// Runs `iters` calls of `work` on every worker, started together: the
    /// wall time from the first start to the last finish.
    pub fn run(&self, iters: u64, work: Work<'env>) -> Duration {
        for job in &self.jobs {
            job.send(Some((iters, work))).expect("worker gone");
        }
        let spans: Vec<_> = (0..self.jobs.len())
            .map(|_| self.spans.recv().expect("worker gone"))
            .collect();
        let start = spans.iter().map(|s| s.0).min().unwrap();
        let end = spans.iter().map(|s| s.1).max().unwrap();
        end - start
    }

    /// Stops the workers.
    pub fn stop(self) {
        for job in &self.jobs {
            let _ = job.send(None);
        }
        for h in self.handles {
            h.join().expect("worker panicked");
        }
    }
}

/// Pins the calling thread to `cpu`; best effort (a failure leaves it
/// unpinned).
fn pin(cpu: usize) {
    // SAFETY: a zeroed `cpu_set_t` is empty; CPU_SET and sched_setaffinity
    // only read and write that set, for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
