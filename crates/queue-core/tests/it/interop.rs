//! Node Bull interop (added below).
