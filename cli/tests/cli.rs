//! The `weft` binary end to end: exit codes, error locations, events, watch.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value as Json;

mod support;
use support::{repo_root, text, weft_command};

fn weft(args: &[&str]) -> Output {
    weft_command()
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("weft runs")
}
fn json_lines(out: &[u8]) -> Vec<Json> {
    text(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn every_example_graph_passes_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_root().join("graphs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ron") {
            let out = weft(&["check", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                text(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn check_reports_file_line_col_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.ron");
    std::fs::write(&path, "(\n  nodes: {\n    \"a\": IntMaht(a: 1, b: 2),\n    \"p\": Print(value: Link(\"a\", \"value\")),\n  },\n)\n").unwrap();
    let out = weft(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.ron:3:10"), "{err}");
    assert!(err.contains("node `a`"), "{err}");
    assert!(err.contains("unknown node type `IntMaht`"), "{err}");
    assert!(err.contains("did you mean `IntMath`?"), "{err}");
    assert!(
        err.contains("^^^^^^^"),
        "shows a caret under the source: {err}"
    );
}

#[test]
fn missing_and_non_utf8_files_are_clear_errors() {
    let out = weft(&["run", "no/such/graph.ron"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read no/such/graph.ron"),
        "{}",
        text(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary.ron");
    std::fs::write(&path, [0x28, 0xff, 0xfe, 0x29]).unwrap();
    let out = weft(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not UTF-8"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_prints_outputs_and_honours_set() {
    let out = weft(&[
        "run",
        "graphs/arithmetic.ron",
        "--set",
        "x=20",
        "--events",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = json_lines(&out.stdout);
    let outputs: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "output")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, ["result: 20 squared is 400, which is big"]);
    assert_eq!(events.last().unwrap()["event"], "graph_done");

    let out = weft(&["run", "graphs/arithmetic.ron", "--set", "x=\"seven\""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected INT, found STRING (from `--set x=\"seven\"`)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_failing_node_gives_exit_1_with_node_and_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fail.ron");
    std::fs::write(&path, r#"(nodes: { "d": IntMath(a: 1, b: 0, op: "div"), "p": Print(value: Link("d", "value")), "ok": Print(value: "fine") })"#).unwrap();
    let out = weft(&["run", path.to_str().unwrap(), "--events", "plain"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("node `d` (IntMath) failed: input `b`: div by zero"),
        "{err}"
    );
    assert!(err.contains("b = 0"), "{err}");
    assert_eq!(
        text(&out.stdout).trim(),
        "fine",
        "the independent branch still ran"
    );
}

#[test]
fn nodes_lists_schemas_as_text_and_json() {
    let out = weft(&["nodes", "--json"]);
    assert!(out.status.success());
    let schemas: Json = serde_json::from_slice(&out.stdout).unwrap();
    let int_math = schemas
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "IntMath")
        .unwrap();
    assert_eq!(int_math["inputs"][2]["name"], "op");
    assert_eq!(int_math["inputs"][2]["default"], "add");
    assert_eq!(int_math["outputs"][0]["type"], "INT");

    let out = weft(&["nodes", "Switch"]);
    let listing = text(&out.stdout);
    assert!(listing.contains("on_true: * (lazy)"), "{listing}");
    let out = weft(&["nodes", "Swich"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean `Switch`?"));
}

#[test]
fn readme_node_reference_matches_the_schemas() {
    let generated = text(&weft(&["nodes", "--markdown", "--no-plugins"]).stdout);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let begin = "<!-- node-reference:begin -->\n";
    let end = "<!-- node-reference:end -->";
    let start = readme
        .find(begin)
        .expect("README has the node reference markers")
        + begin.len();
    let stop = readme.find(end).unwrap();
    assert!(
        readme[start..stop] == generated,
        "README's node reference is stale: regenerate it with `cargo run -q -- nodes --markdown --no-plugins`"
    );
}

/// A running `weft watch` whose JSON events arrive on a channel.
struct Watch {
    child: Child,
    events: mpsc::Receiver<Json>,
}

impl Watch {
    fn start(graph: &Path, extra: &[&str]) -> Watch {
        let mut child = weft_command()
            .args([
                "watch",
                graph.to_str().unwrap(),
                "--events",
                "json",
                "--workers",
                "2",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str(&line) {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        Watch { child, events }
    }

    /// Events up to and including the next `graph_done` or `graph_invalid`.
    fn next_round(&self) -> Vec<Json> {
        let mut round = Vec::new();
        loop {
            let e = self
                .events
                .recv_timeout(Duration::from_secs(20))
                .expect("watch reacted in time");
            let last = e["event"] == "graph_done" || e["event"] == "graph_invalid";
            round.push(e);
            if last {
                return round;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn started(round: &[Json]) -> Vec<String> {
    let mut ids: Vec<String> = round
        .iter()
        .filter(|e| e["event"] == "node_start")
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn graph(b: i64) -> String {
    format!(
        r#"(nodes: {{
            "x": IntConstant(value: 3),
            "left": IntMath(a: Link("x", "value"), b: {b}, op: "mul"),
            "right": IntMath(a: Link("x", "value"), b: 10),
            "sum": IntMath(a: Link("left", "value"), b: Link("right", "value")),
            "show": Print(value: Link("sum", "value")),
        }})"#
    )
}

#[test]
fn watch_reruns_only_what_changed_and_keeps_the_last_good_graph() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.ron");
    std::fs::write(&path, graph(2)).unwrap();
    let watch = Watch::start(&path, &[]);
    assert_eq!(
        started(&watch.next_round()),
        ["left", "right", "show", "sum", "x"]
    );

    // An in-place save (truncate and write) of one literal.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&path, graph(5)).unwrap();
    let round = watch.next_round();
    assert_eq!(started(&round), ["left", "show", "sum"]);
    assert!(round
        .iter()
        .any(|e| e["event"] == "output" && e["text"] == "28"));

    // An invalid edit is reported and nothing runs.
    std::fs::write(
        &path,
        graph(5).replace("IntMath(a: Link(\"x\"", "IntMaht(a: Link(\"x\""),
    )
    .unwrap();
    let round = watch.next_round();
    assert_eq!(round.last().unwrap()["event"], "graph_invalid");
    assert!(started(&round).is_empty());

    // A save by rename, as many editors do; compared against the last good state.
    let tmp = dir.path().join(".g.ron.swp");
    std::fs::write(&tmp, graph(5).replace("b: 10", "b: 11")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let round = watch.next_round();
    assert_eq!(started(&round), ["right", "show", "sum"]);
    assert!(round
        .iter()
        .any(|e| e["event"] == "output" && e["text"] == "29"));
}

/// Builds the example C plugin with the system compiler.
fn build_invert_plugin(out: &Path, defines: &[&str]) {
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c99", "-shared", "-fPIC", "-I"])
        .arg(repo_root().join("plugins/abi/include"))
        .args(defines)
        .arg(repo_root().join("plugins/examples/c/invert.c"))
        .arg("-o")
        .arg(out)
        .status()
        .expect("a C compiler");
    assert!(status.success());
}

#[test]
fn plugins_load_from_a_directory_and_watch_reloads_a_rebuilt_one() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let library = plugins.join(format!("libinvert{}", std::env::consts::DLL_SUFFIX));
    build_invert_plugin(&library, &[]);
    let broken = plugins.join(format!("libbroken{}", std::env::consts::DLL_SUFFIX));
    std::fs::write(&broken, "not a library").unwrap();
    let plugins_arg = plugins.to_str().unwrap();

    // The plugin's node is listed like a built-in; the broken one is reported and skipped.
    let out = weft(&["nodes", "InvertImage", "--plugins", plugins_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("InvertImage (image) (plugin invert-c 0.1.0)"),
        "{}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "plugin {}: not a loadable library",
            broken.display()
        )) && stderr.contains("continuing without it"),
        "{stderr}"
    );

    let graph = dir.path().join("g.ron");
    std::fs::write(
        &graph,
        r#"(nodes: {
            "latent": EmptyLatent(width: 4, height: 4, channels: 3, batch_size: 1),
            "image": LatentToImage(latent: Link("latent", "LATENT")),
            "inverted": InvertImage(image: Link("image", "IMAGE")),
            "show": Print(value: Link("inverted", "IMAGE")),
            "other": Print(value: 1),
        })"#,
    )
    .unwrap();
    let watch = Watch::start(&graph, &["--plugins", plugins_arg, "--debounce-ms", "200"]);
    assert_eq!(
        started(&watch.next_round()),
        ["image", "inverted", "latent", "other", "show"]
    );
    // Rebuild elsewhere and move it in, as build tools do: only the plugin's
    // node and what depends on it run again.
    let staged = dir.path().join("staged.so");
    build_invert_plugin(&staged, &["-DINVERT_ONE=2.0f"]);
    std::fs::rename(&staged, &library).unwrap();
    assert_eq!(started(&watch.next_round()), ["inverted", "show"]);
}

#[test]
fn a_saved_png_re_runs_the_graph_it_embeds() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("make.ron");
    std::fs::write(
        &graph,
        r#"(
            params: { "seed": "sample.seed" },
            nodes: {
                "model": ExactGaussianModel(means: "-0.5,0.5", stds: "0.2,0.2", parameterization: "flow"),
                "positive": ClassLabel(labels: "1"),
                "negative": ClassLabel(labels: "none"),
                "latent": EmptyLatent(width: 8, height: 6, channels: 3, batch_size: 1),
                "sample": KSampler(
                    model: Link("model", "MODEL"), seed: 1, steps: 8, cfg: 1.5,
                    sampler_name: "flow_euler", scheduler: "simple",
                    positive: Link("positive", "CONDITIONING"),
                    negative: Link("negative", "CONDITIONING"),
                    latent_image: Link("latent", "LATENT"),
                ),
                "image": LatentToImage(latent: Link("sample", "LATENT")),
                "save": SaveImage(images: Link("image", "IMAGE"), filename_prefix: "made"),
            },
        )"#,
    )
    .unwrap();
    let (first_dir, second_dir) = (dir.path().join("first"), dir.path().join("second"));
    let run = |args: &[&str]| {
        let out = weft(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    // The override must travel inside the PNG, not just the file's seed.
    run(&[
        "run",
        graph.to_str().unwrap(),
        "--set",
        "seed=11",
        "--out",
        first_dir.to_str().unwrap(),
    ]);
    let first = first_dir.join("made_00001_.png");
    run(&[
        "run",
        first.to_str().unwrap(),
        "--out",
        second_dir.to_str().unwrap(),
    ]);
    let second = second_dir.join("made_00001_.png");
    let (a, b) = (
        weft_nodes::image::read_png(&first).unwrap(),
        weft_nodes::image::read_png(&second).unwrap(),
    );
    assert_eq!((a.width, a.height, a.channels), (8, 6, 3));
    assert!(
        a.pixels.iter().any(|&p| p != a.pixels[0]),
        "the sample is not flat"
    );
    assert_eq!(a.pixels, b.pixels, "re-running the PNG reproduces it");
    assert_eq!(
        a.text(weft_nodes::image::GRAPH_KEY),
        b.text(weft_nodes::image::GRAPH_KEY)
    );

    // `--set` still applies on top of the embedded graph.
    let third_dir = dir.path().join("third");
    run(&[
        "run",
        first.to_str().unwrap(),
        "--set",
        "seed=12",
        "--out",
        third_dir.to_str().unwrap(),
    ]);
    let c = weft_nodes::image::read_png(&third_dir.join("made_00001_.png")).unwrap();
    assert_ne!(
        a.pixels, c.pixels,
        "a different seed gives a different image"
    );

    // A PNG without a graph is a clear load error.
    let plain = dir.path().join("plain.png");
    std::fs::write(
        &plain,
        weft_nodes::image::encode_png(1, 1, 1, &[0], &[]).unwrap(),
    )
    .unwrap();
    let out = weft(&["run", plain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "has no graph: no `weft.graph` (weft), `prompt` or `workflow` (ComfyUI) text chunk"
        ),
        "{}",
        text(&out.stderr)
    );
}
