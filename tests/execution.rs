//! Execution semantics, observed through the event stream: caching, partial
//! re-runs, laziness, parallelism, failure isolation, cancellation, determinism.

use std::time::{Duration, Instant};

use weft_core::{CancelToken, Event, Executor, RunOptions, Value};
use weft_tests::{load, run_with, started, Recorder};

const BIG: usize = 1 << 30;

fn diamond(b: i64) -> String {
    format!(
        r#"(nodes: {{
            "x": IntConstant(value: 3),
            "left": IntMath(a: Link("x", "value"), b: {b}, op: "mul"),
            "right": IntMath(a: Link("x", "value"), b: 10, op: "add"),
            "sum": IntMath(a: Link("left", "value"), b: Link("right", "value")),
            "show": Print(value: Link("sum", "value")),
        }})"#
    )
}

fn output_text(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Output { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn runs_in_dependency_order_and_computes_the_right_values() {
    let exec = Executor::new(BIG);
    let (report, events) = run_with(&exec, &load(&diamond(2)).unwrap(), 2);
    assert!(report.success());
    assert_eq!(output_text(&events), ["19"]); // 3*2 + 3+10
    let done: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::NodeDone { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    let pos = |id| done.iter().position(|d| *d == id).unwrap();
    assert!(pos("x") < pos("left") && pos("left") < pos("sum") && pos("right") < pos("sum"));
    assert!(pos("sum") < pos("show"));
}

#[test]
fn unchanged_rerun_executes_nothing() {
    let exec = Executor::new(BIG);
    let graph = load(&diamond(2)).unwrap();
    let (_, first) = run_with(&exec, &graph, 2);
    assert_eq!(started(&first).len(), 5);
    let (report, second) = run_with(&exec, &graph, 2);
    assert!(started(&second).is_empty(), "re-ran {:?}", started(&second));
    // Only the target is looked up: its hit makes the ancestors unnecessary.
    assert_eq!(report.cached, ["show"]);
    assert!(second.contains(&Event::Cached {
        nodes: vec!["show".into()]
    }));
}

#[test]
fn an_edited_literal_reruns_exactly_that_node_and_its_descendants() {
    let exec = Executor::new(BIG);
    run_with(&exec, &load(&diamond(2)).unwrap(), 2);
    let (report, events) = run_with(&exec, &load(&diamond(5)).unwrap(), 2);
    assert_eq!(started(&events), ["left", "show", "sum"]);
    assert_eq!(output_text(&events), ["28"]);
    let mut cached = report.cached.clone();
    cached.sort();
    assert_eq!(cached, ["right", "x"]);
}

#[test]
fn node_ids_are_not_part_of_the_cache_key() {
    let exec = Executor::new(BIG);
    run_with(&exec, &load(&diamond(2)).unwrap(), 1);
    let renamed = diamond(2).replace("\"left\"", "\"renamed\"");
    let (_, events) = run_with(&exec, &load(&renamed).unwrap(), 1);
    assert!(started(&events).is_empty(), "re-ran {:?}", started(&events));
}

#[test]
fn identical_subgraphs_in_one_graph_run_once() {
    let text = r#"(nodes: {
        "a": Sleep(value: 7, ms: 50),
        "b": Sleep(value: 7, ms: 50),
        "sum": IntMath(a: Link("a", "value"), b: Link("b", "value")),
        "show": Print(value: Link("sum", "value")),
    })"#;
    for workers in [1, 2] {
        let exec = Executor::new(BIG);
        let (report, events) = run_with(&exec, &load(text).unwrap(), workers);
        let sleeps = started(&events)
            .iter()
            .filter(|id| *id == "a" || *id == "b")
            .count();
        assert_eq!(sleeps, 1, "workers={workers}: {:?}", started(&events));
        assert_eq!(output_text(&events), ["14"]);
        assert_eq!(report.cached.len(), 1);
    }
}

#[test]
fn independent_slow_nodes_run_in_parallel() {
    let text = r#"(nodes: {
        "a": Sleep(value: 1, ms: 300),
        "b": Sleep(value: 2, ms: 300),
        "sum": IntMath(a: Link("a", "value"), b: Link("b", "value")),
        "show": Print(value: Link("sum", "value")),
    })"#;
    let graph = load(text).unwrap();
    let t = Instant::now();
    let (report, _) = run_with(&Executor::new(BIG), &graph, 2);
    let parallel = t.elapsed();
    assert!(report.success());
    let t = Instant::now();
    run_with(&Executor::new(BIG), &graph, 1);
    let serial = t.elapsed();
    assert!(
        parallel < Duration::from_millis(500),
        "two 300 ms nodes took {parallel:?} on 2 workers"
    );
    assert!(
        serial >= Duration::from_millis(600),
        "serial run took only {serial:?}"
    );
}

#[test]
fn heavy_nodes_never_overlap() {
    let text = r#"(nodes: {
        "a": HeavySleep(value: 1, ms: 150),
        "b": HeavySleep(value: 2, ms: 150),
        "c": Sleep(value: 3, ms: 150),
        "sum": IntMath(a: Link("a", "value"), b: Link("b", "value")),
        "all": IntMath(a: Link("sum", "value"), b: Link("c", "value")),
        "show": Print(value: Link("all", "value")),
    })"#;
    let rec = Recorder::default();
    let opts = RunOptions {
        workers: 3,
        ..RunOptions::default()
    };
    let t = Instant::now();
    let report = Executor::new(BIG)
        .run(
            &load(text).unwrap(),
            &opts,
            &rec.sink(),
            &CancelToken::new(),
        )
        .unwrap();
    assert!(report.success());
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "heavy nodes overlapped: {:?}",
        t.elapsed()
    );
    // The light node ran beside the heavy ones: two heavy nodes plus overhead, not three.
    assert!(
        t.elapsed() < Duration::from_millis(440),
        "light node was serialised: {:?}",
        t.elapsed()
    );
    let events = rec.take();
    let mut heavy_running = 0i32;
    for e in &events {
        match e {
            Event::NodeStart { ty, .. } if ty == "HeavySleep" => {
                heavy_running += 1;
                assert!(heavy_running <= 1, "two heavy nodes at once");
            }
            Event::NodeDone { ty, .. } if ty == "HeavySleep" => heavy_running -= 1,
            _ => {}
        }
    }
}

#[test]
fn a_failure_stops_only_its_dependents() {
    let text = r#"(nodes: {
        "zero": IntConstant(value: 0),
        "bad": IntMath(a: 1, b: Link("zero", "value"), op: "div"),
        "after_bad": IntMath(a: Link("bad", "value"), b: 1),
        "show_bad": Print(value: Link("after_bad", "value")),
        "good": IntMath(a: 20, b: 22),
        "show_good": Print(value: Link("good", "value")),
        "boom": Explode(value: 1),
        "show_boom": Print(value: Link("boom", "value")),
    })"#;
    for workers in [1, 2] {
        let (report, events) = run_with(&Executor::new(BIG), &load(text).unwrap(), workers);
        assert!(!report.success());
        assert_eq!(
            output_text(&events),
            ["42"],
            "the independent branch finished"
        );
        let mut failed: Vec<_> = report
            .failed
            .iter()
            .map(|f| (f.node.as_str(), f.type_name.as_str()))
            .collect();
        failed.sort();
        assert_eq!(failed, [("bad", "IntMath"), ("boom", "Explode")]);
        let bad = report.failed.iter().find(|f| f.node == "bad").unwrap();
        assert_eq!(bad.message, "input `b`: div by zero");
        assert!(bad.inputs.contains(&("b".into(), "0".into())));
        assert!(bad.inputs.contains(&("op".into(), "\"div\"".into())));
        let boom = report.failed.iter().find(|f| f.node == "boom").unwrap();
        assert_eq!(boom.message, "node panicked: boom");
        let mut skipped = report.skipped.clone();
        skipped.sort();
        assert_eq!(skipped, ["after_bad", "show_bad", "show_boom"]);
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::NodeFailed { node, .. } if node == "bad")));
    }
}

#[test]
fn failed_nodes_are_retried_next_run() {
    let exec = Executor::new(BIG);
    let text = r#"(nodes: { "bad": IntMath(a: 1, b: 0, op: "div"), "show": Print(value: Link("bad", "value")) })"#;
    let graph = load(text).unwrap();
    run_with(&exec, &graph, 1);
    let (_, events) = run_with(&exec, &graph, 1);
    assert_eq!(started(&events), ["bad"]);
}

#[test]
fn the_unused_switch_branch_is_never_computed_nor_invalidates() {
    let graph = |unused_b: i64| {
        format!(
            r#"(nodes: {{
                "cond": BoolConstant(value: true),
                "used": IntMath(a: 1, b: 2),
                "unused": IntMath(a: 1, b: {unused_b}, op: "div"),
                "pick": Switch(condition: Link("cond", "value"), on_true: Link("used", "value"), on_false: Link("unused", "value")),
                "show": Print(value: Link("pick", "value")),
            }})"#
        )
    };
    let exec = Executor::new(BIG);
    // The unused branch would fail (division by zero) if it ran.
    let (report, events) = run_with(&exec, &load(&graph(0)).unwrap(), 2);
    assert!(report.success(), "{:?}", report.failed);
    assert!(!started(&events).contains(&"unused".to_string()));
    assert_eq!(output_text(&events), ["3"]);
    // Editing the unused branch changes nothing that ran.
    let (_, events) = run_with(&exec, &load(&graph(5)).unwrap(), 2);
    assert!(started(&events).is_empty(), "re-ran {:?}", started(&events));
    // Flipping the condition computes the other branch.
    let flipped = graph(5).replace("value: true", "value: false");
    let (_, events) = run_with(&exec, &load(&flipped).unwrap(), 2);
    assert_eq!(started(&events), ["cond", "pick", "show", "unused"]);
    assert_eq!(output_text(&events), ["0"]);
}

#[test]
fn switch_chooses_after_its_condition_is_computed() {
    let text = r#"(nodes: {
        "n": IntConstant(value: 12),
        "big": Compare(a: Link("n", "value"), b: 10, op: "gt"),
        "yes": StringFormat(template: "{a} is big", a: Link("n", "value")),
        "no": StringFormat(template: "{a} is small", a: Link("n", "value")),
        "pick": Switch(condition: Link("big", "value"), on_true: Link("yes", "value"), on_false: Link("no", "value")),
        "show": Print(value: Link("pick", "value")),
    })"#;
    let exec = Executor::new(BIG);
    let (_, events) = run_with(&exec, &load(text).unwrap(), 1);
    assert_eq!(output_text(&events), ["12 is big"]);
    assert!(!started(&events).contains(&"no".to_string()));
    let (_, events) = run_with(
        &exec,
        &load(&text.replace("value: 12", "value: 3")).unwrap(),
        1,
    );
    assert_eq!(output_text(&events), ["3 is small"]);
    assert!(!started(&events).contains(&"yes".to_string()));
}

#[test]
fn non_deterministic_nodes_and_their_dependents_always_rerun() {
    let text = r#"(nodes: {
        "r": Random(),
        "plus": IntMath(a: Link("r", "value"), b: 1),
        "show": Print(value: Link("plus", "value")),
        "fixed": IntMath(a: 1, b: 1),
        "show_fixed": Print(value: Link("fixed", "value")),
    })"#;
    let exec = Executor::new(BIG);
    let graph = load(text).unwrap();
    run_with(&exec, &graph, 2);
    let (_, events) = run_with(&exec, &graph, 2);
    assert_eq!(started(&events), ["plus", "r", "show"]);
}

#[test]
fn ctrl_c_interrupts_a_long_node_and_runs_nothing_after_it() {
    let text = r#"(nodes: {
        "slow": Sleep(value: 1, ms: 5000),
        "after": IntMath(a: Link("slow", "value"), b: 1),
        "show": Print(value: Link("after", "value")),
    })"#;
    let rec = Recorder::default();
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        trigger.cancel();
    });
    let t = Instant::now();
    let report = Executor::new(BIG)
        .run(
            &load(text).unwrap(),
            &RunOptions::default(),
            &rec.sink(),
            &cancel,
        )
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert!(report.interrupted);
    let events = rec.take();
    assert_eq!(started(&events), ["slow"]);
    assert!(matches!(
        events.last(),
        Some(Event::Interrupted { executed: 0 })
    ));
}

#[test]
fn progress_events_report_steps() {
    let text =
        r#"(nodes: { "s": Sleep(value: 1, ms: 20), "show": Print(value: Link("s", "value")) })"#;
    let (_, events) = run_with(&Executor::new(BIG), &load(text).unwrap(), 1);
    let steps: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { value, max, .. } => Some((*value, *max)),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [(1, 4), (2, 4), (3, 4), (4, 4)]);
}

#[test]
fn results_are_identical_across_worker_counts() {
    let mut text = String::from("(nodes: {\n\"seed\": FloatConstant(value: 0.37),\n");
    for i in 0..40 {
        text.push_str(&format!(
            "\"m{i}\": FloatMath(a: Link(\"seed\", \"value\"), b: {}, op: \"pow\"),\n\"d{i}\": FloatMath(a: Link(\"m{i}\", \"value\"), b: 1.{i}, op: \"div\"),\n",
            1.0 + i as f64 / 7.0
        ));
    }
    let mut chain = String::from("\"d0\"");
    for i in 1..40 {
        text.push_str(&format!(
            "\"s{i}\": FloatMath(a: Link({chain}, \"value\"), b: Link(\"d{i}\", \"value\")),\n"
        ));
        chain = format!("\"s{i}\"");
    }
    text.push_str(&format!(
        "\"show\": Print(value: Link({chain}, \"value\")),\n}})"
    ));
    let graph = load(&text).unwrap();
    let value = |workers| {
        let opts = RunOptions {
            workers,
            targets: Some(vec!["s39".into()]),
            ..RunOptions::default()
        };
        let report = Executor::new(BIG)
            .run(
                &graph,
                &opts,
                &Recorder::default().sink(),
                &CancelToken::new(),
            )
            .unwrap();
        match report.output("s39").unwrap()[0] {
            Value::Float(x) => x.to_bits(),
            _ => panic!("not a float"),
        }
    };
    let one = value(1);
    for _ in 0..5 {
        assert_eq!(value(2), one);
        assert_eq!(value(4), one);
    }
}

#[test]
fn targets_limit_the_run_to_their_ancestry() {
    let graph = load(&diamond(2)).unwrap();
    let opts = RunOptions {
        workers: 1,
        targets: Some(vec!["right".into()]),
        ..RunOptions::default()
    };
    let rec = Recorder::default();
    let report = Executor::new(BIG)
        .run(&graph, &opts, &rec.sink(), &CancelToken::new())
        .unwrap();
    assert_eq!(started(&rec.take()), ["right", "x"]);
    assert!(matches!(report.output("right").unwrap()[0], Value::Int(13)));
    let opts = RunOptions {
        targets: Some(vec!["nope".into()]),
        ..opts
    };
    assert!(Executor::new(BIG)
        .run(&graph, &opts, &rec.sink(), &CancelToken::new())
        .is_err());
}

#[test]
fn a_tiny_cache_budget_evicts_and_forces_recomputation() {
    let graph = load(&diamond(2)).unwrap();
    let small = Executor::new(200);
    run_with(&small, &graph, 1);
    assert!(small.cache().used_bytes() <= 200);
    assert!(
        small.cache().len() < 5,
        "not every result fits in 200 bytes"
    );
    let none = Executor::new(0);
    run_with(&none, &graph, 1);
    assert!(none.cache().is_empty());
    let (_, events) = run_with(&none, &graph, 1);
    assert_eq!(
        started(&events).len(),
        5,
        "nothing was kept, so everything re-ran"
    );
}

#[test]
fn save_text_writes_atomically_into_the_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"(nodes: {
        "msg": StringFormat(template: "x = {a}", a: 5),
        "save": SaveText(text: Link("msg", "value"), filename_prefix: "notes/run"),
    })"#;
    let graph = load(text).unwrap();
    let opts = RunOptions {
        out_dir: dir.path().to_path_buf(),
        ..RunOptions::default()
    };
    for expected in ["run_00001_.txt", "run_00002_.txt"] {
        let report = Executor::new(BIG)
            .run(
                &graph,
                &opts,
                &Recorder::default().sink(),
                &CancelToken::new(),
            )
            .unwrap();
        let Value::String(path) = &report.output("save").unwrap()[0] else {
            panic!("not a path")
        };
        assert!(path.ends_with(expected), "{path}");
        assert_eq!(std::fs::read_to_string(&**path).unwrap(), "x = 5");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("notes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let escape = load(&text.replace("notes/run", "../escape")).unwrap();
    let report = Executor::new(BIG)
        .run(
            &escape,
            &opts,
            &Recorder::default().sink(),
            &CancelToken::new(),
        )
        .unwrap();
    assert!(report.failed[0]
        .message
        .contains("inside the output directory"));
}
