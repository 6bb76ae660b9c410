//! The server's rules: a token when configured, no cross-site requests,
//! files only inside their folders, bounded bodies, nothing executed.

mod support;

use serde_json::json;
use support::Server;

#[test]
fn a_token_guards_every_route_and_the_socket() {
    let server = Server::start_with(|c| c.token = Some("correct-horse-battery".into()));
    assert_eq!(server.get("/object_info").0, 401);
    assert_eq!(server.get("/api/queue").0, 401);
    assert_eq!(server.post("/prompt", &json!({})).0, 401);
    let wrong = server
        .agent
        .get(&server.url("/queue"))
        .header("Authorization", "Bearer correct-horse-batterY")
        .call()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = server
        .agent
        .get(&server.url("/queue"))
        .header("Authorization", "Bearer correct-horse-battery")
        .call()
        .unwrap();
    assert_eq!(right.status(), 200);
    // A browser opens /?token=… once and keeps the cookie it is given.
    let first = server
        .agent
        .get(&server.url("/system_stats?token=correct-horse-battery"))
        .call()
        .unwrap();
    assert_eq!(first.status(), 200);
    let cookie = first
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().unwrap();
    let with_cookie = server
        .agent
        .get(&server.url("/queue"))
        .header("Cookie", pair)
        .call()
        .unwrap();
    assert_eq!(with_cookie.status(), 200);
    // The websocket needs it too.
    let refused = tungstenite::connect(format!("ws://127.0.0.1:{}/ws?clientId=x", server.port));
    assert!(refused.is_err());
    let accepted = tungstenite::connect(format!(
        "ws://127.0.0.1:{}/ws?clientId=x&token=correct-horse-battery",
        server.port
    ));
    assert!(accepted.is_ok());
}

#[test]
fn exposing_without_a_token_is_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.addr = "0.0.0.0:0".parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(weft_server::serve(
            config,
            weft_nodes::builtin_registry(),
            Default::default(),
        ))
        .unwrap_err();
    assert!(
        err.contains("--token") && err.contains("--insecure"),
        "{err}"
    );
}

#[test]
fn cross_site_browser_requests_are_refused() {
    let server = Server::start();
    let evil = server
        .agent
        .post(&server.url("/prompt"))
        .header("Origin", "http://evil.example")
        .header("Content-Type", "application/json")
        .send(json!({"prompt": support::mnist_prompt(1, 2, 1)}).to_string())
        .unwrap();
    assert_eq!(evil.status(), 403);
    assert_eq!(server.get("/queue").1["queue_pending"], json!([]));
    let same = server
        .agent
        .get(&server.url("/queue"))
        .header("Origin", &server.base)
        .call()
        .unwrap();
    assert_eq!(same.status(), 200);
}

#[test]
fn file_routes_stay_inside_their_folders() {
    let server = Server::start();
    let root = server.dir.path();
    std::fs::write(root.join("secret.txt"), "top secret").unwrap();
    std::fs::write(root.join("output/ok.txt"), "fine").unwrap();
    std::os::unix::fs::symlink(root, root.join("output/escape")).unwrap();
    std::fs::create_dir_all(root.join("user/default")).unwrap();
    std::os::unix::fs::symlink(root, root.join("user/default/escape")).unwrap();
    assert_eq!(
        server.get_bytes("/view?filename=ok.txt&type=output").1,
        b"fine"
    );
    for bad in [
        "/view?filename=../secret.txt&type=output",
        "/view?filename=secret.txt&subfolder=..&type=output",
        "/view?filename=secret.txt&subfolder=/&type=output",
        "/view?filename=secret.txt&subfolder=escape&type=output",
        "/view?filename=%2Fetc%2Fpasswd&type=output",
        "/view?filename=secret.txt&type=..",
        "/api/userdata/..%2F..%2Fsecret.txt",
        "/api/userdata?dir=..%2F..",
    ] {
        let (status, body) = server.get_bytes(bad);
        assert!(status >= 400, "{bad}: {status}");
        assert!(
            !String::from_utf8_lossy(&body).contains("top secret"),
            "{bad}"
        );
    }
    // Writes cannot escape either.
    let (status, _) = server.post_raw("/api/userdata/..%2Fplanted.json", "{}");
    assert!(status >= 400);
    let (status, _) = server.post_raw("/api/userdata/escape%2Fplanted.json", "{}");
    assert!(status >= 400, "{status}");
    assert!(!root.join("planted.json").exists());
    assert!(!root.join("user/planted.json").exists());
}

fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "weftboundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, filename, data) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn tiny_png(alpha: u8) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(2, 2, image::Rgba([10, 20, 30, alpha]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn uploads_are_named_safely_bounded_and_masked() {
    let server = Server::start_with(|c| c.limits.upload_bytes = 4096);
    let upload = |fields: &[(&str, Option<&str>, &[u8])], route: &str| {
        let (ty, body) = multipart(fields);
        let mut r = server
            .agent
            .post(&server.url(route))
            .header("Content-Type", &ty)
            .send(&body[..])
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
        )
    };
    let png = tiny_png(255);
    let (status, reply) = upload(&[("image", Some("a.png"), &png)], "/upload/image");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"name": "a.png", "subfolder": "", "type": "input"})
    );
    // A second upload of the same name is renamed, unless overwrite is set.
    let (_, reply) = upload(&[("image", Some("a.png"), &png)], "/upload/image");
    assert_eq!(reply["name"], "a (1).png");
    let (_, reply) = upload(
        &[("image", Some("a.png"), &png), ("overwrite", None, b"true")],
        "/upload/image",
    );
    assert_eq!(reply["name"], "a.png");
    // Names cannot climb out; subfolders cannot either.
    let (_, reply) = upload(&[("image", Some("../../x.png"), &png)], "/upload/image");
    assert_eq!(reply["name"], "x.png");
    assert!(server.dir.path().join("input/x.png").exists());
    let (status, _) = upload(
        &[
            ("image", Some("y.png"), &png),
            ("subfolder", None, b"../.."),
        ],
        "/upload/image",
    );
    assert_eq!(status, 400);
    // Not an image, or too large.
    let (status, _) = upload(
        &[("image", Some("z.png"), b"#!/bin/sh\nrm -rf /")],
        "/upload/image",
    );
    assert_eq!(status, 400);
    let big = vec![0u8; 8192];
    let (status, _) = upload(&[("image", Some("big.png"), &big)], "/upload/image");
    assert_eq!(status, 413);
    // A mask's alpha lands on the original image.
    let mask = tiny_png(7);
    let (status, reply) = upload(
        &[
            ("image", Some("a_mask.png"), &mask),
            (
                "original_ref",
                None,
                br#"{"filename":"a.png","subfolder":"","type":"input"}"#,
            ),
        ],
        "/upload/mask",
    );
    assert_eq!(status, 200, "{reply}");
    let saved = image::open(
        server
            .dir
            .path()
            .join("input")
            .join(reply["name"].as_str().unwrap()),
    )
    .unwrap()
    .to_rgba8();
    assert_eq!(saved.get_pixel(1, 1).0, [10, 20, 30, 7]);
}

#[test]
fn json_bodies_are_bounded() {
    let server = Server::start_with(|c| c.limits.json_bytes = 64 << 10);
    let huge = format!(
        "{{\"prompt\": {{\"1\": {{\"class_type\": \"{}\"}}}}}}",
        "x".repeat(100 << 10)
    );
    let (status, _) = server.post_raw("/prompt", &huge);
    assert_eq!(status, 413);
    let (status, _) = server.post_raw("/api/settings", &huge);
    assert_eq!(status, 413);
}

#[test]
fn prompts_cannot_read_or_write_files_outside_their_folders() {
    let server = Server::start();
    let root = server.dir.path();
    let secret = root.join("secret.png");
    std::fs::write(&secret, tiny_png(255)).unwrap();
    std::fs::write(root.join("input/ok.png"), tiny_png(255)).unwrap();
    let load = |name: &str| {
        json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "leak"}}
        })
    };
    let error_of = |entry: &serde_json::Value| -> String {
        entry["status"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m[0] == "execution_error")
            .map(|m| m[1]["exception_message"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let wait = std::time::Duration::from_secs(60);
    for name in [
        secret.to_str().unwrap(),
        "../secret.png",
        "ok.png/../../secret.png",
    ] {
        let id = server.queue(&load(name), "s");
        let entry = server.wait_history(&id, wait);
        assert_eq!(entry["status"]["status_str"], "error", "{name}");
        assert!(
            error_of(&entry).contains("input folder"),
            "{name}: {}",
            error_of(&entry)
        );
    }
    let id = server.queue(&load("ok.png"), "s");
    assert_eq!(
        server.wait_history(&id, wait)["status"]["status_str"],
        "success"
    );

    // Outputs stay in the output folder.
    let mut prompt = support::mnist_prompt(3, 2, 1);
    let escaped = root.join("escaped");
    prompt["11"]["inputs"]["filename_prefix"] = json!(escaped.to_str().unwrap());
    let id = server.queue(&prompt, "s");
    let entry = server.wait_history(&id, wait);
    assert_eq!(entry["status"]["status_str"], "error");
    assert!(std::fs::read_dir(root).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("escaped")));

    // Models are named in the model folders, not by path.
    let model = json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": secret.to_str().unwrap()}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "x"}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0], "seed": 1, "steps": 1}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0]}}
    });
    let id = server.queue(&model, "s");
    let entry = server.wait_history(&id, wait);
    assert_eq!(entry["status"]["status_str"], "error");
    assert!(
        error_of(&entry).contains("model folders"),
        "{}",
        error_of(&entry)
    );
}
