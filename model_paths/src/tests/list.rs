use super::{touch, with_roots};
use crate::{ModelFile, ModelKind};

fn names(files: &[ModelFile]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn listing_is_sorted_recursive_deduplicated_and_filtered() {
    let tmp = tempfile::tempdir().unwrap();
    let (r1, r2) = (tmp.path().join("r1"), tmp.path().join("r2"));
    touch(&r1, "loras/b.safetensors", 10);
    touch(&r1, "loras/sdxl/deep/c.PT", 3);
    touch(&r1, "loras/readme.md", 1);
    touch(&r1, "loras/.hidden/h.safetensors", 1);
    touch(&r1, "loras/._b.safetensors", 1);
    touch(&r2, "loras/b.safetensors", 99);
    touch(&r2, "loras/a.gguf", 5);
    touch(&r2, "loras/preview.png", 1);
    let paths = with_roots(&[&r1, &r2]);

    let files = paths.list(ModelKind::Loras);
    assert_eq!(names(&files), ["a.gguf", "b.safetensors", "sdxl/deep/c.PT"]);
    let b = &files[1];
    assert_eq!(
        (b.size, b.path.clone()),
        (10, r1.join("loras/b.safetensors"))
    );
    assert_eq!(files[2].size, 3);
    assert!(paths.list(ModelKind::Vae).is_empty());
}

#[test]
fn listing_matches_what_resolve_finds() {
    let tmp = tempfile::tempdir().unwrap();
    touch(tmp.path(), "unet/x.safetensors", 1);
    touch(tmp.path(), "diffusion_models/y/z.sft", 1);
    let paths = with_roots(&[tmp.path()]);
    let files = paths.list(ModelKind::DiffusionModels);
    assert_eq!(names(&files), ["x.safetensors", "y/z.sft"]);
    for f in &files {
        assert_eq!(
            paths
                .resolve(ModelKind::DiffusionModels, &f.name, None)
                .unwrap(),
            f.path
        );
    }
}

#[test]
fn diffusers_models_are_folders() {
    let tmp = tempfile::tempdir().unwrap();
    touch(tmp.path(), "diffusers/sdxl-base/model_index.json", 4);
    touch(tmp.path(), "diffusers/sdxl-base/unet/w.safetensors", 6);
    touch(tmp.path(), "diffusers/not-a-model/w.safetensors", 6);
    let paths = with_roots(&[tmp.path()]);
    let files = paths.list(ModelKind::Diffusers);
    assert_eq!(names(&files), ["sdxl-base"]);
    assert_eq!(files[0].size, 10);
    let dir = paths
        .resolve(ModelKind::Diffusers, "sdxl-base", None)
        .unwrap();
    assert_eq!(dir, tmp.path().join("diffusers/sdxl-base"));
}

#[cfg(unix)]
#[test]
fn symlinked_folders_are_followed_but_loops_end() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    touch(&elsewhere, "e.safetensors", 2);
    let root = tmp.path().join("root");
    touch(&root, "vae/sub/v.safetensors", 1);
    symlink(&elsewhere, root.join("vae/linked")).unwrap();
    symlink(root.join("vae"), root.join("vae/sub/loop")).unwrap();
    symlink(
        tmp.path().join("missing"),
        root.join("vae/dangling.safetensors"),
    )
    .unwrap();
    let paths = with_roots(&[&root]);

    let files = paths.list(ModelKind::Vae);
    assert_eq!(names(&files), ["linked/e.safetensors", "sub/v.safetensors"]);
    assert_eq!(files[0].size, 2);
}
