"""Loopback stand-ins for the AWS credential services: EC2 instance
metadata (IMDSv2), the ECS/EKS container credentials endpoint and STS
AssumeRoleWithWebIdentity.

Each hands out fresh temporary credentials (a new key every time) that
expire after `lifetime` seconds, and registers them with an S3VerifyServer
so that requests signed with them verify there until they expire.
`.fetches` counts the credentials handed out; `.log` lists the requests.
"""

import http.server
import json
import secrets
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class CredentialServer:
    """kind: "imds", "container" or "sts"."""

    ROLE = "weightfs-test-role"

    def __init__(self, kind, s3, lifetime=3600, auth_token=None,
                 web_identity_token=None, role_arn=None):
        self.kind = kind
        self.s3 = s3
        self.lifetime = lifetime
        self.auth_token = auth_token
        self.web_identity_token = web_identity_token
        self.role_arn = role_arn
        self.fetches = 0
        self.log = []
        self.imds_tokens = set()
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"srv": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def issue(self):
        with self.lock:
            self.fetches += 1
            n = self.fetches
        ak = "ASIATEST%08d" % n
        sk = secrets.token_urlsafe(30)
        tok = "FwoGZXIvYXdzE" + secrets.token_urlsafe(60) + "+/="
        exp = time.time() + self.lifetime
        self.s3.add_credentials(ak, sk, tok, exp)
        return ak, sk, tok, exp

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    srv = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        with self.srv.lock:
            self.srv.log.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def creds_json(self):
        ak, sk, tok, exp = self.srv.issue()
        return json.dumps({"Code": "Success", "Type": "AWS-HMAC",
                           "AccessKeyId": ak, "SecretAccessKey": sk,
                           "Token": tok, "Expiration": iso(exp),
                           "LastUpdated": iso(time.time())})

    def do_PUT(self):
        if self.srv.kind != "imds" or self.path != "/latest/api/token":
            return self.reply(404, "not found")
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(400, "missing ttl")
        tok = secrets.token_urlsafe(20)
        with self.srv.lock:
            self.srv.imds_tokens.add(tok)
        self.reply(200, tok)

    def do_GET(self):
        if self.srv.kind == "imds":
            with self.srv.lock:
                ok = self.headers.get("X-aws-ec2-metadata-token") in \
                    self.srv.imds_tokens
            if not ok:
                return self.reply(401, "")
            base = "/latest/meta-data/iam/security-credentials/"
            if self.path == base:
                return self.reply(200, CredentialServer.ROLE)
            if self.path == base + CredentialServer.ROLE:
                return self.reply(200, self.creds_json(), "application/json")
            return self.reply(404, "not found")
        if self.srv.kind == "container":
            if self.srv.auth_token is not None and \
                    self.headers.get("Authorization") != self.srv.auth_token:
                return self.reply(401, json.dumps({"message": "denied"}),
                                  "application/json")
            return self.reply(200, self.creds_json(), "application/json")
        self.reply(404, "not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        if self.srv.kind != "sts" or \
                form.get("Action") != "AssumeRoleWithWebIdentity":
            return self.reply(400, "bad action")
        if form.get("WebIdentityToken") != self.srv.web_identity_token or \
                form.get("RoleArn") != self.srv.role_arn:
            return self.reply(
                400,
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/"
                "2011-06-15/\"><Error><Type>Sender</Type><Code>"
                "InvalidIdentityToken</Code><Message>Couldn't retrieve "
                "verification key from your identity provider</Message>"
                "</Error><RequestId>1</RequestId></ErrorResponse>",
                "text/xml")
        ak, sk, tok, exp = self.srv.issue()
        self.reply(
            200,
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts."
            "amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult>"
            "<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s"
            "</SecretAccessKey><SessionToken>%s</SessionToken><Expiration>%s"
            "</Expiration></Credentials><SubjectFromWebIdentityToken>x"
            "</SubjectFromWebIdentityToken></AssumeRoleWithWebIdentityResult>"
            "<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>" %
            (ak, escape(sk), escape(tok), iso(exp)), "text/xml")
