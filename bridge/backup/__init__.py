"""Backups (issue 15, docs/PROTOCOL.md §12): the recovery key, the archive format, what an archive
holds, remote incremental backups on the home relays, the standby installation, restore and
device-to-device transfer. One module per concept; see docs/ARCHITECTURE.md.
"""
