"""An AWS double for the ECR tests: moto's server (ECR, STS, IAM) on 127.0.0.1, with IAM
authentication on (SigV4 signatures are checked, access keys and policies are enforced).

Where moto differs from AWS in ways the tests need, it is made to behave like AWS:
- GetAuthorizationToken returns a new token on every call (moto's is fixed), marked TOPSECRET so
  that a leak is found by the suite's scan, expiring --token-lifetime seconds from now
  (`fixed` keeps moto's own expiresAt, 2015-01-01: an expiry in the past, like a skewed clock);
- AssumeRoleWithWebIdentity is unsigned, as in AWS, and the web identity token must be a JWT
  for --audience and --subject (moto accepts any string).

Prints one JSON line when ready: {"endpoint", "access_key_id", "secret_access_key", "role_arn",
"account"}; runs until killed.
"""

import argparse
import base64
import json
import socket
import sys  # noqa: F401
import threading
import uuid
from datetime import datetime, timedelta, timezone

import boto3
from moto import settings
from moto.ecr.responses import ECRResponse
from moto.iam.models import iam_backends
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.sts.responses import TokenResponse
from moto.core.responses import ActionResult

ACCOUNT = "123456789012"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token-lifetime", default="43200")
    parser.add_argument("--audience", default="sts.amazonaws.com")
    parser.add_argument("--subject", default="system:serviceaccount:regcred-system:regcred-operator")
    args = parser.parse_args()

    def get_authorization_token(self):  # type: ignore[no-untyped-def]
        registry_ids = self._get_param("registryIds") or [self.current_account]
        if args.token_lifetime == "fixed":
            expires = datetime(2015, 1, 1, tzinfo=timezone.utc)
        else:
            expires = datetime.now(timezone.utc) + timedelta(seconds=int(args.token_lifetime))
        data = []
        for registry_id in registry_ids:
            token = f"TOPSECRET-{registry_id}-{uuid.uuid4().hex}"
            data.append({
                "authorizationToken": base64.b64encode(f"AWS:{token}".encode()).decode(),
                "expiresAt": expires,
                "proxyEndpoint": f"https://{registry_id}.dkr.ecr.{self.region}.amazonaws.com",
            })
        return ActionResult({"authorizationData": data})

    ECRResponse.get_authorization_token = get_authorization_token

    checked_auth = TokenResponse._authenticate_and_authorize_normal_action

    def authenticate(self, resource="*"):  # type: ignore[no-untyped-def]
        if self._get_action() == "AssumeRoleWithWebIdentity":
            return None
        return checked_auth(self, resource)

    TokenResponse._authenticate_and_authorize_normal_action = authenticate
    assume = TokenResponse.assume_role_with_web_identity

    def assume_role_with_web_identity(self):  # type: ignore[no-untyped-def]
        token = self._get_param("WebIdentityToken") or ""
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except Exception:  # noqa: BLE001
            claims = {}
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if args.audience not in audiences or claims.get("sub") != args.subject:
            from moto.sts.exceptions import STSClientError

            raise STSClientError(
                "InvalidIdentityToken",
                f"token for audience {audiences} and subject {claims.get('sub')!r}; "
                f"expected {args.audience!r} and {args.subject!r}",
            )
        return assume(self)

    TokenResponse.assume_role_with_web_identity = assume_role_with_web_identity

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"

    # Set up IAM before authentication is switched on.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    allow_ecr = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}]})
    iam.create_user(UserName="puller")
    iam.put_user_policy(UserName="puller", PolicyName="pull", PolicyDocument=allow_ecr)
    key = iam.create_access_key(UserName="puller")["AccessKey"]
    # A secret that the suite's leak scan recognises.
    secret = f"TOPSECRET{uuid.uuid4().hex}"
    for k in iam_backends[ACCOUNT]["global"].users["puller"].access_keys:
        k.secret_access_key = secret
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/cluster"},
         "Action": "sts:AssumeRoleWithWebIdentity"}]})
    role = iam.create_role(RoleName="puller", AssumeRolePolicyDocument=trust)["Role"]
    iam.put_role_policy(RoleName="puller", PolicyName="pull", PolicyDocument=allow_ecr)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0

    print(json.dumps({
        "endpoint": endpoint,
        "access_key_id": key["AccessKeyId"],
        "secret_access_key": secret,
        "role_arn": role["Arn"],
        "account": ACCOUNT,
    }), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
