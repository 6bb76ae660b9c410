//! The conditioning-composition example graph end to end on the tiny SD 1.5
//! fixture: it runs, is deterministic, and its area prompts change the image
//! only where they apply.

use std::process::Command;

mod support;
use support::repo_root;
/// Runs the area-composition graph at 128×64 (two 64×64 areas) and returns
/// the decoded image.
fn run(sets: &[&str]) -> image::RgbImage {
    let dir = tempfile::tempdir().unwrap();
    let model = repo_root().join("models/tests/fixtures/sd/tiny_sd15");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.arg("run")
        .arg(repo_root().join("graphs/sd15_area_composition.ron"))
        .current_dir(dir.path());
    let base = [
        format!("model={}", model.display()),
        "width=128".into(),
        "height=64".into(),
        "steps=3".into(),
        "left_width=64".into(),
        "right_width=64".into(),
        "right_x=64".into(),
        "area_height=64".into(),
    ];
    for s in base.iter().map(String::as_str).chain(sets.iter().copied()) {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read_dir(dir.path().join("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png") && !p.ends_with("preview.png"))
        .unwrap();
    image::open(png).unwrap().to_rgb8()
}

#[test]
fn area_prompts_change_their_own_region() {
    let a = run(&[]);
    assert_eq!(a, run(&[]), "deterministic");
    assert_eq!(a.dimensions(), (128, 64));
    // Another right-hand prompt: the right half changes; the far left
    // (outside the right area and its ramp) is only touched through the
    // shared sampling trajectory, so it changes less.
    let b = run(&["right=a lighthouse at night"]);
    let diff = |x0: u32, x1: u32| -> f64 {
        let mut d = 0.0;
        for y in 0..64 {
            for x in x0..x1 {
                let (p, q) = (a.get_pixel(x, y), b.get_pixel(x, y));
                d += (0..3)
                    .map(|c| (p[c] as f64 - q[c] as f64).abs())
                    .sum::<f64>();
            }
        }
        d / ((x1 - x0) * 64 * 3) as f64
    };
    let (left, right) = (diff(0, 32), diff(96, 128));
    assert!(right > 0.0, "the right prompt matters");
    assert!(right > left, "left {left} vs right {right}");
}
