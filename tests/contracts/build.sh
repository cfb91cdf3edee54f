#!/bin/sh
# Recompile the test contracts into build/<Contract>.json ({abi, bytecode}). Needs node + npm:
#   cd tests/contracts && ./build.sh        (uses `npx solc`, solc-js 0.8.x)
# The test suite itself needs no compiler: it loads the committed build/*.json.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for src in *.sol; do
  npx --yes solc@0.8 --optimize --abi --bin -o "$tmp" "$src" >/dev/null
done
python3 - "$tmp" <<'PY'
import json, pathlib, sys
tmp = pathlib.Path(sys.argv[1])
out = pathlib.Path("build")
out.mkdir(exist_ok=True)
for abi in sorted(tmp.glob("*.abi")):
    stem = abi.name[: -len(".abi")]
    name = stem.split("_")[-1]          # solcjs names outputs <file>_sol_<Contract>
    if name.startswith("I") and name[1:2].isupper():
        continue                        # interfaces have no bytecode
    bin_ = tmp / f"{stem}.bin"
    data = {"contract": name, "abi": json.loads(abi.read_text()), "bytecode": "0x" + bin_.read_text().strip()}
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print("wrote", out / f"{name}.json")
PY
