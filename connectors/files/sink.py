"""Documents and files: "application data, documents, files, configuration settings" (policy,
BUSINESS INFORMATION), one folder per account under the files root; ``billing/`` in it holds the
account's billing records.

Erasing removes ``<root>/<account_id>/``. Billing records go the way the order says
(deploy/retention.yaml): erased with the rest; pseudonymised, that is moved to
``<root>/_retained/<keyed-hash>/billing/`` where they live out their own window; or, under legal
hold, kept where they are (the store then acknowledges ``retained_legal_hold``). The folder is
renamed before anything is deleted, so a crash halfway leaves no half-erased folder under the
account's name; a receipt per request (no personal data) records the count for a redelivered order.

Retention: billing files are dated by their modification time; a sweep deletes those older than
the cutoff, in account folders (held accounts excepted) and under ``_retained``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from lifecycle.connectors.base.sink import (
    AccessOrder,
    AckStatus,
    ErasureOrder,
    Expiry,
    HeldData,
    Outcome,
    RetentionOrder,
    RetentionSink,
    jsonable,
    unreachable,
)
from lifecycle.core.config import Settings
from lifecycle.core.keys import Keyring, load_keyring

__all__ = ["FilesSink", "account_folder"]

BILLING = "billing_records"
EXPORT_INLINE_BYTES = 8 * 1024 * 1024  # larger files are listed in an access export, not copied


def account_folder(root: Path, account_id: str) -> Path:
    if not account_id or "/" in account_id or "\\" in account_id or "\x00" in account_id \
            or account_id in (".", "..") or account_id.startswith("_"):
        raise ValueError("not a usable account folder name")
    return _inside(root, root / account_id)


def _inside(root: Path, path: Path) -> Path:
    """``path`` when it resolves to an entry directly under ``root``: a name from an order never
    reaches outside the store's folder, whatever links or dots it holds."""
    if path.resolve().parent != root.resolve():
        raise ValueError("not a folder of this store")
    return path


class FilesSink(RetentionSink):
    """Delivery: at-least-once orders, exactly-once in effect (a receipt file per request)."""

    name = "files"
    retention_categories = (BILLING,)
    holds = ("documents_and_files", BILLING)

    @classmethod
    def from_settings(cls, settings: Settings) -> FilesSink:
        return cls(settings.files_dir, load_keyring(settings))

    def __init__(self, root: Path, keys: Keyring):
        self.root = root
        self.keys = keys  # the pipeline's: a retained folder's name is irreversible without it
        self.receipts = root / "_receipts"
        self.trash = root / "_erasing"
        self.retained = root / "_retained"

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        with unreachable("files root", OSError):
            self.receipts.mkdir(parents=True, exist_ok=True)
            self.trash.mkdir(parents=True, exist_ok=True)
            return {o.request_id: self._erase_one(o) for o in orders}

    def _erase_one(self, order: ErasureOrder) -> Outcome:
        receipt = _inside(self.receipts, self.receipts / f"{order.receipt_id}.json")
        if receipt.exists():
            data = json.loads(receipt.read_text())
            return Outcome(AckStatus(data["status"]), data["items"])
        try:
            folder = account_folder(self.root, order.account_id)
        except ValueError:
            return Outcome(AckStatus.NOTHING_FOUND, 0)
        status, items = AckStatus.NOTHING_FOUND, 0
        if order.keeps("documents_and_files"):
            status = AckStatus.RETAINED_LEGAL_HOLD if folder.exists() else status
            return self._receipt(receipt, Outcome(status, 0))
        doomed = _inside(self.trash, self.trash / order.receipt_id)
        if folder.exists():
            os.replace(folder, doomed)  # atomic: the account's name is gone at once
        if doomed.exists():
            billing = doomed / "billing"
            if billing.is_dir() and BILLING in order.pseudonymise:
                pseudonym = self.keys.pseudonym(order.account_id)
                _merge(billing, self.retained / pseudonym / "billing")
            elif billing.is_dir() and order.keeps(BILLING):
                folder.mkdir()
                os.replace(billing, folder / "billing")
                status = AckStatus.RETAINED_LEGAL_HOLD
            items = sum(1 for p in doomed.rglob("*") if p.is_file())
            shutil.rmtree(doomed)
            if status == AckStatus.NOTHING_FOUND:
                status = AckStatus.ERASED if items else AckStatus.NOTHING_FOUND
        return self._receipt(receipt, Outcome(status, items))

    def verify(self, orders: list[ErasureOrder]) -> dict[str, int]:
        with unreachable("files root", OSError):
            return {o.request_id: self._left(o) for o in orders}

    def _left(self, order: ErasureOrder) -> int:
        if order.keeps("documents_and_files"):
            return 0
        try:
            folder = account_folder(self.root, order.account_id)
        except ValueError:
            return 0
        billing = folder / "billing"
        return sum(1 for p in folder.rglob("*") if p.is_file()
                   and not (order.keeps(BILLING) and p.is_relative_to(billing)))

    def export(self, orders: list[AccessOrder]) -> dict[str, HeldData]:
        with unreachable("files root", OSError):
            return {o.request_id: self._held(o) for o in orders}

    def _held(self, order: AccessOrder) -> HeldData:
        try:
            folder = account_folder(self.root, order.account_id)
        except ValueError:
            return HeldData({"files": []}, 0)
        files = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []:
            body = path.read_bytes()
            entry = {"path": str(path.relative_to(folder)), "size": len(body),
                     "modified": jsonable(dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)),
                     "sha256": hashlib.sha256(body).hexdigest()}
            if len(body) <= EXPORT_INLINE_BYTES:
                entry["content_base64"] = base64.b64encode(body).decode()
            else:  # named with its hash; the privacy contact hands it over apart
                entry["content_omitted"] = f"larger than {EXPORT_INLINE_BYTES} bytes"
            files.append(entry)
        return HeldData({"files": files}, len(files))

    def subject_ids(self) -> list[str]:
        with unreachable("files root", OSError):
            return [e.name for e in self.root.iterdir() if e.is_dir() and not e.name.startswith("_")] \
                if self.root.is_dir() else []

    @staticmethod
    def _receipt(receipt: Path, outcome: Outcome) -> Outcome:
        tmp = receipt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"status": outcome.status, "items": outcome.items}))
        os.replace(tmp, receipt)
        return outcome

    def _billing_files(self, held: frozenset[str]) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.name.startswith("_") or entry.name in held:
                continue
            yield from (p for p in (entry / "billing").rglob("*") if p.is_file())
        yield from (p for p in self.retained.glob("*/billing/**/*") if p.is_file())

    def expire(self, order: RetentionOrder) -> Expiry:
        cutoff_s = order.cutoff_ms / 1000
        items, oldest = 0, None
        with unreachable("files root", OSError):
            for path in list(self._billing_files(order.held_accounts)):
                mtime = path.stat().st_mtime
                if mtime < cutoff_s:
                    path.unlink()
                    items += 1
                else:
                    oldest = mtime if oldest is None else min(oldest, mtime)
        return Expiry(items, int(oldest * 1000) if oldest is not None else None)

    def plan(self, order: RetentionOrder) -> int:
        cutoff_s = order.cutoff_ms / 1000
        return sum(1 for p in self._billing_files(order.held_accounts) if p.stat().st_mtime < cutoff_s)

    def close(self) -> None:
        return None


def _merge(src: Path, dst: Path) -> None:
    """Move every file of ``src`` under ``dst`` (which may already hold earlier ones)."""
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
