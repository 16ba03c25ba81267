"""AWS's MSK IAM signer (aws-msk-iam-sasl-signer-python) for fixed credentials, region and time.

    python msk_iam_token.py REGION UNIX_SECONDS ACCESS_KEY SECRET_KEY [SESSION_TOKEN]

Prints {"token", "expires_ms", "user_agent"} as JSON. The clock botocore signs with is fixed to
UNIX_SECONDS; everything else is the library's own code path (generate_auth_token_from_
credentials_provider with a provider returning these credentials).
"""
import datetime
import importlib.metadata
import json
import sys

import botocore.auth
from botocore.credentials import CredentialProvider, Credentials

region, at, access_key, secret_key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
session_token = sys.argv[5] if len(sys.argv) > 5 else None
fixed = datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc)
botocore.auth.get_current_datetime = lambda *args, **kwargs: fixed

from aws_msk_iam_sasl_signer import MSKAuthTokenProvider  # noqa: E402


class Fixed(CredentialProvider):
    METHOD = "fixed"

    def load(self):
        return Credentials(access_key, secret_key, session_token)


token, expires_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(region, Fixed())
print(json.dumps({
    "token": token,
    "expires_ms": expires_ms,
    "user_agent": "aws-msk-iam-sasl-signer-python/" + importlib.metadata.version("aws-msk-iam-sasl-signer-python"),
}))
