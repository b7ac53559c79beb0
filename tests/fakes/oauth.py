#!/usr/bin/python3
"""A fake OAuth 2.0 authorization server for the mailfs tests (stdlib only).

Endpoints (all under http://127.0.0.1:PORT):
    GET  /authorize    authorization code + PKCE; auto-approves (or denies)
                       and redirects to the loopback redirect_uri
    POST /token        grant_type authorization_code (PKCE S256 checked),
                       refresh_token, urn:ietf:params:oauth:grant-type:device_code
    POST /devicecode   RFC 8628 device authorization
    POST /introspect   RFC 7662 token introspection (Dovecot's oauth2 passdb
                       with introspection_mode = post)

    from fakes.oauth import FakeOAuth
    with FakeOAuth(access_ttl=3600) as fake:
        fake.token_url, fake.auth_url, fake.device_url, fake.introspect_url

Knobs: access_ttl, rotate_refresh, client_id, client_secret,
refuse_device_scopes, single_resource (Microsoft's "one resource per
token" rule), require_scope (introspection answers active only for tokens
with that scope), authorize_mode ("approve" | "deny"), device_plan (the
answers to successive device polls), revoke_all() (refresh tokens ->
invalid_grant).  Observations: grants (list of (grant_type, params)),
introspections (list of (token, verdict)), secrets() (every token and code
issued, for log greps), device_polls (monotonic times).
"""

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
OIDC = {"offline_access", "openid", "profile", "email"}


def _resource(scope):
    """'https://outlook.office.com/IMAP.AccessAsUser.All' -> 'https://outlook.office.com'."""
    if "://" in scope:
        return scope.rsplit("/", 1)[0]
    return "https://graph.microsoft.com"   # bare names are Graph's


class FakeOAuth:
    def __init__(self, host="127.0.0.1", access_ttl=3600, rotate_refresh=True,
                 client_id="mailfs-test-client", client_secret=None,
                 refuse_device_scopes=(), single_resource=False, require_scope=None,
                 user="test"):
        self.host = host
        self.access_ttl = access_ttl
        self.rotate_refresh = rotate_refresh
        self.client_id = client_id
        self.client_secret = client_secret
        self.refuse_device_scopes = tuple(refuse_device_scopes)
        self.single_resource = single_resource
        self.require_scope = require_scope
        self.user = user
        self.authorize_mode = "approve"
        self.device_plan = ["ok"]
        self.lock = threading.Lock()
        self.codes = {}
        self.refresh = {}
        self.access = {}
        self.devices = {}
        self.grants = []
        self.introspections = []
        self.device_polls = []
        self.authorize_requests = []
        self._issued = []
        self.server = None
        self.thread = None

    # -- lifecycle
    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base(self):
        return "http://%s:%d" % (self.host, self.port)

    auth_url = property(lambda self: self.base + "/authorize")
    token_url = property(lambda self: self.base + "/token")
    device_url = property(lambda self: self.base + "/devicecode")
    introspect_url = property(lambda self: self.base + "/introspect")

    # -- test controls and observations
    def revoke_all(self, access=False):
        """Refresh tokens answer invalid_grant from now on; with access=True
        the access tokens issued so far also stop passing introspection."""
        with self.lock:
            for r in self.refresh.values():
                r["valid"] = False
            if access:
                for a in self.access.values():
                    a["expires"] = 0

    def secrets(self):
        with self.lock:
            return list(self._issued)

    def grant_types(self):
        with self.lock:
            return [g for g, _ in self.grants]

    def refresh_scopes(self):
        with self.lock:
            return [p.get("scope") for g, p in self.grants if g == "refresh_token"]

    # -- plumbing
    def _new(self, prefix):
        s = prefix + secrets.token_urlsafe(24)
        self._issued.append(s)
        return s

    def _reply(self, h, status, obj=None, headers=()):
        body = json.dumps(obj).encode() if obj is not None else b""
        h.send_response(status)
        if obj is not None:
            h.send_header("Content-Type", "application/json")
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Cache-Control", "no-store")
        h.end_headers()
        h.wfile.write(body)

    def _error(self, h, error, desc="", status=400):
        self._reply(h, status, {"error": error, "error_description": desc})

    def _handle(self, h, method):
        url = urllib.parse.urlsplit(h.path)
        if method == "POST":
            n = int(h.headers.get("Content-Length") or 0)
            raw = h.rfile.read(n).decode()
            params = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
        else:
            params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        route = {("GET", "/authorize"): self._authorize,
                 ("POST", "/token"): self._token,
                 ("POST", "/devicecode"): self._devicecode,
                 ("POST", "/introspect"): self._introspect}.get((method, url.path))
        if route is None:
            return self._reply(h, 404, {"error": "not_found"})
        with self.lock:
            route(h, params)

    def _client_ok(self, h, p):
        if p.get("client_id") != self.client_id:
            self._error(h, "invalid_client", "unknown client_id", 401)
            return False
        if self.client_secret is not None and p.get("client_secret") != self.client_secret:
            self._error(h, "invalid_client", "client_secret wrong or missing", 401)
            return False
        return True

    def _scope_ok(self, h, scope):
        if not self.single_resource or not scope:
            return True
        res = {_resource(s) for s in scope.split() if s not in OIDC}
        if len(res) > 1:
            self._error(h, "invalid_scope",
                        "AADSTS28000: scopes of more than one resource: %s" % " ".join(sorted(res)))
            return False
        return True

    def _issue(self, h, user, scope, client_id, refresh=True):
        at = self._new("at-")
        self.access[at] = {"user": user, "scope": scope,
                           "expires": time.time() + self.access_ttl}
        out = {"token_type": "Bearer", "access_token": at, "expires_in": self.access_ttl,
               "scope": scope}
        if refresh:
            rt = self._new("rt-")
            self.refresh[rt] = {"user": user, "scope": scope, "client_id": client_id,
                                "valid": True}
            out["refresh_token"] = rt
        self._reply(h, 200, out)

    # -- endpoints
    def _authorize(self, h, p):
        self.authorize_requests.append(dict(p))
        redirect = p.get("redirect_uri", "")
        if p.get("client_id") != self.client_id:
            return self._reply(h, 400, {"error": "unauthorized_client"})
        if not redirect.startswith("http://127.0.0.1:"):
            return self._reply(h, 400, {"error": "invalid_request",
                                        "error_description": "redirect_uri not loopback"})
        q = {"state": p.get("state", "")}
        if p.get("response_type") != "code" or p.get("code_challenge_method") != "S256" \
                or not p.get("code_challenge"):
            q.update(error="invalid_request", error_description="PKCE S256 required")
        elif self.authorize_mode == "deny":
            q.update(error="access_denied", error_description="the user said no")
        else:
            code = self._new("code-")
            self.codes[code] = {"client_id": p["client_id"], "redirect_uri": redirect,
                                "challenge": p["code_challenge"], "scope": p.get("scope", ""),
                                "user": p.get("login_hint") or self.user, "used": False}
            q["code"] = code
        loc = redirect + ("&" if "?" in redirect else "?") + urllib.parse.urlencode(q)
        self._reply(h, 302, None, headers=[("Location", loc)])

    def _token(self, h, p):
        g = p.get("grant_type")
        self.grants.append((g, dict(p)))
        if not self._client_ok(h, p):
            return
        if g == "authorization_code":
            c = self.codes.get(p.get("code"))
            if not c or c["used"]:
                return self._error(h, "invalid_grant", "unknown or used code")
            c["used"] = True
            if p.get("redirect_uri") != c["redirect_uri"]:
                return self._error(h, "invalid_grant", "redirect_uri differs")
            v = p.get("code_verifier", "")
            want = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).decode().rstrip("=")
            if not v or want != c["challenge"]:
                return self._error(h, "invalid_grant", "PKCE verification failed")
            scope = p.get("scope") or c["scope"]
            if not self._scope_ok(h, scope):
                return
            return self._issue(h, c["user"], scope, p["client_id"])
        if g == "refresh_token":
            r = self.refresh.get(p.get("refresh_token"))
            if not r or not r["valid"]:
                return self._error(h, "invalid_grant",
                                   "AADSTS70008: The refresh token has expired or was revoked")
            scope = p.get("scope") or r["scope"]
            if not self._scope_ok(h, scope):
                return
            return self._issue(h, r["user"], scope, r["client_id"], refresh=self.rotate_refresh)
        if g == DEVICE_GRANT:
            d = self.devices.get(p.get("device_code"))
            self.device_polls.append(time.monotonic())
            if not d:
                return self._error(h, "invalid_grant", "unknown device_code")
            step = d["plan"].pop(0) if len(d["plan"]) > 1 else d["plan"][0]
            if step != "ok":
                return self._error(h, step)
            d["plan"] = ["expired_token"]          # a device code works once
            return self._issue(h, self.user, d["scope"], p["client_id"])
        self._error(h, "unsupported_grant_type")

    def _devicecode(self, h, p):
        if not self._client_ok(h, p):
            return
        scope = p.get("scope", "")
        for s in scope.split():
            if any(r in s for r in self.refuse_device_scopes):
                return self._error(h, "invalid_scope", "Invalid device flow scope: %s" % s)
        dc = self._new("dev-")
        self.devices[dc] = {"plan": list(self.device_plan), "scope": scope}
        self._reply(h, 200, {"device_code": dc, "user_code": "ABCD-EFGH",
                             "verification_uri": self.base + "/device",
                             "expires_in": 600, "interval": 1})

    def _introspect(self, h, p):
        tok = p.get("token", "")
        a = self.access.get(tok)
        if a is None:
            verdict = "unknown"
        elif a["expires"] < time.time():
            verdict = "expired"
        elif self.require_scope and self.require_scope not in a["scope"].split():
            verdict = "wrong-scope"
        else:
            verdict = "ok"
        self.introspections.append((tok, verdict))
        if verdict != "ok":
            return self._reply(h, 200, {"active": False})
        self._reply(h, 200, {"active": True, "username": a["user"], "scope": a["scope"],
                             "exp": int(a["expires"]), "client_id": self.client_id})


if __name__ == "__main__":
    f = FakeOAuth().start()
    print("fake OAuth at", f.base, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        f.stop()
