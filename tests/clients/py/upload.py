#!/usr/bin/env python3
"""Uploads one file to a tus server with the real tuspy client and prints the upload URL.

    python3 upload.py --endpoint http://127.0.0.1:8080/files/ --file PATH
        [--chunk-size BYTES] [--retry] [--metadata key=value]...

On success the only line on stdout is ``UPLOAD_URL <url>``; progress and errors go to stderr
and any failure exits non-zero. Without --retry tuspy does not retry, so an interrupted
request fails the run; with --retry each chunk is retried up to 5 times, 0.2 s apart: tuspy
asks the server for the offset (HEAD) and resumes from there, as an application would.
Run ``pip install -r tests/clients/py/requirements.txt`` once to install the pinned tuspy.
"""

import argparse
import sys

from tusclient import client
from tusclient.exceptions import TusCommunicationError
from tusclient.uploader import Uploader


class LoggingUploader(Uploader):
    """tuspy's Uploader, logging each chunk and each time it asks the server for the offset."""

    def get_offset(self):
        offset = super().get_offset()
        print(f"upload.py: HEAD says offset {offset}, resuming there", file=sys.stderr)
        return offset

    def upload_chunk(self):
        super().upload_chunk()
        print(f"upload.py: {self.offset}/{self.stop_at} bytes", file=sys.stderr)


def parse_metadata(pairs):
    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"upload.py: --metadata takes key=value, got {pair!r}")
        metadata[key] = value
    return metadata


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="creation URL, e.g. http://host/files/")
    parser.add_argument("--file", required=True, help="file to upload")
    parser.add_argument("--chunk-size", type=int, default=None, help="bytes per PATCH")
    parser.add_argument("--retry", action="store_true", help="retry and resume after failures")
    parser.add_argument("--metadata", action="append", default=[], help="key=value")
    args = parser.parse_args()

    kwargs = {"metadata": parse_metadata(args.metadata)}
    if args.chunk_size is not None:
        if args.chunk_size <= 0:
            raise SystemExit("upload.py: --chunk-size must be positive")
        kwargs["chunk_size"] = args.chunk_size
    if args.retry:
        kwargs["retries"] = 5
        kwargs["retry_delay"] = 0.2

    tus = client.TusClient(args.endpoint)
    uploader = LoggingUploader(args.file, client=tus, **kwargs)
    try:
        uploader.upload()  # creates the upload, then sends chunk after chunk
    except TusCommunicationError as err:
        print(
            f"upload.py: upload failed: {err} (status {err.status_code}, "
            f"body {err.response_content!r})",
            file=sys.stderr,
        )
        return 1
    print(f"UPLOAD_URL {uploader.url}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
