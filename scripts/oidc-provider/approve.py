#!/usr/bin/env python3
"""Test-only: approves a device-flow login (RFC 8628) on scripts/oidc-provider/server.mjs as a browser
user would, with the Python standard library only.

Usage: approve.py VERIFICATION_URI_COMPLETE

Visits the page (one cookie jar), takes its `xsrf` field, submits the user code with confirm=yes and
follows the redirects through the provider's auto-approving interaction route to "Sign-in Success".
"""
import http.cookiejar
import re
import sys
import urllib.parse
import urllib.request


def approve(uri):
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def go(url, data=None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        with opener.open(url, body, timeout=10) as r:
            return r.geturl(), r.read().decode()

    _, page = go(uri)
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page)
    if not xsrf:
        raise SystemExit(f"no xsrf field on {uri}:\n{page[:2000]}")
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["user_code"][0]
    url, page = go(uri.split("?")[0], {"xsrf": xsrf.group(1), "user_code": code, "confirm": "yes"})
    if "Sign-in Success" not in page:
        raise SystemExit(f"approval failed at {url}:\n{page[:2000]}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    approve(sys.argv[1])
    print("approved")
