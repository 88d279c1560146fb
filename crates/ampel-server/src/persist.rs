//! The writer thread: every change of durable state goes through here, in order, and is
//! acknowledged only after SQLite committed it.
//!
//! Writes that arrive while a commit is running are gathered into the next transaction (group
//! commit), so that ten thousand heartbeats a second cost a few hundred commits, not ten
//! thousand. Callers enqueue while holding the lock of the user they change, which keeps the
//! order of writes per user the order of the changes in memory.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ampel_store::{Op, Store, StoreError};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// How many jobs at most go into one transaction; bounds the latency of the first one.
const MAX_BATCH: usize = 2048;
/// How long the writer gathers writes for one transaction after the first arrived.
const GATHER: Duration = Duration::from_millis(2);

type Read = Box<dyn FnOnce(&Store) + Send>;
type Done = oneshot::Sender<Result<(), Arc<StoreError>>>;

enum Job {
    Write { ops: Vec<Op>, done: Option<Done> },
    Read(Read),
}

/// A handle to the writer thread.
#[derive(Clone)]
pub struct Persist {
    jobs: mpsc::Sender<Job>,
}

/// A write that was enqueued; await it to know it is durable.
pub struct Pending(Option<oneshot::Receiver<Result<(), Arc<StoreError>>>>);

/// A write that did not become durable.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// SQLite refused the transaction.
    #[error("the database refused the write: {0}")]
    Store(Arc<StoreError>),
    /// The writer thread is gone (the server is shutting down).
    #[error("the database writer has stopped")]
    Stopped,
}

impl Pending {
    /// Waits until the write is committed.
    pub async fn committed(self) -> Result<(), PersistError> {
        let Some(rx) = self.0 else { return Ok(()) };
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PersistError::Store(e)),
            Err(_) => Err(PersistError::Stopped),
        }
    }
}

impl Persist {
    /// Starts the writer thread over `store`.
    pub fn start(store: Store, metrics: Arc<Metrics>) -> Persist {
        let (jobs, rx) = mpsc::channel();
        thread::Builder::new()
            .name("ampel-store".into())
            .spawn(move || run(store, rx, &metrics))
            .expect("the writer thread starts");
        Persist { jobs }
    }

    /// Enqueues `ops` as one unit; they are committed together or not at all.
    pub fn submit(&self, ops: Vec<Op>) -> Pending {
        if ops.is_empty() {
            return Pending(None);
        }
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Write { ops, done: Some(tx) }).is_err() {
            return Pending(Some(oneshot::channel().1));
        }
        Pending(Some(rx))
    }

    /// Enqueues `ops` without waiting for them (history, purges, dropping expired facts).
    pub fn submit_detached(&self, ops: Vec<Op>) {
        if !ops.is_empty() {
            let _ = self.jobs.send(Job::Write { ops, done: None });
        }
    }

    /// Runs a read on the writer's connection, after every write enqueued before it.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PersistError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Read(Box::new(move |store| {
            let _ = tx.send(f(store).map_err(Arc::new));
        }));
        self.jobs.send(job).map_err(|_| PersistError::Stopped)?;
        rx.await.map_err(|_| PersistError::Stopped)?.map_err(PersistError::Store)
    }
}

fn run(mut store: Store, rx: mpsc::Receiver<Job>, metrics: &Metrics) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        take(&mut store, &mut batch, first, metrics);
        // A commit costs far more than a row, so the writes that arrive within a short window
        // join the same transaction. Sleeping through the window, rather than waiting on the
        // channel, spares every sender a wake-up of this thread.
        thread::sleep(GATHER);
        while batch.len() < MAX_BATCH {
            let Ok(job) = rx.try_recv() else { break };
            take(&mut store, &mut batch, job, metrics);
        }
        commit(&mut store, &mut batch, metrics);
    }
}

fn take(store: &mut Store, batch: &mut Vec<(Vec<Op>, Option<Done>)>, job: Job, metrics: &Metrics) {
    match job {
        Job::Read(f) => {
            // A read sees every write enqueued before it.
            commit(store, batch, metrics);
            f(store);
        }
        Job::Write { ops, done } => batch.push((ops, done)),
    }
}

/// Commits the gathered writes in one transaction. When that fails, each write is tried on its
/// own, so that one bad write fails alone.
fn commit(store: &mut Store, batch: &mut Vec<(Vec<Op>, Option<Done>)>, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    let count = batch.iter().map(|(ops, _)| ops.len()).sum();
    match store.apply_all(batch.iter().flat_map(|(ops, _)| ops)) {
        Ok(()) => {
            metrics.store_commit(count);
            for (_, done) in batch.drain(..) {
                done.map(|d| d.send(Ok(())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, writes = batch.len(), "group commit failed, retrying one by one");
            for (ops, done) in batch.drain(..) {
                let result = store.apply(&ops).map_err(Arc::new);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "write failed");
                } else {
                    metrics.store_commit(ops.len());
                }
                done.map(|d| d.send(result));
            }
        }
    }
}
