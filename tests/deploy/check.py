#!/usr/bin/env python3
"""Checks deploy/ without an AWS account (CI runs it from .ci/run).

- every CloudFormation template in deploy/ passes cfn-lint;
- every user-data file in deploy/user-data/, its fields filled by deploy/render-user-data.sh, passes
  `cloud-init schema`, fits EC2's 16 KiB user-data limit, and its shell scripts parse (`bash -n`);
- deploy/serving.yaml carries exact copies of the user-data files, and every field they use is a
  template parameter or one of the values the template passes in;
- the timeouts mapping keeps drain < deregistration delay < systemd stop timeout < hook timeout.

The tools must be installed (python3 -m pip install cfn-lint; apt-get install cloud-init): a missing
tool is a failure, never a skip. Exits non-zero with every problem listed.

`check.py --sync` first rewrites serving.yaml's copies from deploy/user-data/{cpu,nvidia,neuron}.yaml
(the files are the source; edit them, then sync).
"""
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
USER_DATA = DEPLOY / "user-data"
# Sample values for the fields the stack fills in (the rest have defaults in render-user-data.sh).
SAMPLE = ["BinaryUrl=s3://example-bucket/accelrt/accelrt-x86_64", "BinarySha256=" + "0" * 64,
          "NeffCacheUrl=s3://example-bucket/neff/"]
PSEUDO = {"AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::Partition", "AWS::URLSuffix"}

problems = []


def fail(msg):
    problems.append(msg)
    print("FAIL:", msg, file=sys.stderr)


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Sub, !If, …) read as {'Fn::Sub': …}."""


def _tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else ("Fn::GetAtt" if suffix == "GetAtt" else "Condition" if suffix == "Condition" else "Fn::" + suffix)
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


def need(tool):
    if shutil.which(tool) is None:
        sys.exit(f"{tool} is not installed (CI installs it in .ci/run); nothing was checked")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def check_user_data(path):
    rendered = run([str(DEPLOY / "render-user-data.sh"), str(path), *SAMPLE])
    if rendered.returncode != 0:
        return fail(f"{path.name}: render-user-data.sh: {rendered.stderr.strip()}")
    text = rendered.stdout
    if "${" in text:
        fail(f"{path.name}: unfilled fields after rendering: {sorted(set(re.findall(r'[$][{][^}]*[}]', text)))}")
    if len(text.encode()) > 16384:
        fail(f"{path.name}: {len(text.encode())} bytes, over EC2's 16 KiB user-data limit")
    with tempfile.TemporaryDirectory() as tmp:
        f = pathlib.Path(tmp) / path.name
        f.write_text(text)
        r = run(["cloud-init", "schema", "--config-file", str(f)])
        if r.returncode != 0:
            fail(f"{path.name}: cloud-init schema: {(r.stdout + r.stderr).strip()}")
        doc = yaml.safe_load(text)
        scripts = 0
        for entry in doc.get("write_files", []):
            content = entry.get("content", "")
            if content.startswith("#!/bin/bash"):
                scripts += 1
                s = pathlib.Path(tmp) / "script.sh"
                s.write_text(content)
                r = run(["bash", "-n", str(s)])
                if r.returncode != 0:
                    fail(f"{path.name}: {entry['path']}: bash -n: {r.stderr.strip()}")
        if scripts < 2:
            fail(f"{path.name}: expected the install and lifecycle scripts, found {scripts}")
        units = {e["path"]: e["content"] for e in doc.get("write_files", []) if e["path"].endswith(".service")}
        unit = units.get("/etc/systemd/system/accelrt.service", "")
        for line in ["Restart=on-failure", "KillSignal=SIGTERM", "StandardError=journal"]:
            if line not in unit:
                fail(f"{path.name}: accelrt.service lacks {line}")
    print(f"ok: {path.name} ({len(text.encode())} bytes rendered, cloud-init schema valid)")


def sub_bodies(node, out):
    """Every Fn::Sub string (with its variable map) in a template."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Fn::Sub":
                if isinstance(v, list):
                    out.append((v[0], v[1]))
                else:
                    out.append((v, {}))
            sub_bodies(v, out)
    elif isinstance(node, list):
        for v in node:
            sub_bodies(v, out)


def check_serving():
    path = DEPLOY / "serving.yaml"
    t = yaml.load(path.read_text(), Loader=CfnLoader)
    subs = []
    sub_bodies(t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"], subs)
    bodies = {body: names for body, names in subs}
    params = set(t["Parameters"])
    for f in sorted(USER_DATA.glob("*.yaml")):
        text = f.read_text()
        if text not in bodies:
            fail(f"serving.yaml's user data is not an exact copy of deploy/user-data/{f.name}")
            continue
        known = params | set(bodies[text]) | PSEUDO
        unknown = sorted(set(re.findall(r"\$\{([A-Za-z0-9:]+)\}", text)) - known)
        if unknown:
            fail(f"{f.name}: fields serving.yaml does not define: {unknown}")
    if len(bodies) != len(list(USER_DATA.glob("*.yaml"))):
        fail(f"serving.yaml has {len(bodies)} user-data bodies, deploy/user-data has {len(list(USER_DATA.glob('*.yaml')))} files")
    for timeout, row in t["Mappings"]["Timeouts"].items():
        t_s = int(timeout)
        if row["Deregistration"] != row["Drain"] + t_s + 5:
            fail(f"Timeouts[{timeout}]: deregistration delay must be drain + request timeout + 5")
        if not row["Deregistration"] < row["StopTimeout"] < row["Heartbeat"]:
            fail(f"Timeouts[{timeout}]: need deregistration < TimeoutStopSec < hook timeout: {row}")
        if row["Idle"] < t_s + 5:
            fail(f"Timeouts[{timeout}]: the load balancer's idle timeout is below the request timeout")
    tg = t["Resources"]["TargetGroup"]["Properties"]
    if tg["HealthCheckPath"] != "/health":
        fail("the target group must health-check /health")
    # The server fails /health for Drain seconds: long enough for the load balancer to see it.
    for row in t["Mappings"]["Timeouts"].values():
        if row["Drain"] < tg["HealthCheckIntervalSeconds"] * tg["UnhealthyThresholdCount"]:
            fail("the drain is shorter than the load balancer needs to mark the target unhealthy")
    md = t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    if md.get("HttpTokens") != "required":
        fail("the launch template must require IMDSv2")
    print("ok: serving.yaml carries the user-data files; timeouts consistent")


SYNC_ORDER = ["cpu", "nvidia", "neuron"]  # the order of the bodies in serving.yaml's UserData


def sync():
    """Replaces each literal block (`- |`) under the launch template's UserData with its file."""
    path = DEPLOY / "serving.yaml"
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, l in enumerate(lines) if l.strip().startswith("UserData:"))
    out, i, n = lines[:start], start, 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.rstrip().endswith("- |") and n < len(SYNC_ORDER):
            indent = len(line) - len(line.lstrip()) + 2
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) >= indent):
                i += 1
            body = (USER_DATA / f"{SYNC_ORDER[n]}.yaml").read_text()
            out.extend((" " * indent + l) if l.strip() else "\n" for l in body.splitlines(keepends=True))
            n += 1
    if n != len(SYNC_ORDER):
        sys.exit(f"serving.yaml: found {n} user-data blocks, expected {len(SYNC_ORDER)}")
    path.write_text("".join(out))
    print(f"synced {n} user-data copies into {path.name}")


def main():
    if sys.argv[1:] == ["--sync"]:
        sync()
    elif sys.argv[1:]:
        sys.exit("usage: check.py [--sync]")
    need("cfn-lint")
    need("cloud-init")
    # The schema check must be able to fail: a known-bad file is rejected.
    with tempfile.TemporaryDirectory() as tmp:
        bad = pathlib.Path(tmp) / "bad.yaml"
        bad.write_text("#cloud-config\npackages: 5\n")
        if run(["cloud-init", "schema", "--config-file", str(bad)]).returncode == 0:
            fail("cloud-init schema accepted a known-bad file: the check is not working")
    templates = [p for p in sorted(DEPLOY.glob("*.yaml")) if "AWSTemplateFormatVersion" in p.read_text()]
    if not templates:
        fail("no CloudFormation templates in deploy/")
    for p in templates:
        r = run(["cfn-lint", str(p)])
        if r.returncode != 0:
            fail(f"cfn-lint {p.name}:\n{(r.stdout + r.stderr).strip()}")
        else:
            print(f"ok: cfn-lint {p.name}")
    files = sorted(USER_DATA.glob("*.yaml"))
    if not files:
        fail("no user-data files in deploy/user-data")
    for f in files:
        check_user_data(f)
    check_serving()
    if problems:
        sys.exit(f"{len(problems)} problem(s) in deploy/")
    print(f"deploy: {len(templates)} template(s), {len(files)} user-data file(s) checked")


if __name__ == "__main__":
    main()
