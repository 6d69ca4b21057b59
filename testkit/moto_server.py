"""moto's standalone S3 server in a subprocess on 127.0.0.1, with IAM authentication on.

moto accepts any credentials by default. In server mode its authentication is
switched on at run time by ``POST /moto-api/reset-auth`` with the number of
requests still let through unauthenticated (the HTTP twin of the
``INITIAL_NO_AUTH_ACTION_COUNT`` setting, which the server reads once at import).
So: start the server, create an IAM user with an ``s3:*`` policy and an access
key through the IAM API (still unauthenticated), then ``reset-auth`` to 0. From
then on every S3 request's SigV4 signature is checked against that key's secret:
a wrong secret gets 403 SignatureDoesNotMatch, an unknown key 403
InvalidAccessKeyId.

A subprocess (not moto.server.ThreadedMotoServer): the auth switch is process
wide, and tests of outages can SIGSTOP / SIGCONT it (moto keeps no state across a
restart).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config

from testkit.ports import free_port
from testkit.process import die_with_parent

REGION = "us-east-1"


class MotoServer:
    def __init__(self, *, iam_auth: bool = True):
        self.iam_auth = iam_auth
        self.port = 0
        self.access_key_id = "AKIDANYTHING"
        self.access_key_secret = "anything"
        self.write_only_key: tuple[str, str] | None = None  # (id, secret) with IAM authentication on
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> MotoServer:
        for _ in range(3):  # the free port may be taken between free_port() and bind
            self.port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=self._log, stderr=self._log, env=env, preexec_fn=die_with_parent)
            if self._wait_ready(timeout):
                break
            self.stop()
        else:
            raise RuntimeError(f"moto server did not start: {self.log()[-2000:]}")
        if self.iam_auth:
            self._enable_iam_auth()
        return self

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        return False

    def _enable_iam_auth(self) -> None:
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="recnode")
        iam.put_user_policy(UserName="recnode", PolicyName="s3-all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }))
        key = iam.create_access_key(UserName="recnode")["AccessKey"]
        self.access_key_id, self.access_key_secret = key["AccessKeyId"], key["SecretAccessKey"]
        # a key that may only write objects (no read, no delete), as customers hand out
        iam.create_user(UserName="recnode-writer")
        iam.put_user_policy(UserName="recnode-writer", PolicyName="s3-put", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}],
        }))
        writer = iam.create_access_key(UserName="recnode-writer")["AccessKey"]
        self.write_only_key = (writer["AccessKeyId"], writer["SecretAccessKey"])
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["status"] == "ok"

    def client(self, secret: str | None = None):
        """A boto3 S3 client for this server (path style, no trailing checksums)."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret or self.access_key_secret,
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", retries={"max_attempts": 1}))

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def pause(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
