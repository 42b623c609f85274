"""Starts moto's S3/IAM server for the checkpoint tests, with one fix to its signature check.

moto (5.x) rebuilds the request URL for SigV4 verification from werkzeug's IRI form of the URL,
which decodes %2F in the query and %2B, %25, %26 and non-ASCII bytes in the path. A client that
encodes as AWS specifies (awscli included) then gets SignatureDoesNotMatch for a key with '+',
'%' or unicode, and for every ListObjectsV2 with a prefix containing '/'. AWS itself canonicalizes
the URI as sent. This launcher makes moto verify against the raw request URI, as AWS does;
signatures are still checked on every request.

Usage: python3 moto_fixture_server.py -H 127.0.0.1 -p PORT  (arguments as for moto.server)
"""
import sys
import threading

import moto.core.responses as responses
import moto.iam.access_control as access_control
from moto.server import main

_current = threading.local()
_setup_class = responses.BaseResponse.setup_class
_iam_request_init = access_control.IAMRequestBase.__init__


def setup_class(self, request, full_url, headers, *args, **kwargs):
    environ = getattr(request, "environ", None) or {}
    _current.raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    return _setup_class(self, request, full_url, headers, *args, **kwargs)


def iam_request_init(self, account_id, method, path, *args, **kwargs):
    raw = getattr(_current, "raw_uri", None)
    if raw:
        if "://" in raw:  # absolute-form request target
            raw = "/" + raw.split("://", 1)[1].split("/", 1)[-1]
        path = raw
    _iam_request_init(self, account_id, method, path, *args, **kwargs)


responses.BaseResponse.setup_class = setup_class
access_control.IAMRequestBase.__init__ = iam_request_init

if __name__ == "__main__":
    # The fixture runs awscli with the same interpreter (the one that has moto and awscli).
    print(f"python: {sys.executable}", flush=True)
    main(sys.argv[1:])
