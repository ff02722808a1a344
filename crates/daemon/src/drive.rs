//! A request's fetches driven to the end: a window of blobs in flight, progress events
//! every [`PROGRESS_EVERY`] while bytes arrive, and what was fetched committed every few
//! thousand blobs (a few hundred with a fleet tier: [`Fetcher::commit_every`]) and at the
//! end (also when a fetch fails, for the next attempt). Each staged blob waits for its
//! commit holding its in-flight entry and its staged record.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hoard_types::api::Event;
use tokio::sync::mpsc;

use crate::budget::Keeper;
use crate::error::ApiError;
use crate::fetch::{Fetcher, Receiving};

/// Blobs one request keeps in flight (fetching or waiting for their commit): twice what
/// the batches of small blobs hold at once (`fetch/gather.rs`), so that the next batches
/// fill while those are under way. Each costs memory: in a cold fetch of 20,000 small
/// files, a window of 1024 took the daemon's peak RSS from 58 to 64 MiB, and was slower.
pub(crate) const FETCH_WINDOW: usize = 512;

/// How often a long call reports progress at most.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One finished fetch of a request: the blob's size, the bytes downloaded (`None` when
/// the cache or another request had it), and what the caller keeps of it.
pub(crate) struct Got<T> {
    pub size: u64,
    pub downloaded: Option<u64>,
    pub kept: T,
}

/// Runs a request's fetches (`work`; `missing` blobs and bytes in all), reporting
/// progress: the blobs done, and their bytes with those `receiving` counts of blobs under
/// way (so that a large blob moves the bytes while it arrives). What was fetched is
/// committed at the end, and also when a fetch fails (for the next attempt). Returns what
/// each fetch kept, and the blobs and bytes downloaded.
pub(crate) async fn drive<T>(
    fetcher: &Fetcher,
    keeper: &Arc<Keeper>,
    work: impl futures_util::Stream<Item = Result<Got<T>, ApiError>>,
    (missing_blobs, missing_bytes): (u64, u64),
    receiving: &Receiving,
    events: &mpsc::Sender<Event>,
) -> Result<(Vec<T>, (u64, u64)), ApiError> {
    let progress = |blobs, bytes| Event::Progress {
        fetched_blobs: blobs,
        missing_blobs,
        fetched_bytes: bytes,
        missing_bytes,
    };
    let _ = events.send(progress(0, 0)).await;
    let mut work = Box::pin(work);
    let mut kept = Vec::new();
    let (mut done, mut done_bytes, mut downloaded, mut downloaded_bytes) = (0, 0, 0, 0);
    // Never backwards: a fetch takes its count back a moment before its blob is done.
    let mut shown = (0, 0);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            result = work.next() => match result {
                Some(result) => result,
                None => break,
            },
            _ = tick.tick() => {
                let bytes = (done_bytes + receiving.bytes()).min(missing_bytes).max(shown.1);
                if (done, bytes) != shown {
                    shown = (done, bytes);
                    let _ = events.send(progress(done, bytes)).await;
                }
                continue;
            }
        };
        let got = match result {
            Ok(got) => got,
            Err(e) => {
                // What was fetched stays: commit it for the next attempt.
                drop(work);
                let _ = fetcher.commit_now().await;
                keeper.after_fetch();
                return Err(e);
            }
        };
        done += 1;
        done_bytes += got.size;
        if let Some(bytes) = got.downloaded {
            downloaded += 1;
            downloaded_bytes += bytes;
        }
        kept.push(got.kept);
        // What is staged waits for a commit with its in-flight entry (a few hundred bytes
        // each): a large version commits as it goes, not only at its end.
        if done % fetcher.commit_every() == 0 && done < missing_blobs {
            fetcher.commit_now().await?;
        }
        if done == missing_blobs {
            let _ = events.send(progress(done, done_bytes)).await;
        }
    }
    fetcher.commit_now().await?;
    keeper.after_fetch();
    Ok((kept, (downloaded, downloaded_bytes)))
}
