//! A weft server on an ephemeral localhost port, and a small blocking
//! client (ureq for HTTP, tungstenite for the websocket), so the tests
//! speak to it exactly as an outside client would.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};
use weft_server::{Dirs, Limits, ServerConfig};

pub struct Server {
    pub base: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub agent: ureq::Agent,
}

/// The dirs and defaults a test server gets; tests adjust what they need.
pub fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        token: None,
        insecure: false,
        frontend: None,
        dirs: Dirs {
            output: dir.join("output"),
            input: dir.join("input"),
            temp: dir.join("temp"),
            user: dir.join("user"),
        },
        limits: Limits::default(),
        max_ram_bytes: 2 << 30,
        workers: Some(2),
        previews: weft_core::Previews::default(),
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(|_| {})
    }

    pub fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        adjust(&mut config);
        let registry = weft_nodes::builtin_registry();
        let app = weft_server::app(config, registry, Default::default()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            agent,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `(status, JSON body or Null)`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut r = self.agent.get(&self.url(path)).call().unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let mut r = self.agent.get(&self.url(path)).call().unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_vec().unwrap_or_default())
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string())
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let mut r = self
            .agent
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Queues `prompt` for `client`; the reply's `prompt_id`.
    pub fn queue(&self, prompt: &Value, client: &str) -> String {
        let (status, reply) =
            self.post("/prompt", &json!({ "prompt": prompt, "client_id": client }));
        assert_eq!(status, 200, "{reply}");
        reply["prompt_id"].as_str().unwrap().to_string()
    }

    /// Polls `/history/{id}` until the prompt has an entry.
    pub fn wait_history(&self, id: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (_, history) = self.get(&format!("/history/{id}"));
            if let Some(entry) = history.get(id) {
                return entry.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "no history for {id} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn socket(&self, client: &str) -> Socket {
        let (mut ws, _) =
            tungstenite::connect(format!("ws://127.0.0.1:{}/ws?clientId={client}", self.port))
                .unwrap();
        if let MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Socket { ws }
    }
}

pub struct Socket {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// One websocket message: JSON text, or a binary frame.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Binary(Vec<u8>),
}

impl Socket {
    pub fn next(&mut self) -> Frame {
        loop {
            match self.ws.read().expect("websocket read") {
                Message::Text(t) => return Frame::Json(serde_json::from_str(&t).unwrap()),
                Message::Binary(b) => return Frame::Binary(b.to_vec()),
                _ => continue,
            }
        }
    }

    /// Text messages until `executing {node: null}` for `prompt_id`
    /// (binary frames counted separately).
    pub fn until_done(&mut self, prompt_id: &str) -> (Vec<Value>, usize) {
        let mut messages = Vec::new();
        let mut binary = 0;
        loop {
            match self.next() {
                Frame::Binary(_) => binary += 1,
                Frame::Json(m) => {
                    let done = m["type"] == "executing"
                        && m["data"]["node"].is_null()
                        && m["data"]["prompt_id"] == prompt_id;
                    messages.push(m);
                    if done {
                        return (messages, binary);
                    }
                }
            }
        }
    }
}

/// A small MNIST prompt in ComfyUI's API format: weft's embedded flow
/// model, `steps` Euler steps, `batch` digits, saved as one PNG each.
pub fn mnist_prompt(seed: u64, steps: u32, batch: u32) -> Value {
    json!({
        "1": {"class_type": "CheckpointLoader", "inputs": {"ckpt_name": "mnist_flow.safetensors"}},
        "2": {"class_type": "ClassLabel", "inputs": {"labels": "3"}},
        "3": {"class_type": "ClassLabel", "inputs": {"labels": "none"}},
        "4": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 3.0}},
        "5": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "flow_euler"}},
        "6": {"class_type": "FlowMatchScheduler", "inputs": {"steps": steps, "shift": 1.0}},
        "7": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "8": {"class_type": "EmptyLatent", "inputs": {"width": 28, "height": 28, "channels": 1, "batch_size": batch}},
        "9": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["7", 0], "guider": ["4", 0], "sampler": ["5", 0], "sigmas": ["6", 0], "latent_image": ["8", 0]}},
        "10": {"class_type": "LatentToImage", "inputs": {"latent": ["9", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "mnist"}, "_meta": {"title": "Save"}}
    })
}

pub fn output_dir(server: &Server) -> PathBuf {
    server.dir.path().join("output")
}
