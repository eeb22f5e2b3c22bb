#!/usr/bin/env bash
# Fill the ${Name} fields of a user-data file for use without CloudFormation, e.g.
#   deploy/render-user-data.sh deploy/user-data/cpu.yaml BinaryUrl=s3://b/accelrt BinarySha256=… > ud.yaml
#   aws ec2 run-instances … --user-data file://ud.yaml
# Every field the file uses must be given (a missing one is an error, not an empty value), and the
# defaults below are the ones deploy/serving.yaml uses.
set -euo pipefail
[ $# -ge 1 ] && [ -f "$1" ] || { echo "usage: $0 USER-DATA-FILE [Name=value ...]" >&2; exit 2; }
file=$1; shift
exec python3 - "$file" "$@" <<'PY'
import re, sys
path, pairs = sys.argv[1], sys.argv[2:]
values = {"Model": "all-minilm-l6-v2", "ServerPort": "8080", "DrainSeconds": "20",
          "RequestTimeoutSeconds": "60", "StopTimeoutSeconds": "100",
          "LifecycleHookName": "accelrt-drain", "NeffCacheUrl": ""}
for p in pairs:
    name, sep, value = p.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9]+", name):
        sys.exit(f"not Name=value: {p!r}")
    if "\n" in value:
        sys.exit(f"{name}: a value must be one line")
    values[name] = value
text = open(path).read()
used = sorted(set(re.findall(r"\$\{([A-Za-z0-9:]+)\}", text)))
missing = [n for n in used if n not in values]
if missing:
    sys.exit(f"{path}: give a value for {', '.join(missing)}")
sys.stdout.write(re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda m: values.get(m.group(1), m.group(0)), text))
PY
