"""Fault-injection suite (issue 3): pulls through a loopback proxy that cuts, resets, stalls,
corrupts or refuses responses, hostile manifests and tar members, kill -9 / Ctrl-C of the
installed command, and a full disk. Every case runs on moto and on rclone serve s3.

Run: ``python -m pytest tests/faults -q`` (about a minute; the disk-full cases need root to
mount a tmpfs and are skipped otherwise). Measurements (re-fetched bytes, retry counts) are
printed in a "fault suite measurements" section at the end of the session.
"""
