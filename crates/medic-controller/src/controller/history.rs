//! `medic history` without reading every journal for every request: each file's entry is kept
//! with the file's length and modification time, and read again only when either changes (a
//! finished recovery's file never does). Pages of it are served newest first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::journal::{JournalError, parse};

use super::status::history_entry;

/// The most entries one request gets.
pub const MAX_PAGE: usize = 1000;
/// What a request without `limit` gets.
pub const DEFAULT_PAGE: usize = 100;

#[derive(Debug, Default)]
pub(crate) struct HistoryCache {
    files: HashMap<PathBuf, Cached>,
}

#[derive(Debug)]
struct Cached {
    len: u64,
    modified: Option<SystemTime>,
    /// `(begun_ms, id)`: the order of the history.
    key: (u64, String),
    entry: serde_json::Value,
}

impl HistoryCache {
    /// The recoveries in `dir` begun at `since_ms` or later, newest first, `offset` of them
    /// skipped, at most `limit`.
    /// Damaged files are left out (start-up reports them).
    pub(crate) fn page(
        &mut self,
        dir: &Path,
        since_ms: u64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, JournalError> {
        let entries = std::fs::read_dir(dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut seen = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("jsonl") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            let (len, modified) = (meta.len(), meta.modified().ok());
            let fresh = self
                .files
                .get(&path)
                .is_some_and(|c| c.len == len && c.modified == modified);
            if !fresh {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let Ok(log) = parse(&bytes, &path, &id) else {
                    self.files.remove(&path);
                    continue;
                };
                self.files.insert(
                    path.clone(),
                    Cached {
                        len,
                        modified,
                        key: (log.begun_ms, log.id.clone()),
                        entry: history_entry(&log),
                    },
                );
            }
            seen.push(path);
        }
        // Files gone (set aside, say) leave the cache too.
        let keep: std::collections::HashSet<&PathBuf> = seen.iter().collect();
        self.files.retain(|p, _| keep.contains(p));
        let mut all: Vec<&Cached> = self.files.values().collect();
        all.sort_by(|a, b| b.key.cmp(&a.key));
        Ok(all
            .into_iter()
            .take_while(|c| c.key.0 >= since_ms)
            .skip(offset)
            .take(limit.min(MAX_PAGE))
            .map(|c| c.entry.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::{begin, done};
    use crate::journal::{Journal, Record};

    #[test]
    fn pages_come_newest_first_and_a_changed_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut cache = HistoryCache::default();
        assert!(cache.page(j.dir(), 0, 0, 10).unwrap().is_empty());
        let mut writers = Vec::new();
        for id in ["r-1", "r-2", "r-3"] {
            let mut b = begin(id);
            if let Record::Begin { at_ms, .. } = &mut b {
                *at_ms = id[2..].parse().unwrap();
            }
            writers.push(j.begin(&b).unwrap());
        }
        let ids = |page: Vec<serde_json::Value>| -> Vec<String> {
            page.iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            ids(cache.page(j.dir(), 0, 0, 10).unwrap()),
            ["r-3", "r-2", "r-1"]
        );
        assert_eq!(ids(cache.page(j.dir(), 0, 1, 1).unwrap()), ["r-2"]);
        // Those begun since a time (here r-2's, 2 ms after the epoch), newest first.
        assert_eq!(ids(cache.page(j.dir(), 2, 0, 10).unwrap()), ["r-3", "r-2"]);
        assert!(cache.page(j.dir(), 4, 0, 10).unwrap().is_empty());
        assert!(cache.page(j.dir(), 0, 3, 10).unwrap().is_empty());
        // A step done in r-2 changes its file: its entry is read again.
        let steps = |page: Vec<serde_json::Value>| page[0]["steps"][0]["status"].clone();
        assert_eq!(steps(cache.page(j.dir(), 0, 1, 1).unwrap()), "not run");
        writers[1].append(&done(1)).unwrap();
        assert_eq!(steps(cache.page(j.dir(), 0, 1, 1).unwrap()), "done");
        // A file that goes leaves the history.
        std::fs::remove_file(dir.path().join("r-1.jsonl")).unwrap();
        assert_eq!(ids(cache.page(j.dir(), 0, 0, 10).unwrap()), ["r-3", "r-2"]);
    }
}
