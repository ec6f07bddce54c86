//! Reading ahead: while one page is published and committed, the next ones are fetched,
//! looked up and processed, at most `pages_in_flight` of them (a bounded channel, so
//! memory stays flat). Pages reach the delivering side in page order; nothing read ahead
//! is published until every page before it is committed, so a checkpoint never covers an
//! unacknowledged event, and a crash (or a slice ending early) replays at most the pages
//! in flight, with the same event ids.
//!
//! A fetch in progress is never cancelled (a token refresh must not be cut off halfway):
//! when the delivering side ends the slice, the reader finishes the page it is fetching,
//! finds nobody listening and stops.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::process::{process_page, record_ids, PageOutcome};
use super::read::Pages;
use super::{record_page_metrics, PageStep, SyncError, Syncer};
use crate::domain::{PageState, StoredFingerprint};
use crate::engine::{EngineError, Page};

/// A page read and processed, waiting to be published and committed.
pub(super) struct Processed {
    pub number: u32,
    pub outcome: PageOutcome,
    pub next: Option<PageState>,
    /// The page's delta link (a round's last page): the next incremental start.
    pub delta_link: Option<String>,
}

/// What the reader hands on, in page order; an error is its last item.
pub(super) enum Ahead {
    Page(Box<Processed>),
    Engine(EngineError),
    Store(SyncError),
}

/// Fingerprints of records processed but not yet committed, with the page that saw
/// them: a record met again on a later page in flight is compared with what was just
/// sent, not with the older stored row, exactly as when pages went one at a time.
#[derive(Default)]
pub(super) struct Window(Mutex<HashMap<String, (u32, StoredFingerprint)>>);

impl Window {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, StoredFingerprint)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The in-flight fingerprints of these records. Read before the store is asked, so a
    /// record that left the window was committed before the store answers.
    fn pending(&self, ids: &[String]) -> HashMap<String, StoredFingerprint> {
        let window = self.lock();
        ids.iter()
            .filter_map(|id| window.get(id).map(|(_, fp)| (id.clone(), fp.clone())))
            .collect()
    }

    /// The page's new and changed fingerprints (an unchanged one is the stored row).
    fn add(&self, page: u32, outcome: &PageOutcome) {
        let unchanged: std::collections::HashSet<usize> =
            outcome.unchanged.iter().copied().collect();
        let mut window = self.lock();
        for (i, fp) in outcome.seen.iter().enumerate() {
            if !unchanged.contains(&i) {
                window.insert(fp.record_id.clone(), (page, fp.clone()));
            }
        }
    }

    /// The page is committed: the store now answers for its records (unless a later
    /// page in flight saw them again).
    pub fn committed(&self, page: u32) {
        self.lock().retain(|_, (seen_on, _)| *seen_on != page);
    }
}

impl Syncer {
    /// Read, look up and process the slice's pages into `ahead` until the last page, an
    /// error, the slice's page bound, or the delivering side hanging up.
    pub(super) async fn read_ahead(
        &self,
        step: PageStep<'_>,
        mut pages: Pages,
        window: &Window,
        ahead: mpsc::Sender<Ahead>,
    ) {
        let mut read = 0;
        while let Some(page) = pages.next().await {
            read += 1;
            let item = match page {
                Ok(page) => match self.prepare(step, page, window).await {
                    Ok(processed) => Ahead::Page(Box::new(processed)),
                    Err(e) => Ahead::Store(e),
                },
                Err(e) => Ahead::Engine(e),
            };
            let more = matches!(&item, Ahead::Page(p) if p.next.is_some())
                && read < self.settings.slice_max_pages;
            if ahead.send(item).await.is_err() || !more {
                return;
            }
        }
    }

    /// One page's stored fingerprints (the window's first) and its processing.
    async fn prepare(
        &self,
        step: PageStep<'_>,
        page: Page,
        window: &Window,
    ) -> Result<Processed, SyncError> {
        let PageStep { job, reading, .. } = step;
        let plan = reading.plan(&job.resource);
        let ids = record_ids(plan, &page.records);
        let pending = window.pending(&ids);
        let mut stored = self.stored_fingerprints(job, &ids).await?;
        stored.extend(pending);
        let spec_file = reading.spec.file.display().to_string();
        let ctx = self.page_context(step, &spec_file);
        let Page {
            number,
            records,
            next,
            delta_link,
            ..
        } = page;
        let outcome = cpu_bound(|| {
            tracing::info_span!("process", records = records.len())
                .in_scope(|| process_page(&ctx, number, records, &stored))
        });
        record_page_metrics(&step.admitted.run, &outcome);
        window.add(number, &outcome);
        Ok(Processed {
            number,
            outcome,
            next,
            delta_link,
        })
    }
}

/// Run CPU-bound work from async code: on a multi-threaded runtime the worker thread
/// hands its other tasks off first, so they keep running meanwhile.
fn cpu_bound<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(id: &str, hash: &str) -> StoredFingerprint {
        StoredFingerprint {
            record_id: id.into(),
            hash: hash.into(),
            field_hashes: Default::default(),
            source_updated_at: None,
        }
    }

    fn outcome(seen: Vec<StoredFingerprint>, unchanged: Vec<usize>) -> PageOutcome {
        PageOutcome {
            seen,
            unchanged,
            ..PageOutcome::default()
        }
    }

    #[test]
    fn the_window_answers_for_records_in_flight_until_their_page_is_committed() {
        let window = Window::default();
        window.add(1, &outcome(vec![fp("a", "a1"), fp("b", "b1")], vec![1]));
        window.add(2, &outcome(vec![fp("a", "a2")], vec![]));
        let ids = ["a".to_string(), "b".to_string()];
        let pending = window.pending(&ids);
        assert_eq!(pending["a"].hash, "a2", "the later page's version");
        assert!(
            !pending.contains_key("b"),
            "an unchanged record is the stored row"
        );
        window.committed(1);
        assert_eq!(
            window.pending(&ids)["a"].hash,
            "a2",
            "page 1's commit leaves page 2's version"
        );
        window.committed(2);
        assert!(window.pending(&ids).is_empty());
    }
}
