"""Sealed boxes of access answers (lifecycle/core/sealed_answers.py): a part opens only with the request's
key, as the same request, store and part; and the archive is the same bytes for the same answers."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import pytest

from lifecycle.core.sealed_answers import BoxError, new_box_key, open_box, part_aad, seal_to
from lifecycle.streams.access.requests import build_archive


def test_a_part_opens_with_its_key_and_context_only():
    private, public = new_box_key()
    aad = part_aad("r1", "postgres", 0, 2)
    sealed = seal_to(public, b"what the store holds", aad)
    assert open_box(private, sealed, aad) == b"what the store holds"
    assert b"what the store holds" not in sealed
    other, _ = new_box_key()
    for key, context, blob in ((other, aad, sealed), (private, part_aad("r1", "redis", 0, 2), sealed),
                               (private, part_aad("r2", "postgres", 0, 2), sealed),
                               (private, aad, sealed[:-1] + bytes([sealed[-1] ^ 1])), (private, aad, b"short")):
        with pytest.raises(BoxError):
            open_box(key, blob, context)


def test_an_answer_key_that_is_not_one_is_refused():
    with pytest.raises(BoxError):
        seal_to(b"\x01" * 5, b"x", b"")


def test_the_archive_lists_hashes_sources_and_recipients_and_is_reproducible():
    documents = {"postgres": {"store": "postgres", "holds": ["account_profile", "session_logs"], "items": 2,
                              "data": {"accounts": [{"email": "a@example.test"}]}},
                 "files": {"store": "files", "holds": ["billing_records"], "items": 0, "data": {"files": []}}}
    processing = {"categories": {"account_profile": {"source": "provided", "purpose": "p", "data": "d"},
                                 "session_logs": {"source": "observed"}, "billing_records": {"source": "derived"}},
                  "controller": {"name": "C"}}
    opened = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    one = build_archive("r1", "h", opened, documents, processing)
    assert one == build_archive("r1", "h", opened, documents, processing)
    archive = zipfile.ZipFile(io.BytesIO(one))
    manifest = json.loads(archive.read("manifest.json"))
    assert [f["path"] for f in manifest["files"]] == ["stores/files.json", "stores/postgres.json"]
    assert (manifest["provided"], manifest["observed"], manifest["derived"]) == \
        (["account_profile"], ["session_logs"], ["billing_records"])
    assert manifest["categories"]["account_profile"]["portable"] is True
    assert manifest["categories"]["billing_records"]["portable"] is False
    assert manifest["recipients"] == [{"store": "files", "categories": ["billing_records"]},
                                      {"store": "postgres", "categories": ["account_profile", "session_logs"]}]
