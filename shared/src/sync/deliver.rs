//! The publish and commit stages: a page's messages to the broker, acknowledged;
//! only then, in one transaction, the state that says they were sent (fingerprints,
//! counters, the next page state). A crash between the two replays the page with the
//! same event ids.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::process::PageOutcome;
use super::{SyncError, Syncer};
use crate::bus::{Job, OutMessage};
use crate::domain::RunMode;
use crate::engine::PageState;
use crate::store::{Checkpoint, SliceCommit};

/// How far a slice has come.
pub struct SliceProgress {
    pub pages: u32,
    started: Instant,
    /// The run's latest updated-at so far (carried across slices in the checkpoint).
    pub run_max: Option<DateTime<Utc>>,
}

impl SliceProgress {
    pub fn new(checkpoint: &Checkpoint, resuming: bool) -> Self {
        SliceProgress {
            pages: 0,
            started: Instant::now(),
            run_max: if resuming {
                checkpoint.run_max_updated
            } else {
                None
            },
        }
    }

    pub fn add_page(&mut self, max_updated: Option<DateTime<Utc>>) {
        self.pages += 1;
        if let Some(t) = max_updated {
            self.run_max = Some(self.run_max.map_or(t, |m| m.max(t)));
        }
    }

    /// Whether this page ends the slice: the run's last page, the slice's bounds, or a
    /// draining worker.
    pub fn ends(&self, last: bool, bounds: SliceBounds, stop: &AtomicBool) -> bool {
        last || self.pages >= bounds.max_pages
            || self.started.elapsed() >= bounds.max_duration
            || stop.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SliceBounds {
    pub max_pages: u32,
    pub max_duration: Duration,
}

/// Where the next incremental run starts once this one completes: the latest
/// updated-at it read (never earlier than before); an incremental run that read
/// nothing keeps the old start; a full run that read no times has none.
pub fn finished_since(
    run_max: Option<DateTime<Utc>>,
    previous: Option<DateTime<Utc>>,
    mode: RunMode,
) -> Option<DateTime<Utc>> {
    match (run_max, mode) {
        (Some(m), _) => Some(previous.map_or(m, |s| s.max(m))),
        (None, RunMode::Incremental | RunMode::Fetch) => previous,
        (None, RunMode::Full) => None,
    }
}

/// One page's commit, as the commit stage receives it.
pub struct PageCommit<'a> {
    pub outcome: PageOutcome,
    pub deleted: Vec<String>,
    pub next: Option<&'a PageState>,
    /// The page's delta link: stored as the next incremental start when it is the last.
    pub delta_link: Option<&'a str>,
    pub ends_slice: bool,
}

impl Syncer {
    /// Publish and wait for every acknowledgement.
    pub(super) async fn publish(&self, messages: &[OutMessage]) -> Result<(), SyncError> {
        self.publisher
            .publish_all(messages)
            .instrument(tracing::info_span!("publish", messages = messages.len()))
            .await?;
        Ok(())
    }

    /// Store what the page's (acknowledged) events stand for, in one transaction.
    pub(super) async fn commit(
        &self,
        job: &Job,
        checkpoint: &Checkpoint,
        progress: &SliceProgress,
        mut page: PageCommit<'_>,
    ) -> Result<(), SyncError> {
        let last = page.next.is_none();
        let mut counts = page.outcome.counts;
        counts.deleted = page.deleted.len() as i64;
        counts.slices = i64::from(page.ends_slice);
        let (written, marked) = page.outcome.take_for_commit();
        let commit = SliceCommit {
            connection: &job.connection,
            resource: &job.resource,
            run_id: &job.run_id,
            // A slice that ends before the run does hands the next number to its continuation.
            slice: job.slice + i64::from(page.ends_slice && !last),
            seen: &written,
            touched: &marked,
            deleted: &page.deleted,
            next: page.next,
            run_max_updated: progress.run_max,
            finished_since: last
                .then(|| finished_since(progress.run_max, checkpoint.since, job.mode)),
            finished_delta_link: page.delta_link.filter(|_| last),
            counts,
        };
        self.store
            .commit_slice(&commit)
            .instrument(tracing::info_span!("commit", records = commit.seen.len()))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_next_incremental_start_never_goes_back() {
        let old = Some(t("2026-11-02T00:00:00Z"));
        let newer = Some(t("2026-11-03T00:00:00Z"));
        let older = Some(t("2026-11-01T00:00:00Z"));
        assert_eq!(finished_since(newer, old, RunMode::Incremental), newer);
        assert_eq!(finished_since(older, old, RunMode::Incremental), old);
        assert_eq!(finished_since(None, old, RunMode::Incremental), old);
        assert_eq!(finished_since(newer, None, RunMode::Full), newer);
        assert_eq!(finished_since(None, old, RunMode::Full), None);
    }

    #[test]
    fn a_slice_ends_at_its_page_bound_or_when_asked() {
        let cp = Checkpoint {
            run_id: None,
            mode: None,
            slice: 0,
            page_state: None,
            run_max_updated: Some(t("2026-11-01T00:00:00Z")),
            since: None,
            delta_link: None,
            handover_pending: false,
        };
        let bounds = SliceBounds {
            max_pages: 2,
            max_duration: Duration::from_secs(3600),
        };
        let stop = AtomicBool::new(false);
        let mut progress = SliceProgress::new(&cp, true);
        assert_eq!(
            progress.run_max, cp.run_max_updated,
            "a resumed run keeps its maximum"
        );
        progress.add_page(Some(t("2026-10-01T00:00:00Z")));
        assert_eq!(progress.run_max, cp.run_max_updated);
        assert!(!progress.ends(false, bounds, &stop));
        assert!(progress.ends(true, bounds, &stop));
        stop.store(true, Ordering::Relaxed);
        assert!(progress.ends(false, bounds, &stop));
        stop.store(false, Ordering::Relaxed);
        progress.add_page(None);
        assert!(progress.ends(false, bounds, &stop));
        assert_eq!(SliceProgress::new(&cp, false).run_max, None);
    }
}
