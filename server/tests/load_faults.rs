//! Many clients at once, and the faults a server meets: an interrupt in the
//! middle of sampling, a client that vanishes mid-run, bad prompts among
//! good ones, the queue cleared while running, and fuzzed bodies.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::{mnist_prompt, Frame, Server};

const LONG: Duration = Duration::from_secs(120);

#[test]
fn eight_clients_times_25_prompts_lose_nothing() {
    let server = Server::start();
    let ids: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|client| {
                let server = &server;
                scope.spawn(move || {
                    let name = format!("client{client}");
                    let mut socket = server.socket(&name);
                    let ids: Vec<String> = (0..25)
                        .map(|i| server.queue(&mnist_prompt(1000 * client + i, 2, 1), &name))
                        .collect();
                    // This client's socket sees each of its prompts end, once.
                    let mut ended = HashSet::new();
                    while ended.len() < ids.len() {
                        if let Frame::Json(m) = socket.next() {
                            let pid = m["data"]["prompt_id"].as_str().unwrap_or("").to_string();
                            if m["type"] == "executing" && m["data"]["node"].is_null() {
                                assert!(ids.contains(&pid), "{name} got another client's end: {m}");
                                assert!(ended.insert(pid), "{name} saw an end twice");
                            }
                        }
                    }
                    ids
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<&String> = ids.iter().flatten().collect();
    assert_eq!(all.len(), 200);
    let (_, history) = server.get("/history");
    assert_eq!(history.as_object().unwrap().len(), 200);
    let mut files = HashSet::new();
    for id in all {
        let entry = &history[id.as_str()];
        assert_eq!(entry["status"]["status_str"], "success", "{id}");
        let images = entry["outputs"]["11"]["images"].as_array().unwrap();
        assert_eq!(images.len(), 1);
        let name = images[0]["filename"].as_str().unwrap().to_string();
        assert!(support::output_dir(&server).join(&name).is_file());
        assert!(files.insert(name), "two prompts share an image");
    }
}

#[test]
fn an_interrupt_mid_sampling_stops_it_and_the_queue_carries_on() {
    let server = Server::start();
    let mut socket = server.socket("i");
    let long = server.queue(&mnist_prompt(5, 10_000, 16), "i");
    let next = server.queue(&mnist_prompt(6, 2, 1), "i");
    // Wait until sampling is under way, then interrupt it.
    let first_step = loop {
        if let Frame::Json(m) = socket.next() {
            if m["type"] == "progress" && m["data"]["prompt_id"] == long {
                break m["data"]["value"].as_u64().unwrap();
            }
        }
    };
    assert_eq!(server.post("/interrupt", &json!({})).0, 200);
    let (messages, _) = socket.until_done(&long);
    assert!(messages
        .iter()
        .any(|m| m["type"] == "execution_interrupted"));
    let entry = server.wait_history(&long, LONG);
    assert_eq!(entry["status"]["status_str"], "error");
    assert!(entry["outputs"].as_object().unwrap().is_empty());
    let last_step = messages
        .iter()
        .filter(|m| m["type"] == "progress")
        .filter_map(|m| m["data"]["value"].as_u64())
        .fold(first_step, u64::max);
    assert!(last_step < 10_000, "ran to the end");
    // The next prompt runs normally.
    let entry = server.wait_history(&next, LONG);
    assert_eq!(entry["status"]["status_str"], "success");
}

#[test]
fn a_client_that_disconnects_mid_run_loses_nothing() {
    let server = Server::start();
    let mut socket = server.socket("gone");
    let id = server.queue(&mnist_prompt(9, 300, 4), "gone");
    loop {
        if let Frame::Json(m) = socket.next() {
            if m["type"] == "progress" {
                break;
            }
        }
    }
    drop(socket);
    let entry = server.wait_history(&id, LONG);
    assert_eq!(entry["status"]["status_str"], "success");
    // The same client comes back and is served.
    let mut socket = server.socket("gone");
    let again = server.queue(&mnist_prompt(10, 2, 1), "gone");
    socket.until_done(&again);
}

#[test]
fn bad_prompts_among_good_ones_fail_alone() {
    let server = Server::start();
    let mut good = Vec::new();
    for i in 0..6 {
        let mut prompt = mnist_prompt(100 + i, 2, 1);
        if i % 2 == 1 {
            prompt["9"]["inputs"]["sigmas"] = json!(["404", 0]);
            let (status, reply) =
                server.post("/prompt", &json!({ "prompt": prompt, "client_id": "m" }));
            assert_eq!(status, 400, "{reply}");
        } else {
            good.push(server.queue(&prompt, "m"));
        }
    }
    for id in &good {
        assert_eq!(
            server.wait_history(id, LONG)["status"]["status_str"],
            "success"
        );
    }
    assert_eq!(
        server.get("/history").1.as_object().unwrap().len(),
        good.len()
    );
}

#[test]
fn clearing_the_queue_while_running_drops_only_the_pending() {
    let server = Server::start();
    let mut socket = server.socket("q");
    let running = server.queue(&mnist_prompt(20, 400, 8), "q");
    let pending: Vec<String> = (0..3)
        .map(|i| server.queue(&mnist_prompt(21 + i, 2, 1), "q"))
        .collect();
    loop {
        if let Frame::Json(m) = socket.next() {
            if m["type"] == "progress" && m["data"]["prompt_id"] == running {
                break;
            }
        }
    }
    let (_, queue) = server.get("/queue");
    assert_eq!(queue["queue_running"][0][1], running);
    assert_eq!(queue["queue_pending"].as_array().unwrap().len(), 3);
    assert_eq!(server.post("/queue", &json!({ "clear": true })).0, 200);
    assert_eq!(server.get("/queue").1["queue_pending"], json!([]));
    assert_eq!(
        server.wait_history(&running, LONG)["status"]["status_str"],
        "success"
    );
    // Give the executor time to (wrongly) start anything left.
    let after = server.queue(&mnist_prompt(30, 2, 1), "q");
    server.wait_history(&after, LONG);
    let (_, history) = server.get("/history");
    for id in &pending {
        assert!(history.get(id).is_none(), "{id} ran after the clear");
    }
}

/// A tiny deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutations of a valid body: bytes flipped, cut short, values swapped for
/// other JSON types, nesting piled up.
fn mutate(rng: &mut Rng, base: &str) -> String {
    const SWAPS: &[&str] = &[
        "null", "[]", "{}", "-1", "1e309", "\"\"", "[\"1\", 99]", "[\"11\", 0]", "true",
        "\"../../etc/passwd\"", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "18446744073709551616", "\"\\ud800\"",
    ];
    let mut bytes = base.as_bytes().to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] = b"{}[]\",:0a\\ \n"[rng.below(12)];
            }
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        2 => {
            // Replace a value after some `:`.
            let colons: Vec<usize> = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b':')
                .map(|(i, _)| i)
                .collect();
            let at = colons[rng.below(colons.len())] + 1;
            let end = bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}'))
                .map_or(bytes.len(), |p| at + p);
            let swap = SWAPS[rng.below(SWAPS.len())].as_bytes();
            bytes.splice(at..end, swap.iter().copied());
        }
        _ => {
            let depth = 1 + rng.below(5000);
            let mut deep = "[".repeat(depth);
            deep.push_str(&"]".repeat(depth));
            return base.replacen("3.0", &deep, 1);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn a_thousand_fuzzed_bodies_get_answers_not_panics() {
    let server = Server::start();
    let base = json!({ "prompt": mnist_prompt(1, 2, 1), "client_id": "fuzz" }).to_string();
    let mut rng = Rng(0x5eed_f00d);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let body = mutate(&mut rng, &base);
        let (status, reply) = server.post_raw("/prompt", &body);
        assert!(matches!(status, 200 | 400), "{status} for {body}");
        if status == 400 {
            assert!(reply["error"]["message"].is_string(), "{reply}");
        }
        *statuses.entry(status).or_insert(0) += 1;
        // Keep the executor from working through what slipped through.
        server.post("/queue", &json!({ "clear": true }));
    }
    assert!(statuses[&400] > 500, "{statuses:?}");
    assert_eq!(server.get("/queue").0, 200);
}
