//! What the controller knows of the cluster between passes: the watch caches and [`overlay`],
//! our own recent writes laid over them until the watches catch up.

pub(crate) mod overlay;
