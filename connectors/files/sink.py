"""Documents and files: "application data, documents, files, configuration settings" (policy,
BUSINESS INFORMATION), one folder per account under the files root.

Erasing removes ``<root>/<account_id>/``. Under legal hold, ``billing/`` (what the hold covers:
"comply with our legal obligations") is moved, pseudonymised, to
``<root>/_legal_hold/<keyed-hash>/billing/`` before the rest goes, and the store acknowledges
``retained_legal_hold``. The folder is renamed before deletion, so a crash halfway leaves no
half-erased folder under the account's name; a receipt per request (no personal data) records
the count for a redelivered order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from connectors.base.sink import ErasureOrder, Outcome, TransientStoreError

__all__ = ["FilesSink", "account_folder"]


def account_folder(root: Path, account_id: str) -> Path:
    if not account_id or "/" in account_id or account_id in (".", "..") or account_id.startswith("_"):
        raise ValueError("not a usable account folder name")
    return root / account_id


class FilesSink:
    name = "files"

    def __init__(self, root: Path, hash_key: bytes = b""):
        self.root = root
        self.hash_key = hash_key
        self.receipts = root / "_receipts"
        self.trash = root / "_erasing"

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        try:
            self.receipts.mkdir(parents=True, exist_ok=True)
            self.trash.mkdir(parents=True, exist_ok=True)
            return {o.request_id: self._erase_one(o) for o in orders}
        except OSError as exc:
            raise TransientStoreError("files root unavailable") from exc

    def _erase_one(self, order: ErasureOrder) -> Outcome:
        receipt = self.receipts / f"{order.request_id}.json"
        if receipt.exists():
            data = json.loads(receipt.read_text())
            return Outcome(data["status"], data["items"])
        try:
            folder = account_folder(self.root, order.account_id)
        except ValueError:
            return Outcome("nothing_found", 0)
        status, items = "nothing_found", 0
        doomed = self.trash / order.request_id
        if folder.exists():
            os.replace(folder, doomed)  # atomic: the account's name is gone at once
        if doomed.exists():
            billing = doomed / "billing"
            if order.legal_hold and billing.is_dir():
                pseudonym = hashlib.sha256(self.hash_key + order.account_id.encode()).hexdigest()
                held = self.root / "_legal_hold" / pseudonym
                held.mkdir(parents=True, exist_ok=True)
                os.replace(billing, held / "billing")
                status = "retained_legal_hold"
            items = sum(1 for p in doomed.rglob("*") if p.is_file())
            shutil.rmtree(doomed)
            if status == "nothing_found":
                status = "erased" if items else "nothing_found"
        tmp = receipt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"status": status, "items": items}))
        os.replace(tmp, receipt)
        return Outcome(status, items)

    def close(self) -> None:
        return None
