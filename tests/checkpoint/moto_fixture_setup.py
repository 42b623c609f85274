"""One-process awscli session that prepares a fresh moto server for the checkpoint tests.

Runs, with awscli's own command driver (the same code as the `aws` command, without paying its
start-up once per command): iam create-user, iam create-access-key and iam put-user-policy
(Allow *) - the only calls moto lets through unsigned - and then, signed with the new key,
s3api create-bucket. Prints the new key as JSON: {"AccessKeyId": ..., "SecretAccessKey": ...}.

Usage: python3 moto_fixture_setup.py ENDPOINT BUCKET REGION
"""
import contextlib
import io
import json
import os
import sys

from awscli.clidriver import create_clidriver

POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'


def aws(endpoint, *args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = create_clidriver().main(["--endpoint-url", endpoint, "--output", "json", *args])
    if rc != 0:
        sys.exit(f"aws {' '.join(args)} failed with exit code {rc}: {out.getvalue()}")
    return out.getvalue()


def main():
    endpoint, bucket, region = sys.argv[1:4]
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(AWS_ACCESS_KEY_ID="bootstrap", AWS_SECRET_ACCESS_KEY="bootstrap",
                      AWS_DEFAULT_REGION=region, AWS_CONFIG_FILE="/dev/null",
                      AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true")
    user = "cohort-test"
    aws(endpoint, "iam", "create-user", "--user-name", user)
    key = json.loads(aws(endpoint, "iam", "create-access-key", "--user-name", user))["AccessKey"]
    aws(endpoint, "iam", "put-user-policy", "--user-name", user, "--policy-name", "allow-all",
        "--policy-document", POLICY)
    os.environ.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    aws(endpoint, "s3api", "create-bucket", "--bucket", bucket)
    print(json.dumps({"AccessKeyId": key["AccessKeyId"],
                      "SecretAccessKey": key["SecretAccessKey"]}))


if __name__ == "__main__":
    main()
