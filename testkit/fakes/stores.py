"""Stand-ins for key stores that cannot be installed here, for kes's tests.

Each follows the vendor's documented REST API for the calls kes makes
(status codes, error bodies, token handling); see stores-testing.md §4-5
and §8. They are fakes: state lives in memory, one process per store.

    stores.py KIND PORT [--cert C --key K] [--ttl SECONDS] [options]

KIND is one of:
  gcp-token  Google's OAuth2 token endpoint for service accounts: checks the
             RS256 signature of the JWT-bearer assertion with the account's
             public key (--modulus hex, e = 65537), its issuer and audience.
             (Secret Manager itself is drongo, a real REST implementation.)
  azure      Key Vault secrets API 7.x + Entra ID client-credentials tokens +
             managed-identity (IMDS) tokens; 401 challenge without a token;
             soft delete with purge, ObjectIsBeingDeleted while deleting, and a
             purge that completes seconds after it was accepted (PUT refused).
  keysecure  CipherTrust Manager: refresh-token login, /api/v1/vault/secrets.
  fortanix   Fortanix DSM: API-key session, /crypto/v1/keys.
  entrust    Entrust KeyControl secrets vault: /vault/1.0/<Op>/.
  gcp-adc    Google's token sources for Application Default Credentials,
             one port: the metadata server (GET /computeMetadata/v1/instance/
             service-accounts/default/token; 403 without Metadata-Flavor:
             Google), STS token exchange (POST /v1/token, RFC 8693 form;
             the subject token must equal --token-file's content, read at
             every call) and IAM Credentials generateAccessToken (POST
             /v1/projects/-/serviceAccounts/<email>:generateAccessToken with
             an STS token). Every other path is Secret Manager: the bearer
             token must be one it issued and unexpired (401 otherwise), and
             the call is passed on to --upstream (drongo, which checks no
             token). Tokens live --ttl seconds. POST /_fake/fail?on=1 makes
             the token sources answer 500 until ?on=0.
  aws-creds  AWS's credential services, one port: EC2 instance metadata
             (IMDSv2: PUT /latest/api/token first; a GET without that token
             is 401), the container endpoint (ECS / EKS Pod Identity: GET
             any other path, Authorization checked against --token-file,
             read at every call) and STS AssumeRoleWithWebIdentity (POST /,
             the form body; the web identity token is recorded). The keys
             handed out are real temporary credentials from moto's STS
             (AssumeRole with --access/--secret at --moto, --role), so moto
             checks every signature made with them; their Expiration is
             --ttl seconds away. POST /_fake/fail?on=1 makes every credential
             call answer 500 until ?on=0.

Every fake answers GET /_fake/stats with {"logins": n, "refused": n} and
POST /_fake/revoke by invalidating every token it issued (aws-creds: stats
are {"imds": n, "container": n, "sts": n, "failed": n, "web_tokens": [...]}).
"""

import argparse, base64, datetime, hashlib, json, secrets, ssl, sys, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

LOCK = threading.Lock()
STATS = {"logins": 0, "refused": 0}
TOKENS = {}  # token -> expiry (epoch seconds)
ARGS = None
# Servers cap their page sizes; a small cap makes a few keys span pages.
PAGE_CAP = 10


def issue():
    t = secrets.token_urlsafe(24)
    with LOCK:
        TOKENS[t] = time.time() + ARGS.ttl
        STATS["logins"] += 1
    return t


def valid(token):
    with LOCK:
        ok = token is not None and TOKENS.get(token, 0) > time.time()
        if not ok:
            STATS["refused"] += 1
        return ok


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=None, ctype="application/json", headers=()):
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        if data:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def json_body(self):
        try:
            return json.loads(self.body() or b"{}")
        except ValueError:
            return None

    def route(self, method):
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        if u.path == "/_fake/stats":
            return self.reply(200, STATS)
        if u.path == "/_fake/revoke":
            with LOCK:
                TOKENS.clear()
            return self.reply(200, {})
        if u.path == "/_fake/fail":
            AWS["fail"] = q.get("on") == "1"
            return self.reply(200, {})
        return KINDS[ARGS.kind](self, method, u.path, q)

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")


# --- GCP: the OAuth2 token endpoint --------------------------------------

SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def rs256_ok(signing_input, sig, n):
    k = (n.bit_length() + 7) // 8
    if len(sig) != k:
        return False
    em = pow(int.from_bytes(sig, "big"), 65537, n).to_bytes(k, "big")
    t = SHA256_PREFIX + hashlib.sha256(signing_input).digest()
    return em == b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def gcp_token(h, method, path, q):
    if method != "POST" or path != "/token":
        return h.reply(404, {"error": "not_found"})
    form = {k: v[-1] for k, v in parse_qs(h.body().decode()).items()}
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        return h.reply(400, {"error": "unsupported_grant_type"})
    try:
        head, claims, sig = form["assertion"].split(".")
        header, c = json.loads(b64url_decode(head)), json.loads(b64url_decode(claims))
        good = rs256_ok(f"{head}.{claims}".encode(), b64url_decode(sig), int(ARGS.modulus, 16))
    except (KeyError, ValueError):
        return h.reply(400, {"error": "invalid_request", "error_description": "malformed assertion"})
    now = time.time()
    if not good or header.get("alg") != "RS256" or header.get("kid") != ARGS.key_id:
        return h.reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    if c.get("iss") != ARGS.email or c.get("aud") != ARGS.aud or not c.get("scope"):
        return h.reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT claims."})
    if not (c["iat"] - 300 <= now <= c["exp"] + 300) or c["exp"] - c["iat"] > 3600:
        return h.reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a short-lived token."})
    h.reply(200, {"access_token": issue(), "expires_in": ARGS.ttl, "token_type": "Bearer"})


# --- Azure Key Vault ------------------------------------------------------

AZ = {}  # name -> {"versions": [...], "deleted_at": None | t}
# Names whose purge was accepted but has not completed: name -> when it
# completes. Azure purges asynchronously: DELETE /deletedsecrets answers
# at once, and for some seconds after, PUT /secrets/<name> is refused with
# 409 ObjectIsBeingDeleted while the deleted secret is no longer listed.
AZ_PURGING = {}


def az_error(h, status, code, msg, inner=None, headers=()):
    e = {"code": code, "message": msg}
    if inner:
        e["innererror"] = {"code": inner}
    h.reply(status, {"error": e}, headers=headers)


def azure(h, method, path, q):
    parts = [p for p in path.split("/") if p]
    # Entra ID: POST /<tenant>/oauth2/v2.0/token
    if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"] and method == "POST":
        form = {k: v[-1] for k, v in parse_qs(h.body().decode()).items()}
        if parts[0] != ARGS.tenant:
            return h.reply(400, {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."})
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "https://vault.azure.net/.default":
            return h.reply(400, {"error": "invalid_request", "error_description": "AADSTS900144: bad request."})
        if form.get("client_id") != ARGS.client_id or form.get("client_secret") != ARGS.client_secret:
            return h.reply(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
        return h.reply(200, {"token_type": "Bearer", "expires_in": ARGS.ttl, "ext_expires_in": ARGS.ttl, "access_token": issue()})
    # IMDS: GET /metadata/identity/oauth2/token
    if path == "/metadata/identity/oauth2/token":
        if h.headers.get("Metadata") != "true":
            return h.reply(400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})
        if q.get("resource") != "https://vault.azure.net" or q.get("client_id", ARGS.client_id) != ARGS.client_id:
            return h.reply(400, {"error": "invalid_request", "error_description": "Identity not found"})
        return h.reply(200, {"access_token": issue(), "expires_in": str(ARGS.ttl), "resource": q["resource"], "token_type": "Bearer"})
    if "api-version" not in q:
        return az_error(h, 400, "BadParameter", "The 'api-version' query parameter is missing.")
    auth = h.headers.get("Authorization", "")
    if not (auth.startswith("Bearer ") and valid(auth[7:])):
        challenge = f'Bearer authorization="https://login.microsoftonline.com/{ARGS.tenant}", resource="https://vault.azure.net"'
        return az_error(h, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", headers=[("WWW-Authenticate", challenge)])
    base = f"https://{h.headers.get('Host')}"
    now = int(time.time())
    with LOCK:
        for n in [n for n, t in AZ_PURGING.items() if t <= time.time()]:
            del AZ_PURGING[n]
        if parts[:1] == ["deletedsecrets"] and len(parts) == 2 and method == "DELETE":
            s = AZ.get(parts[1])
            if s is None or s["deleted_at"] is None:
                return az_error(h, 404, "SecretNotFound", f"Deleted Secret not found: {parts[1]}")
            if time.time() - s["deleted_at"] < 0.3:
                return az_error(h, 409, "Conflict", "Secret is currently being deleted.", "ObjectIsBeingDeleted")
            del AZ[parts[1]]
            AZ_PURGING[parts[1]] = time.time() + ARGS.purge_delay
            return h.reply(204)
        if parts == ["secrets"] and method == "GET":
            names = sorted(n for n, s in AZ.items() if s["deleted_at"] is None)
            skip, top = int(q.get("$skiptoken", 0)), min(int(q.get("maxresults", 25)), PAGE_CAP)
            page = [{"id": f"{base}/secrets/{n}", "attributes": {"enabled": True}} for n in names[skip:skip + top]]
            nxt = f"{base}/secrets?api-version={q['api-version']}&$skiptoken={skip + top}&maxresults={top}" if skip + top < len(names) else None
            return h.reply(200, {"value": page, "nextLink": nxt})
        if parts[:1] != ["secrets"] or len(parts) < 2:
            return az_error(h, 404, "NotFound", "no such route")
        name, s = parts[1], AZ.get(parts[1])
        live = s is not None and s["deleted_at"] is None
        bundle = lambda v: {"value": v["value"], "id": f"{base}/secrets/{name}/{v['id']}", "attributes": v["attributes"]}
        if method == "PUT" and len(parts) == 2:
            value = (h.json_body() or {}).get("value")  # read before any answer: keep-alive
            if name in AZ_PURGING:
                return az_error(h, 409, "Conflict", f"Secret {name} is currently being deleted.", "ObjectIsBeingDeleted")
            if s is not None and not live:
                return az_error(h, 409, "Conflict", f"Secret {name} is currently in a deleted but recoverable state.", "ObjectIsDeletedButRecoverable")
            if not isinstance(value, str):
                return az_error(h, 400, "BadParameter", "value is required")
            s = AZ.setdefault(name, {"versions": [], "deleted_at": None})
            v = {"id": uuid.uuid4().hex, "value": value, "attributes": {"enabled": True, "created": now + len(s["versions"]), "updated": now}}
            s["versions"].append(v)
            return h.reply(200, bundle(v))
        if not live:
            return az_error(h, 404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
        if method == "DELETE" and len(parts) == 2:
            s["deleted_at"] = time.time()
            return h.reply(200, {"recoveryId": f"{base}/deletedsecrets/{name}", "id": f"{base}/secrets/{name}"})
        if method == "GET" and len(parts) == 2:
            return h.reply(200, bundle(s["versions"][-1]))
        if method == "GET" and parts[2:] == ["versions"]:
            return h.reply(200, {"value": [{"id": f"{base}/secrets/{name}/{v['id']}", "attributes": v["attributes"]} for v in s["versions"]], "nextLink": None})
        if method == "GET" and len(parts) == 3:
            for v in s["versions"]:
                if v["id"] == parts[2]:
                    return h.reply(200, bundle(v))
            return az_error(h, 404, "SecretNotFound", "version not found")
    az_error(h, 405, "MethodNotAllowed", "not supported")


# --- Thales CipherTrust Manager / KeySecure ------------------------------

KS = {}


def keysecure(h, method, path, q):
    if path == "/api/v1/auth/tokens" and method == "POST":
        b = h.json_body() or {}
        if b.get("grant_type") != "refresh_token" or b.get("refresh_token") != ARGS.secret:
            return h.reply(401, {"code": 7, "codeDesc": "NCERRAuthFailed: Invalid refresh token"})
        return h.reply(200, {"jwt": issue(), "duration": ARGS.ttl, "token_type": "Bearer"})
    auth = h.headers.get("Authorization", "")
    if not (auth.startswith("Bearer ") and valid(auth[7:])):
        return h.reply(401, b"Token is expired or invalid\n", "text/plain")
    prefix = "/api/v1/vault/secrets"
    with LOCK:
        if path == prefix and method == "POST":
            b = h.json_body() or {}
            if b.get("dataType") != "seed" or not b.get("name") or not isinstance(b.get("material"), str):
                return h.reply(400, {"code": 3, "codeDesc": "NCERRInvalidParamValue"})
            if b["name"] in KS:
                return h.reply(409, {"code": 4, "codeDesc": "NCERRResourceAlreadyExists: Resource already exists"})
            KS[b["name"]] = b["material"]
            return h.reply(201, {"id": uuid.uuid4().hex, "name": b["name"], "dataType": "seed"})
        if path == prefix and method == "GET":
            names = sorted(KS)
            skip, limit = int(q.get("skip", 0)), min(int(q.get("limit", 10)), PAGE_CAP)
            return h.reply(200, {"skip": skip, "limit": limit, "total": len(names), "resources": [{"name": n} for n in names[skip:skip + limit]]})
        rest = path[len(prefix) + 1:].split("/") if path.startswith(prefix + "/") else []
        if q.get("type") != "name" or not rest:
            return h.reply(404, {"code": 5, "codeDesc": "NCERRResourceNotFound"})
        name = rest[0]
        if name not in KS:
            return h.reply(404, {"code": 5, "codeDesc": "NCERRResourceNotFound: Resource not found"})
        if rest[1:] == ["export"] and method == "POST":
            return h.reply(200, {"id": name, "material": KS[name]})
        if len(rest) == 1 and method == "DELETE":
            del KS[name]
            return h.reply(204)
    h.reply(405, {"code": 1, "codeDesc": "method not allowed"})


# --- Fortanix DSM ---------------------------------------------------------

FX = {}  # name -> sobject


def fortanix(h, method, path, q):
    if path == "/sys/v1/health":
        return h.reply(204)
    if path == "/sys/v1/session/auth" and method == "POST":
        if h.headers.get("Authorization") != "Basic " + ARGS.secret:
            return h.reply(401, b"invalid API key", "text/plain")
        return h.reply(200, {"token_type": "Bearer", "expires_in": ARGS.ttl, "access_token": issue(), "entity_id": "app-1"})
    auth = h.headers.get("Authorization", "")
    if not (auth.startswith("Bearer ") and valid(auth[7:])):
        return h.reply(401, b"session expired or invalid", "text/plain")
    with LOCK:
        if path == "/crypto/v1/keys" and method == "PUT":
            b = h.json_body() or {}
            if b.get("obj_type") != "OPAQUE" or "EXPORT" not in b.get("key_ops", []) or not b.get("name"):
                return h.reply(400, b"invalid sobject request", "text/plain")
            if b["name"] in FX:
                return h.reply(409, b"sobject already exists", "text/plain")
            base64.b64decode(b["value"], validate=True)
            FX[b["name"]] = {"kid": str(uuid.uuid4()), "name": b["name"], "obj_type": "OPAQUE", "group_id": b.get("group_id", "default"), "enabled": b.get("enabled", True), "value": b["value"]}
            return h.reply(201, {k: v for k, v in FX[b["name"]].items() if k != "value"})
        if path == "/crypto/v1/keys" and method == "GET":
            names = sorted(n for n in FX if "start" not in q or n > q["start"])[: min(int(q.get("limit", 100)), PAGE_CAP)]
            return h.reply(200, [{k: v for k, v in FX[n].items() if k != "value"} for n in names])
        if path in ("/crypto/v1/keys/export", "/crypto/v1/keys/info") and method == "POST":
            o = FX.get((h.json_body() or {}).get("name"))
            if o is None:
                return h.reply(404, b"sobject does not exist", "text/plain")
            return h.reply(200, o if path.endswith("export") else {k: v for k, v in o.items() if k != "value"})
        if path.startswith("/crypto/v1/keys/") and method == "DELETE":
            kid = path.rsplit("/", 1)[1]
            for n, o in list(FX.items()):
                if o["kid"] == kid:
                    del FX[n]
                    return h.reply(204)
            return h.reply(404, b"sobject does not exist", "text/plain")
    h.reply(405, b"method not allowed", "text/plain")


# --- Entrust KeyControl ---------------------------------------------------

EN = {}


def entrust(h, method, path, q):
    if method != "POST" or not path.startswith("/vault/1.0/"):
        return h.reply(404, {"error": "Not found"})
    op = path[len("/vault/1.0/"):].strip("/").split("/")
    expires = lambda: (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ARGS.ttl)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if op[0] == "Login":
        b = h.json_body() or {}
        if op[1:] != [ARGS.vault_id]:
            return h.reply(404, {"error": "Vault not found"})
        if b.get("username") != ARGS.client_id or b.get("password") != ARGS.secret:
            return h.reply(401, {"error": "Invalid credentials"})
        return h.reply(200, {"access_token": issue(), "expires_at": expires()})
    if not valid(h.headers.get("X-Vault-Auth")):
        return h.reply(401, {"error": "Unauthorized"})
    if op[0] == "Renew":
        return h.reply(200, {"access_token": issue(), "expires_at": expires()})
    b = h.json_body() or {}
    if b.get("box_id") != ARGS.box_id:
        return h.reply(404, {"error": "Box not found"})
    with LOCK:
        if op[0] == "GetBox":
            return h.reply(200, {"box_id": ARGS.box_id, "name": ARGS.box_id})
        if op[0] == "CreateSecret":
            if b.get("name") in EN:
                return h.reply(409, {"error": "Secret already exists"})
            base64.b64decode(b["secret_data"], validate=True)
            EN[b["name"]] = b["secret_data"]
            return h.reply(200, {"secret_id": b["name"]})
        if op[0] in ("CheckoutSecret", "DeleteSecret"):
            if b.get("secret_id") not in EN:
                return h.reply(404, {"error": "Secret not found"})
            if op[0] == "DeleteSecret":
                del EN[b["secret_id"]]
                return h.reply(200, {})
            return h.reply(200, {"secret_data": EN[b["secret_id"]]})
        if op[0] == "ListSecretIds":
            after = ""
            if b.get("next_token"):
                after = json.loads(base64.b64decode(b["next_token"]))["next_ctx"]
            names = sorted(n for n in EN if n > after)
            n = min(b.get("max_items", 100), PAGE_CAP)
            page = names[:n]
            r = {"secrets": [{"name": x, "expired": False} for x in page]}
            if len(names) > n:
                r["next_token"] = base64.b64encode(json.dumps({"box_id": ARGS.box_id, "next_ctx": page[-1]}).encode()).decode()
            return h.reply(200, r)
    h.reply(404, {"error": "Unknown operation"})


# --- Switchable failure and counters for the credential stand-ins -------

def counted(kind):
    with LOCK:
        STATS[kind] = STATS.get(kind, 0) + 1


def failed_on_purpose(h, body):
    """While POST /_fake/fail?on=1 holds: answer 500 with `body`, count it."""
    if AWS["fail"]:
        counted("failed")
        h.reply(500, body)
        return True
    return False


# --- GCP: Application Default Credentials' token sources -----------------

def gcp_adc(h, method, path, q):
    count = counted
    failing = lambda: failed_on_purpose(h, {"error": {"code": 500, "status": "INTERNAL", "message": "failing on purpose"}})

    if path == "/computeMetadata/v1/instance/service-accounts/default/token":
        if h.headers.get("Metadata-Flavor") != "Google":
            return h.reply(403, b"Missing Metadata-Flavor:Google header.", "text/html")
        if failing():
            return
        count("metadata")
        return h.reply(200, {"access_token": issue(), "expires_in": ARGS.ttl, "token_type": "Bearer"})
    if path == "/v1/token" and method == "POST":
        form = {k: v[-1] for k, v in parse_qs(h.body().decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" or form.get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token":
            return h.reply(400, {"error": "invalid_request", "error_description": "bad grant"})
        if failing():
            return
        want = open(ARGS.token_file).read().strip()
        if form.get("subject_token") != want or form.get("audience") != ARGS.aud:
            return h.reply(400, {"error": "invalid_grant", "error_description": "The subject token or audience is invalid."})
        count("sts")
        t = issue()
        with LOCK:  # federated tokens are told apart by their prefix
            TOKENS["sts." + t] = TOKENS.pop(t)
        return h.reply(200, {"access_token": "sts." + t, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": ARGS.ttl})
    if path.endswith(":generateAccessToken") and method == "POST":
        auth = h.headers.get("Authorization", "")
        body = h.json_body() or {}
        if not (auth.startswith("Bearer sts.") and valid(auth[7:])):
            return h.reply(401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "Request had invalid authentication credentials."}})
        if failing():
            return
        count("impersonate")
        exp = datetime.datetime.fromtimestamp(time.time() + ARGS.ttl, datetime.timezone.utc)
        return h.reply(200, {"accessToken": issue(), "expireTime": exp.strftime("%Y-%m-%dT%H:%M:%SZ"), "scopes": body.get("scope")})
    # A URL subject token source (as Azure's IMDS serves one): JSON.
    if path == "/subject" and method == "GET":
        if h.headers.get("Metadata") != "True":
            return h.reply(400, {"error": "Required metadata header not specified"})
        return h.reply(200, {"access_token": open(ARGS.token_file).read().strip()})
    # Secret Manager: check the token, then pass the call on.
    auth = h.headers.get("Authorization", "")
    if not (auth.startswith("Bearer ") and valid(auth[7:])):
        return h.reply(401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "Request had invalid authentication credentials."}})
    import http.client
    u = urlsplit(ARGS.upstream)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    body = h.body()
    conn.request(method, h.path, body=body or None, headers={"Content-Type": h.headers.get("Content-Type", "application/json")})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    h.reply(r.status, data, r.getheader("Content-Type") or "application/json")


# --- AWS credential services (IMDSv2, container endpoint, STS) ----------

AWS = {"fail": False, "imds_tokens": set()}


def moto_credentials():
    """Fresh temporary keys from moto's STS, which moto then accepts."""
    import boto3
    sts = boto3.client("sts", endpoint_url=ARGS.moto, region_name="us-east-1",
                       aws_access_key_id=ARGS.access, aws_secret_access_key=ARGS.secret)
    c = sts.assume_role(RoleArn=ARGS.role, RoleSessionName="kes-test")["Credentials"]
    exp = datetime.datetime.fromtimestamp(time.time() + ARGS.ttl, datetime.timezone.utc)
    return {"AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"],
            "Token": c["SessionToken"], "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}


def aws_creds(h, method, path, q):
    count = counted
    failing = lambda: failed_on_purpose(h, {"message": "failing on purpose"})

    if path == "/_fake/stats":
        return h.reply(200, STATS)
    # STS: the query protocol, answered in XML.
    if method == "POST" and path == "/":
        form = {k: v[-1] for k, v in parse_qs(h.body().decode()).items()}
        if form.get("Action") != "AssumeRoleWithWebIdentity":
            return h.reply(400, b"<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>", "text/xml")
        if failing():
            return
        if not form.get("WebIdentityToken") or form.get("RoleArn") != ARGS.role:
            return h.reply(400, b"<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>bad token or role</Message></Error></ErrorResponse>", "text/xml")
        with LOCK:
            STATS.setdefault("web_tokens", []).append(form["WebIdentityToken"])
        count("sts")
        c = moto_credentials()
        xml = (f"<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
               f"<AccessKeyId>{c['AccessKeyId']}</AccessKeyId><SecretAccessKey>{c['SecretAccessKey']}</SecretAccessKey>"
               f"<SessionToken>{c['Token']}</SessionToken><Expiration>{c['Expiration']}</Expiration>"
               f"</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")
        return h.reply(200, xml.encode(), "text/xml")
    # IMDSv2.
    if path == "/latest/api/token":
        if method != "PUT" or not h.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return h.reply(400, b"", "text/plain")
        t = secrets.token_urlsafe(16)
        AWS["imds_tokens"].add(t)
        return h.reply(200, t.encode(), "text/plain")
    if path.startswith("/latest/meta-data/"):
        if h.headers.get("X-aws-ec2-metadata-token") not in AWS["imds_tokens"]:
            return h.reply(401, b"", "text/plain")
        if path == "/latest/meta-data/iam/security-credentials/":
            return h.reply(200, b"kes-instance-role", "text/plain")
        if path == "/latest/meta-data/iam/security-credentials/kes-instance-role":
            if failing():
                return
            count("imds")
            c = moto_credentials()
            c.update({"Code": "Success", "Type": "AWS-HMAC", "LastUpdated": "2026-01-01T00:00:00Z"})
            return h.reply(200, c)
        return h.reply(404, b"", "text/plain")
    # Container credentials.
    if method == "GET":
        want = open(ARGS.token_file).read().strip() if ARGS.token_file else None
        if want is not None and h.headers.get("Authorization") != want:
            return h.reply(401, {"message": "bad authorization token"})
        if failing():
            return
        count("container")
        return h.reply(200, moto_credentials())
    h.reply(405, {"message": "not supported"})


KINDS = {"gcp-adc": gcp_adc, "aws-creds": aws_creds, "gcp-token": gcp_token, "azure": azure, "keysecure": keysecure, "fortanix": fortanix, "entrust": entrust}

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("port", type=int)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ttl", type=int, default=3600)
    p.add_argument("--secret", default="")  # refresh token / API key / password / client secret
    p.add_argument("--client-id", default="")  # Azure client id, Entrust user name
    p.add_argument("--client-secret", default="")
    p.add_argument("--tenant", default="")
    p.add_argument("--purge-delay", type=float, default=2.0)  # Azure: seconds until a purge completes
    p.add_argument("--vault-id", default="")
    p.add_argument("--box-id", default="")
    p.add_argument("--modulus", default="")  # GCP: the account key's RSA modulus (hex)
    p.add_argument("--key-id", default="")
    p.add_argument("--email", default="")
    p.add_argument("--aud", default="")
    p.add_argument("--moto", default="")  # aws-creds: moto's URL, the IAM user's keys, the role to assume
    p.add_argument("--access", default="")
    p.add_argument("--role", default="")
    p.add_argument("--token-file", default="")
    p.add_argument("--upstream", default="")  # gcp-adc: the Secret Manager server calls are passed to
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    if ARGS.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()
