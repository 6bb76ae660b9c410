//! The prompt queue and its history, as ComfyUI numbers and reports them:
//! pending prompts run lowest `number` first (`front` takes a negative one),
//! one at a time; each finished prompt leaves exactly one history entry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::{json, Value as Json};
use weft_core::{CancelToken, ValidGraph};

/// One queued prompt.
pub struct Job {
    pub number: i64,
    pub id: String,
    pub graph: Arc<ValidGraph>,
    /// The API-format prompt as sent, for `/queue` and `/history`.
    pub prompt: Json,
    pub extra_data: Json,
    pub client_id: Option<String>,
    /// The node ids to compute: the output nodes, or the request's
    /// `partial_execution_targets`.
    pub targets: Vec<String>,
}

impl Job {
    /// `[number, id, prompt, extra_data, outputs_to_execute]`, ComfyUI's tuple.
    pub fn summary(&self) -> Json {
        json!([
            self.number,
            self.id,
            self.prompt,
            self.extra_data,
            self.targets
        ])
    }
}

/// How a prompt ended.
pub struct Finished {
    pub outputs: Json,
    pub status_str: &'static str,
    pub messages: Vec<Json>,
    pub meta: Json,
}

#[derive(Default)]
struct Inner {
    pending: Vec<Job>,
    running: Option<Running>,
    /// Ids in the order they finished; the entries are in `history_index`.
    history: VecDeque<String>,
    history_index: HashMap<String, Json>,
    next_number: i64,
    free_requested: bool,
}

struct Running {
    summary: Json,
    id: String,
    cancel: CancelToken,
}

pub struct Queue {
    inner: Mutex<Inner>,
    wake: Condvar,
    history_limit: usize,
}

impl Queue {
    pub fn new(history_limit: usize) -> Self {
        Queue {
            inner: Mutex::new(Inner::default()),
            wake: Condvar::new(),
            history_limit: history_limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number a new prompt gets: the request's own, else the next one
    /// (negated when it goes to the front).
    pub fn number(&self, requested: Option<i64>, front: bool) -> i64 {
        let mut inner = self.lock();
        let next = inner.next_number;
        inner.next_number += 1;
        match requested {
            Some(n) => n,
            None if front => -next,
            None => next,
        }
    }

    pub fn push(&self, job: Job) {
        self.lock().pending.push(job);
        self.wake.notify_all();
    }

    /// Blocks until a prompt is pending, then marks it running; the token
    /// interrupts it.
    pub fn next(&self) -> (Job, CancelToken) {
        let mut inner = self.lock();
        loop {
            let lowest = inner
                .pending
                .iter()
                .enumerate()
                .min_by_key(|(_, job)| job.number)
                .map(|(i, _)| i);
            if let Some(i) = lowest {
                let job = inner.pending.remove(i);
                let cancel = CancelToken::new();
                inner.running = Some(Running {
                    summary: job.summary(),
                    id: job.id.clone(),
                    cancel: cancel.clone(),
                });
                return (job, cancel);
            }
            inner = self.wake.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Records the running prompt's result and clears it.
    pub fn finish(&self, job: &Job, result: Finished) {
        let entry = json!({
            "prompt": job.summary(),
            "outputs": result.outputs,
            "status": {
                "status_str": result.status_str,
                "completed": result.status_str == "success",
                "messages": result.messages,
            },
            "meta": result.meta,
        });
        let mut inner = self.lock();
        inner.running = None;
        inner.history_index.insert(job.id.clone(), entry);
        inner.history.push_back(job.id.clone());
        while inner.history.len() > self.history_limit {
            if let Some(old) = inner.history.pop_front() {
                inner.history_index.remove(&old);
            }
        }
    }

    /// Prompts waiting or running.
    pub fn remaining(&self) -> usize {
        let inner = self.lock();
        inner.pending.len() + usize::from(inner.running.is_some())
    }

    /// `{queue_running, queue_pending}`, pending in the order they will run.
    pub fn snapshot(&self) -> Json {
        let inner = self.lock();
        let mut pending: Vec<&Job> = inner.pending.iter().collect();
        pending.sort_by_key(|j| j.number);
        json!({
            "queue_running": inner.running.iter().map(|r| r.summary.clone()).collect::<Vec<_>>(),
            "queue_pending": pending.iter().map(|j| j.summary()).collect::<Vec<_>>(),
        })
    }

    /// Drops every pending prompt (a running one finishes).
    pub fn clear_pending(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.pending.len();
        inner.pending.clear();
        n
    }

    /// Drops the pending prompts with these ids.
    pub fn delete_pending(&self, ids: &[String]) -> usize {
        let mut inner = self.lock();
        let before = inner.pending.len();
        inner.pending.retain(|j| !ids.contains(&j.id));
        before - inner.pending.len()
    }

    /// Interrupts the running prompt: any, or only the one with `id`.
    pub fn interrupt(&self, id: Option<&str>) -> bool {
        let inner = self.lock();
        match &inner.running {
            Some(r) if id.is_none_or(|id| id == r.id) => {
                r.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// History entries, oldest first: the last `max_items` (all when
    /// `None`), skipping `offset` from the start of those.
    pub fn history(&self, max_items: Option<usize>, offset: usize) -> Json {
        let inner = self.lock();
        let len = inner.history.len();
        let take = max_items.unwrap_or(len).min(len);
        let mut out = serde_json::Map::new();
        for id in inner.history.iter().skip(len - take).skip(offset) {
            if let Some(entry) = inner.history_index.get(id) {
                out.insert(id.clone(), entry.clone());
            }
        }
        Json::Object(out)
    }

    pub fn history_of(&self, id: &str) -> Json {
        let inner = self.lock();
        let mut out = serde_json::Map::new();
        if let Some(entry) = inner.history_index.get(id) {
            out.insert(id.to_string(), entry.clone());
        }
        Json::Object(out)
    }

    pub fn clear_history(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.history_index.clear();
    }

    pub fn delete_history(&self, ids: &[String]) {
        let mut inner = self.lock();
        inner.history.retain(|id| !ids.contains(id));
        for id in ids {
            inner.history_index.remove(id);
        }
    }

    /// Asks the executor to drop loaded models and cached results before
    /// its next prompt.
    pub fn request_free(&self) {
        self.lock().free_requested = true;
    }

    pub fn take_free_request(&self) -> bool {
        std::mem::take(&mut self.lock().free_requested)
    }
}
