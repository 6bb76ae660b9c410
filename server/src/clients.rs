//! Connected websockets by client id: a prompt's events go only to the
//! sockets of the client that queued it (every socket when it named none).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::state::AppState;

/// One frame for a socket.
#[derive(Clone, Debug)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// The sockets of one client id, each with its registration key.
type Sockets = HashMap<String, Vec<(u64, UnboundedSender<Frame>)>>;

#[derive(Default)]
pub struct Clients {
    sockets: Mutex<Sockets>,
    next: AtomicU64,
}

impl Clients {
    fn add(&self, sid: &str, tx: UnboundedSender<Frame>) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(sid.to_string())
            .or_default()
            .push((key, tx));
        key
    }

    fn remove(&self, sid: &str, key: u64) {
        let mut sockets = self.lock();
        if let Some(list) = sockets.get_mut(sid) {
            list.retain(|(k, _)| *k != key);
            if list.is_empty() {
                sockets.remove(sid);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sockets> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends to `client`'s sockets, or to every socket when `None`. A socket
    /// that has gone is simply skipped: the run does not care.
    pub fn send(&self, client: Option<&str>, frame: Frame) {
        let sockets = self.lock();
        let targets: Vec<&UnboundedSender<Frame>> = match client {
            Some(id) => sockets
                .get(id)
                .into_iter()
                .flatten()
                .map(|(_, tx)| tx)
                .collect(),
            None => sockets.values().flatten().map(|(_, tx)| tx).collect(),
        };
        for tx in targets {
            let _ = tx.send(frame.clone());
        }
    }

    /// A `{type, data}` text frame.
    pub fn message(&self, client: Option<&str>, kind: &str, data: Json) {
        let text = json!({ "type": kind, "data": data }).to_string();
        self.send(client, Frame::Text(text));
    }

    /// The queue size, to everyone (ComfyUI's `status` broadcast).
    pub fn status(&self, remaining: usize) {
        self.message(None, "status", status_data(remaining, None));
    }
}

fn status_data(remaining: usize, sid: Option<&str>) -> Json {
    let mut data = json!({ "status": { "exec_info": { "queue_remaining": remaining } } });
    if let Some(sid) = sid {
        data["sid"] = json!(sid);
    }
    data
}

#[derive(Deserialize)]
pub struct WsParams {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

/// `/ws?clientId=…`: greets with `status` and the socket's `sid`, then
/// forwards this client's events until either side closes.
pub async fn connect(
    ws: WebSocketUpgrade,
    Query(params): Query<WsParams>,
    State(state): State<AppState>,
) -> Response {
    let sid = params
        .client_id
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    // Registered before the upgrade completes, so a prompt queued the
    // moment the handshake returns cannot run ahead of its socket.
    let (tx, rx) = unbounded_channel();
    let key = state.clients.add(&sid, tx);
    let clients = state.clients.clone();
    let failed_sid = sid.clone();
    ws.max_message_size(1 << 20)
        .on_failed_upgrade(move |_| clients.remove(&failed_sid, key))
        .on_upgrade(move |socket| session(socket, sid, key, rx, state))
}

async fn session(
    socket: WebSocket,
    sid: String,
    key: u64,
    mut rx: UnboundedReceiver<Frame>,
    state: AppState,
) {
    let (mut sink, mut stream) = socket.split();
    let hello =
        json!({ "type": "status", "data": status_data(state.queue.remaining(), Some(&sid)) });
    let mut ok = sink
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_ok();
    while ok {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                let message = match frame {
                    Frame::Text(t) => Message::Text(t.into()),
                    Frame::Binary(b) => Message::Binary(b.into()),
                };
                ok = sink.send(message).await.is_ok();
            }
            incoming = stream.next() => match incoming {
                // Clients may send feature flags or pings; nothing needs a reply
                // but pings, which axum answers itself.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    state.clients.remove(&sid, key);
}
