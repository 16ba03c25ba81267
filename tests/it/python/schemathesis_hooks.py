"""Schemathesis hooks for tests/it/conformance.rs (loaded through SCHEMATHESIS_HOOKS).

NDJSON bodies (one CloudEvent per line) have no serializer in schemathesis: without one it
skips the media type. A generated string goes as it is; anything else (negative tests send
other JSON values) goes as its JSON text, which the server must refuse with a 4xx.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return {"data": value}
    if isinstance(value, str):
        return {"data": value.encode("utf-8", errors="surrogatepass")}
    return {"data": json.dumps(value).encode("utf-8", errors="surrogatepass")}
