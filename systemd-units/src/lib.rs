//! systemd units as objects (work in progress).
