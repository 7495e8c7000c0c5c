//! Slices: the slice controller and the per-slice shim (work in progress).
