"""Upload a directory to Shaman from a pipeline, and make a checkout of it.

Run: ``python examples/shaman_upload.py DIRECTORY http://manager:8080/ TOKEN CHECKOUT_ID``.
Files the store already has are not sent again; the checkout is a tree of links to the stored
files, under the manager's checkout directory.
"""

from __future__ import annotations

import sys

from shaman_core.client import pack


def main(directory: str, url: str, token: str, checkout_id: str) -> int:
    """Pack ``directory`` and print what was done."""
    report = pack(directory, url, checkout_id=checkout_id, token=token)
    print(
        f"{report.files} files ({report.bytes} bytes): {report.uploaded_files} uploaded, "
        f"{report.already_stored} already stored; checkout at {report.checkout_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
