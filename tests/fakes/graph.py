#!/usr/bin/python3
"""A stateful fake of Microsoft Graph mail (v1.0) for the mailfs tests.

Written from /work/shared/reference/cloud-apis.md, Part A (checklist A.14).
Standard library only.  One mailbox ("/me"), served on 127.0.0.1:

    api      http://127.0.0.1:PORT/v1.0/...          what mailfs talks to
    control  http://127.0.0.1:PORT/_control/...      what the tests use

What it models (each item is something mailfs must cope with):
  - folders under msgfolderroot, childFolders (never recursive), paging by
    $top/$skip with @odata.nextLink (default page 10), well-known names
    wherever an id goes, search folders (@odata.type mailSearchFolder);
  - per-folder messages/delta: opaque $skiptoken/$deltatoken links, query
    options frozen in the token, page size only from Prefer:
    odata.maxpagesize (default 10, resent on every page or it drops back),
    @removed tombstones, 410 SyncStateNotFound for expired tokens, no
    $expand of extended properties on delta (400);
  - $value only under /me/messages/{id} (405 under mailFolders);
  - MIME create (text/plain base64) -> draft in Drafts; 400
    ErrorMimeContentInvalidBase64String; 400 UnableToDeserializePostBody on
    the folder path; PATCH of PidTagMessageFlags (Integer 0x0E07) clears
    isDraft when MSGFLAG_UNSENT (8) is cleared;
  - PATCH isRead / flag / singleValueExtendedProperties (string values,
    ids normalised), move (201, same id: every request here must ask for
    immutable ids), DELETE (to Deleted Items; from there, gone),
    permanentDelete;
  - $batch: at most 20, dependsOn with 424, per-item status/headers/body;
    an unchained batch runs up to 4 sub-requests at once and counts so;
  - the MailboxConcurrency limit: more than 4 requests in flight answer
    429 ApplicationThrottled (and are recorded as a violation);
  - fault injection: 429 with Retry-After, 503, 504, dropped connections
    (before or in the middle of a body), a 401 for the current token,
    expired delta tokens.

Every request must carry "Authorization: Bearer TOKEN" and Prefer:
IdType="ImmutableId"; delta pages must carry odata.maxpagesize.  Missing
ones are recorded in stats()["violations"].

Run: graph.py [--port N] [--token T] [--introspect URL]; prints "PORT <n>"
when listening. With --introspect, any bearer token that RFC 7662 endpoint
calls active is accepted too (OAuth tests).
"""

import base64
import email.utils
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_CONCURRENT = 4
BATCH_MAX = 20
MSGFLAG_READ = 1
MSGFLAG_UNSENT = 8

WELL_KNOWN = [
    # (well-known name, display name)
    ("inbox", "Inbox"),
    ("drafts", "Drafts"),
    ("sentitems", "Sent Items"),
    ("deleteditems", "Deleted Items"),
    ("junkemail", "Junk Email"),
    ("archive", "Archive"),
]


class GraphError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def norm_prop_id(pid):
    """'Integer 0x0E07' -> ('integer', 0xe07); None when not of that form."""
    m = re.match(r"^\s*(\w+)\s+0x([0-9a-fA-F]+)\s*$", pid)
    if not m:
        return None
    return (m.group(1).lower(), int(m.group(2), 16))


def prop_id_str(key):
    return "%s 0x%x" % (key[0].capitalize(), key[1])


def mime_message_id(mime):
    head = mime.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = re.search(rb"(?im)^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", head)
    if not m:
        return None
    return re.sub(rb"\s+", b" ", m.group(1)).strip().decode("utf-8", "replace")


class Store:
    """The mailbox.  Every method runs under self.lock."""

    def __init__(self):
        self.lock = threading.RLock()
        self.seq = 0
        self.next_id = 1
        self.folders = {}      # id -> dict
        self.wk = {}           # well-known name -> id
        self.messages = {}     # id -> dict
        self.log = []          # (seq, folder id, message id)
        self.tokens = {}       # token -> dict (delta rounds and links)
        self.token_epoch = 0
        root = self._new_folder(None, "Top of Information Store")
        self.wk["msgfolderroot"] = root
        for name, display in WELL_KNOWN:
            self.wk[name] = self._new_folder(root, display)
        # A search folder: listed, never synced.
        sf = self._new_folder(root, "Weekly digests")
        self.folders[sf]["search"] = True

    # -- ids
    def _id(self, prefix):
        self.next_id += 1
        raw = ("%s-%08d" % (prefix, self.next_id)).encode()
        return "AAMk" + base64.urlsafe_b64encode(raw).decode()

    def _new_folder(self, parent, name, hidden=False):
        fid = self._id("folder")
        self.folders[fid] = {"id": fid, "displayName": name, "parentFolderId": parent,
                             "isHidden": hidden, "search": False}
        return fid

    def resolve_folder(self, ref):
        if ref in self.folders:
            return ref
        if ref.lower() in self.wk:
            return self.wk[ref.lower()]
        raise GraphError(404, "ErrorItemNotFound",
                         "The specified object was not found in the store.")

    def children(self, fid):
        return sorted((f for f in self.folders.values() if f["parentFolderId"] == fid),
                      key=lambda f: f["id"])

    def folder_path(self, fid):
        """The display-name path as mailfs shows it (inbox = INBOX)."""
        parts = []
        while fid and fid != self.wk["msgfolderroot"]:
            f = self.folders[fid]
            parts.append("INBOX" if fid == self.wk["inbox"] else f["displayName"])
            fid = f["parentFolderId"]
        return "/".join(reversed(parts))

    def folder_by_path(self, path):
        fid = self.wk["msgfolderroot"]
        for comp in path.split("/"):
            if comp == "INBOX" and fid == self.wk["msgfolderroot"]:
                fid = self.wk["inbox"]
                continue
            for f in self.children(fid):
                if f["displayName"] == comp:
                    fid = f["id"]
                    break
            else:
                raise KeyError(path)
        return fid

    # -- changes
    def touch(self, fid, mid):
        self.seq += 1
        self.log.append((self.seq, fid, mid))

    def add_message(self, fid, mime, is_read=False, flag="notFlagged", verb=None,
                    received=None, draft=False):
        mid = self._id("msg")
        m = {"id": mid, "folder": fid, "mime": mime, "isRead": is_read,
             "flagStatus": flag, "isDraft": draft,
             "received": received if received is not None else time.time(),
             "internetMessageId": mime_message_id(mime), "props": {}}
        if verb:
            m["props"][("integer", 0x1081)] = str(verb)
        self.messages[mid] = m
        self.touch(fid, mid)
        return mid

    def message(self, mid):
        m = self.messages.get(mid)
        if not m:
            raise GraphError(404, "ErrorItemNotFound",
                             "The specified object was not found in the store.")
        return m

    def move(self, mid, fid):
        m = self.message(mid)
        if m["folder"] != fid:
            self.touch(m["folder"], mid)
            m["folder"] = fid
            self.touch(fid, mid)
        return m

    def delete(self, mid):
        m = self.message(mid)
        del self.messages[mid]
        self.touch(m["folder"], mid)

    def changed(self, mid):
        self.touch(self.message(mid)["folder"], mid)

    # -- representations
    def msg_json(self, m, select=None, expand_ids=None):
        size_est = len(m["mime"]) + 1200  # PidTagMessageSize: not the MIME size
        full = {
            "@odata.type": "#microsoft.graph.message",
            "@odata.etag": 'W/"%d"' % self.seq,
            "id": m["id"],
            "parentFolderId": m["folder"],
            "isRead": m["isRead"],
            "isDraft": m["isDraft"],
            "flag": {"flagStatus": m["flagStatus"]},
            "receivedDateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m["received"])),
            "internetMessageId": m["internetMessageId"],
            "subject": "",
        }
        if select:
            out = {k: v for k, v in full.items() if k in select or k in ("id", "@odata.type",
                                                                         "@odata.etag")}
        else:
            out = full
        if expand_ids is not None:
            props = []
            for key in expand_ids:
                if key == ("integer", 0xe08):
                    props.append({"id": prop_id_str(key), "value": str(size_est)})
                elif key in m["props"]:
                    props.append({"id": prop_id_str(key), "value": m["props"][key]})
            out["singleValueExtendedProperties"] = props
        return out

    def folder_json(self, f):
        out = {"id": f["id"], "displayName": f["displayName"],
               "parentFolderId": f["parentFolderId"],
               "childFolderCount": len(self.children(f["id"])),
               "unreadItemCount": sum(1 for m in self.messages.values()
                                      if m["folder"] == f["id"] and not m["isRead"]),
               "totalItemCount": sum(1 for m in self.messages.values()
                                     if m["folder"] == f["id"]),
               "isHidden": f["isHidden"]}
        if f["search"]:
            out["@odata.type"] = "#microsoft.graph.mailSearchFolder"
            out["filterQuery"] = "contains(subject, 'weekly digest')"
        return out


def parse_expand(expand):
    """$expand=singleValueExtendedProperties($filter=id eq '...' or ...)."""
    if not expand:
        return None
    if not expand.lower().startswith("singlevalueextendedproperties"):
        raise GraphError(400, "BadRequest", "Parsing OData Select and Expand failed")
    keys = []
    for pid in re.findall(r"'([^']+)'", expand):
        k = norm_prop_id(pid)
        if k is None:
            raise GraphError(400, "BadRequest", "invalid extended property id")
        keys.append(k)
    return keys


class Fake:
    def __init__(self, token="TOKEN", introspect=None):
        self.store = Store()
        self.token = token
        self.introspect = introspect    # RFC 7662 endpoint, or None
        self.bearers_seen = []
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.reset_stats()
        self.faults = []
        self.reject_token_once = False
        self.replays = 0   # delta rounds that repeat every change

    def token_ok(self, auth):
        """The fixed token, or (with --introspect) any token the
        authorization server says is active, as Graph asks Entra ID."""
        if not auth.startswith("Bearer "):
            return False
        tok = auth[7:]
        if tok == self.token:
            return True
        if not self.introspect:
            return False
        data = urllib.parse.urlencode({"token": tok}).encode()
        try:
            with urllib.request.urlopen(self.introspect, data=data, timeout=10) as r:
                ok = bool(json.loads(r.read()).get("active"))
        except (OSError, ValueError):
            return False
        if ok:
            with self.lock:
                self.bearers_seen.append(tok)
        return ok

    def reset_stats(self):
        with threading.Lock():
            self.stats = {"requests": 0, "by_route": {}, "violations": [], "throttled": 0,
                          "unauthorized": 0, "faults_fired": 0, "batch_sizes": [],
                          "max_inflight": 0, "delta_pages": 0, "page_sizes": [],
                          "log": []}
            self.max_inflight = 0

    def violation(self, what):
        with self.lock:
            if len(self.stats["violations"]) < 200:
                self.stats["violations"].append(what)

    def count(self, route):
        with self.lock:
            self.stats["requests"] += 1
            self.stats["by_route"][route] = self.stats["by_route"].get(route, 0) + 1

    def enter(self, n=1):
        with self.lock:
            if self.inflight + n > MAX_CONCURRENT:
                self.stats["throttled"] += 1
                self.stats["violations"].append("over the MailboxConcurrency limit (%d + %d)"
                                                % (self.inflight, n))
                return False
            self.inflight += n
            self.stats["max_inflight"] = max(self.stats["max_inflight"], self.inflight)
            return True

    def leave(self, n=1):
        with self.lock:
            self.inflight -= n

    def take_fault(self, method, path):
        with self.lock:
            for f in self.faults:
                if f["count"] <= 0:
                    continue
                if f.get("method") and f["method"] != method:
                    continue
                if f.get("path") and not re.search(f["path"], path):
                    continue
                f["count"] -= 1
                self.stats["faults_fired"] += 1
                return dict(f)
        return None


# --------------------------------------------------------------------------
# the API

class Api:
    """Routes one (method, path, query, headers, body) to a response."""

    def __init__(self, fake, base):
        self.fake = fake
        self.st = fake.store
        self.base = base  # http://host:port/v1.0

    def handle(self, method, path, query, headers, body):
        """Returns (status, headers dict, body bytes or JSON-able)."""
        prefer = ",".join(headers.get_all("Prefer", [])) if hasattr(headers, "get_all") \
            else headers.get("Prefer", "")
        if 'idtype="immutableid"' not in prefer.lower().replace(" ", ""):
            self.fake.violation("%s %s without Prefer: IdType=\"ImmutableId\"" % (method, path))
        path = re.sub(r"(?i)/mailfolders\('([^']*)'\)", r"/mailFolders/\1", path)
        path = re.sub(r"(?i)/mailfolders(/|$)", r"/mailFolders\1", path)
        with self.st.lock:
            return self.route(method, path, query, headers, body, prefer)

    def route(self, method, path, q, headers, body, prefer):
        p = path.split("/")
        if p[:2] != ["", "me"] and path != "/$batch":
            raise GraphError(404, "ResourceNotFound", "Resource could not be discovered.")
        if path == "/$batch":
            raise GraphError(400, "BadRequest", "nested batch")
        p = p[2:]
        st = self.st
        if p and p[0] == "mailFolders":
            if len(p) == 1:
                if method == "GET":
                    return self.list_folders(st.wk["msgfolderroot"], q)
                if method == "POST":
                    return self.create_folder(st.wk["msgfolderroot"], body)
            fid = st.resolve_folder(urllib.parse.unquote(p[1]))
            rest = p[2:]
            if not rest:
                if method == "GET":
                    return 200, {}, st.folder_json(st.folders[fid])
                if method == "PATCH":
                    return self.patch_folder(fid, body)
                if method == "DELETE":
                    return self.delete_folder(fid)
            if rest == ["childFolders"]:
                if method == "GET":
                    return self.list_folders(fid, q)
                if method == "POST":
                    return self.create_folder(fid, body)
            if rest == ["move"] and method == "POST":
                return self.move_folder(fid, body)
            if rest == ["messages", "delta"] and method == "GET":
                return self.delta(fid, q, prefer)
            if rest == ["messages"] and method == "GET":
                return self.list_messages(fid, q)
            if rest == ["messages"] and method == "POST":
                raise GraphError(400, "UnableToDeserializePostBody", "were unable to deserialize ")
            if len(rest) >= 3 and rest[0] == "messages" and rest[2] == "$value":
                raise GraphError(405, "ErrorInvalidRequest", "The OData request is not supported.")
        if p and p[0] == "messages":
            if len(p) == 1 and method == "POST":
                return self.create_message(headers, body)
            mid = urllib.parse.unquote(p[1])
            rest = p[2:]
            if not rest:
                if method == "GET":
                    m = st.message(mid)
                    sel = q.get("$select")
                    return 200, {}, st.msg_json(m, sel.split(",") if sel else None,
                                                parse_expand(q.get("$expand")))
                if method == "PATCH":
                    st_, h_, res = self.patch_message(mid, body)
                    if "return=minimal" in prefer.replace(" ", "").lower():
                        return 204, {}, None
                    return st_, h_, res
                if method == "DELETE":
                    m = st.message(mid)
                    if m["folder"] == st.wk["deleteditems"]:
                        st.delete(mid)
                    else:
                        st.move(mid, st.wk["deleteditems"])
                    return 204, {}, None
            if rest == ["$value"] and method == "GET":
                return 200, {"Content-Type": "text/plain"}, st.message(mid)["mime"]
            if rest == ["move"] and method == "POST":
                dest = self.json_body(body).get("destinationId")
                if not dest:
                    raise GraphError(400, "ErrorInvalidRequest", "destinationId missing")
                try:
                    fid = st.resolve_folder(dest)
                except GraphError:
                    raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
                st.message(mid)
                m = st.move(mid, fid)
                return 201, {}, st.msg_json(m)
            if rest == ["permanentDelete"] and method == "POST":
                st.delete(mid)
                return 204, {}, None
        raise GraphError(400, "BadRequest", "unsupported request %s %s" % (method, path))

    @staticmethod
    def json_body(body):
        try:
            v = json.loads(body or b"{}")
        except ValueError:
            raise GraphError(400, "UnableToDeserializePostBody", "were unable to deserialize ")
        if not isinstance(v, dict):
            raise GraphError(400, "UnableToDeserializePostBody", "were unable to deserialize ")
        return v

    def page(self, items, q, default, url):
        top = int(q.get("$top", default))
        skip = int(q.get("$skip", 0))
        out = {"value": items[skip:skip + top]}
        if skip + top < len(items):
            nq = dict(q)
            nq["$skip"] = str(skip + top)
            out["@odata.nextLink"] = url + "?" + urllib.parse.urlencode(nq)
        return out

    def list_folders(self, fid, q):
        st = self.st
        kids = [f for f in st.children(fid)
                if q.get("includeHiddenFolders") == "true" or not f["isHidden"]]
        items = [st.folder_json(f) for f in kids]
        url = self.base + ("/me/mailFolders" if fid == st.wk["msgfolderroot"]
                           else "/me/mailFolders/%s/childFolders" % fid)
        return 200, {}, self.page(items, q, 10, url)

    def create_folder(self, parent, body):
        name = self.json_body(body).get("displayName")
        if not name:
            raise GraphError(400, "ErrorInvalidRequest", "displayName missing")
        for f in self.st.children(parent):
            if f["displayName"].lower() == name.lower():
                raise GraphError(409, "ErrorFolderExists",
                                 "A folder with the specified name already exists.")
        fid = self.st._new_folder(parent, name)
        return 201, {}, self.st.folder_json(self.st.folders[fid])

    def patch_folder(self, fid, body):
        name = self.json_body(body).get("displayName")
        f = self.st.folders[fid]
        if name:
            for o in self.st.children(f["parentFolderId"]):
                if o["id"] != fid and o["displayName"].lower() == name.lower():
                    raise GraphError(409, "ErrorFolderExists",
                                     "A folder with the specified name already exists.")
            f["displayName"] = name
        return 200, {}, self.st.folder_json(f)

    def move_folder(self, fid, body):
        dest = self.st.resolve_folder(self.json_body(body).get("destinationId", ""))
        self.st.folders[fid]["parentFolderId"] = dest
        return 201, {}, self.st.folder_json(self.st.folders[fid])

    def delete_folder(self, fid):
        st = self.st
        if fid in st.wk.values():
            raise GraphError(403, "ErrorDeleteDistinguishedFolder",
                             "Distinguished folders cannot be deleted.")
        todo = [fid]
        while todo:
            x = todo.pop()
            todo += [f["id"] for f in st.children(x)]
            for mid in [m["id"] for m in st.messages.values() if m["folder"] == x]:
                st.move(mid, st.wk["deleteditems"])
            if x == fid:
                st.folders[x]["parentFolderId"] = st.wk["deleteditems"]
        return 204, {}, None

    def list_messages(self, fid, q):
        st = self.st
        msgs = sorted((m for m in st.messages.values() if m["folder"] == fid),
                      key=lambda m: (-m["received"], m["id"]))
        flt = q.get("$filter")
        if flt:
            fm = re.match(r"^internetMessageId eq '((?:[^']|'')*)'$", flt)
            if not fm:
                raise GraphError(400, "ErrorInvalidUrlQueryFilter", "unsupported filter")
            want = fm.group(1).replace("''", "'")
            msgs = [m for m in msgs if m["internetMessageId"] == want]
        sel = q.get("$select")
        exp = parse_expand(q.get("$expand"))
        top = int(q.get("$top", 10))
        if top < 1 or top > 1000:
            raise GraphError(400, "ErrorInvalidRequest", "$top must be 1..1000")
        items = [st.msg_json(m, sel.split(",") if sel else None, exp) for m in msgs]
        return 200, {}, self.page(items, q, 10, self.base + "/me/mailFolders/%s/messages" % fid)

    # -- delta
    def delta(self, fid, q, prefer):
        st = self.st
        fake = self.fake
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        if not m:
            fake.violation("delta page without Prefer: odata.maxpagesize")
        size = int(m.group(1)) if m else 10
        with fake.lock:
            fake.stats["delta_pages"] += 1
            fake.stats["page_sizes"].append(size)
        if "$skiptoken" in q:
            tok = st.tokens.get(q["$skiptoken"])
            if not tok or tok["epoch"] != st.token_epoch or tok["folder"] != fid:
                raise GraphError(410, "SyncStateNotFound",
                                 "The sync state generation is not found; generation=149;"
                                 "[highest=157]")
            return self.delta_page(fid, q["$skiptoken"], tok, size)
        if "$deltatoken" in q:
            tok = st.tokens.get(q["$deltatoken"])
            if not tok or tok["epoch"] != st.token_epoch or tok["folder"] != fid:
                raise GraphError(410, "SyncStateNotFound",
                                 "The sync state generation is not found; generation=149;"
                                 "[highest=157]")
            select = tok["select"]
            ids = []
            seen = set()
            for seq, f, mid in st.log:
                if seq > tok["seq"] and f == fid and mid not in seen:
                    seen.add(mid)
                    ids.append(mid)
        else:
            if "$expand" in q:
                raise GraphError(400, "ErrorInvalidRequest",
                                 "The query option $expand is not supported on delta "
                                 "for extended properties.")
            if "$top" in q:
                raise GraphError(400, "ErrorInvalidRequest", "$top caps the round; not supported")
            select = q.get("$select")
            ids = [m["id"] for m in sorted(st.messages.values(),
                                           key=lambda m: (-m["received"], m["id"]))
                   if m["folder"] == fid]
        items = []
        for mid in ids:
            m = st.messages.get(mid)
            if m and m["folder"] == fid:
                items.append(st.msg_json(m, select.split(",") if select else None))
            else:
                items.append({"@odata.type": "#microsoft.graph.message", "id": mid,
                              "@removed": {"reason": "deleted"}})
        if fake.replays > 0 and items:
            # The same changes twice in one round (delta-query-overview:
            # replays happen; clients merge idempotently).
            fake.replays -= 1
            items = items + [dict(i) for i in items]
        round_tok = st._id("skip")
        st.tokens[round_tok] = {"folder": fid, "epoch": st.token_epoch, "items": items,
                                "offset": 0, "seq": st.seq, "select": select}
        return self.delta_page(fid, round_tok, st.tokens[round_tok], size)

    def delta_page(self, fid, tokname, tok, size):
        st = self.st
        off = tok["offset"]
        chunk = tok["items"][off:off + size]
        out = {"@odata.context": self.base + "/$metadata#Collection(message)", "value": chunk}
        link = self.base + "/me/mailfolders('%s')/messages/delta" % fid
        if off + size < len(tok["items"]):
            nxt = st._id("skip")
            st.tokens[nxt] = dict(tok, offset=off + size)
            out["@odata.nextLink"] = link + "?$skiptoken=" + nxt
        else:
            dt = st._id("delta")
            st.tokens[dt] = {"folder": fid, "epoch": tok["epoch"], "seq": tok["seq"],
                             "select": tok["select"]}
            out["@odata.deltaLink"] = link + "?$deltatoken=" + dt
        return 200, {}, out

    # -- messages
    def create_message(self, headers, body):
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        st = self.st
        if ctype == "text/plain":
            try:
                mime = base64.b64decode(body or b"", validate=True)
            except ValueError:
                raise GraphError(400, "ErrorMimeContentInvalidBase64String",
                                 "Invalid base64 string for MIME content.")
            if not mime:
                raise GraphError(400, "ErrorMimeContentInvalidBase64String",
                                 "Invalid base64 string for MIME content.")
            mid = st.add_message(st.wk["drafts"], mime, is_read=True, draft=True)
            m = st.messages[mid]
            m["props"][("integer", 0xe07)] = str(MSGFLAG_READ | MSGFLAG_UNSENT)
            return 201, {}, st.msg_json(m)
        raise GraphError(400, "UnableToDeserializePostBody", "were unable to deserialize ")

    def patch_message(self, mid, body):
        st = self.st
        m = st.message(mid)
        v = self.json_body(body)
        for k in v:
            if k not in ("isRead", "flag", "singleValueExtendedProperties", "categories"):
                raise GraphError(400, "ErrorInvalidPropertyRequest",
                                 "The property '%s' is read-only or unknown" % k)
        if "isRead" in v:
            if not isinstance(v["isRead"], bool):
                raise GraphError(400, "BadRequest", "isRead must be a boolean")
            m["isRead"] = v["isRead"]
        if "flag" in v:
            fs = v["flag"].get("flagStatus")
            if fs not in ("notFlagged", "flagged", "complete"):
                raise GraphError(400, "BadRequest", "bad flagStatus")
            m["flagStatus"] = fs
        for p in v.get("singleValueExtendedProperties", []):
            key = norm_prop_id(p.get("id", ""))
            if key is None or not isinstance(p.get("value"), str):
                raise GraphError(400, "BadRequest", "extended property values are strings")
            if key == ("integer", 0xe08):
                raise GraphError(400, "ErrorItemSavePropertyError",
                                 "Item save operation did not succeed.")
            if key == ("integer", 0xe07):
                flags = int(p["value"])
                if m["isDraft"] and not (flags & MSGFLAG_UNSENT):
                    m["isDraft"] = False
                m["isRead"] = bool(flags & MSGFLAG_READ) if "isRead" not in v else m["isRead"]
            m["props"][key] = p["value"]
        st.changed(mid)
        return 200, {}, st.msg_json(m)


# --------------------------------------------------------------------------
# HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "FakeGraph/1.0"

    def log_message(self, fmt, *args):  # quiet
        pass

    def send(self, status, headers, body):
        route = getattr(self, "_route", None)
        if route:
            fake = self.server.fake
            with fake.lock:
                if len(fake.stats["log"]) < 5000:
                    fake.stats["log"].append([self._t0, time.time(), route, status])
        if body is None:
            data = b""
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        else:
            data = json.dumps(body).encode()
            headers = dict(headers)
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, method):
        fake = self.server.fake
        self._route = None
        url = urllib.parse.urlsplit(self.path)
        body = self.body()
        if url.path.startswith("/_control/"):
            try:
                res = control(fake, method, url.path[len("/_control/"):],
                              json.loads(body or b"{}"))
                self.send(200, {}, res)
            except Exception as e:  # noqa: BLE001
                self.send(400, {}, {"error": repr(e)})
            return
        if not url.path.startswith("/v1.0/"):
            self.send(404, {}, {"error": {"code": "ResourceNotFound",
                                          "message": "Resource could not be discovered."}})
            return
        path = url.path[len("/v1.0"):]
        q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        route = re.sub(r"AAMk[A-Za-z0-9_=-]+|\('[^']*'\)", "{id}", path)
        fake.count("%s %s" % (method, route))
        self._route = "%s %s" % (method, route)
        self._t0 = time.time()
        base = "http://%s/v1.0" % self.headers.get("Host", "127.0.0.1")

        auth = self.headers.get("Authorization", "")
        if not fake.token_ok(auth) or fake.reject_token_once:
            fake.reject_token_once = False
            with fake.lock:
                fake.stats["unauthorized"] += 1
            self.send(401, {"WWW-Authenticate": 'Bearer realm=""'},
                      {"error": {"code": "InvalidAuthenticationToken",
                                 "message": "Access token has expired or is not yet valid."}})
            return
        nslots = 1
        batch = None
        if path == "/$batch" and method == "POST":
            try:
                batch = json.loads(body)["requests"]
            except (ValueError, KeyError, TypeError):
                self.send(400, {}, {"error": {"code": "BadRequest", "message": "Invalid batch"}})
                return
            chained = all(r.get("dependsOn") for r in batch[1:])
            nslots = 1 if chained else min(len(batch), MAX_CONCURRENT)
        if not fake.enter(nslots):
            self.send(429, {"Retry-After": "1"},
                      {"error": {"code": "ApplicationThrottled",
                                 "message": "Application is over its MailboxConcurrency limit."}})
            return
        try:
            fault = fake.take_fault(method, path)
            if fault:
                if fault.get("delay"):
                    time.sleep(fault["delay"])
                kind = fault["kind"]
                if kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind == "cut":
                    # Headers and half of the body, then the connection goes.
                    status, headers, res = self.run_api(method, path, q, body, base)
                    data = res if isinstance(res, bytes) else json.dumps(res).encode()
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind == "lost":
                    # Carried out, then the connection goes before any
                    # answer (a client must not resend it on its own).
                    self.run_api(method, path, q, body, base)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind == "delay":
                    pass
                elif kind == "reset":
                    # A synchronization reset: 410 + Location with an
                    # empty $deltatoken (cloud-apis.md A.2).
                    loc = base + path + "?$deltatoken="
                    self.send(410, {"Location": loc},
                              {"error": {"code": "resyncRequired",
                                         "message": "Resync required. Replace any local "
                                                    "cached copy with the new data."}})
                    return
                elif kind == "expire_token":
                    fake.store.token_epoch += 1
                else:
                    status = int(kind)
                    hdrs = {}
                    if fault.get("retry_after") is not None:
                        hdrs["Retry-After"] = str(fault["retry_after"])
                    code = {429: "TooManyRequests", 503: "serviceNotAvailable",
                            504: "GatewayTimeout"}.get(status, "generalException")
                    self.send(status, hdrs, {"error": {"code": code,
                                                       "message": "Please retry again later."}})
                    return
            if batch is not None:
                self.send(200, {}, {"responses": self.run_batch(batch, base)})
                with fake.lock:
                    fake.stats["batch_sizes"].append(len(batch))
                return
            status, headers, res = self.run_api(method, path, q, body, base)
            self.send(status, headers, res)
        finally:
            fake.leave(nslots)

    def run_api(self, method, path, q, body, base, headers=None):
        api = Api(self.server.fake, base)
        try:
            return api.handle(method, path, q, headers or self.headers, body)
        except GraphError as e:
            return e.status, e.headers, {"error": {"code": e.code, "message": e.message,
                                                   "innerError": {"request-id": "fake"}}}

    def run_batch(self, reqs, base):
        if len(reqs) > BATCH_MAX:
            return [{"id": r.get("id"), "status": 400,
                     "body": {"error": {"code": "BadRequest",
                                        "message": "more than 20 requests"}}} for r in reqs]
        out = []
        status_of = {}
        for r in reqs:
            rid = r.get("id")
            if any(status_of.get(d, 424) >= 400 for d in r.get("dependsOn", [])):
                status_of[rid] = 424
                out.append({"id": rid, "status": 424,
                            "body": {"error": {"code": "FailedDependency",
                                               "message": "a dependency failed"}}})
                continue
            url = urllib.parse.urlsplit(r["url"])
            q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            hdrs = HeaderDict(r.get("headers") or {})
            # The batch's own Prefer applies to its requests.
            hdrs.add("Prefer", ",".join(self.headers.get_all("Prefer", [])))
            body = r.get("body")
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            elif isinstance(body, str):
                body = base64.b64decode(body)
            fault = self.server.fake.take_fault(r["method"], url.path)
            if fault and fault["kind"] not in ("drop", "cut", "lost", "expire_token", "delay",
                                               "reset"):
                st, h, res = int(fault["kind"]), {}, {"error": {"code": "TooManyRequests",
                                                                "message": "retry later"}}
                if fault.get("retry_after") is not None:
                    h["Retry-After"] = str(fault["retry_after"])
            else:
                st, h, res = self.run_api(r["method"], url.path, q, body, base, hdrs)
            status_of[rid] = st
            item = {"id": rid, "status": st, "headers": h}
            if isinstance(res, bytes):
                item["body"] = base64.b64encode(res).decode()
            elif res is not None:
                item["body"] = res
            out.append(item)
        out.reverse()  # any order: correlate by id
        return out


class HeaderDict:
    def __init__(self, d):
        self.items = [(k, v) for k, v in d.items()]

    def add(self, k, v):
        self.items.append((k, v))

    def get(self, k, default=None):
        for kk, v in self.items:
            if kk.lower() == k.lower():
                return v
        return default

    def get_all(self, k, default=None):
        r = [v for kk, v in self.items if kk.lower() == k.lower()]
        return r or default


# --------------------------------------------------------------------------
# control API (tests)

def make_mime(i, subject=None, body=None, msgid=None, size=0):
    msgid = msgid or "<fake-%d-%d@graph.test>" % (i, int(time.time() * 1000))
    subject = subject or "Message %d" % i
    text = body or ("Hello %d\r\n" % i)
    if size and len(text) < size:
        text += ("x" * 70 + "\r\n") * ((size - len(text)) // 72 + 1)
    return ("From: Sender <sender@example.org>\r\nTo: alice@contoso.com\r\n"
            "Subject: %s\r\nDate: %s\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n%s"
            % (subject, email.utils.formatdate(time.time()), msgid, text)).encode()


def control(fake, method, what, a):
    st = fake.store
    with st.lock:
        if what == "seed":
            fid = st.folder_by_path(a.get("folder", "INBOX"))
            ids = []
            base = a.get("received", time.time() - 86400)
            for i, m in enumerate(a.get("messages", [])):
                mime = m["mime"].encode() if "mime" in m else make_mime(i, m.get("subject"))
                ids.append(st.add_message(fid, mime, m.get("isRead", False),
                                          m.get("flag", "notFlagged"), m.get("verb"),
                                          m.get("received", base + i)))
            for i in range(a.get("generate", 0)):
                ids.append(st.add_message(fid, make_mime(i, size=a.get("size", 0)),
                                          a.get("isRead", i % 3 == 0), "notFlagged", None,
                                          base + i))
            return {"ids": ids}
        if what == "mkfolder":
            parent = st.folder_by_path(a["parent"]) if a.get("parent") else st.wk["msgfolderroot"]
            return {"id": st._new_folder(parent, a["name"], a.get("hidden", False))}
        if what == "bearers":       # tokens accepted through --introspect
            with fake.lock:
                return {"tokens": list(fake.bearers_seen)}
        if what == "state":
            folders = {}
            for fid, f in st.folders.items():
                if fid == st.wk["msgfolderroot"]:
                    continue
                folders[st.folder_path(fid)] = {"id": fid, "search": f["search"],
                                               "hidden": f["isHidden"]}
            msgs = []
            for m in st.messages.values():
                msgs.append({"id": m["id"], "folder": st.folder_path(m["folder"]),
                             "isRead": m["isRead"], "flagStatus": m["flagStatus"],
                             "isDraft": m["isDraft"],
                             "verb": int(m["props"].get(("integer", 0x1081), "0")),
                             "icon": int(m["props"].get(("integer", 0x1080), "-1")),
                             "internetMessageId": m["internetMessageId"],
                             "size": len(m["mime"]),
                             "mime": m["mime"].decode("utf-8", "replace")})
            return {"folders": folders, "messages": msgs}
        if what == "mark":
            m = st.message(a["id"])
            if "isRead" in a:
                m["isRead"] = a["isRead"]
            if "flag" in a:
                m["flagStatus"] = a["flag"]
            if "verb" in a:
                m["props"][("integer", 0x1081)] = str(a["verb"])
            st.changed(a["id"])
            return {}
        if what == "move":
            st.move(a["id"], st.folder_by_path(a["to"]))
            return {}
        if what == "delete":
            st.delete(a["id"])
            return {}
        if what == "deliver":
            fid = st.folder_by_path(a.get("folder", "INBOX"))
            mime = a["mime"].encode() if "mime" in a else make_mime(0, a.get("subject"))
            return {"id": st.add_message(fid, mime, a.get("isRead", False))}
        if what == "rename_folder":
            st.folders[st.folder_by_path(a["path"])]["displayName"] = a["name"]
            return {}
        if what == "expire_delta":
            st.token_epoch += 1
            return {}
        if what == "fault":
            with fake.lock:
                fake.faults.append({"method": a.get("method"), "path": a.get("path"),
                                    "kind": str(a["kind"]), "count": a.get("count", 1),
                                    "retry_after": a.get("retry_after"),
                                    "delay": a.get("delay")})
            return {}
        if what == "clear_faults":
            with fake.lock:
                fake.faults = []
            return {}
        if what == "replay":
            fake.replays = a.get("count", 1)
            return {}
        if what == "reject_token":
            fake.reject_token_once = True
            return {}
        if what == "stats":
            with fake.lock:
                return json.loads(json.dumps(fake.stats))
        if what == "reset_stats":
            fake.reset_stats()
            return {}
    raise ValueError("unknown control %s" % what)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def serve(port=0, token="TOKEN", introspect=None):
    srv = Server(("127.0.0.1", port), Handler)
    srv.fake = Fake(token, introspect)
    return srv


def main():
    port = 0
    token = "TOKEN"
    introspect = None
    args = sys.argv[1:]
    while args:
        a = args.pop(0)
        if a == "--port":
            port = int(args.pop(0))
        elif a == "--token":
            token = args.pop(0)
        elif a == "--introspect":
            introspect = args.pop(0)
    srv = serve(port, token, introspect)
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
