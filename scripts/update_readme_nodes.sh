#!/bin/sh
# Regenerates README.md's node reference from the node schemas
# (`weft nodes --markdown --no-plugins`), between its markers.
set -e
cd "$(dirname "$0")/.."
cargo run -q -p weft-cli -- nodes --markdown --no-plugins > /tmp/weft-node-reference.md
python3 - <<'PY'
import re
readme = open("README.md").read()
gen = open("/tmp/weft-node-reference.md").read()
begin, end = "<!-- node-reference:begin -->\n", "<!-- node-reference:end -->"
a = readme.index(begin) + len(begin)
b = readme.index(end)
open("README.md", "w").write(readme[:a] + gen + readme[b:])
PY
