//! The server as ComfyUI's clients see it: schemas, queueing, the
//! websocket's event order and addressing, history and `/view`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{mnist_prompt, Frame, Server};

#[test]
fn schemas_and_info_routes_answer_in_comfyuis_shape() {
    let server = Server::start();
    let (status, info) = server.get("/object_info");
    assert_eq!(status, 200);
    let ksampler = &info["KSampler"];
    assert_eq!(ksampler["name"], "KSampler");
    assert_eq!(ksampler["output"], json!(["LATENT"]));
    assert_eq!(ksampler["input"]["required"]["model"][0], "MODEL");
    assert_eq!(
        ksampler["input"]["optional"]["seed"][1]["control_after_generate"],
        true
    );
    let steps = &ksampler["input"]["optional"]["steps"];
    assert_eq!(steps[0], "INT");
    assert_eq!(steps[1]["default"], 20);
    let order = ksampler["input_order"]["required"].as_array().unwrap();
    assert_eq!(order[0], "model");
    // Widgets keep weft's order (the web UI's widgets_values are positional).
    assert_eq!(
        ksampler["input_order"]["optional"],
        json!([
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "denoise"
        ])
    );
    assert!(ksampler["input"]["optional"]["sampler_name"][0].is_array());
    // weft-only inputs never look required to a client that checks prompts.
    let loader = &info["CheckpointLoaderSimple"]["input"];
    assert!(loader["required"].get("ckpt_name").is_some());
    assert!(loader["required"].get("config").is_none());
    assert_eq!(info["SaveImage"]["output_node"], true);

    // One class, the same under /api/, and `{}` (JSON) for an unknown one.
    let (_, one) = server.get("/api/object_info/KSampler");
    assert_eq!(one["KSampler"], *ksampler);
    let (status, unknown) = server.get("/object_info/NoSuchNode");
    assert_eq!((status, unknown), (200, json!({})));

    let (_, stats) = server.get("/api/system_stats");
    assert!(stats["system"]["comfyui_version"].is_string());
    assert!(stats["devices"].as_array().is_some_and(|d| !d.is_empty()));
    assert_eq!(server.get("/extensions").1, json!([]));
    assert!(server
        .get("/models")
        .1
        .as_array()
        .unwrap()
        .contains(&json!("checkpoints")));
    assert_eq!(server.get("/models/checkpoints").0, 200);
    assert_eq!(server.get("/models/not_a_folder").0, 404);
    assert_eq!(server.get("/prompt").1["exec_info"]["queue_remaining"], 0);
    assert!(server.get("/features").1["max_upload_size"].is_number());
}

#[test]
fn a_prompt_runs_and_its_events_reach_only_its_client() {
    let server = Server::start();
    let mut mine = server.socket("alice");
    let mut other = server.socket("bob");
    for socket in [&mut mine, &mut other] {
        let Frame::Json(hello) = socket.next() else {
            panic!("binary greeting")
        };
        assert_eq!(hello["type"], "status");
        assert!(hello["data"]["sid"].is_string());
    }
    let id = server.queue(&mnist_prompt(7, 3, 2), "alice");
    let (messages, _) = mine.until_done(&id);
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(pos("execution_start") < pos("execution_cached"));
    assert!(pos("execution_cached") < pos("executing"));
    assert!(kinds.contains(&"progress"));
    assert!(pos("executed") < pos("execution_success"));
    assert_eq!(*kinds.last().unwrap(), "executing");
    let executed = &messages[pos("executed")]["data"];
    assert_eq!(executed["node"], "11");
    assert_eq!(executed["prompt_id"], id);
    let images = executed["output"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["type"], "output");
    assert_eq!(images[0]["subfolder"], "");

    // The history entry has the same images, and /view serves them.
    let entry = server.wait_history(&id, Duration::from_secs(30));
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(entry["status"]["completed"], true);
    assert_eq!(entry["outputs"]["11"]["images"], json!(images));
    assert_eq!(entry["prompt"][1], id);
    let name = images[0]["filename"].as_str().unwrap();
    let (status, png) = server.get_bytes(&format!("/view?filename={name}&type=output&subfolder="));
    assert_eq!(status, 200);
    assert_eq!(&png[1..4], b"PNG");

    // Bob's socket saw the queue status change and nothing of Alice's run.
    server.queue(&mnist_prompt(8, 2, 1), "bob");
    loop {
        let Frame::Json(m) = other.next() else {
            continue;
        };
        let kind = m["type"].as_str().unwrap();
        assert!(
            kind == "status" || m["data"]["prompt_id"] != id,
            "bob got {m}"
        );
        if kind == "executing" && m["data"]["node"].is_null() {
            break;
        }
    }
}

#[test]
fn an_edited_prompt_reruns_only_what_changed() {
    let server = Server::start();
    let mut socket = server.socket("c");
    let first = server.queue(&mnist_prompt(1, 3, 1), "c");
    socket.until_done(&first);
    let second = server.queue(&mnist_prompt(2, 3, 1), "c");
    let (messages, _) = socket.until_done(&second);
    let cached = messages
        .iter()
        .find(|m| m["type"] == "execution_cached")
        .unwrap();
    let cached: Vec<&str> = cached["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // The guider's inputs (1–3) are not even looked at: the guider is cached.
    for unchanged in ["4", "5", "6", "8"] {
        assert!(
            cached.contains(&unchanged),
            "{unchanged} not cached: {cached:?}"
        );
    }
    let executing: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "executing")
        .filter_map(|m| m["data"]["node"].as_str())
        .collect();
    assert_eq!(executing, ["7", "9", "10", "11"]);
    // Re-queueing it unchanged runs nothing and still reports its images.
    let third = server.queue(&mnist_prompt(2, 3, 1), "c");
    let (messages, _) = socket.until_done(&third);
    assert!(!messages
        .iter()
        .any(|m| m["type"] == "executing" && m["data"]["node"].is_string()));
    let entry = server.wait_history(&third, Duration::from_secs(10));
    assert_eq!(
        entry["outputs"]["11"]["images"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn invalid_prompts_get_comfyuis_error_shape_with_weft_messages() {
    let server = Server::start();
    let mut prompt = mnist_prompt(1, 3, 1);
    prompt["6"]["inputs"]["steps"] = json!("many");
    let (status, reply) = server.post("/prompt", &json!({ "prompt": prompt }));
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["type"], "prompt_outputs_failed_validation");
    let errors = &reply["node_errors"]["6"];
    assert_eq!(errors["class_type"], "FlowMatchScheduler");
    let error = &errors["errors"][0];
    assert_eq!(error["extra_info"]["input_name"], "steps");
    assert!(
        error["message"].as_str().unwrap().contains("expected INT"),
        "{error}"
    );
    assert!(
        error["details"].as_str().unwrap().starts_with("prompt:1:"),
        "{error}"
    );

    let mut prompt = mnist_prompt(1, 3, 1);
    prompt["5"]["class_type"] = json!("KSamplerSelekt");
    let (status, reply) = server.post("/prompt", &json!({ "prompt": prompt }));
    assert_eq!(status, 400);
    assert!(reply.to_string().contains("KSamplerSelect"), "{reply}");

    let (status, reply) = server.post_raw("/prompt", "{not json");
    assert_eq!(status, 400);
    assert_eq!(reply["error"]["type"], "invalid_prompt");
    let (status, reply) = server.post("/prompt", &json!({ "prompt": {} }));
    assert_eq!(status, 400, "{reply}");
    assert_eq!(server.get("/queue").1["queue_pending"], json!([]));
}
