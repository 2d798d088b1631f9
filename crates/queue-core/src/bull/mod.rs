//! Bull 4's protocol: key names, job options and hashes, repeat iterations, and our Lua scripts
//! that change a queue atomically. Built on the command connection; knows nothing of workers.

pub(crate) mod job;
pub(crate) mod keys;
pub(crate) mod options;
pub(crate) mod repeat;
pub(crate) mod scripts;
pub(crate) mod slices;
