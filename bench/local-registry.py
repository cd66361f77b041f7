#!/usr/bin/env python3
"""A read-only OCI distribution endpoint on loopback, for the peer benchmark only.

Kamaji sets `imagePullPolicy: Always` on every tenant's kube-apiserver container (no field of
a TenantControlPlane changes it), so the kubelet asks a registry for that image's manifest
each time such a pod starts, even though the image is already in containerd. No registry can
be reached here; this answers those requests from the OCI archives that hack/build-peer.sh
writes: `GET /v2/`, and `GET`/`HEAD` of `/v2/<name>/manifests/<tag or digest>` and
`/v2/<name>/blobs/<digest>`. containerd learns of it from a hosts.toml for the image's
registry host, which bench/peer.sh writes and removes.

Usage: local-registry.py PORT HOST ARCHIVE... (HOST: the registry part of the image names,
for example nestor.local; every ARCHIVE is an OCI layout tarball naming its images in
`io.containerd.image.name` annotations).
"""
import http.server
import json
import sys
import tarfile

PORT, HOST, ARCHIVES = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"

manifests = {}  # (repository, tag or "sha256:..") -> (digest, bytes)
blobs = {}  # "sha256:.." -> (archive, member name)
for archive in ARCHIVES:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        for member in tar.getmembers():
            if member.name.startswith("blobs/sha256/"):
                blobs["sha256:" + member.name.rsplit("/", 1)[1]] = (archive, member.name)
        for entry in index["manifests"]:
            name = entry.get("annotations", {}).get("io.containerd.image.name", "")
            if not name.startswith(HOST + "/"):
                continue
            repository, tag = name[len(HOST) + 1:].rsplit(":", 1)
            digest = entry["digest"]
            body = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()
            manifests[(repository, tag)] = (digest, body)
            manifests[(repository, digest)] = (digest, body)


def read_blob(digest):
    archive, member = blobs[digest]
    with tarfile.open(archive) as tar:
        return tar.extractfile(member).read()


class Registry(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, with_body):
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            return self.reply(200, b"{}", "application/json", None, with_body)
        if path.startswith("/v2/") and "/manifests/" in path:
            repository, reference = path[4:].rsplit("/manifests/", 1)
            if (repository, reference) in manifests:
                digest, body = manifests[(repository, reference)]
                return self.reply(200, body, MANIFEST_TYPE, digest, with_body)
        if path.startswith("/v2/") and "/blobs/" in path:
            digest = path.rsplit("/blobs/", 1)[1]
            if digest in blobs:
                return self.reply(200, read_blob(digest), "application/octet-stream", digest, with_body)
        return self.reply(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "application/json", None, with_body)

    def reply(self, status, body, content_type, digest, with_body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))


print(f"serving {len(manifests) // 2} image(s) of {HOST} on 127.0.0.1:{PORT}", file=sys.stderr, flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Registry).serve_forever()
