"""Schemathesis hooks for the hub's contract test (cli/tests/it/schemathesis.rs).

A manifest upload is binary in the hub's own media type; schemathesis sends
raw bytes only for the standard binary types, so the manifest type is sent
the way `application/octet-stream` is: as the bytes generated.
"""

import schemathesis

schemathesis.serializer.alias("application/vnd.aetherfs.manifest.v1", "application/octet-stream")
