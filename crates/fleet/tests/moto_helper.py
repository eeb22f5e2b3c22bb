#!/usr/bin/env python3
"""The AWS side of crates/fleet/tests/moto_cycle.rs, through boto3 (a client independent of the
fleet crate's own): set up the emulated account, stand in for the instances' uploads (moto does not
boot instances or run their user data), and report what was launched.

Usage (endpoint from AWS_ENDPOINT_URL):
  moto_helper.py setup BUCKET PROFILE            -> {"ami": "ami-…"}
  moto_helper.py upload BUCKET KEY_PREFIX STATUS LOG [RESULT.json ...]
  moto_helper.py inspect RUN_ID                  -> [{"id", "type", "state", "tags", "user_data", "shutdown", "http_tokens", "volume_encrypted"}, …]
  moto_helper.py validate USER_DATA_FILE         -> cloud-init schema + bash -n on its scripts
"""
import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import boto3

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGION = os.environ.get("AWS_REGION", "us-east-1")


def client(name):
    return boto3.client(name, endpoint_url=ENDPOINT, region_name=REGION)


def setup(bucket, profile):
    client("s3").create_bucket(Bucket=bucket)
    iam = client("iam")
    iam.create_role(RoleName=profile, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    images = client("ec2").describe_images(Owners=["amazon"])["Images"]
    print(json.dumps({"ami": images[0]["ImageId"]}))


def upload(bucket, prefix, status, log, *results):
    s3 = client("s3")
    for r in results:
        s3.upload_file(r, bucket, f"{prefix}/results/{pathlib.Path(r).name}")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/bench.log", Body=log.encode())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/status", Body=(status + "\n").encode())


def inspect(run_id):
    ec2 = client("ec2")
    out = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:accelrt:fleet-run", "Values": [run_id]}])
    for page in pages:
        for res in page["Reservations"]:
            for i in res["Instances"]:
                iid = i["InstanceId"]
                ud = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"].get("Value", "")
                shutdown = ec2.describe_instance_attribute(
                    InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")["InstanceInitiatedShutdownBehavior"]["Value"]
                vols = [m["Ebs"]["VolumeId"] for m in i.get("BlockDeviceMappings", []) if "Ebs" in m]
                encrypted = [v["Encrypted"] for v in ec2.describe_volumes(VolumeIds=vols)["Volumes"]] if vols else []
                out.append({
                    "id": iid,
                    "type": i["InstanceType"],
                    "state": i["State"]["Name"],
                    "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])},
                    "user_data": base64.b64decode(ud).decode() if ud else "",
                    "shutdown": shutdown,
                    "http_tokens": i.get("MetadataOptions", {}).get("HttpTokens"),
                    "volume_encrypted": encrypted,
                })
    print(json.dumps(out))


def validate(path):
    import yaml
    if shutil.which("cloud-init") is None:
        print("NO-CLOUD-INIT")
        return
    r = subprocess.run(["cloud-init", "schema", "--config-file", path], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cloud-init schema: {r.stdout}{r.stderr}")
    doc = yaml.safe_load(pathlib.Path(path).read_text())
    n = 0
    for f in doc.get("write_files", []):
        if f.get("content", "").startswith("#!/bin/bash"):
            n += 1
            with tempfile.NamedTemporaryFile("w", suffix=".sh") as t:
                t.write(f["content"])
                t.flush()
                r = subprocess.run(["bash", "-n", t.name], capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"{f['path']}: bash -n: {r.stderr}")
    print(f"VALID {n}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"setup": setup, "upload": upload, "inspect": inspect, "validate": validate}[cmd](*args)
