"""VFS modules: how a share's files are reached (``posix``: plain syscalls beneath the root)."""
