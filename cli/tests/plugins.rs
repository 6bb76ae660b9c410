//! What a plugin author sees from the `weft` binary: installing a library,
//! a plugin that panics, a broken library, an unknown node type, and the
//! listing of undocumented inputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{repo_root, text, weft_command};

fn weft(args: &[&str]) -> Output {
    weft_command().args(args).output().expect("weft runs")
}
fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn library_name(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The example C plugin (`InvertImage`), built with the system compiler.
fn build_invert_plugin(out: &Path) {
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c99", "-shared", "-fPIC", "-I"])
        .arg(repo_root().join("plugins/abi/include"))
        .arg(repo_root().join("plugins/examples/c/invert.c"))
        .arg("-o")
        .arg(out)
        .status()
        .expect("a C compiler");
    assert!(status.success());
}

/// A directory holding the workspace's panicking test plugin (a dev
/// dependency, so cargo builds it beside this test).
fn panicking_plugin_dir(dir: &Path) -> PathBuf {
    let file = library_name("weft_plugin_test_panicking");
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let built = [deps.join(&file), deps.parent().unwrap().join(&file)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{file} was not built next to {}", deps.display()));
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(built, plugins.join(&file)).unwrap();
    plugins
}

#[test]
fn plugin_install_checks_the_library_then_copies_it_into_the_plugin_directory() {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("build");
    std::fs::create_dir(&built).unwrap();
    let library = built.join(library_name("invert"));
    build_invert_plugin(&library);
    // The first plugin directory, created on the way.
    let plugins = dir.path().join("share/weft/plugins");
    let other = dir.path().join("other");

    let out = weft(&[
        "plugin",
        "install",
        arg(&library),
        "--plugins",
        arg(&plugins),
        "--plugins",
        arg(&other),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let installed = plugins.join(library_name("invert"));
    assert!(
        text(&out.stderr).contains(&format!(
            "installed plugin `invert-c` 0.1.0 (InvertImage) as {}",
            installed.display()
        )),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&library).unwrap()
    );
    assert!(!other.exists());
    let out = weft(&["nodes", "InvertImage", "--plugins", arg(&plugins)]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A library that does not load is refused, and nothing is written.
    let broken = built.join(library_name("broken"));
    std::fs::write(&broken, "not a library").unwrap();
    let out = weft(&[
        "plugin",
        "install",
        arg(&broken),
        "--plugins",
        arg(&plugins),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "plugin {}: not a loadable library",
            broken.display()
        )) && stderr.contains("nothing was installed"),
        "{stderr}"
    );
    assert!(!plugins.join(library_name("broken")).exists());

    // So is a file weft would never load from a plugin directory.
    let readme = built.join("README.txt");
    std::fs::write(&readme, "hello").unwrap();
    let out = weft(&[
        "plugin",
        "install",
        arg(&readme),
        "--plugins",
        arg(&plugins),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!(
            "is not a plugin library: weft loads files ending in `.{}`",
            std::env::consts::DLL_EXTENSION
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unknown_node_type_says_where_plugins_were_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    build_invert_plugin(&plugins.join(library_name("invert")));
    let graph = dir.path().join("g.ron");
    std::fs::write(
        &graph,
        r#"(nodes: { "x": MyEuler(), "p": Print(value: Link("x", "value")) })"#,
    )
    .unwrap();

    let out = weft(&["check", arg(&graph), "--plugins", arg(&plugins)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown node type `MyEuler`"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "plugin directories searched: {}; plugins loaded: invert-c 0.1.0",
            plugins.display()
        )),
        "{stderr}"
    );
    // No directory at all (the test hides the default one), and in JSON too.
    let out = weft(&["check", arg(&graph), "--events", "json"]);
    assert!(
        text(&out.stdout).contains("no plugin directory was searched")
            && text(&out.stdout).contains("no plugins loaded"),
        "{}",
        text(&out.stdout)
    );
    let out = weft(&["check", arg(&graph), "--no-plugins"]);
    assert!(
        text(&out.stderr).contains("plugins are off (--no-plugins)"),
        "{}",
        text(&out.stderr)
    );
    // `weft nodes TYPE` says the same.
    let out = weft(&["nodes", "MyEuler", "--plugins", arg(&plugins)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("plugins loaded: invert-c 0.1.0"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_plugin_panic_is_one_clean_error_naming_the_node_once() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = panicking_plugin_dir(dir.path());
    let graph = dir.path().join("panics.ron");
    std::fs::write(
        &graph,
        r#"(nodes: {
            "boom": Panic(value: 7),
            "model": ExactGaussianModel(means: "-2,2", stds: "0.5,0.5", weights: "1,1", parameterization: "flow"),
            "guider": PanickingGuider(),
            "sampler": KSamplerSelect(sampler_name: "euler"),
            "sigmas": FlowMatchScheduler(steps: 4, shift: 1.0),
            "noise": RandomNoise(noise_seed: 5),
            "latent": EmptyLatent(width: 6, height: 5, channels: 2, batch_size: 1),
            "sample": SamplerCustomAdvanced(noise: Link("noise", "NOISE"), guider: Link("guider", "GUIDER"),
                sampler: Link("sampler", "SAMPLER"), sigmas: Link("sigmas", "SIGMAS"), latent_image: Link("latent", "LATENT")),
            "a": Print(value: Link("boom", "value")),
            "b": Print(value: Link("sample", "output")),
        })"#,
    )
    .unwrap();
    let out = weft(&[
        "run",
        arg(&graph),
        "--plugins",
        arg(&plugins),
        "--events",
        "plain",
        "--out",
        arg(&dir.path().join("out")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    // The plugin's own panic hook printed nothing: no `thread … panicked at`.
    assert!(!stderr.contains("panicked at"), "{stderr}");
    assert!(
        stderr.contains(
            "error: node `boom` (Panic) failed: the plugin panicked: value 7 is not welcome here"
        ),
        "{stderr}"
    );
    let sample = stderr
        .lines()
        .find(|l| l.starts_with("error: node `sample`"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(
        sample,
        "error: node `sample` (SamplerCustomAdvanced) failed: euler with plugin node \
         `PanickingGuider`: the plugin panicked: the guider blew up at sigma 1"
    );
}

#[test]
fn a_broken_library_is_reported_once_under_the_users_own_path() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let broken = plugins.join(library_name("broken"));
    std::fs::write(&broken, "this is a text file, not a shared library\n").unwrap();
    // The same directory twice, as a repeat in WEFT_PLUGINS would give.
    let again = plugins.join(".");
    let out = weft(&[
        "nodes",
        "Print",
        "--plugins",
        arg(&plugins),
        "--plugins",
        arg(&again),
    ]);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with(&format!(
            "error: plugin {}: not a loadable library (",
            broken.display()
        )),
        "{stderr}"
    );
    // Not the private copy weft loads from.
    assert!(!stderr.contains("weft-plugins-"), "{stderr}");
}

#[test]
fn nodes_prints_no_dangling_dash_for_an_undocumented_input() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = panicking_plugin_dir(dir.path());
    let out = weft(&["nodes", "Panic", "--plugins", arg(&plugins)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    // `value` has no doc in the plugin, in or out.
    assert!(listing.contains("  in  value: INT\n"), "{listing}");
    assert!(listing.contains("  out value: INT\n"), "{listing}");
    assert!(!listing.contains('—'), "{listing}");
}
