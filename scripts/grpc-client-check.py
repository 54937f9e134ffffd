#!/usr/bin/env python3
"""Calls every method of the hub's gRPC API with a client that is not ours:
grpcio, with the service descriptors taken from the hub's own reflection
service (no generated stubs: messages are built from the descriptors).

Usage: grpc-client-check.py HOST:PORT REST_URL DATASET V1 V2
  DATASET is readable by AETHERFS_READER (user:password, read only) and
  administered by AETHERFS_ADMIN (user:password, admin on every dataset);
  V1 and V2 are two stored versions of it. Another dataset, DATASET-copy,
  is written. Prints one line per check; exits non-zero at the first failure.
"""

import base64
import json
import os
import queue
import sys
import threading
import urllib.request

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_reflection.v1alpha import reflection_pb2

SERVICE = "aetherfs.hub.v1.Hub"
TIMEOUT = 30

target, rest, name, v1, v2 = sys.argv[1:6]
copy = name + "-copy"
checks = 0


def ok(what):
    global checks
    checks += 1
    print(f"ok: {what}", flush=True)


def basic(env):
    return "Basic " + base64.b64encode(os.environ[env].encode()).decode()


ADMIN = [("authorization", basic("AETHERFS_ADMIN"))]
READER = [("authorization", basic("AETHERFS_READER"))]
BAD = [("authorization", "Basic " + base64.b64encode(b"nobody:wrong").decode())]

channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20),
                                                 ("grpc.max_send_message_length", 64 << 20)])
db = ProtoReflectionDescriptorDatabase(channel)
services = set(db.get_services())
assert SERVICE in services and "grpc.health.v1.Health" in services, services
ok(f"reflection v1alpha lists {sorted(services)}")
pool = descriptor_pool.DescriptorPool(db)


def msg(full_name, **fields):
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))(**fields)


def stub(service, method):
    m = pool.FindServiceByName(service).FindMethodByName(method)
    out = message_factory.GetMessageClass(m.output_type)
    path = f"/{service}/{method}"
    ser = lambda r: r.SerializeToString()  # noqa: E731
    if m.server_streaming:
        return channel.unary_stream(path, request_serializer=ser, response_deserializer=out.FromString), m
    return channel.unary_unary(path, request_serializer=ser, response_deserializer=out.FromString), m


def call(method, creds=ADMIN, **fields):
    fn, m = stub(SERVICE, method)
    return fn(message_factory.GetMessageClass(m.input_type)(**fields), metadata=creds, timeout=TIMEOUT)


def refused(code, method, creds=ADMIN, **fields):
    try:
        r = call(method, creds, **fields)
        if hasattr(r, "__iter__") and not hasattr(r, "ListFields"):
            list(r)
    except grpc.RpcError as e:
        assert e.code() == code, f"{method}: {e.code()} {e.details()} (expected {code})"
        meta = dict(e.trailing_metadata() or ())
        return meta.get("aetherfs-error-code", "")
    raise AssertionError(f"{method} succeeded; expected {code}")


def rest_req(method, path, body=None, headers=None):
    req = urllib.request.Request(rest + path, method=method, data=body, headers=headers or {})
    req.add_header("authorization", ADMIN[0][1])
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        return r.read()


# The v1 reflection service answers too (same messages as v1alpha).
v1_info = channel.stream_stream(
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    request_serializer=lambda r: r.SerializeToString(),
    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
)
answer = next(iter(v1_info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT)))
assert SERVICE in [s.name for s in answer.list_services_response.service], answer
ok("reflection v1 lists the hub")

health, hm = stub("grpc.health.v1.Health", "Check")
for svc in (SERVICE, ""):
    r = health(message_factory.GetMessageClass(hm.input_type)(service=svc), timeout=TIMEOUT)
    assert hm.output_type.fields_by_name["status"].enum_type.values_by_number[r.status].name == "SERVING", r
ok("health: SERVING")

# Authentication and access rules.
refused(grpc.StatusCode.UNAUTHENTICATED, "ListTags", [], name=name)
refused(grpc.StatusCode.UNAUTHENTICATED, "ListTags", BAD, name=name)
refused(grpc.StatusCode.UNAUTHENTICATED, "ListDatasets", [])
ok("UNAUTHENTICATED without or with wrong credentials")
code = refused(grpc.StatusCode.PERMISSION_DENIED, "SetTag", READER, name=name, tag="latest", digest=v1)
assert code == "forbidden", code
refused(grpc.StatusCode.PERMISSION_DENIED, "DeleteVersion", READER, name=name, digest=v1)
refused(grpc.StatusCode.PERMISSION_DENIED, "ListTags", READER, name=copy)
ok("PERMISSION_DENIED for a reader who writes, deletes, or reads another dataset")

# Bad input.
assert refused(grpc.StatusCode.INVALID_ARGUMENT, "GetTag", name="Bad Name!", tag="v1") == "invalid_name"
assert refused(grpc.StatusCode.INVALID_ARGUMENT, "GetTag", name=name, tag="no/slash") == "invalid_tag"
assert refused(grpc.StatusCode.INVALID_ARGUMENT, "SetTag", name=name, tag="latest", digest="blake3:zz") \
    == "invalid_digest"
ok("INVALID_ARGUMENT for a bad name, tag, digest")
assert refused(grpc.StatusCode.NOT_FOUND, "GetTag", name=name, tag="nope") == "tag_not_found"
ok("NOT_FOUND for a missing tag")

# Reads.
ds = call("ListDatasets", READER)
assert [d.name for d in ds.datasets] == [name], ds
ok("ListDatasets shows the reader only what it may read")
tags = call("ListTags", READER, name=name)
assert {t.tag: t.digest for t in tags.tags} == {"v1": v1, "v2": v2}, tags
ok("ListTags")
assert call("GetTag", READER, name=name, tag="v1").digest == v1
ok("GetTag")
h = call("TagHistory", READER, name=name, tag="v2")
assert [r.digest for r in h.records] == [v2], h
ok("TagHistory")
vs = call("ListVersions", READER, name=name)
assert {v.digest for v in vs.versions} == {v1, v2}, vs
ok("ListVersions")
manifest = call("GetManifest", READER, name=name, digest=v1)
assert manifest.digest == v1 and len(manifest.data) > 0
ok(f"GetManifest ({len(manifest.data)} bytes)")

# Compare-and-swap.
r = call("SetTag", name=name, tag="latest", digest=v1, expected=msg("aetherfs.hub.v1.Expected", absent=True))
assert r.digest == v1 and r.previous == "" and r.by == os.environ["AETHERFS_ADMIN"].split(":")[0], r
code = refused(grpc.StatusCode.ABORTED, "SetTag", name=name, tag="latest", digest=v2,
               expected=msg("aetherfs.hub.v1.Expected", absent=True))
assert code == "tag_conflict", code
ok("SetTag with CAS; a conflict is ABORTED")

# A watch sees a move made through REST.
seen = queue.Queue()
watch = call("WatchTag", READER, name=name, tag="latest")


def pump():
    try:
        for rec in watch:
            seen.put(rec)
    except grpc.RpcError as e:
        seen.put(e)


threading.Thread(target=pump, daemon=True).start()
first = seen.get(timeout=TIMEOUT)
assert first.digest == v1, first
body = json.dumps({"digest": v2, "expected": v1}).encode()
rest_req("PUT", f"/v1/datasets/{name}/tags/latest", body, {"content-type": "application/json"})
moved = seen.get(timeout=TIMEOUT)
assert moved.digest == v2 and moved.previous == v1, moved
watch.cancel()
ok("WatchTag streams the move made through REST")

# Chunks and packs: a ranged gRPC read equals the REST read of that range.
view = json.loads(rest_req("GET", f"/v1/datasets/{name}/manifests/{v1}", headers={"accept": "application/json"}))
chunk_digests = [c["digest"] for e in view["entries"] for c in e.get("chunks", [])]
assert chunk_digests, view
mc = call("MissingChunks", name=name, digests=chunk_digests + ["blake3:" + "0" * 64])
assert list(mc.missing) == ["blake3:" + "0" * 64] and len(mc.present) == len(set(chunk_digests)), mc
ok("MissingChunks")
pack = mc.present[0].pack
whole = b"".join(p.data for p in call("ReadPack", READER, name=name, digest=pack))
start, length = 3, min(40, len(whole) - 3)
pieces = list(call("ReadPack", READER, name=name, digest=pack, offset=start, length=length))
ranged = b"".join(p.data for p in pieces)
via_rest = rest_req("GET", f"/v1/datasets/{name}/packs/{pack}", headers={"range": f"bytes={start}-{start + length - 1}"})
assert ranged == via_rest == whole[start:start + length] and pieces[0].offset == start, (ranged, via_rest)
ok(f"ReadPack: bytes {start}..{start + length} equal the REST range read")
assert refused(grpc.StatusCode.OUT_OF_RANGE, "ReadPack", READER, name=name, digest=pack, offset=len(whole)) \
    == "range_not_satisfiable"
ok("ReadPack past the end is OUT_OF_RANGE")

# Writes into a second dataset: the pack, then the manifest, then delete it.
stored = call("UploadPack", name=copy, digest=pack, data=whole)
assert stored.pack == pack and stored.bytes == len(whole), stored
ok("UploadPack")
assert refused(grpc.StatusCode.INVALID_ARGUMENT, "UploadPack", name=copy, digest=pack, data=whole[:-1]) \
    == "digest_mismatch"
ok("UploadPack of bytes that are not the digest's is INVALID_ARGUMENT")
pub = call("PutManifest", name=copy, digest=v1, data=manifest.data)
assert pub.created and pub.stats.files >= 1, pub
ok("PutManifest")
call("DeleteVersion", name=copy, digest=v1)
assert refused(grpc.StatusCode.NOT_FOUND, "GetManifest", name=copy, digest=v1) == "manifest_not_found"
ok("DeleteVersion")
too_many = ["blake3:" + "0" * 64] * 50_001
assert refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "MissingChunks", name=name, digests=too_many) == "too_large"
ok("MissingChunks over its bound is RESOURCE_EXHAUSTED")
deleted = call("DeleteTag", name=name, tag="latest", expected=msg("aetherfs.hub.v1.Expected", digest=v2))
assert deleted.digest == "" and deleted.previous == v2, deleted
ok("DeleteTag with CAS")

print(f"grpc-client-check: all {checks} checks passed", flush=True)
