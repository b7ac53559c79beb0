"""A stateful fake of the Gmail API (v1) for the mailfs tests.

Built from /work/shared/reference/cloud-apis.md Part C (checklist C.12):
monotonic, gappy historyId bumped on every mutation, history records per
mutation type, 404 for a startHistoryId older than the retention,
messages.list with AND semantics over labelIds (omits "messages" when
empty, nextPageToken), format=raw|metadata|minimal|full, base64url raw,
the system label set (CHAT included), the batch endpoint (multipart/mixed,
at most 100 parts, "response-" Content-IDs), per-user quota units per
minute, injectable 429 (no Retry-After) / 403 userRateLimitExceeded / 5xx
/ dropped connections, and messages.delete needing the full scope.

Standard library only. Use from a test:

    g = FakeGmail().start()
    ids = g.seed([{"raw": b"...", "labels": ["INBOX", "UNREAD"]}])
    g.url                         # api_url for mailfs
    g.modify(id, add=[...], remove=[...])   # as another client
    g.expire_history()            # the next history.list of an old id: 404
    g.inject(status=429, count=2, path="/batch")
    g.stats()                     # requests, units, per-method counts
    g.stop()

It also runs standalone: /usr/bin/python3 tests/fakes/gmail.py PORT
"""

import base64
import email.utils
import http.server
import json
import random
import re
import socket
import sys
import threading
import time
import urllib.parse

UNITS = {
    "getProfile": 1, "labels.list": 1, "labels.get": 1, "labels.create": 5,
    "labels.update": 5, "labels.patch": 5, "labels.delete": 5,
    "messages.list": 5, "messages.get": 5, "messages.modify": 5,
    "messages.trash": 5, "messages.untrash": 5, "messages.delete": 10,
    "messages.insert": 25, "messages.import": 25, "messages.batchModify": 50,
    "messages.batchDelete": 50, "history.list": 2, "batch": 0,
}

SYSTEM_LABELS = ["INBOX", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT",
                 "SENT", "DRAFT", "CATEGORY_PERSONAL", "CATEGORY_SOCIAL",
                 "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES", "CATEGORY_FORUMS",
                 "CHAT"]


class ApiError(Exception):
    def __init__(self, code, message, reason, domain="global", headers=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.headers = headers or {}

    def body(self):
        return {"error": {"code": self.code, "message": self.message,
                          "errors": [{"message": self.message, "domain": self.domain,
                                      "reason": self.reason}]}}


def b64url(data):
    return base64.urlsafe_b64encode(data).decode("ascii")


class Message:
    def __init__(self, mid, raw, labels, internal_ms):
        self.id = mid
        self.thread = mid
        self.raw = raw
        self.labels = list(dict.fromkeys(labels))
        self.internal_ms = internal_ms
        self.history_id = 0

    def header(self, name):
        head = self.raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        text = head.decode("utf-8", "replace").replace("\r\n", "\n")
        text = re.sub(r"\n[ \t]+", " ", text)
        for line in text.split("\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                if k.strip().lower() == name.lower():
                    return v.strip()
        return None

    def resource(self, fmt, meta_headers=()):
        r = {"id": self.id, "threadId": self.thread}
        if fmt == "minimal" or fmt in ("metadata", "full", "raw"):
            r.update({"labelIds": list(self.labels), "historyId": str(self.history_id),
                      "internalDate": str(self.internal_ms),
                      # An estimate, as Gmail's: never the exact size.
                      "sizeEstimate": len(self.raw) + 37,
                      "snippet": ""})
        if fmt == "raw":
            r["raw"] = b64url(self.raw)
        elif fmt in ("metadata", "full"):
            hdrs = []
            for name in (meta_headers or ("Subject", "From", "Message-ID", "Date")):
                v = self.header(name)
                if v is not None:
                    hdrs.append({"name": name, "value": v})
            r["payload"] = {"mimeType": "message/rfc822", "headers": hdrs}
        return r


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.messages = {}          # id -> Message (insertion order)
        self.labels = {}            # id -> {"id","name","type"}
        for lid in SYSTEM_LABELS:
            self.labels[lid] = {"id": lid, "name": lid, "type": "system"}
        self.next_label = 1
        self.next_msg = 0x18d1e2f3a4b50000 + random.randrange(1 << 16)
        self.history_id = 1000 + random.randrange(1000)
        self.history = []           # (id, record)
        self.min_history = 0        # startHistoryId below this: 404
        self.requests = 0           # outer HTTP requests (not /_control)
        self.units = 0
        self.calls = {}             # method name -> count (inner calls too)
        self.batch_sizes = []
        self.faults = []            # dicts: status/drop/body/path/count/inner
        self.quota_per_minute = 15000
        self.quota_window = []      # (time, units)
        self.full_scope = True
        self.email = "alice@gmail.com"
        self.first_request = None   # monotonic times, since reset_stats
        self.last_request = None

    # -- history
    def bump(self):
        self.history_id += random.randint(1, 3)    # gappy, monotonic
        return self.history_id

    def record(self, kind, msg, label_ids=None):
        hid = self.bump()
        msg.history_id = hid
        ref = {"id": msg.id, "threadId": msg.thread, "labelIds": list(msg.labels)}
        rec = {"id": str(hid), "messages": [{"id": msg.id, "threadId": msg.thread}]}
        if kind == "messagesAdded":
            rec[kind] = [{"message": ref}]
        elif kind == "messagesDeleted":
            rec[kind] = [{"message": {"id": msg.id, "threadId": msg.thread}}]
        else:
            rec[kind] = [{"message": ref, "labelIds": list(label_ids)}]
        # The labels concerned, for the labelId filter of history.list.
        self.history.append((hid, rec, set(msg.labels) | set(label_ids or ())))

    # -- mutations
    def add_message(self, raw, labels, internal_ms=None):
        self.next_msg += random.randint(1, 50)
        mid = "%016x" % self.next_msg
        if internal_ms is None:
            d = None
            try:
                d = email.utils.parsedate_to_datetime(
                    Message(mid, raw, [], 0).header("Date") or "")
            except (TypeError, ValueError):
                d = None
            internal_ms = int(d.timestamp() * 1000) if d else int(time.time() * 1000)
        m = Message(mid, raw, labels, internal_ms)
        self.messages[mid] = m
        self.record("messagesAdded", m)
        return m

    def modify(self, m, add=(), remove=()):
        add = [x for x in add if x not in m.labels]
        remove = [x for x in remove if x in m.labels]
        for lid in list(add) + list(remove):
            if lid not in self.labels:
                raise ApiError(400, "Invalid label: %s" % lid, "invalidArgument")
        if remove:
            m.labels = [x for x in m.labels if x not in remove]
            self.record("labelsRemoved", m, remove)
        if add:
            m.labels = m.labels + add
            self.record("labelsAdded", m, add)

    def delete(self, m):
        del self.messages[m.id]
        self.record("messagesDeleted", m)

    # -- quota
    def charge(self, method):
        units = UNITS.get(method, 5)
        now = time.monotonic()
        self.quota_window = [(t, u) for (t, u) in self.quota_window if now - t < 60]
        used = sum(u for _, u in self.quota_window)
        self.calls[method] = self.calls.get(method, 0) + 1
        if used + units > self.quota_per_minute:
            raise ApiError(403, "User Rate Limit Exceeded", "userRateLimitExceeded",
                           "usageLimits")
        self.quota_window.append((now, units))
        self.units += units

    def take_fault(self, path, inner, method=None):
        for f in self.faults:
            if f["count"] <= 0:
                continue
            if f.get("inner", False) != inner:
                continue
            if f.get("path") and f["path"] not in path:
                continue
            if f.get("method") and method and f["method"] != method:
                continue
            f["count"] -= 1
            return f
        return None


def fault_error(f):
    st = f.get("status", 500)
    if f.get("body") is not None:
        return st, f["body"]
    if st == 429:
        e = ApiError(429, "Too many concurrent requests for user.", "rateLimitExceeded")
    elif st == 403:
        e = ApiError(403, "User Rate Limit Exceeded", "userRateLimitExceeded", "usageLimits")
    elif st == 404:
        e = ApiError(404, "Requested entity was not found.", "notFound")
    else:
        e = ApiError(st, "Backend Error", "backendError")
    return st, e.body()


class Api:
    """The API proper: (method, path, query, headers, body) -> response."""

    def __init__(self, state):
        self.s = state

    def handle(self, method, target, headers, body, inner=False):
        u = urllib.parse.urlsplit(target)
        path = u.path
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        s = self.s
        with s.lock:
            f = s.take_fault(path, inner, method)
        if f and not f.get("after"):
            if f.get("drop"):
                return "drop"
            st, b = fault_error(f)
            return st, {"Content-Type": "application/json"}, json.dumps(b).encode()
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or len(auth) <= 7:
            e = ApiError(401, "Invalid Credentials", "authError")
            return 401, {"Content-Type": "application/json"}, json.dumps(e.body()).encode()
        try:
            with s.lock:
                st, payload = self.route(method, path, q, headers, body)
        except ApiError as e:
            h = {"Content-Type": "application/json"}
            h.update(e.headers)
            return e.code, h, json.dumps(e.body()).encode()
        if f:
            # done, but the answer is lost: half sent, or none at all
            return "drop" if f.get("silent") else "cut"
        if payload is None:
            return st, {}, b""
        return st, {"Content-Type": "application/json; charset=UTF-8"}, \
            json.dumps(payload).encode()

    def route(self, method, path, q, headers, body):
        s = self.s
        m = re.match(r"^/(upload/)?gmail/v1/users/([^/]+)(/.*)?$", path)
        if not m:
            raise ApiError(404, "Not Found", "notFound")
        upload = bool(m.group(1))
        user = urllib.parse.unquote(m.group(2))
        if user not in ("me", s.email):
            raise ApiError(403, "Delegation denied", "forbidden")
        rest = m.group(3) or ""
        if upload:
            if method == "POST" and rest in ("/messages", "/messages/import"):
                s.charge("messages.insert" if rest == "/messages" else "messages.import")
                return self.insert(q, headers, body)
            raise ApiError(404, "Not Found", "notFound")
        if rest == "/profile" and method == "GET":
            s.charge("getProfile")
            return 200, {"emailAddress": s.email, "messagesTotal": len(s.messages),
                         "threadsTotal": len(s.messages), "historyId": str(s.history_id)}
        if rest == "/labels":
            if method == "GET":
                s.charge("labels.list")
                return 200, {"labels": [dict(v, messageListVisibility="show",
                                             labelListVisibility="labelShow")
                                        for v in s.labels.values()]}
            if method == "POST":
                s.charge("labels.create")
                req = json.loads(body or b"{}")
                name = req.get("name", "")
                if not name or name.upper() in SYSTEM_LABELS:
                    raise ApiError(400, "Invalid label name", "invalidArgument")
                if any(v["name"] == name for v in s.labels.values()):
                    raise ApiError(409, "Label name exists or conflicts", "failedPrecondition")
                lid = "Label_%d" % s.next_label
                s.next_label += 1
                s.labels[lid] = {"id": lid, "name": name, "type": "user"}
                return 200, s.labels[lid]
        lm = re.match(r"^/labels/([^/]+)$", rest)
        if lm:
            lid = urllib.parse.unquote(lm.group(1))
            lab = s.labels.get(lid)
            if not lab:
                s.charge("labels.get")
                raise ApiError(404, "Requested entity was not found.", "notFound")
            if method == "GET":
                s.charge("labels.get")
                return 200, lab
            if lab["type"] == "system":
                raise ApiError(400, "Invalid label", "invalidArgument")
            if method in ("PATCH", "PUT"):
                s.charge("labels.patch")
                req = json.loads(body or b"{}")
                if "name" in req:
                    if any(v["name"] == req["name"] and v["id"] != lid
                           for v in s.labels.values()):
                        raise ApiError(409, "Label name exists or conflicts",
                                       "failedPrecondition")
                    lab["name"] = req["name"]
                return 200, lab
            if method == "DELETE":
                s.charge("labels.delete")
                del s.labels[lid]
                for msg in s.messages.values():
                    if lid in msg.labels:
                        s.modify(msg, remove=[lid])
                return 204, None
        if rest == "/messages" and method == "GET":
            s.charge("messages.list")
            return 200, self.list(q)
        if rest == "/messages" and method == "POST":
            s.charge("messages.insert")
            req = json.loads(body or b"{}")
            raw = base64.urlsafe_b64decode(req["raw"] + "=" * (-len(req["raw"]) % 4))
            msg = s.add_message(raw, req.get("labelIds", []))
            return 200, {"id": msg.id, "threadId": msg.thread, "labelIds": msg.labels}
        if rest == "/messages/batchModify" and method == "POST":
            s.charge("messages.batchModify")
            req = json.loads(body or b"{}")
            ids = req.get("ids", [])
            if len(ids) > 1000:
                raise ApiError(400, "Too many ids", "invalidArgument")
            for mid in ids:
                msg = s.messages.get(mid)
                if msg:
                    s.modify(msg, req.get("addLabelIds", []), req.get("removeLabelIds", []))
            return 204, None
        mm = re.match(r"^/messages/([0-9a-f]+)(/modify|/trash|/untrash)?$", rest)
        if mm:
            msg = s.messages.get(mm.group(1))
            op = mm.group(2)
            name = {"/modify": "messages.modify", "/trash": "messages.trash",
                    "/untrash": "messages.untrash"}.get(op)
            if not name:
                name = "messages.delete" if method == "DELETE" else "messages.get"
            s.charge(name)
            if not msg:
                raise ApiError(404, "Requested entity was not found.", "notFound")
            if op is None and method == "GET":
                fmt = q.get("format", ["full"])[0]
                if fmt == "raw":
                    s.calls["messages.get(raw)"] = s.calls.get("messages.get(raw)", 0) + 1
                return 200, msg.resource(fmt, q.get("metadataHeaders", []))
            if op is None and method == "DELETE":
                if not s.full_scope:
                    raise ApiError(403, "Insufficient Permission", "insufficientPermissions")
                s.delete(msg)
                return 204, None
            if method != "POST":
                raise ApiError(405, "Method not allowed", "badRequest")
            if op == "/modify":
                req = json.loads(body or b"{}")
                s.modify(msg, req.get("addLabelIds", []), req.get("removeLabelIds", []))
            elif op == "/trash":
                s.modify(msg, add=["TRASH"], remove=["SPAM"])
            else:
                s.modify(msg, remove=["TRASH"])
            return 200, msg.resource("minimal")
        if rest == "/history" and method == "GET":
            s.charge("history.list")
            return 200, self.history(q)
        raise ApiError(404, "Not Found", "notFound")

    def list(self, q):
        s = self.s
        want = q.get("labelIds", [])
        spamtrash = q.get("includeSpamTrash", ["false"])[0] == "true"
        size = min(int(q.get("maxResults", ["100"])[0] or 100), 500)
        ids = []
        for msg in reversed(list(s.messages.values())):       # newest first
            if not all(lid in msg.labels for lid in want):
                continue
            if not spamtrash and ("TRASH" in msg.labels or "SPAM" in msg.labels) \
                    and "TRASH" not in want and "SPAM" not in want:
                continue
            ids.append(msg)
        start = int(q.get("pageToken", ["0"])[0] or 0)
        page = ids[start:start + size]
        r = {"resultSizeEstimate": len(ids)}
        if page:
            r["messages"] = [{"id": x.id, "threadId": x.thread} for x in page]
        if start + size < len(ids):
            r["nextPageToken"] = str(start + size)
        return r

    def history(self, q):
        s = self.s
        try:
            start = int(q["startHistoryId"][0])
        except (KeyError, ValueError):
            raise ApiError(400, "Missing/invalid parameter: startHistoryId", "invalidArgument")
        if start < s.min_history:
            raise ApiError(404, "Requested entity was not found.", "notFound")
        label = q.get("labelId", [None])[0]
        types = set(q.get("historyTypes", [])) or {
            "messageAdded", "messageDeleted", "labelAdded", "labelRemoved"}
        kinds = {"messageAdded": "messagesAdded", "messageDeleted": "messagesDeleted",
                 "labelAdded": "labelsAdded", "labelRemoved": "labelsRemoved"}
        keep = {kinds[t] for t in types if t in kinds}
        size = min(int(q.get("maxResults", ["100"])[0] or 100), 500)
        recs = []
        for hid, rec, labels in s.history:
            if hid <= start:
                continue
            if label and label not in labels:
                continue
            if not any(k in rec for k in keep):
                continue
            recs.append(rec)
        off = int(q.get("pageToken", ["0"])[0] or 0)
        page = recs[off:off + size]
        r = {"historyId": str(s.history_id)}
        if page:
            r["history"] = page
        if off + size < len(recs):
            r["nextPageToken"] = str(off + size)
        return r

    def insert(self, q, headers, body):
        s = self.s
        ut = q.get("uploadType", [""])[0]
        ctype = headers.get("content-type", "")
        labels = []
        if ut == "media":
            raw = body
        elif ut == "multipart":
            m = re.search(r'boundary="?([^";]+)"?', ctype)
            if not m:
                raise ApiError(400, "Bad multipart", "badRequest")
            parts = split_multipart(body, m.group(1).encode())
            if len(parts) != 2:
                raise ApiError(400, "Expected 2 parts", "badRequest")
            meta = json.loads(parts[0][1] or b"{}")
            labels = meta.get("labelIds", [])
            raw = parts[1][1]
        else:
            raise ApiError(400, "Unsupported uploadType", "badRequest")
        for lid in labels:
            if lid not in s.labels:
                raise ApiError(400, "Invalid label: %s" % lid, "invalidArgument")
        ms = None
        if q.get("internalDateSource", ["receivedTime"])[0] != "dateHeader":
            ms = int(time.time() * 1000)
        msg = s.add_message(raw, labels, ms)
        return 200, {"id": msg.id, "threadId": msg.thread, "labelIds": msg.labels}


def split_multipart(body, boundary):
    """[(headers dict, body bytes)] of a multipart body."""
    out = []
    delim = b"--" + boundary
    chunks = body.split(delim)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        elif chunk.startswith(b"\n"):
            chunk = chunk[1:]
        if chunk.endswith(b"\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith(b"\n"):
            chunk = chunk[:-1]
        sep = chunk.find(b"\r\n\r\n")
        sl = 4
        if sep < 0:
            sep = chunk.find(b"\n\n")
            sl = 2
        if sep < 0:
            head, data = chunk, b""
        else:
            head, data = chunk[:sep], chunk[sep + sl:]
        hdrs = {}
        for line in head.decode("latin-1").splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        out.append((hdrs, data))
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle
        # and delayed ACKs add 40 ms to every request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self):
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True

    def do_any(self):
        body = self._body()
        server = self.server
        if self.path.startswith("/_control/"):
            return self.control(body)
        hdrs = {k.lower(): v for k, v in self.headers.items()}
        with server.state.lock:
            server.state.requests += 1
            now = time.monotonic()
            if server.state.first_request is None:
                server.state.first_request = now
            server.state.last_request = now
        if self.path.split("?")[0] == "/batch/gmail/v1":
            r = self.batch(hdrs, body)
        else:
            r = server.api.handle(self.command, self.path, hdrs, body)
        if r == "drop":
            return self._drop()
        if r == "cut":
            # Half an answer, then the connection goes: the client saw a
            # response start (so it cannot resend it on its own) and
            # never learns the result.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"id":')
            self.wfile.flush()
            return self._drop()
        self._send(*r)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_any

    def batch(self, hdrs, body):
        s = self.server.state
        with s.lock:
            f = s.take_fault("/batch/gmail/v1", False, "POST")
        if f:
            if f.get("drop"):
                return "drop"
            st, b = fault_error(f)
            return st, {"Content-Type": "application/json"}, json.dumps(b).encode()
        m = re.search(r'boundary="?([^";]+)"?', hdrs.get("content-type", ""))
        if not m:
            e = ApiError(400, "Missing boundary", "badRequest")
            return 400, {"Content-Type": "application/json"}, json.dumps(e.body()).encode()
        parts = split_multipart(body, m.group(1).encode())
        if len(parts) > 100:
            e = ApiError(400, "Too many requests in a batch (max 100)", "badRequest")
            return 400, {"Content-Type": "application/json"}, json.dumps(e.body()).encode()
        with s.lock:
            s.batch_sizes.append(len(parts))
        outer_auth = hdrs.get("authorization", "")
        boundary = "batch_%08x" % random.randrange(1 << 32)
        out = []
        for ph, pdata in parts:
            cid = ph.get("content-id", "").strip()
            if cid.startswith("<") and cid.endswith(">"):
                cid = cid[1:-1]
            sep = pdata.find(b"\r\n\r\n")
            sl = 4
            if sep < 0:
                sep, sl = pdata.find(b"\n\n"), 2
            head = pdata if sep < 0 else pdata[:sep]
            ibody = b"" if sep < 0 else pdata[sep + sl:]
            lines = head.decode("latin-1").splitlines()
            reqline = lines[0].split() if lines else []
            ih = {"authorization": outer_auth}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    ih[k.strip().lower()] = v.strip()
            if len(reqline) < 2:
                st, rh, rb = 400, {"Content-Type": "application/json"}, \
                    json.dumps(ApiError(400, "Bad request", "badRequest").body()).encode()
            else:
                r = self.server.api.handle(reqline[0], reqline[1], ih, ibody, inner=True)
                if r == "drop":
                    r = (503, {"Content-Type": "application/json"},
                         json.dumps(ApiError(503, "Backend Error", "backendError").body()).encode())
                st, rh, rb = r
            reason = http.server.BaseHTTPRequestHandler.responses.get(st, ("",))[0]
            part = ["--" + boundary, "Content-Type: application/http",
                    "Content-ID: <response-%s>" % cid, "",
                    "HTTP/1.1 %d %s" % (st, reason)]
            for k, v in rh.items():
                part.append("%s: %s" % (k, v))
            part.append("Content-Length: %d" % len(rb))
            part.append("")
            out.append("\r\n".join(part).encode() + b"\r\n" + rb + b"\r\n")
        payload = b"".join(out) + ("--%s--\r\n" % boundary).encode()
        return 200, {"Content-Type": "multipart/mixed; boundary=" + boundary}, payload

    def control(self, body):
        s = self.server.state
        req = json.loads(body or b"{}")
        op = self.path[len("/_control/"):]
        with s.lock:
            out = self.server.fake.control(op, req)
        self._send(200, {"Content-Type": "application/json"}, json.dumps(out).encode())


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeGmail:
    user = "alice@gmail.com"
    password = None
    host = "127.0.0.1"

    def __init__(self, port=0):
        self.state = State()
        self.api = Api(self.state)
        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.state = self.state
        self.httpd.api = self.api
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the control API (also reachable over HTTP at /_control/OP)
    def control(self, op, req):
        s = self.state
        if op == "seed":
            out = []
            for m in req["messages"]:
                raw = m["raw"].encode("latin-1") if isinstance(m["raw"], str) else m["raw"]
                out.append(s.add_message(raw, m.get("labels", []), m.get("internal_ms")).id)
            return {"ids": out}
        if op == "modify":
            s.modify(s.messages[req["id"]], req.get("add", []), req.get("remove", []))
            return {}
        if op == "delete":
            s.delete(s.messages[req["id"]])
            return {}
        if op == "label":
            lid = "Label_%d" % s.next_label
            s.next_label += 1
            s.labels[lid] = {"id": lid, "name": req["name"], "type": "user"}
            s.bump()
            return {"id": lid}
        if op == "expire_history":
            s.min_history = s.history_id + 1
            s.bump()
            return {}
        if op == "inject":
            s.faults.append(dict(req))
            return {}
        if op == "quota":
            s.quota_per_minute = req["units_per_minute"]
            return {}
        if op == "stats":
            return {"requests": s.requests, "units": s.units, "calls": dict(s.calls),
                    "batch_sizes": list(s.batch_sizes), "history_id": s.history_id,
                    "faults_left": sum(f["count"] for f in s.faults),
                    "first_request": s.first_request, "last_request": s.last_request}
        if op == "reset_stats":
            s.requests = 0
            s.units = 0
            s.calls = {}
            s.batch_sizes = []
            s.first_request = s.last_request = None
            return {}
        raise KeyError(op)

    # -- conveniences for tests (same process)
    def seed(self, messages):
        with self.state.lock:
            return self.control("seed", {"messages": messages})["ids"]

    def modify(self, mid, add=(), remove=()):
        with self.state.lock:
            self.control("modify", {"id": mid, "add": list(add), "remove": list(remove)})

    def delete(self, mid):
        with self.state.lock:
            self.control("delete", {"id": mid})

    def add_label(self, name):
        with self.state.lock:
            return self.control("label", {"name": name})["id"]

    def expire_history(self):
        with self.state.lock:
            self.control("expire_history", {})

    def inject(self, status=None, count=1, path=None, drop=False, inner=False, body=None,
               method=None, after=False, silent=False):
        """after=True: carry the request out, then drop the connection after
        half an answer, or (silent=True) before any."""
        f = {"count": count, "inner": inner, "drop": drop, "after": after, "silent": silent}
        if method:
            f["method"] = method
        if status is not None:
            f["status"] = status
        if path:
            f["path"] = path
        if body is not None:
            f["body"] = body
        with self.state.lock:
            self.control("inject", f)

    def stats(self):
        with self.state.lock:
            return self.control("stats", {})

    def reset_stats(self):
        with self.state.lock:
            self.control("reset_stats", {})

    def labels_of(self, mid):
        with self.state.lock:
            m = self.state.messages.get(mid)
            return None if m is None else list(m.labels)

    def label_id(self, name):
        with self.state.lock:
            for v in self.state.labels.values():
                if v["name"] == name:
                    return v["id"]
        return None

    def find(self, pred):
        with self.state.lock:
            return [m.id for m in self.state.messages.values() if pred(m)]


if __name__ == "__main__":
    g = FakeGmail(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(g.url, flush=True)
    g.httpd.serve_forever()
