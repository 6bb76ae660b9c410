#!/bin/sh
# Flux.1-dev end to end on this machine with Q8_0 weights of the real shapes
# (random values): T5-XXL and the 12 B transformer from GGUF files, CLIP-L and
# the VAE in f32, one step at 1024² through graphs/flux_dev_gguf_txt2img.ron.
# Prints the run's time and its peak resident memory (GNU time's "Maximum
# resident set size"). Needs about 18 GB of disk in DIR.
#
#   scripts/bench_flux_e2e.sh [DIR]
set -e
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/weft-flux-e2e}
if [ ! -f "$DIR/ae.safetensors" ]; then
    cargo bench -p weft-models --bench flux_files -- "$DIR"
fi
cargo build --release -p weft-cli
/usr/bin/time -v target/release/weft run graphs/flux_dev_gguf_txt2img.ron \
    --out "$DIR/out" --preview none --events plain \
    --set model="$DIR/flux1-dev-Q8_0.gguf" --set clip_l="$DIR/clip_l.safetensors" \
    --set t5="$DIR/t5xxl-Q8_0.gguf" --set vae="$DIR/ae.safetensors" \
    --set steps=1 --set width=1024 --set height=1024 2>&1 | tee "$DIR/run.log"
grep -E "Elapsed|Maximum resident" "$DIR/run.log"
